"""Tests for lmjax.models.rnn: cells vs numpy, scans vs loops, padding, gradients, carries."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.errors import UserError
from lmjax.models import rnn

B, T, D, H = 3, 6, 5, 4


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


# Direct float64 numpy transcriptions of the cell equations (with the bias outside x_proj
# written out, to check the documented meaning of each argument).
def _np_elman(w_x, b, w_h, h, x):
  return np.tanh(x @ w_x + h @ w_h + b)


def _np_lstm(w_x, b, w_h, c, h, x, forget_bias):
  z = x @ w_x + h @ w_h + b
  i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
  c = _sigmoid(f + forget_bias) * c + _sigmoid(i) * np.tanh(g)
  return c, _sigmoid(o) * np.tanh(c)


def _np_gru(w_x, b, w_h, b_h, h, x):
  xp, hp = x @ w_x + b, h @ w_h + b_h
  r = _sigmoid(xp[:, :H] + hp[:, :H])
  z = _sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
  n = np.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
  return (1 - z) * n + z * h


@pytest.mark.parametrize('cell', rnn.CELLS)
def test_cell_step_matches_numpy(cell):
  rng = np.random.default_rng(0)
  g = rnn.NUM_GATES[cell]
  w_x, w_h = rng.normal(size=(D, g * H)), rng.normal(size=(H, g * H))
  b, b_h = rng.normal(size=g * H), rng.normal(size=g * H)
  x, c, h = rng.normal(size=(B, D)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  x_proj = f32(x @ w_x + b)
  if cell == 'elman':
    got, out = rnn.elman_step(f32(w_h), f32(h), x_proj)
    want = _np_elman(w_x, b, w_h, h, x)
    np.testing.assert_allclose(out, got)
  elif cell == 'lstm':
    (got_c, got), out = rnn.lstm_step(f32(w_h), (f32(c), f32(h)), x_proj, forget_bias=1.0)
    want_c, want = _np_lstm(w_x, b, w_h, c, h, x, 1.0)
    np.testing.assert_allclose(got_c, want_c, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out, got)
  else:
    got, out = rnn.gru_step(f32(w_h), f32(b_h), f32(h), x_proj)
    want = _np_gru(w_x, b, w_h, b_h, h, x)
    np.testing.assert_allclose(out, got)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _layer_and_params(cell, reverse=False, **kw):
  layer = rnn.RecurrentLayer(cell=cell, hidden_size=H, forget_bias=0.5, reverse=reverse,
                             initializer='uniform', init_scale=0.5, **kw)
  x = jax.random.normal(jax.random.key(1), (B, T, D))
  return layer, nn.meta.unbox(layer.init(jax.random.key(0), x)), x


@pytest.mark.parametrize('cell', rnn.CELLS)
@pytest.mark.parametrize('reverse', [False, True])
def test_layer_scan_matches_python_loop(cell, reverse):
  layer, variables, x = _layer_and_params(cell, reverse)
  p = variables['params']
  carry0 = jax.tree.map(lambda z: z + 0.3, rnn.zeros_carry(cell, B, H))
  outs, carry = layer.apply(variables, x, carry0)

  x_proj = x @ p['input_kernel'] + p['bias']  # [B, T, G*H]
  step = {
      'elman': functools.partial(rnn.elman_step, p['recurrent_kernel']),
      'lstm': functools.partial(rnn.lstm_step, p['recurrent_kernel'], forget_bias=0.5),
      'gru': functools.partial(rnn.gru_step, p['recurrent_kernel'],
                               p.get('recurrent_bias')),
  }[cell]
  want_carry, want_outs = carry0, [None] * T
  for t in (reversed(range(T)) if reverse else range(T)):
    want_carry, want_outs[t] = step(want_carry, x_proj[:, t])
  np.testing.assert_allclose(outs, jnp.stack(want_outs, 1), atol=1e-5)
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry)):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bidirectional_right_padding_matches_unpadded(cell='lstm'):
  # Masking is cell-agnostic (test_masked_steps_keep_carry covers every cell).
  lengths = [T, 2, 4]
  model = rnn.StackedRNN(cell=cell, hidden_size=H, num_layers=2, bidirectional=True,
                         initializer='uniform', init_scale=0.5, custom_vjp=True)
  x = jax.random.normal(jax.random.key(2), (B, T, D))
  mask = jnp.arange(T)[None, :] < jnp.array(lengths)[:, None]  # [B, T]
  # Garbage in the padding must not matter.
  x = jnp.where(mask[..., None], x, 100.0)
  variables = model.init(jax.random.key(0), x, mask=mask)
  outs, carry = jax.jit(functools.partial(model.apply, mask=mask))(variables, x)
  assert outs.shape == (B, T, 2 * H)
  for b, n in enumerate(lengths):
    alone, alone_carry = model.apply(variables, x[b:b + 1, :n])
    np.testing.assert_allclose(outs[b, :n], alone[0], atol=1e-5)
    np.testing.assert_array_equal(outs[b, n:], 0.0)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(alone_carry)):
      np.testing.assert_allclose(got[b], want[0], atol=1e-5)


@pytest.mark.parametrize('cell', rnn.CELLS)
def test_masked_steps_keep_carry(cell):
  layer, variables, x = _layer_and_params(cell)
  keep = np.array([True, False, True, True, False, False])  # holes anywhere
  mask = jnp.broadcast_to(jnp.asarray(keep), (B, T))
  outs, carry = layer.apply(variables, x, mask=mask)
  want_outs, want_carry = layer.apply(variables, x[:, keep])
  np.testing.assert_allclose(outs[:, keep], want_outs, atol=1e-6)
  np.testing.assert_array_equal(outs[:, ~keep], 0.0)
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry)):
    np.testing.assert_allclose(got, want, atol=1e-6)


def _scan_loss(cell, fast, reverse, params, x_proj, carry, mask, matmul_dtype=None):
  w_h, b_h = params
  final, outs = rnn.recurrent_scan(cell, w_h, b_h, x_proj, carry, mask, forget_bias=0.3,
                                   reverse=reverse, matmul_dtype=matmul_dtype,
                                   custom_vjp=fast)
  # Weight every output and the final carry differently so no gradient path cancels.
  weights = jnp.cos(jnp.arange(outs.size, dtype=outs.dtype)).reshape(outs.shape)
  return (outs * weights).sum() + sum(jnp.sin(c).sum() for c in jax.tree.leaves(final))


def _scan_inputs(cell, dtype, seed=0):
  g = rnn.NUM_GATES[cell]
  k = jax.random.split(jax.random.key(seed), 4)
  w_h = 0.5 * jax.random.normal(k[0], (H, g * H), dtype)
  b_h = 0.5 * jax.random.normal(k[1], (g * H,), dtype) if cell == 'gru' else None
  x_proj = jax.random.normal(k[2], (T, B, g * H), dtype)
  carry = jax.tree.map(lambda z: z + 0.2, rnn.zeros_carry(cell, B, H, dtype))
  mask = jax.random.uniform(k[3], (T, B)) < 0.7
  return (w_h, b_h), x_proj, carry, mask


def test_lstm_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    params, x_proj, carry, _ = _scan_inputs('lstm', jnp.float64)
    args = (params, x_proj, carry)
    loss = jax.jit(lambda *a: _scan_loss('lstm', False, False, *a, None))
    grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
    leaves, treedef = jax.tree.flatten(args)
    rng = np.random.default_rng(0)
    for _ in range(4):  # directional derivatives along random directions
      v = [rng.normal(size=l.shape) for l in leaves]
      shift = lambda s: jax.tree.unflatten(treedef, [l + s * d for l, d in zip(leaves, v)])
      eps = 1e-6
      fd = (loss(*shift(eps)) - loss(*shift(-eps))) / (2 * eps)
      analytic = sum(float((g * d).sum()) for g, d in zip(jax.tree.leaves(grads), v))
      np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize('cell', rnn.CELLS)
def test_custom_vjp_scan_matches_autodiff(cell):
  with jax.enable_x64(True):
    params, x_proj, carry, mask = _scan_inputs(cell, jnp.float64, seed=1)
    for reverse, m in ((False, None), (True, mask)):
      grad = lambda fast: jax.grad(
          functools.partial(_scan_loss, cell, fast, reverse), argnums=(0, 1, 2))(
              params, x_proj, carry, m)
      for got, want in zip(jax.tree.leaves(grad(True)), jax.tree.leaves(grad(False))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_bf16_matmuls_close_to_f32():
  params, x_proj, carry, mask = _scan_inputs('lstm', jnp.float32, seed=2)
  f = lambda fast, mm: jax.value_and_grad(
      functools.partial(_scan_loss, 'lstm', fast, False, matmul_dtype=mm))(
          params, x_proj, carry, mask)
  (l32, g32), (l16, g16), (l16f, g16f) = f(False, None), f(False, jnp.bfloat16), f(
      True, jnp.bfloat16)
  np.testing.assert_allclose(l16, l32, rtol=2e-2)
  np.testing.assert_allclose(l16f, l16, rtol=1e-5)
  for a, b, c in zip(jax.tree.leaves(g32), jax.tree.leaves(g16), jax.tree.leaves(g16f)):
    np.testing.assert_allclose(b, a, atol=5e-2 * np.abs(a).max())
    np.testing.assert_allclose(c, b, atol=2e-2 * np.abs(a).max())


def test_rnnlm_carry_across_halves(cell='lstm'):
  cfg = rnn.RNNLMConfig(vocab_size=11, embed_dim=6, hidden_size=6, num_layers=2, cell=cell,
                        tie_embeddings=True, init_scale=0.3)
  model = rnn.RNNLM(cfg)
  tokens = jax.random.randint(jax.random.key(3), (B, 8), 0, 11)
  variables = model.init(jax.random.key(0), tokens)
  apply = jax.jit(model.apply)
  logits, carry = apply(variables, tokens)
  assert logits.shape == (B, 8, 11) and logits.dtype == jnp.float32
  first, mid = apply(variables, tokens[:, :4], model.initial_carry(B))
  second, last = apply(variables, tokens[:, 4:], mid)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), logits, atol=1e-5)
  for got, want in zip(jax.tree.leaves(last), jax.tree.leaves(carry)):
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_rnnlm_uniform_init_and_dropout():
  cfg = rnn.RNNLMConfig(vocab_size=13, embed_dim=8, hidden_size=8, num_layers=2, cell='gru',
                        dropout=0.5, variational_dropout=True, init_scale=0.07)
  model = rnn.RNNLM(cfg)
  tokens = jnp.zeros((2, 5), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(0), tokens))['params']
  for p in jax.tree.leaves(params):
    assert np.abs(p).max() <= 0.07 and np.abs(p).max() > 0.03
  det, _ = model.apply({'params': params}, tokens)
  drop, _ = model.apply({'params': params}, tokens, deterministic=False,
                        rngs={'dropout': jax.random.key(1)})
  assert np.isfinite(drop).all() and not np.allclose(det, drop)


def test_config_errors_name_the_field():
  with pytest.raises(UserError, match='cell'):
    rnn.RNNLMConfig(cell='transformer')
  with pytest.raises(UserError, match='tie_embeddings'):
    rnn.RNNLMConfig(embed_dim=10, hidden_size=20, tie_embeddings=True)
