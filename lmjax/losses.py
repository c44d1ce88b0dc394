"""Losses shared by the tasks: token cross-entropy with an optional label smoothing.

Axis legend: B batch, T length, V vocab.
"""

import functools

import jax
import jax.numpy as jnp

def cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0,
                  custom_vjp: bool = True):
  """Per-token NLL [B, T] in float32 (with optional label smoothing) of logits [B, T, V].

  With smoothing ls the loss is lse - (1 - ls) z_t - ls mean(z), i.e. (1 - ls) NLL plus ls times
  the cross-entropy to the uniform distribution. With custom_vjp the backward is written by
  hand: the gradient softmax(z) - (1 - ls) onehot - ls / V is one fused pass over the logits,
  where autodiff of log_softmax + gather materialises the log-probabilities, a scattered one-hot
  and the log_softmax backward as separate passes over the [B, T, V] array (the largest
  elementwise tensors of an LM step on a CPU). custom_vjp=False differentiates the same forward
  with autodiff (tests/test_cross_entropy.py checks that both agree); the tasks resolve it from
  the model's custom_vjp option (models.attention.use_custom_vjp: 'auto' is on for the CPU).
  """
  if custom_vjp:
    return _cross_entropy(logits, targets, float(label_smoothing))
  return _cross_entropy_fwd(logits, targets, float(label_smoothing))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits, targets, label_smoothing):
  return _cross_entropy_fwd(logits, targets, label_smoothing)[0]


def _cross_entropy_fwd(logits, targets, label_smoothing):
  z = logits.astype(jnp.float32)                                # [B, T, V]
  lse = jax.nn.logsumexp(z, axis=-1)                            # [B, T]
  z_t = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  nll = lse - z_t
  if label_smoothing:
    nll = nll + label_smoothing * (z_t - z.mean(axis=-1))
  return nll, (logits, targets, lse)


def _cross_entropy_bwd(label_smoothing, res, g):
  logits, targets, lse = res
  vocab = logits.shape[-1]
  p = jnp.exp(logits.astype(jnp.float32) - lse[..., None])     # [B, T, V]
  onehot = targets[..., None] == jnp.arange(vocab, dtype=targets.dtype)
  d = p - jnp.where(onehot, 1.0 - label_smoothing, 0.0) - label_smoothing / vocab
  return (g[..., None] * d).astype(logits.dtype), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)
