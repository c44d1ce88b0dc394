"""Sampling: cached (Transformer) and carried-state (RNN) generation against re-running the
full sequence; sampling distribution and reproducibility; filters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding
from lmjax.errors import UserError
from lmjax.models import rnn, transformer


def test_greedy_generation_equals_full_sequence_argmax():
  cfg = transformer.TransformerConfig(vocab_size=23, d_model=32, num_heads=4, num_layers=2,
                                      d_ff=48, max_len=32, dropout_rate=0.0, position='rotary')
  model = transformer.TransformerLM(cfg)
  prompt = jnp.array([[1, 5, 7, 2], [3, 3, 9, 4]], jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(0), prompt)['params'])
  out = np.asarray(decoding.generate(params, prompt, jax.random.PRNGKey(0), config=cfg,
                                     num_new=6, temperature=0.0))
  # Reference: no cache, re-run the whole sequence for every new token.
  seq = np.asarray(prompt)
  for _ in range(6):
    logits = model.apply({'params': params}, jnp.asarray(seq))
    seq = np.concatenate([seq, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], 1)
  np.testing.assert_array_equal(out, seq[:, 4:])


def test_sampling_follows_the_model_distribution():
  """With temperature 1 and no filtering, first-token frequencies match softmax(logits)."""
  cfg = transformer.TransformerConfig(vocab_size=5, d_model=16, num_heads=2, num_layers=1,
                                      d_ff=16, max_len=8, dropout_rate=0.0)
  model = transformer.TransformerLM(cfg)
  prompt = jnp.zeros((4000, 2), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(1), prompt[:1])['params'])
  params = jax.tree.map(lambda a: a * 3.0, params)  # a peaked, non-uniform distribution
  probs = np.asarray(jax.nn.softmax(model.apply({'params': params}, prompt[:1])[0, -1]))
  out = np.asarray(decoding.generate(params, prompt, jax.random.PRNGKey(2), config=cfg,
                                     num_new=1, temperature=1.0))
  freq = np.bincount(out[:, 0], minlength=5) / len(out)
  np.testing.assert_allclose(freq, probs, atol=0.03)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda f: np.isfinite(np.asarray(f))[0].tolist()
  assert kept(decoding.filter_logits(logits, 1.0, 2, 1.0)) == [True, True, False, False, False]
  # Smallest set with mass >= 0.8: 0.5 + 0.2 + 0.15 = 0.85.
  assert kept(decoding.filter_logits(logits, 1.0, 0, 0.8)) == [True, True, True, False, False]
  assert kept(decoding.filter_logits(logits, 1.0, 0, 0.5)) == [True, False, False, False, False]
  # Order of the vocabulary does not matter.
  perm = jnp.array([3, 0, 4, 1, 2])
  assert kept(decoding.filter_logits(logits[:, perm], 1.0, 0, 0.8)) == [False, True, False,
                                                                        True, True]
  # Temperature rescales the kept logits.
  np.testing.assert_allclose(np.asarray(decoding.filter_logits(logits, 0.5, 0, 1.0)),
                             np.asarray(logits) * 2, rtol=1e-6)


def _rnn_lm(cell='lstm', seed=0):
  cfg = rnn.RNNLMConfig(vocab_size=17, embed_dim=12, hidden_size=12, num_layers=2, cell=cell,
                        dropout=0.0, init_scale=0.4)
  model = rnn.RNNLM(cfg)
  prompt = jnp.array([[1, 5, 7], [3, 3, 9]], jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(seed), prompt,
                                    rnn.init_carry(cfg, 2))['params'])
  # Larger weights than the init: the next token then depends on the history.
  return cfg, model, jax.tree.map(lambda a: a * 4.0, params), prompt


class _Family:
  """The part of a model family that decoding reads (config, and maybe lm_decoder)."""

  def __init__(self, config):
    self.config = config


@pytest.mark.parametrize('cell', ['lstm', 'gru', 'elman'])
def test_rnn_greedy_generation_equals_full_sequence_argmax(cell):
  cfg, model, params, prompt = _rnn_lm(cell)
  out = np.asarray(decoding.generate_from_family(_Family(cfg), params, prompt,
                                                 jax.random.PRNGKey(0), 6, temperature=0.0))
  # Reference: no carried state, re-run the whole sequence from the zero carry every token.
  seq = np.asarray(prompt)
  for _ in range(6):
    logits, _ = model.apply({'params': params}, jnp.asarray(seq), rnn.init_carry(cfg, 2))
    seq = np.concatenate([seq, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], 1)
  np.testing.assert_array_equal(out, seq[:, 3:])
  assert out.shape == (2, 6) and len(set(out.ravel().tolist())) > 1


def test_rnn_sampling_is_reproducible_and_follows_the_key():
  cfg, _, params, prompt = _rnn_lm()
  fam = _Family(cfg)
  draw = lambda seed, **kw: np.asarray(decoding.generate_from_family(
      fam, params, prompt, jax.random.PRNGKey(seed), 12, temperature=1.0, **kw))
  np.testing.assert_array_equal(draw(3), draw(3))
  assert not np.array_equal(draw(3), draw(4))
  # top_k=1 keeps only the argmax: sampling collapses to greedy decoding.
  greedy = np.asarray(decoding.generate_from_family(fam, params, prompt,
                                                    jax.random.PRNGKey(0), 12, temperature=0.0))
  np.testing.assert_array_equal(draw(5, top_k=1), greedy)


def test_rnn_first_sampled_token_follows_the_model_distribution():
  cfg, model, params, _ = _rnn_lm(seed=1)
  prompt = jnp.full((4000, 2), 4, jnp.int32)
  logits, _ = model.apply({'params': params}, prompt[:1], rnn.init_carry(cfg, 1))
  probs = np.asarray(jax.nn.softmax(logits[0, -1]))
  out = np.asarray(decoding.generate_from_family(_Family(cfg), params, prompt,
                                                 jax.random.PRNGKey(2), 1))
  np.testing.assert_allclose(np.bincount(out[:, 0], minlength=17) / len(out), probs, atol=0.03)


def test_generate_from_family_runs_the_transformer_loop_too():
  cfg = transformer.TransformerConfig(vocab_size=23, d_model=16, num_heads=2, num_layers=2,
                                      d_ff=24, max_len=32, dropout_rate=0.0)
  prompt = jnp.array([[1, 5, 7, 2], [3, 3, 9, 4]], jnp.int32)
  params = nn.meta.unbox(transformer.TransformerLM(cfg).init(jax.random.key(0),
                                                             prompt)['params'])
  kw = dict(temperature=0.9, top_k=5, top_p=0.9)
  got = decoding.generate_from_family(_Family(cfg), params, prompt, jax.random.PRNGKey(1), 5,
                                      **kw)
  want = decoding.generate(params, prompt, jax.random.PRNGKey(1), config=cfg, num_new=5, **kw)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_family_without_lm_decoder_cannot_generate():
  from lmjax.models import rnn_seq2seq
  fam = _Family(rnn_seq2seq.RNNSeq2SeqConfig(vocab_size=11))
  with pytest.raises(UserError, match='cannot generate'):
    decoding.generate_from_family(fam, {}, jnp.zeros((1, 2), jnp.int32), jax.random.PRNGKey(0),
                                  3)
