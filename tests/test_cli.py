"""The command-line entry points as a user runs them: real processes, real exit codes."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lmjax.data import tokenizers
from cli_checks import listing, one_line_error, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/synthetic_lm.py:tiny'
FAST = ['--config.num_train_steps=4', '--config.log_every=2', '--config.eval_every=4',
        '--config.checkpoint.every=4', '--config.sample.num_samples=1']


def run(module, *args, timeout=180):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run with overrides; later tests reuse its workdir."""
  wd = str(tmp_path_factory.mktemp('run'))
  proc = run('lmjax.main', f'--config={TINY}', f'--workdir={wd}', '--config.model.num_layers=1',
             '--config.model.position=learned', *FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd, proc


def test_overrides_reach_the_run(trained):
  wd, proc = trained
  assert 'eval step 4: ppl' in proc.stdout
  meta = json.load(open(os.path.join(wd, 'checkpoints', '4', 'meta', 'metadata')))
  assert meta['config']['model']['num_layers'] == 1
  assert meta['config']['model']['position'] == 'learned'


def test_generate_from_the_latest_checkpoint(trained):
  wd, _ = trained
  proc = run('lmjax.generate', f'--workdir={wd}', '--prompt=the old king', '--temperature=0.7',
             '--top_k=5', '--top_p=0.9', '--num_samples=2', '--max_new_tokens=5')
  assert proc.returncode == 0, proc.stderr[-3000:]
  outs = proc.stdout.strip().splitlines()
  assert len(outs) == 2 and all(o.startswith('the old king') for o in outs)


def test_generate_names_unknown_prompt_words_and_can_run_past_the_line_end(trained):
  wd, _ = trained
  import jax
  import numpy as np
  from lmjax import checkpoint, decoding
  _, family, params, tok, _ = checkpoint.load_trained(wd)
  prompt = [tok.eos_id] + tok.encode('the zebra king')
  # A seed whose sample crosses a line end, found in this process with the CLI's own sampler.
  for seed in range(50):
    row = np.asarray(decoding.generate_from_family(
        family, params, np.asarray([prompt], np.int32), jax.random.PRNGKey(seed), 40,
        temperature=1.0))[0].tolist()
    if tok.eos_id in row[:-1]:
      break
  assert tok.eos_id in row[:-1]
  proc = run('lmjax.generate', f'--workdir={wd}', '--prompt=the zebra king', f'--seed={seed}',
             '--max_new_tokens=40', '--nostop_at_eos')
  assert proc.returncode == 0, proc.stderr[-3000:]
  warn = [l for l in proc.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'zebra' in warn[0] and 'king' not in warn[0], proc.stderr
  segments, ids = [], prompt[1:] + row
  while tok.eos_id in ids:
    segments.append(ids[:ids.index(tok.eos_id)])
    ids = ids[ids.index(tok.eos_id) + 1:]
  segments.append(ids)
  assert proc.stdout == '\n'.join(tok.decode(x) for x in segments) + '\n'
  assert proc.stdout.startswith('the <unk> king') and len(proc.stdout.splitlines()) > 1
  # By default it stops at the first line end.
  first = run('lmjax.generate', f'--workdir={wd}', '--prompt=the zebra king', f'--seed={seed}',
              '--max_new_tokens=40')
  assert first.stdout == tok.decode(segments[0]) + '\n'


def test_generate_joins_prompt_and_continuation_by_the_tokenizer(tmp_path):
  """A character model continues 'th' as characters: no space is put after the prompt."""
  wd = str(tmp_path / 'char')
  proc = run('lmjax.main', '--config=experiments/tinyshakespeare.py:tiny', f'--workdir={wd}',
             '--config.data.source=synthetic', '--config.num_train_steps=2',
             '--config.eval_every=2', '--config.checkpoint.every=2', '--config.mesh.data=1',
             '--config.sample.num_samples=0')
  assert proc.returncode == 0, proc.stderr[-3000:]
  gen = run('lmjax.generate', f'--workdir={wd}', '--prompt=th', '--temperature=0',
            '--max_new_tokens=6')
  assert gen.returncode == 0, gen.stderr[-3000:]
  # Independently: the greedy continuation in this process, decoded with the prompt in one go.
  import jax
  import numpy as np
  from lmjax import checkpoint, decoding
  _, family, params, tok, _ = checkpoint.load_trained(wd)
  prompt = [tok.eos_id] + tok.encode('th')
  cont = np.asarray(decoding.generate_from_family(
      family, params, np.asarray([prompt], np.int32), jax.random.PRNGKey(0), 6,
      temperature=0.0))[0].tolist()
  cont = cont[:cont.index(tok.eos_id)] if tok.eos_id in cont else cont
  assert gen.stdout == tok.decode(prompt[1:] + cont) + '\n'
  assert tok.decode(prompt[1:] + cont).startswith('th') and len(cont) > 0


def test_bad_overrides_fail_in_one_line(tmp_path):
  line = one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={tmp_path}',
                            '--config.model.num_lyers=3'), 'num_lyers', 'num_layers')
  assert '--config.model.num_lyers' in line
  one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={tmp_path}',
                     '--config.batch_size=abc'), 'config.batch_size')
  assert not os.listdir(tmp_path)


def test_bad_data_files_fail_in_one_line_and_touch_nothing(trained, tmp_path):
  wd, _ = trained
  before = listing(wd)
  bad = tmp_path / 'latin1.txt'
  bad.write_bytes(b'caf\xe9 au lait\n')
  blank = tmp_path / 'blank.txt'
  blank.write_text('\n  \n\n')
  for path, needle in [(tmp_path / 'missing.txt', 'missing.txt'), (bad, 'latin1.txt'),
                       (blank, 'blank.txt')]:
    one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={wd}',
                       '--config.data.source=text', f'--config.data.train={path}',
                       f'--config.data.eval={path}', '--config.data.tokenizer=word', *FAST),
                   needle)
  assert listing(wd) == before


def test_tokenizer_that_does_not_match_the_checkpoint(trained, tmp_path):
  """A workdir whose saved vocabulary was swapped for another is refused, not retrained."""
  wd, _ = trained
  swapped = tmp_path / 'swapped'
  shutil.copytree(wd, swapped)
  shutil.rmtree(swapped / 'tokenizer')
  tokenizers.WordVocab.build(['completely different words']).save(str(swapped / 'tokenizer'))
  before = listing(swapped)
  one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={swapped}', *FAST),
                 'vocabulary size')
  one_line_error(run('lmjax.generate', f'--workdir={swapped}', '--prompt=a'), 'vocabulary size')
  assert listing(swapped) == before


FAULTS = '''
import ctypes, resource, sys
from lmjax import cli
if sys.argv[1] == 'keep':
  assert cli.keep_freed_host_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 128 << 20
def touch_and_free():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)
touch_and_free()  # the first touch faults either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def test_keep_host_memory_reuses_freed_pages():
  """Freed 128 MB blocks come back without page faults once glibc keeps them (4 x 32k pages
  fault without)."""
  env = dict(os.environ, PYTHONPATH=REPO)
  count = {}
  for mode in ('default', 'keep'):
    proc = subprocess.run([sys.executable, '-c', FAULTS, mode], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    count[mode] = int(proc.stdout.split()[-1])
  assert count['default'] > 4 * 30000, count
  assert count['keep'] < 0.05 * count['default'], count


def test_second_run_on_a_busy_workdir_is_refused(tmp_path):
  """While another process holds the workdir, a run stops with one line naming it and writes
  nothing; once released, the same command runs."""
  import fcntl
  wd = tmp_path / 'busy'
  wd.mkdir()
  fd = os.open(wd, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    proc = run('lmjax.main', f'--config={TINY}', f'--workdir={wd}', *FAST)
    one_line_error(proc, str(wd), 'in use', f'(pid {os.getpid()})')
    assert listing(str(wd)) == {}
  finally:
    os.close(fd)  # releases the lock
  proc = run('lmjax.main', f'--config={TINY}', f'--workdir={wd}', *FAST)
  assert proc.returncode == 0, proc.stderr[-2000:]
