"""Inputs that were accepted silently now say what happens (real processes, one line each)."""

import os
import subprocess
import sys

from cli_checks import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(workdir, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS=xla_flags(1))
  return subprocess.run([sys.executable, '-m', 'lmjax.main',
                         '--config=experiments/synthetic_lm.py:tiny', f'--workdir={workdir}',
                         '--config.mesh.data=1', '--config.num_train_steps=1',
                         '--config.eval_every=1', '--config.checkpoint.every=1',
                         '--config.sample.num_samples=0', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_unreachable_vocab_size_and_a_finished_run_say_so(tmp_path):
  wd = str(tmp_path / 'wd')
  spm = ['--config.data.tokenizer=sentencepiece', '--config.data.vocab_size=100000']
  first = main(wd, *spm)
  assert first.returncode == 0, first.stderr[-3000:]
  warn = [l for l in first.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'config.data.vocab_size=100,000' in warn[0], first.stderr[-3000:]
  got = int(warn[0].split('the vocabulary has ')[1].replace(',', ''))
  assert f'vocab {got}' in first.stdout and got < 1000  # 72 words: far fewer pieces
  again = main(wd, *spm)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'nothing left to train: the workdir is at step 1 of 1' in again.stdout
  assert 'done:' not in again.stdout

  # A SentencePiece model handed to the word tokenizer is refused before anything is written.
  model = os.path.join(wd, 'tokenizer', next(f for f in os.listdir(os.path.join(wd, 'tokenizer'))
                                             if f.endswith('.model')))
  wd2 = tmp_path / 'wd2'
  refused = main(str(wd2), '--config.data.tokenizer=word', f'--config.data.spm_model={model}')
  assert refused.returncode == 2
  lines = refused.stderr.strip().splitlines()
  assert len(lines) == 1 and 'config.data.spm_model=' in lines[0] and "'word'" in lines[0]
  assert not wd2.exists() or not os.listdir(wd2)
