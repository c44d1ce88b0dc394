"""The hand-written cross-entropy backward against autodiff of a log_softmax transcription."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import losses


def reference(logits, targets, ls):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return (1.0 - ls) * nll - ls * logp.mean(axis=-1)


@pytest.mark.parametrize('ls', [0.0, 0.1])
def test_values_and_gradients_match_autodiff(ls):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(3.0 * rng.normal(size=(3, 5, 37)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 37, size=(3, 5)), jnp.int32)
  weights = jnp.asarray(rng.uniform(size=(3, 5)), jnp.float32)  # a non-uniform cotangent

  np.testing.assert_allclose(losses.cross_entropy(logits, targets, ls),
                             reference(logits, targets, ls), rtol=1e-5, atol=1e-5)
  got = jax.grad(lambda z: (losses.cross_entropy(z, targets, ls) * weights).sum())(logits)
  want = jax.grad(lambda z: (reference(z, targets, ls) * weights).sum())(logits)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # softmax - onehot rows sum to zero: the gradient moves mass, it does not add any
  np.testing.assert_allclose(got.sum(-1), 0.0, atol=1e-5)


def test_bfloat16_logits_keep_their_dtype_and_float32_loss():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 4, 11)), jnp.bfloat16)
  targets = jnp.asarray(rng.integers(0, 11, size=(2, 4)), jnp.int32)
  nll = losses.cross_entropy(logits, targets)
  assert nll.dtype == jnp.float32
  g = jax.grad(lambda z: losses.cross_entropy(z, targets).sum())(logits)
  assert g.dtype == jnp.bfloat16
  want = jax.grad(lambda z: reference(z, targets, 0.0).sum())(logits.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(g, np.float32), want, atol=1e-2)


@pytest.mark.parametrize('ls', [0.0, 0.1])
def test_custom_vjp_off_is_plain_autodiff_of_the_same_forward(ls):
  """custom_vjp=False (a model's custom_vjp='off', or 'auto' off the CPU) gives the same
  values and gradients through autodiff."""
  rng = np.random.default_rng(2)
  logits = jnp.asarray(2.0 * rng.normal(size=(2, 6, 19)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 19, size=(2, 6)), jnp.int32)
  on = lambda z: losses.cross_entropy(z, targets, ls, custom_vjp=True).sum()
  off = lambda z: losses.cross_entropy(z, targets, ls, custom_vjp=False).sum()
  assert float(on(logits)) == pytest.approx(float(off(logits)), rel=1e-6)
  np.testing.assert_allclose(jax.grad(on)(logits), jax.grad(off)(logits), rtol=1e-5, atol=1e-6)

