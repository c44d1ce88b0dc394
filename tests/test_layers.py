"""The shared Transformer layers (lmjax.models.layers) against numpy and against each other."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import attention, layers

D, V = 8, 11


def test_embed_matches_numpy():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(V, D)).astype(np.float32)
  pos_table = rng.normal(size=(16, D)).astype(np.float32)
  tokens = np.array([[1, 4, 9], [0, 2, 2]])
  positions = np.array([[0, 1, 2], [3, 0, 1]])
  half = D // 2
  angles = positions[..., None] * np.exp(-np.log(10000.0) * np.arange(half) / half)
  sines = np.concatenate([np.sin(angles), np.cos(angles)], -1)
  base = table[tokens] * np.sqrt(D)
  for kind, want in (('learned', base + pos_table[positions]), ('sinusoidal', base + sines),
                     ('rotary', base)):
    got = layers.embed(jnp.asarray(table), jnp.asarray(tokens), jnp.asarray(positions), kind,
                       jnp.asarray(pos_table))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_decode_mask_is_causal_over_the_cache():
  pos, mask = layers.decode_mask(jnp.int32(3), 2, 2, 6)
  np.testing.assert_array_equal(np.asarray(pos), [[3, 4], [3, 4]])
  want = np.arange(6)[None, :] <= np.array([3, 4])[:, None]  # [T, C]
  np.testing.assert_array_equal(np.asarray(mask), np.broadcast_to(want, (2, 1, 2, 6)))


def test_unstack_layers_slices_every_stack():
  params = {'embedding': jnp.ones((V, D)), 'enc': {'w': jnp.arange(6.0).reshape(3, 2)},
            'dec': {'w': jnp.arange(4.0).reshape(2, 2)}}
  out = layers.unstack_layers(params, {'enc': (3, 'enc'), 'dec': (2, 'decoder')})
  assert sorted(out) == ['decoder_0', 'decoder_1', 'embedding', 'enc_0', 'enc_1', 'enc_2']
  np.testing.assert_array_equal(np.asarray(out['enc_2']['w']), [4.0, 5.0])
  np.testing.assert_array_equal(np.asarray(out['decoder_0']['w']), [0.0, 1.0])


@pytest.mark.parametrize('scan', [True, False])
def test_block_stack_bidirectional_sees_the_future_causal_does_not(scan):
  """One Block type: the mask alone makes it a causal decoder or a bidirectional encoder."""
  cfg = layers.LayerConfig(d_model=D, num_heads=2, d_ff=12, num_layers=2, scan_layers=scan)

  class Stack(nn.Module):
    causal: bool

    @nn.compact
    def __call__(self, x):
      b, t, _ = x.shape
      pos = jnp.broadcast_to(jnp.arange(t), (b, t))
      mask = (attention.causal_mask(pos, pos) if self.causal
              else jnp.ones((b, 1, t, t), bool))
      stack = layers.layer_stack(layers.Block, cfg, True, 3, scan_name='layers',
                                 layer_prefix='layer')
      return layers.apply_stack(stack, scan, x, None, mask, pos, None, cache_prefix='layer')[0]

  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 5, D)), jnp.float32)
  x2 = x.at[:, 3:].set(0.5)  # change the future of positions 0..2
  params = Stack(True).init(jax.random.key(0), x)['params']
  assert ('layers' in params) == scan and ('layer_1' in params) != scan
  for causal in (True, False):
    a, b = (np.asarray(Stack(causal).apply({'params': params}, v)) for v in (x, x2))
    assert np.allclose(a[:, :3], b[:, :3], atol=1e-6) == causal
