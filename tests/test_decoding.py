"""Sampling: cached generation against re-running the full sequence; filters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax import decoding
from lmjax.models import transformer


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
