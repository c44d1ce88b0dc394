"""attention.matmul: its 2-D custom-VJP path against jax autodiff of a plain einsum, and the
custom_vjp option that chooses between them."""

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


def _uses_custom_vjp(f, *args) -> bool:
  return 'custom_vjp' in str(jax.make_jaxpr(f)(*args))


@pytest.mark.parametrize('eq,xs,ws', CASES)
def test_matmul_value_and_grads_match_einsum_autodiff(eq, xs, ws):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=xs), jnp.float32)
  w = jnp.asarray(rng.normal(size=ws), jnp.float32)
  assert _uses_custom_vjp(lambda x, w: attention.matmul(eq, x, w, jnp.float32,
                                                        custom_vjp=True), x, w), eq
  y_ref = _plain(eq, x, w, jnp.float32)
  ct = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)

  def loss(f):
    return lambda x, w: jnp.sum(f(eq, x, w, jnp.float32) * ct)

  y = attention.matmul(eq, x, w, jnp.float32, custom_vjp=True)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
  custom = lambda *a: attention.matmul(*a, custom_vjp=True)
  g = jax.jit(jax.grad(loss(custom), argnums=(0, 1)))(x, w)
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
  f = lambda x, w: jnp.sum(attention.matmul(eq, x, w, jnp.bfloat16, custom_vjp=True) ** 2)
  f_ref = lambda x, w: jnp.sum(_plain(eq, x, w, jnp.float32) ** 2)
  np.testing.assert_allclose(float(f(x, w)), float(f_ref(x, w)), rtol=2e-2)
  for a, b in zip(jax.grad(f, argnums=(0, 1))(x, w), jax.grad(f_ref, argnums=(0, 1))(x, w)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=5e-2,
                               atol=5e-2 * float(jnp.abs(b).max()))


def test_batched_contractions_fall_back_to_einsum():
  q, k = jnp.ones((2, 3, 4, 5)), jnp.ones((2, 4, 5, 6))
  on = lambda eq: lambda a, b: attention.matmul(eq, a, b, jnp.float32, custom_vjp=True)
  assert not _uses_custom_vjp(on('bthk,bhks->bhts'), q, k)
  assert not _uses_custom_vjp(on('bhts,bhsk->bthk'), jnp.ones((2, 4, 3, 6)), jnp.ones((2, 4, 6, 5)))
  assert _uses_custom_vjp(on('bd,d->b'), jnp.ones((2, 3)), jnp.ones((3,)))


@pytest.mark.parametrize('eq,xs,ws', CASES[:3])
def test_custom_vjp_off_is_the_plain_einsum(eq, xs, ws):
  """Off: no custom rule in the program, values and gradients bitwise those of the einsum."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=xs), jnp.float32)
  w = jnp.asarray(rng.normal(size=ws), jnp.float32)
  off = lambda x, w: jnp.sum(attention.matmul(eq, x, w, jnp.bfloat16, custom_vjp='off') ** 2)
  ref = lambda x, w: jnp.sum(_plain(eq, x, w, jnp.bfloat16) ** 2)
  assert not _uses_custom_vjp(off, x, w)
  got, want = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, w) for f in (off, ref))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_custom_vjp_option_resolves_by_backend(monkeypatch):
  assert attention.use_custom_vjp('on') and not attention.use_custom_vjp('off')
  assert attention.use_custom_vjp(True) and not attention.use_custom_vjp(False)
  assert attention.use_custom_vjp('auto') == (jax.default_backend() == 'cpu')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not attention.use_custom_vjp('auto')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert attention.use_custom_vjp('auto')
  with pytest.raises(ValueError, match='custom_vjp'):
    attention.use_custom_vjp('yes')
