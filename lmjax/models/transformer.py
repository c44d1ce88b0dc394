"""Decoder-only Transformer language model (pre-LayerNorm, GPT-style).

Axis legend:
  B batch, T length, D embed (d_model), H heads, K head dim, F mlp (d_ff), V vocab,
  L layers (stacked when the layer stack is scanned), C cache length, P prompt length.

The model is a pure function of its parameters: `model.apply({'params': p}, tokens)`.
Every parameter carries logical axis names (vocab, embed, heads, kv, mlp, layers) and the main
activations are constrained to (batch, length, embed); the config's rules map these onto the
device mesh. Incremental decoding passes a preallocated key/value cache in and out
(`init_cache`, then `__call__(..., cache=cache, cache_index=i)`); `lm_decoder` wraps both
for lmjax.decoding. Its layers (embedding, block, stack, logits head) are lmjax.models.layers,
shared with the encoder-decoder.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import UserError
from lmjax.models import attention, layers

Array = jax.Array

REMAT_POLICIES = layers.REMAT_POLICIES


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
  # Hand-written matmul backward (attention.matmul): 'auto' (on for CPU) | 'on' | 'off'.
  custom_vjp: str = 'auto'

  def __post_init__(self):
    if self.custom_vjp not in attention.CUSTOM_VJP:
      raise UserError(f'config.model.custom_vjp: {self.custom_vjp!r} is not one of '
                      f'{attention.CUSTOM_VJP}')

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  def lm_decoder(self, params: dict):
    """(prefill, step) for lmjax.decoding's sampling loop, see `lm_decoder`."""
    return lm_decoder(params, self)

  def layer_config(self) -> layers.LayerConfig:
    """The shared layers' view of this config; resolves custom_vjp (call at trace time)."""
    return layers.LayerConfig(
        d_model=self.d_model, num_heads=self.num_heads, d_ff=self.d_ff,
        num_layers=self.num_layers, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, rotary=self.position == 'rotary',
        scan_layers=self.scan_layers, remat=self.remat, compute_dtype=self.compute_dtype,
        param_dtype=self.param_dtype, custom_vjp=attention.use_custom_vjp(self.custom_vjp))


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
    lcfg = cfg.layer_config()
    b, t = tokens.shape
    if cache is not None:
      cache_len = jax.tree.leaves(cache)[0].shape[-1]  # k is [(L,) B, H, K, C]
      positions, mask = layers.decode_mask(cache_index, b, t, cache_len)  # [B, T], [B,1,T,C]
    else:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
      mask = attention.causal_mask(positions, positions)  # [B, 1, T, T]

    embedding = layers.embedding_param(self, 'embedding', cfg.vocab_size, cfg.d_model,
                                       cfg.param_dtype)  # [V, D]
    pos_table = None
    if cfg.position == 'learned':
      pos_table = layers.position_param(self, cfg.max_len, cfg.d_model, cfg.param_dtype)
    x = layers.embed(embedding, tokens, positions, cfg.position, pos_table)  # [B, T, D]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    stack = layers.layer_stack(layers.Block, lcfg, self.deterministic, 3, scan_name='layers',
                               layer_prefix='layer')
    x, new_cache = layers.apply_stack(stack, cfg.scan_layers, x, cache, mask, positions,
                                      cache_index, cache_prefix='layer')

    x = layers.layer_norm('ln_final')(x)
    w = embedding if cfg.tie_embeddings else layers.logits_param(
        self, cfg.d_model, cfg.vocab_size, cfg.param_dtype)
    logits = layers.logits(x, w, cfg.tie_embeddings, cfg.compute_dtype,
                           lcfg.custom_vjp)  # [B, T, V]
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
  out = layers.unstack_layers(params, {'layers': (config.num_layers, 'layer')})
  return out, dataclasses.replace(config, scan_layers=False, remat='none')


def lm_decoder(params: dict, config: TransformerConfig):
  """(prefill, step) for lmjax.decoding's sampling loop; the state is the key/value cache.

    prefill(prompt [B, P], max_len) -> (logits [B, V] after the last prompt token, cache)
    step(tokens [B], cache, t) -> (logits [B, V], cache), tokens at position t

  Layers are unstacked first (a scan over layers costs ~2x per decoded token on CPU).
  """
  params, config = unstack_layers(params, config)
  model = TransformerLM(config)

  def prefill(prompt: Array, max_len: int):
    cache = init_cache(config, prompt.shape[0], max_len)
    logits, cache = model.apply({'params': params}, prompt, cache=cache, cache_index=0)
    return logits[:, -1], cache  # [B, V]

  def step(tokens: Array, cache: dict, t: Array):
    logits, cache = model.apply({'params': params}, tokens[:, None], cache=cache,
                                cache_index=t)  # [B, 1, V]
    return logits[:, 0], cache

  return prefill, step
