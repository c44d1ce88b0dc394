"""`python -m lmjax.generate` on an RNN LM workdir: carried-state sampling, as a user runs it,
against re-running the full sequence through the trained model for every new token."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import checkpoint, config_base, train
from lmjax.data import synthetic
from lmjax.models import rnn
from cli_checks import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = 'the'  # mid-sentence: the continuation is words, not an immediate end of line


@pytest.fixture(scope='module')
def rnn_workdir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('rnn_lm')
  paths = []
  for name, seed, n in [('train', 0, 200), ('valid', 1, 30)]:
    (tmp / f'{name}.txt').write_text('\n'.join(synthetic.generate_lines(n, seed)) + '\n')
    paths.append(str(tmp / f'{name}.txt'))
  c = config_base.load_experiment('ptb_lstm.py', 'tiny')
  c.data.train, c.data.eval = paths
  c.num_epochs = 2
  c.log_every = 1000
  c.optimizer.update(name='adam', learning_rate=1e-2, schedule='constant')
  wd = str(tmp / 'wd')
  train.train_and_evaluate(c, wd, devices=jax.devices()[:1])
  return wd


def _generate(wd, *args):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'lmjax.generate', f'--workdir={wd}', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [line.rstrip() for line in proc.stdout.strip().splitlines()]


def test_greedy_generate_equals_rerunning_the_full_sequence(rnn_workdir):
  lines = _generate(rnn_workdir, f'--prompt={PROMPT}', '--temperature=0', '--num_samples=2',
                    '--max_new_tokens=8')
  _, family, params, tok, _ = checkpoint.load_trained(rnn_workdir)
  cfg = family.config
  assert isinstance(cfg, rnn.RNNLMConfig)
  model = rnn.RNNLM(cfg)
  seq = np.asarray([[tok.eos_id] + tok.encode(PROMPT)], np.int32)
  for _ in range(8):  # no carried state: the whole sequence from the zero carry each time
    logits, _ = model.apply({'params': params}, jnp.asarray(seq), rnn.init_carry(cfg, 1))
    seq = np.concatenate([seq, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], 1)
  new = seq[0, -8:].tolist()
  if tok.eos_id in new:
    new = new[:new.index(tok.eos_id)]
  assert new, 'the trained model should continue the prompt with words'
  want = PROMPT + ' ' + tok.decode(new)
  assert lines == [want, want]


def test_sampling_with_a_seed_is_reproducible(rnn_workdir):
  args = (f'--prompt={PROMPT}', '--temperature=1.0', '--top_k=5', '--num_samples=3',
          '--max_new_tokens=6', '--seed=3')
  first = _generate(rnn_workdir, *args)
  assert first == _generate(rnn_workdir, *args)
  assert len(first) == 3 and all(line.startswith(PROMPT) for line in first)
