"""attention.matmul: its 2-D custom-VJP path against jax autodiff of a plain einsum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import attention

# (equation, x shape, w shape): every weight matmul the models use, plus odd layouts.
CASES = [
    ('btd,dhk->bthk', (2, 5, 12), (12, 3, 4)),
    ('bsd,dhk->bhsk', (2, 5, 12), (12, 3, 4)),
    ('bthk,hkd->btd', (2, 5, 3, 4), (3, 4, 12)),
    ('btd,df->btf', (2, 5, 12), (12, 20)),
    ('btf,fd->btd', (2, 5, 20), (20, 12)),
    ('btd,vd->btv', (2, 5, 12), (30, 12)),
    ('btd,dv->btv', (2, 5, 12), (12, 30)),
    ('bd,dg->bg', (3, 12), (12, 16)),
    ('btd,khd->bkht', (2, 5, 12), (4, 3, 12)),
]


def _plain(eq, x, w, dtype):
  return jnp.einsum(eq, x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


@pytest.mark.parametrize('eq,xs,ws', CASES)
def test_matmul_value_and_grads_match_einsum_autodiff(eq, xs, ws):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=xs), jnp.float32)
  w = jnp.asarray(rng.normal(size=ws), jnp.float32)
  assert attention._dense_plan(eq) is not None, eq
  y_ref = _plain(eq, x, w, jnp.float32)
  ct = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)

  def loss(f):
    return lambda x, w: jnp.sum(f(eq, x, w, jnp.float32) * ct)

  y = attention.matmul(eq, x, w, jnp.float32)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
  g = jax.jit(jax.grad(loss(attention.matmul), argnums=(0, 1)))(x, w)
  g_ref = jax.grad(loss(_plain), argnums=(0, 1))(x, w)
  for a, b in zip(g, g_ref):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('eq,xs,ws', CASES[:6])
def test_bf16_matmul_grads_close_to_f32(eq, xs, ws):
  """bf16 inputs, f32 accumulation: gradients are float32 and within bf16 rounding."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=xs), jnp.float32)
  w = jnp.asarray(rng.normal(size=ws), jnp.float32)
  f = lambda x, w: jnp.sum(attention.matmul(eq, x, w, jnp.bfloat16) ** 2)
  f_ref = lambda x, w: jnp.sum(_plain(eq, x, w, jnp.float32) ** 2)
  np.testing.assert_allclose(float(f(x, w)), float(f_ref(x, w)), rtol=2e-2)
  for a, b in zip(jax.grad(f, argnums=(0, 1))(x, w), jax.grad(f_ref, argnums=(0, 1))(x, w)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=5e-2,
                               atol=5e-2 * float(jnp.abs(b).max()))


def test_batched_contractions_fall_back_to_einsum():
  assert attention._dense_plan('bthk,bhks->bhts') is None
  assert attention._dense_plan('bhts,bhsk->bthk') is None
  assert attention._dense_plan('bd,d->b') is not None
