"""Transformer layers shared by the decoder-only LM (transformer.py) and the encoder-decoder.

Axis legend (shape comments and einsum strings):
  B batch, T length (queries), S key/value length, D embed (d_model), H heads, K head dim,
  F mlp (d_ff), V vocab, L layers (stacked when the stack is scanned), C cache length.

What lives here, once: LayerNorm (`layer_norm`), token embedding plus learned or sinusoidal
positions (`embedding_param`, `position_param`, `embed`), the logits head tied to the
embedding or not (`logits_param`, `logits`), the position-wise MLP (`Mlp`), the self-attention
block (`Block`: causal for a decoder, bidirectional for an encoder, the mask says which; pre-
or post-LayerNorm), the
layer stack (`layer_stack` / `apply_stack`: one scanned body or a list of layers, with the
remat policies of `REMAT_POLICIES`), `unstack_layers` for decoding and the mask of a cached
decoding step (`decode_mask`).

Parameters are declared on the calling module (the helpers take it as their first argument)
so that every model keeps its own, flat parameter names: flax derives init values from module
paths and creation order, so moving code here changes neither.
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
class LayerConfig:
  """What a block and its layer stack read (each model derives it from its own config)."""
  d_model: int
  num_heads: int
  d_ff: int
  num_layers: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  rotary: bool = False  # rotary positions inside self-attention (decoder-only LM)
  scan_layers: bool = True
  remat: str = 'none'  # a key of REMAT_POLICIES
  compute_dtype: Any = jnp.float32  # matmul input dtype; accumulation is always float32
  param_dtype: Any = jnp.float32
  custom_vjp: bool = True  # resolved (attention.use_custom_vjp) by the model at trace time
  # BERT's options (the defaults are the pre-LN GPT-style block the other models use):
  attention_bias: bool = False  # biases on the Q/K/V/out projections
  post_ln: bool = False  # LN(x + Attn(x)), LN(x + MLP(x)) (Devlin et al. 2019) instead of pre-LN
  layer_norm_eps: float = 1e-5
  gelu_approximate: bool = True  # tanh GELU; False: the exact erf GELU (BERT)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


# ----------------------------------------------------------------------------------------
# Normalisation, embeddings and the logits head.
# ----------------------------------------------------------------------------------------


def layer_norm(name: Optional[str] = None, epsilon: float = 1e-5) -> nn.LayerNorm:
  """LayerNorm over D with logically partitioned scale and bias."""
  return nn.LayerNorm(
      name=name, epsilon=epsilon,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))


def sinusoidal_positions(positions: Array, d_model: int) -> Array:
  """Vaswani et al. (2017) sinusoids: [B, T] positions -> [B, T, D]."""
  half = d_model // 2
  inv = np.exp(-np.log(10000.0) * np.arange(half) / half)  # [D/2]
  angles = positions[..., None].astype(jnp.float32) * inv  # [B, T, D/2]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def embedding_param(module: nn.Module, name: str, vocab_size: int, d_model: int,
                    param_dtype: Any) -> Array:
  """Declares a token embedding table [V, D] ~ N(0, 1/D) on `module`."""
  return module.param(
      name, nn.with_logical_partitioning(
          nn.initializers.normal(stddev=d_model ** -0.5), ('vocab', 'embed')),
      (vocab_size, d_model), param_dtype)


def position_param(module: nn.Module, max_len: int, d_model: int, param_dtype: Any) -> Array:
  """Declares the learned position table 'pos_embedding' [max_len, D] ~ N(0, 0.02²)."""
  return module.param(
      'pos_embedding', nn.with_logical_partitioning(
          nn.initializers.normal(stddev=0.02), (None, 'embed')),
      (max_len, d_model), param_dtype)


def embed(table: Array, tokens: Array, positions: Array, position: str,
          pos_table: Optional[Array] = None, *, scale: bool = True) -> Array:
  """tokens [B, T] -> √D · table[tokens] + positions, [B, T, D] float32 (before dropout).

  position: 'learned' (rows of pos_table), 'sinusoidal', or anything else for none here
  (rotary positions enter inside attention). scale=False: no √D factor (BERT).
  """
  d_model = table.shape[-1]
  x = jnp.take(table, tokens, axis=0)  # [B, T, D]
  if scale:
    x = x * np.sqrt(d_model)
  if position == 'learned':
    x = x + jnp.take(pos_table, positions, axis=0)
  elif position == 'sinusoidal':
    x = x + sinusoidal_positions(positions, d_model)
  return x.astype(jnp.float32)


def logits_param(module: nn.Module, d_model: int, vocab_size: int, param_dtype: Any) -> Array:
  """Declares the untied output projection 'logits' [D, V] (fan-in truncated normal)."""
  return module.param('logits', nn.with_logical_partitioning(
      nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
      ('embed', 'vocab')), (d_model, vocab_size), param_dtype)


def logits(x: Array, w: Array, tied: bool, compute_dtype: Any, custom_vjp: bool) -> Array:
  """x [B, T, D] -> logits [B, T, V] float32; w is the embedding [V, D] when tied, else [D, V]."""
  eq = 'btd,vd->btv' if tied else 'btd,dv->btv'
  out = attention.matmul(eq, x, w, compute_dtype, custom_vjp=custom_vjp)  # [B, T, V]
  return nn.with_logical_constraint(out, ('batch', 'length', 'vocab'))


# ----------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------


class Mlp(nn.Module):
  """Position-wise feed-forward: D -> F (GELU) -> D."""
  config: LayerConfig
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
    mm = lambda eq, a, w: attention.matmul(eq, a, w, cfg.compute_dtype,
                                           custom_vjp=cfg.custom_vjp)
    h = mm('btd,df->btf', x, w_in) + b_in  # [B, T, F]
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    h = jax.nn.gelu(h, approximate=cfg.gelu_approximate)
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    return mm('btf,fd->btd', h, w_out) + b_out  # [B, T, D]


def attention_layer(cfg: LayerConfig, name: str) -> attention.MultiHeadAttention:
  """The multi-head attention layer of a block (self- or cross-attention) under cfg."""
  return attention.MultiHeadAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim, dropout_rate=cfg.attention_dropout_rate,
      rotary=cfg.rotary, compute_dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
      custom_vjp=cfg.custom_vjp, use_bias=cfg.attention_bias, name=name)


class Block(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)). Signature fits nn.scan: (x, cache) -> (x, cache).

  One block for a causal decoder and a bidirectional encoder: the caller's mask [B, 1, T, S]
  decides. With a cache (decoding), this chunk's keys/values are written at cache_index.
  config.post_ln: LN(x + Attn(x)), then LN(x + MLP(x)) (BERT); same parameter names.
  """
  config: LayerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, cache: Optional[dict], mask: Array, positions: Array,
               cache_index: Optional[Array]):
    cfg = self.config
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))  # [B, T, D]
    drop = lambda h: nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    ln_attn = layer_norm('ln_attn', cfg.layer_norm_eps)
    h = x if cfg.post_ln else ln_attn(x)
    h, cache = attention_layer(cfg, 'attn')(
        # Keys are projected from this chunk only (earlier ones are in the cache), so
        # their rotary positions are the queries' positions.
        h, h, mask, q_positions=positions, kv_positions=positions,
        cache=cache, cache_index=cache_index, deterministic=self.deterministic)
    x = x + drop(h)
    if cfg.post_ln:
      x = ln_attn(x)  # [B, T, D]
    ln_mlp = layer_norm('ln_mlp', cfg.layer_norm_eps)
    h = Mlp(cfg, self.deterministic, name='mlp')(x if cfg.post_ln else ln_mlp(x))
    x = x + drop(h)
    if cfg.post_ln:
      x = ln_mlp(x)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), cache


# ----------------------------------------------------------------------------------------
# The layer stack.
# ----------------------------------------------------------------------------------------


def layer_stack(block: type, cfg: LayerConfig, deterministic: bool, num_broadcast: int, *,
                scan_name: Optional[str] = None, layer_prefix: Optional[str] = None):
  """cfg.num_layers copies of `block`: one scanned module, or a list of modules.

  Scanned, the parameters are stacked on a leading 'layers' axis and compiled once; besides
  compile time, the loop boundary stops XLA CPU from fusing the residual backward chain into
  every weight-gradient dot (DESIGN.md performance notes). `block` takes (x, cache, *args)
  where the num_broadcast args are the same for every layer. Inside a compact method name the
  modules (scan_name; layer_prefix + '_i'); assigned in setup, flax names them from the
  attribute ('<attribute>' scanned, '<attribute>_i' as a list).
  """
  if cfg.remat != 'none':
    block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    scanned = nn.scan(block, variable_axes={'params': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=(0,) + (nn.broadcast,) * num_broadcast, length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
    return scanned(cfg, deterministic, name=scan_name)
  return [block(cfg, deterministic, name=None if layer_prefix is None else f'{layer_prefix}_{i}')
          for i in range(cfg.num_layers)]


def apply_stack(stack, scanned: bool, x: Array, cache: Optional[dict], *args,
                cache_prefix: str):
  """x [B, T, D] through every layer of `layer_stack` -> (x, new cache or None).

  The cache is {'layers': stacked [L, ...]} when scanned, else one entry per layer
  ('<cache_prefix>_i'): slicing and re-stacking a [L, ...] cache would copy it every decoded
  token. None in training.
  """
  if scanned:
    x, layer_cache = stack(x, None if cache is None else cache['layers'], *args)
    return x, None if cache is None else {'layers': layer_cache}
  new_cache = {}
  for i, layer in enumerate(stack):
    name = f'{cache_prefix}_{i}'
    x, new_cache[name] = layer(x, None if cache is None else cache[name], *args)
  return x, None if cache is None else new_cache


def unstack_layers(params: dict, stacks: dict) -> dict:
  """Scanned parameters -> per-layer ones, for decoding.

  stacks: {scanned name: (num_layers, per-layer prefix)}, e.g. {'layers': (6, 'layer')} turns
  params['layers'] ([L, ...] leaves) into params['layer_0'] ... params['layer_5'].
  Decoding runs one token at a time, where a scan over layers costs about 2x (measured on
  CPU: the loop's per-step slicing and copying dominates such small steps).
  """
  out = {k: v for k, v in params.items() if k not in stacks}
  for name, (num_layers, prefix) in stacks.items():
    for i in range(num_layers):
      out[f'{prefix}_{i}'] = jax.tree.map(lambda a, i=i: a[i], params[name])
  return out


def decode_mask(cache_index: Array, batch: int, length: int, cache_len: int):
  """Positions [B, T] of a chunk written at cache_index, and its causal mask over the cache.

  Returns (positions cache_index .. cache_index+T-1 [B, T], mask [B, 1, T, C]).
  """
  positions = cache_index + jnp.broadcast_to(jnp.arange(length), (batch, length))  # [B, T]
  kv_positions = jnp.broadcast_to(jnp.arange(cache_len), (batch, cache_len))  # [B, C]
  return positions, attention.causal_mask(positions, kv_positions)  # [B, 1, T, C]
