"""The command-line entry points as a user runs them: real processes, real exit codes."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lmjax.data import tokenizers
from cli_checks import listing, one_line_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/synthetic_lm.py:tiny'
FAST = ['--config.num_train_steps=4', '--config.log_every=2', '--config.eval_every=4',
        '--config.checkpoint.every=4', '--config.sample.num_samples=1']


def run(module, *args, timeout=180):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='', JAX_PLATFORMS='cpu')
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
