"""Stateful truncated BPTT through the common trainer: the state really carries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import config_base, losses, steps, train
from lmjax.data import lm as lm_data
from lmjax.data import synthetic
from lmjax.errors import UserError


def write_corpus(tmp_path):
  for name, seed, n in [('train', 0, 300), ('valid', 1, 40)]:
    (tmp_path / f'{name}.txt').write_text('\n'.join(synthetic.generate_lines(n, seed)) + '\n')
  return str(tmp_path / 'train.txt'), str(tmp_path / 'valid.txt')


def ptb_tiny(tmp_path, **overrides):
  c = config_base.load_experiment('ptb_lstm.py', 'tiny')
  c.data.train, c.data.eval = write_corpus(tmp_path)
  for k, v in overrides.items():
    c[k] = v
  return c


def test_bptt_iterator_feeds_contiguous_streams_in_order():
  stream = np.arange(1, 42, dtype=np.int32)  # 41 tokens -> 40 predictions
  it = lm_data.BpttIterator(stream, batch_size=2, seq_len=5)
  assert it.steps_per_epoch == 4  # 20 predictions per row
  batches = [next(it) for _ in range(5)]
  # Row r covers stream[r*20 : r*20+21]; windows follow on; targets are inputs shifted by one.
  row0 = np.concatenate([b['inputs'][0] for b in batches[:4]])
  np.testing.assert_array_equal(row0, stream[:20])
  np.testing.assert_array_equal(batches[1]['inputs'][1], stream[25:30])
  np.testing.assert_array_equal(batches[0]['targets'], batches[0]['inputs'] + 1)
  assert [int(b['reset']) for b in batches] == [1, 0, 0, 0, 1]  # a new epoch resets


def test_stateful_eval_covers_every_token_once():
  stream = np.arange(1, 35, dtype=np.int32)
  batches = lm_data.eval_batches(stream, batch_size=3, seq_len=4, stateful=True)
  targets = np.concatenate([b['targets'][r][b['weights'][r] > 0]
                            for r in range(3) for b in batches])
  np.testing.assert_array_equal(np.sort(targets), stream[1:])


@pytest.mark.parametrize('cell', ['lstm', 'gru', 'elman'])
def test_windowed_eval_equals_one_long_window(tmp_path, cell):
  """Evaluating in windows of 4 with the carried state gives the NLL of one unbroken pass.

  If the state were reset at every window, the short-window NLL would differ.
  """
  devices = jax.devices()[:1]
  results = []
  for seq_len in (4, 64):
    c = ptb_tiny(tmp_path, seq_len=seq_len)
    c.model.cell = cell
    c.eval_batch_size = 2
    run = steps.prepare(c, None, devices=devices)
    state = run.init(0)
    results.append(run.evaluate(state['params']))
  assert results[0]['tokens'] == results[1]['tokens']
  assert results[0]['nll'] == pytest.approx(results[1]['nll'], rel=1e-5)


def test_train_step_carries_state_between_windows(tmp_path):
  """With lr 0, window 2's loss equals the second half of one pass over windows 1+2."""
  c = ptb_tiny(tmp_path, seq_len=6)
  c.optimizer.learning_rate = 0.0
  run = steps.prepare(c, None, devices=jax.devices()[:1])
  it = lm_data.BpttIterator(run.task.train.stream, c.batch_size, c.seq_len)
  b1, b2 = next(it), next(it)
  state = run.init(0)
  params = jax.device_get(state['params'])
  state, _ = run.train_step(state, b1)
  state, out2 = run.train_step(state, b2)
  model = run.task.model
  both = np.concatenate([b1['inputs'], b2['inputs']], 1)
  logits, _ = model.apply({'params': params}, jnp.asarray(both),
                          model.init_carry(c.batch_size), {}, True)
  nll = losses.cross_entropy(logits[:, 6:], jnp.asarray(b2['targets']))
  assert float(out2['loss']) == pytest.approx(float(nll.mean()), rel=1e-5)
  # And it is not what a reset state gives.
  logits2, _ = model.apply({'params': params}, jnp.asarray(b2['inputs']),
                           model.init_carry(c.batch_size), {}, True)
  reset = float(losses.cross_entropy(logits2, jnp.asarray(b2['targets'])).mean())
  assert abs(reset - float(out2['loss'])) > 1e-4


def test_split_too_small_for_bptt(tmp_path):
  c = ptb_tiny(tmp_path, seq_len=5000)
  with pytest.raises(UserError, match='too few for config.batch_size=4 streams of '
                     'config.seq_len=5000'):
    steps.prepare(c, None, devices=jax.devices()[:1])


def test_rnn_lm_learns_through_the_common_loop(tmp_path, capsys):
  c = ptb_tiny(tmp_path, log_every=100)
  c.num_epochs = 3
  c.model.update(hidden_size=32, embed_dim=32)
  c.optimizer.update(name='adam', learning_rate=1e-2, schedule='constant')
  c.sample.update(num_samples=2, prompt_tokens=2, max_new_tokens=5)
  report = train.train_and_evaluate(c, str(tmp_path / 'wd'), devices=jax.devices()[:1])
  # ~72 words: uniform is 72, a unigram model ~40; the grammar allows ~5.
  assert report['ppl'] < 20, report
  # The end-of-run samples come from the RNN too (carried state), one per prompt.
  samples = [l for l in capsys.readouterr().out.splitlines() if l.startswith('sample: ')]
  assert len(samples) == 2 and all(' -> ' in l for l in samples), samples
