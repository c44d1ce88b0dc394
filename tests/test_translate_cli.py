"""Translation entry points as a user runs them: real processes, real exit codes."""

import os
import shutil
import subprocess
import sys

import pytest

from lmjax.data import synthetic, tokenizers
from cli_checks import listing, one_line_error, signal_when, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/synthetic_translation.py:tiny'


def run(module, *args, stdin=None, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env, input=stdin,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('mt'))
  proc = run('lmjax.main', f'--config={TINY}', f'--workdir={wd}', '--config.num_train_steps=20',
             '--config.eval_every=20', '--config.checkpoint.every=20')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd, proc


def test_main_reports_perplexity_and_bleu(trained):
  _, proc = trained
  assert 'eval step 20: ppl' in proc.stdout
  assert 'eval step 20: BLEU' in proc.stdout and 'nrefs:1|case:mixed' in proc.stdout
  assert 'padding' in proc.stdout and 'too long' in proc.stdout


def test_translate_from_stdin_and_file_with_references(trained, tmp_path):
  wd, _ = trained
  pairs = synthetic.generate_pairs(5, 123)
  src = '\n'.join(s for s, _ in pairs) + '\n'
  proc = run('lmjax.translate', f'--workdir={wd}', '--beam_size=3', stdin=src)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(proc.stdout.splitlines()) == 5
  (tmp_path / 'src.txt').write_text(src)
  (tmp_path / 'ref.txt').write_text('\n'.join(t for _, t in pairs) + '\n')
  proc2 = run('lmjax.translate', f'--workdir={wd}', '--beam_size=3',
              f'--input={tmp_path / "src.txt"}', f'--reference={tmp_path / "ref.txt"}')
  assert proc2.returncode == 0, proc2.stderr[-3000:]
  assert proc2.stdout == proc.stdout  # deterministic
  assert 'BLEU' in proc2.stderr and 'chrF' in proc2.stderr
  (tmp_path / 'short.txt').write_text('one line\n')
  one_line_error(run('lmjax.translate', f'--workdir={wd}', f'--input={tmp_path / "src.txt"}',
                     f'--reference={tmp_path / "short.txt"}'), 'short.txt', '1 lines')


def test_parallel_files_with_different_line_counts(trained, tmp_path):
  wd, _ = trained
  (tmp_path / 'train.en').write_text('a b\nc d\ne f\n')
  (tmp_path / 'train.de').write_text('x y\nz w\n')
  before = listing(wd)
  one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={wd}',
                     '--config.data.source=text', f'--config.data.train={tmp_path / "train"}',
                     f'--config.data.eval={tmp_path / "train"}'),
                 'train.en has 3 lines', 'train.de has 2')
  assert listing(wd) == before


def test_checkpoint_whose_vocabulary_does_not_match_the_tokenizer(trained, tmp_path):
  wd, _ = trained
  swapped = tmp_path / 'swapped'
  shutil.copytree(wd, swapped)
  shutil.rmtree(swapped / 'tokenizer')
  tokenizers.SentencePieceTokenizer.train(
      [s for p in synthetic.generate_pairs(300, 9) for s in p], vocab_size=90).save(
          str(swapped / 'tokenizer'))
  before = listing(swapped)
  one_line_error(run('lmjax.translate', f'--workdir={swapped}', stdin='the dog runs .\n'),
                 'vocabulary')
  one_line_error(run('lmjax.main', f'--config={TINY}', f'--workdir={swapped}'), 'vocabulary')
  assert listing(swapped) == before


def run_bytes(module, *args, stdin: bytes):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env, input=stdin,
                        capture_output=True, timeout=300)


def test_stdin_reads_like_a_file(trained, tmp_path):
  """UTF-8 with the same one-line errors, a BOM stripped, empty and blank-only alike."""
  wd, _ = trained
  # The last line is longer than the tiny model takes (max_len 32): cut, with one warning.
  pairs = synthetic.generate_pairs(3, 7)
  src = '\n'.join([s for s, _ in pairs] + [' '.join([pairs[0][0]] * 8)]) + '\n'
  plain = run_bytes('lmjax.translate', f'--workdir={wd}', stdin=src.encode())
  bom = run_bytes('lmjax.translate', f'--workdir={wd}', stdin=b'\xef\xbb\xbf' + src.encode())
  assert plain.returncode == bom.returncode == 0, bom.stderr[-3000:]
  assert bom.stdout == plain.stdout and len(plain.stdout.splitlines()) == 4
  warn = [l for l in plain.stderr.decode().splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'longer than the model takes (32 tokens: line 4:' in warn[0], warn
  for data, needle in ((b'the dog \xe9 runs .\n', 'not UTF-8'), (b'', 'is empty'),
                       (b'\n  \n', 'only blank lines')):
    p = run_bytes('lmjax.translate', f'--workdir={wd}', stdin=data)
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith('error: standard input') and needle in lines[0], lines
    (tmp_path / 'in.txt').write_bytes(data)
    f = run_bytes('lmjax.translate', f'--workdir={wd}', f'--input={tmp_path / "in.txt"}',
                  stdin=b'')
    assert f.returncode == 2 and needle in f.stderr.decode(), f.stderr[-3000:]


@pytest.mark.parametrize('module,flag,needle', [
    ('lmjax.translate', '--alpha=-5', '--alpha=-5'),
    ('lmjax.translate', '--beam_size=0', '--beam_size=0'),
    ('lmjax.generate', '--num_samples=-1', '--num_samples=-1'),
    ('lmjax.generate', '--top_p=1.5', '--top_p=1.5'),
])
def test_decoding_flags_out_of_range_are_one_line(trained, module, flag, needle):
  wd, _ = trained
  p = run(module, f'--workdir={wd}', flag, stdin='the dog runs .\n')
  one_line_error(p, needle)


NOISY = """
from lmjax import cli, metrics
def main(argv):
  lines = ['the dog runs .'] * 120  # sacreBLEU warns about tokenized input past 100 such lines
  metrics.bleu_report(lines, lines)
cli.run(main)
"""


def test_library_notices_only_with_verbose():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  quiet, loud = (subprocess.run([sys.executable, '-c', NOISY, *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
                 for args in ((), ('--verbose',)))
  assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
  assert 'tokenized period' in loud.stderr and 'tokenized period' not in quiet.stderr


def _cpu_seconds(pid: int) -> float:
  fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime + stime


def test_ctrl_c_while_decoding_is_one_line_and_130(trained, tmp_path):
  """SIGINT once the decode has started (the process has spent its start-up CPU time): one
  line and exit 130, not a crash while XLA's threads are still decoding."""
  import signal  # pylint: disable=g-import-not-at-top
  wd, _ = trained
  src = tmp_path / 'many.txt'
  short = [s for s, _ in synthetic.generate_pairs(6000, 5) if len(s.split()) <= 10]  # no cuts
  src.write_text('\n'.join(short[:4000]) + '\n')
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  rc, out, err = signal_when(  # once past its imports, restore and first compiles
      [sys.executable, '-m', 'lmjax.translate', f'--workdir={wd}', f'--input={src}',
       '--beam_size=4'], lambda p: _cpu_seconds(p.pid) >= 6.0, signal.SIGINT, env=env,
      cwd=REPO, wait_s=240, timeout=120)
  assert rc == 130, (rc, err[-3000:])
  assert err.strip().splitlines() == ['interrupted'], err[-3000:]
  assert out == ''
