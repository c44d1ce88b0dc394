"""Decoder-only Transformer language model (pre-LayerNorm, GPT-style).

Axis legend:
  B batch, T length, D embed (d_model), H heads, K head dim, F mlp (d_ff), V vocab,
  L layers (stacked when the layer stack is scanned), C cache length.

The model is a pure function of its parameters: `model.apply({'params': p}, tokens)`.
Every parameter carries logical axis names (vocab, embed, heads, kv, mlp, layers) and the main
activations are constrained to (batch, length, embed); the config's rules map these onto the
device mesh. Incremental decoding passes a preallocated key/value cache in and out
(`init_cache`, then `__call__(..., cache=cache, cache_index=i)`).
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.models import attention

Array = jax.Array

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the decoder-only Transformer (frozen: hashable, no kwarg plumbing)."""
  vocab_size: int
  d_model: int = 512
  num_heads: int = 8
  num_layers: int = 6
  d_ff: int = 2048
  max_len: int = 1024
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  position: str = 'learned'  # learned | sinusoidal | rotary
  tie_embeddings: bool = True
  scan_layers: bool = True
  remat: str = 'none'  # a key of REMAT_POLICIES
  compute_dtype: Any = jnp.float32  # matmul input dtype; accumulation is always float32
  param_dtype: Any = jnp.float32

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


def _ln(name: Optional[str] = None) -> nn.LayerNorm:
  return nn.LayerNorm(
      name=name, epsilon=1e-5,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))


def sinusoidal_positions(positions: Array, d_model: int) -> Array:
  """Vaswani et al. (2017) sinusoids: [B, T] positions -> [B, T, D]."""
  half = d_model // 2
  inv = np.exp(-np.log(10000.0) * np.arange(half) / half)  # [D/2]
  angles = positions[..., None].astype(jnp.float32) * inv  # [B, T, D/2]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Mlp(nn.Module):
  """Position-wise feed-forward: D -> F (GELU) -> D."""
  config: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
    w_in = self.param('wi', nn.with_logical_partitioning(init, ('embed', 'mlp')),
                      (cfg.d_model, cfg.d_ff), cfg.param_dtype)
    b_in = self.param('bi', nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)),
                      (cfg.d_ff,), cfg.param_dtype)
    w_out = self.param('wo', nn.with_logical_partitioning(init, ('mlp', 'embed')),
                       (cfg.d_ff, cfg.d_model), cfg.param_dtype)
    b_out = self.param('bo', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                       (cfg.d_model,), cfg.param_dtype)
    h = attention.matmul('btd,df->btf', x, w_in, cfg.compute_dtype) + b_in  # [B, T, F]
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    h = jax.nn.gelu(h, approximate=True)
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    return attention.matmul('btf,fd->btd', h, w_out, cfg.compute_dtype) + b_out  # [B, T, D]


class DecoderBlock(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)). Signature fits nn.scan: (x, cache) -> (x, cache)."""
  config: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, cache: Optional[dict], mask: Array, positions: Array,
               cache_index: Optional[Array]):
    cfg = self.config
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))  # [B, T, D]
    h = _ln('ln_attn')(x)
    h, cache = attention.MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim,
        dropout_rate=cfg.attention_dropout_rate, rotary=cfg.position == 'rotary',
        compute_dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype, name='attn')(
            # Keys are projected from this chunk only (earlier ones are in the cache), so
            # their rotary positions are the queries' positions.
            h, h, mask, q_positions=positions, kv_positions=positions,
            cache=cache, cache_index=cache_index, deterministic=self.deterministic)
    x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    h = Mlp(cfg, self.deterministic, name='mlp')(_ln('ln_mlp')(x))
    x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), cache


class TransformerLM(nn.Module):
  """tokens [B, T] -> logits [B, T, V] (float32)."""
  config: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens: Array, positions: Optional[Array] = None, *,
               cache: Optional[dict] = None, cache_index: Optional[Array] = None):
    """Full-sequence (cache=None) or incremental decoding (cache from `init_cache`).

    With a cache, tokens [B, T] are placed at positions cache_index .. cache_index+T-1 and
    the returned cache holds their keys/values; returns (logits, cache).
    """
    cfg = self.config
    b, t = tokens.shape
    if cache is not None:
      cache_len = jax.tree.leaves(cache)[0].shape[-1]  # k is [(L,) B, H, K, C]
      positions = cache_index + jnp.broadcast_to(jnp.arange(t), (b, t))  # [B, T]
      kv_positions = jnp.broadcast_to(jnp.arange(cache_len), (b, cache_len))  # [B, C]
      mask = attention.causal_mask(positions, kv_positions)  # [B, 1, T, C]
    else:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
      mask = attention.causal_mask(positions, positions)  # [B, 1, T, T]

    embedding = self.param(
        'embedding', nn.with_logical_partitioning(
            nn.initializers.normal(stddev=cfg.d_model ** -0.5), ('vocab', 'embed')),
        (cfg.vocab_size, cfg.d_model), cfg.param_dtype)
    x = jnp.take(embedding, tokens, axis=0) * np.sqrt(cfg.d_model)  # [B, T, D]
    if cfg.position == 'learned':
      pos_emb = self.param(
          'pos_embedding', nn.with_logical_partitioning(
              nn.initializers.normal(stddev=0.02), (None, 'embed')),
          (cfg.max_len, cfg.d_model), cfg.param_dtype)
      x = x + jnp.take(pos_emb, positions, axis=0)
    elif cfg.position == 'sinusoidal':
      x = x + sinusoidal_positions(positions, cfg.d_model)
    x = x.astype(jnp.float32)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    block = DecoderBlock
    if cfg.remat != 'none':
      block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      # One compiled layer body, parameters stacked on a leading 'layers' axis. Besides
      # compile time, the loop boundary stops XLA CPU from fusing the residual backward chain
      # into every weight-gradient dot (see DESIGN.md performance notes).
      stack = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True,
                                                                        'dropout': True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                      length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
      x, layer_cache = stack(cfg, self.deterministic, name='layers')(
          x, None if cache is None else cache['layers'], mask, positions, cache_index)
      new_cache = {'layers': layer_cache}
    else:
      # One cache entry per layer: slicing and re-stacking a [L, ...] cache would copy it
      # every decoded token.
      new_cache = {}
      for i in range(cfg.num_layers):
        name = f'layer_{i}'
        x, new_cache[name] = block(cfg, self.deterministic, name=name)(
            x, None if cache is None else cache[name], mask, positions, cache_index)

    x = _ln('ln_final')(x)
    if cfg.tie_embeddings:
      logits = attention.matmul('btd,vd->btv', x, embedding, cfg.compute_dtype)  # [B, T, V]
    else:
      w = self.param('logits', nn.with_logical_partitioning(
          nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
          ('embed', 'vocab')), (cfg.d_model, cfg.vocab_size), cfg.param_dtype)
      logits = attention.matmul('btd,dv->btv', x, w, cfg.compute_dtype)  # [B, T, V]
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    if cache is not None:
      return logits, new_cache
    return logits


def init_cache(config: TransformerConfig, batch_size: int, max_len: int) -> dict:
  """Zeroed cache for all layers, laid out as the parameters are.

  Scanned layers: {'layers': {'k': [L, B, H, K, C], 'v': [L, B, H, C, K]}}; otherwise one
  {'k', 'v'} entry per 'layer_i'.
  """
  one = lambda: attention.init_cache(batch_size, config.num_heads, config.head_dim, max_len)
  if config.scan_layers:
    return {'layers': jax.tree.map(
        lambda a: jnp.broadcast_to(a, (config.num_layers,) + a.shape), one())}
  return {f'layer_{i}': one() for i in range(config.num_layers)}


def unstack_layers(params: dict, config: TransformerConfig):
  """Scanned parameters and config -> the equivalent per-layer ('layer_i') ones.

  Decoding runs one token at a time, where a scan over layers costs about 2x (measured on
  CPU: the loop's per-step slicing and copying dominates such small steps).
  """
  if not config.scan_layers:
    return params, config
  out = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(config.num_layers):
    out[f'layer_{i}'] = jax.tree.map(lambda a, i=i: a[i], params['layers'])
  return out, dataclasses.replace(config, scan_layers=False, remat='none')
