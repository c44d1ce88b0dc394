"""Transformer encoder-decoder for translation (Vaswani et al. 2017), pre-LayerNorm.

Axis legend:
  B batch, S source length, T target length, D embed (d_model), H heads, K head dim,
  F mlp (d_ff), V vocab, L layers (stacked when scanned), C cache length.

The encoder is a stack of the shared self-attention block (`layers.Block`, the decoder-only
model's block) under a bidirectional mask; the decoder block (`CrossAttentionBlock`) adds
cross-attention over the encoder output. Embedding, positions, the layer stack and the logits
head are lmjax.models.layers, shared with the decoder-only model. Source and target share one embedding over a joint vocabulary, tied to the output
projection (`tie_embeddings`), as in Press & Wolf (2017) and the base Transformer; with
separate vocabularies (`source_vocab_size` > 0) the source has its own embedding table.

Packed rows: several sentence pairs may share a row. `*_segmentation` [B, S|T] numbers the pairs
of a row 1, 2, ... (0 = padding) and `*_position` restarts at 0 for each pair; attention stays
within a segment (source and target segment n belong together). Unpacked batches derive
segmentation from `tokens != 0`.

Decoding: `encode` once, `init_decode_state` projects every decoder layer's cross-attention
keys/values once and allocates the self-attention caches, then `decode_step` advances all rows
by one token (see lmjax.decoding's greedy and beam search, which tile and reorder the state
along its leading axis).
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import UserError
from lmjax.models import attention, layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
  """Hyper-parameters (defaults: Transformer base, Vaswani et al. 2017 Table 3)."""
  vocab_size: int  # the joint vocabulary, or the target's when source_vocab_size > 0
  source_vocab_size: int = 0  # > 0: a separate source vocabulary with its own embedding
  d_model: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  d_ff: int = 2048
  max_len: int = 256  # longest source or target row (learned positions, decoding)
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  position: str = 'sinusoidal'  # sinusoidal | learned
  tie_embeddings: bool = True  # output projection = the shared embedding's transpose
  scan_layers: bool = True
  remat: str = 'none'
  compute_dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  # Hand-written matmul backward (attention.matmul): 'auto' (on for CPU) | 'on' | 'off'.
  custom_vjp: str = 'auto'

  @property
  def attention_layers(self) -> int:
    """Attention blocks per token for FLOP counts: encoder self, decoder self and cross."""
    return self.num_encoder_layers + 2 * self.num_decoder_layers

  def __post_init__(self):
    if self.d_model % self.num_heads:
      raise UserError(f'config.model.num_heads={self.num_heads} does not divide '
                      f'config.model.d_model={self.d_model}')
    if self.position not in ('sinusoidal', 'learned'):
      raise UserError(f'config.model.position: {self.position!r} is not sinusoidal or learned')
    if self.remat not in layers.REMAT_POLICIES:
      raise UserError(f'config.model.remat: {self.remat!r} is not one of '
                      f'{sorted(layers.REMAT_POLICIES)}')
    if self.custom_vjp not in attention.CUSTOM_VJP:
      raise UserError(f'config.model.custom_vjp: {self.custom_vjp!r} is not one of '
                      f'{attention.CUSTOM_VJP}')

  def layer_config(self, num_layers: int) -> layers.LayerConfig:
    """The shared layers' view of this config; resolves custom_vjp (call at trace time)."""
    return layers.LayerConfig(
        d_model=self.d_model, num_heads=self.num_heads, d_ff=self.d_ff, num_layers=num_layers,
        dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
        scan_layers=self.scan_layers, remat=self.remat, compute_dtype=self.compute_dtype,
        param_dtype=self.param_dtype, custom_vjp=attention.use_custom_vjp(self.custom_vjp))


def segment_mask(q_seg: Array, kv_seg: Array) -> Array:
  """[B, 1, T, S]: query and key in the same (non-padding) segment."""
  return (q_seg[:, None, :, None] == kv_seg[:, None, None, :]) & (kv_seg[:, None, None, :] > 0)


def _segments(tokens: Array, segmentation: Optional[Array]) -> Array:
  return (tokens != 0).astype(jnp.int32) if segmentation is None else segmentation


def _positions(tokens: Array, positions: Optional[Array]) -> Array:
  if positions is None:
    return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return positions


class CrossAttentionBlock(nn.Module):
  """x + SelfAttn(LN(x)), x + CrossAttn(LN(x), encoded), x + MLP(LN(x)).

  Signature fits nn.scan: (x, cache) -> (x, cache); the cache is {'self': {k, v},
  'cross': {k, v}} while decoding (cross keys/values precomputed), None in training.
  """
  config: layers.LayerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, cache: Optional[dict], encoded: Optional[Array],
               self_mask: Array, cross_mask: Array, cache_index: Optional[Array]):
    cfg = self.config
    det = self.deterministic
    drop = lambda h: nn.Dropout(cfg.dropout_rate)(h, deterministic=det)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))  # [B, T, D]
    h = layers.layer_norm('ln_self')(x)
    h, self_cache = layers.attention_layer(cfg, 'self_attn')(
        h, h, self_mask, cache=None if cache is None else cache['self'],
        cache_index=cache_index, deterministic=det)
    x = x + drop(h)
    h = layers.layer_norm('ln_cross')(x)
    h, _ = layers.attention_layer(cfg, 'cross_attn')(
        h, encoded, cross_mask, cache=None if cache is None else cache['cross'],
        deterministic=det)
    x = x + drop(h)
    h = layers.Mlp(cfg, det, name='mlp')(layers.layer_norm('ln_mlp')(x))
    x = x + drop(h)
    new_cache = None if cache is None else {'self': self_cache, 'cross': cache['cross']}
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), new_cache


class EncoderDecoder(nn.Module):
  """(inputs [B, S], decoder_inputs [B, T]) -> logits [B, T, V] (float32)."""
  config: EncoderDecoderConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    d = cfg.d_model
    self.embedding = layers.embedding_param(self, 'embedding', cfg.vocab_size, d,
                                            cfg.param_dtype)  # [V, D]
    self.pos_embedding = (layers.position_param(self, cfg.max_len, d, cfg.param_dtype)
                          if cfg.position == 'learned' else None)
    if cfg.source_vocab_size:
      self.source_embedding = layers.embedding_param(
          self, 'source_embedding', cfg.source_vocab_size, d, cfg.param_dtype)  # [V_src, D]
    if not cfg.tie_embeddings:
      self.logits_w = layers.logits_param(self, d, cfg.vocab_size, cfg.param_dtype)  # [D, V]
    self.enc_cfg = cfg.layer_config(cfg.num_encoder_layers)
    self.dec_cfg = cfg.layer_config(cfg.num_decoder_layers)
    # The encoder block is the decoder-only model's block; positions are unused (no rotary).
    self.encoder = layers.layer_stack(layers.Block, self.enc_cfg, self.deterministic, 3)
    self.decoder = layers.layer_stack(CrossAttentionBlock, self.dec_cfg, self.deterministic, 4)
    self.encoder_ln = layers.layer_norm()
    self.decoder_ln = layers.layer_norm()
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def _embed(self, tokens: Array, positions: Array, source: bool = False) -> Array:
    cfg = self.config
    table = self.source_embedding if source and cfg.source_vocab_size else self.embedding
    x = layers.embed(table, tokens, positions, cfg.position, self.pos_embedding)  # [B, T, D]
    x = self.dropout(x, deterministic=self.deterministic)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

  def encode(self, inputs: Array, inputs_segmentation: Optional[Array] = None,
             inputs_position: Optional[Array] = None) -> Array:
    """inputs [B, S] -> encoded [B, S, D]."""
    seg = _segments(inputs, inputs_segmentation)
    pos = _positions(inputs, inputs_position)
    x = self._embed(inputs, pos, source=True)
    mask = segment_mask(seg, seg)  # [B, 1, S, S], bidirectional
    x, _ = layers.apply_stack(self.encoder, self.config.scan_layers, x, None, mask, pos, None,
                              cache_prefix='encoder')
    return self.encoder_ln(x)

  def decode(self, encoded: Optional[Array], inputs_segmentation: Array,
             decoder_inputs: Array, targets_segmentation: Optional[Array] = None,
             targets_position: Optional[Array] = None, *, cache: Optional[dict] = None,
             cache_index: Optional[Array] = None):
    """Teacher-forced logits [B, T, V]; with a cache, (logits, cache) for one step.

    inputs_segmentation [B, S] is the source's segment ids (or `inputs != 0`). While decoding
    `encoded` is None: the cross keys/values are in the cache.
    """
    cfg = self.config
    b, t = decoder_inputs.shape
    if cache is None:
      seg = _segments(decoder_inputs, targets_segmentation)
      # Index-causal within a segment: positions restart per packed pair, indices do not.
      idx = jnp.broadcast_to(jnp.arange(t), (b, t))
      self_mask = attention.causal_mask(idx, idx) & segment_mask(seg, seg)  # [B, 1, T, T]
      cross_mask = segment_mask(seg, inputs_segmentation)  # [B, 1, T, S]
      pos = _positions(decoder_inputs, targets_position)
    else:
      first = cache['layers'] if cfg.scan_layers else cache['decoder_0']
      cache_len = first['self']['k'].shape[-1]
      pos, self_mask = layers.decode_mask(cache_index, b, t, cache_len)  # [B, T], [B,1,T,C]
      cross_mask = (inputs_segmentation > 0)[:, None, None, :]  # [B, 1, 1, S]
    x = self._embed(decoder_inputs, pos)
    x, new_cache = layers.apply_stack(self.decoder, cfg.scan_layers, x, cache, encoded,
                                      self_mask, cross_mask, cache_index,
                                      cache_prefix='decoder')
    x = self.decoder_ln(x)
    w = self.embedding if cfg.tie_embeddings else self.logits_w
    logits = layers.logits(x, w, cfg.tie_embeddings, cfg.compute_dtype,
                           self.dec_cfg.custom_vjp)  # [B, T, V]
    return logits if cache is None else (logits, new_cache)

  def __call__(self, inputs: Array, decoder_inputs: Array,
               inputs_segmentation: Optional[Array] = None,
               targets_segmentation: Optional[Array] = None,
               inputs_position: Optional[Array] = None,
               targets_position: Optional[Array] = None) -> Array:
    encoded = self.encode(inputs, inputs_segmentation, inputs_position)
    return self.decode(encoded, _segments(inputs, inputs_segmentation), decoder_inputs,
                       targets_segmentation, targets_position)


def unstack_layers(params: dict, config: EncoderDecoderConfig):
  """Scanned parameters -> per-layer ('encoder_i', 'decoder_i') ones, for decoding."""
  if not config.scan_layers:
    return params, config
  out = layers.unstack_layers(params, {'encoder': (config.num_encoder_layers, 'encoder'),
                                       'decoder': (config.num_decoder_layers, 'decoder')})
  return out, dataclasses.replace(config, scan_layers=False, remat='none')


def init_decode_state(params: dict, config: EncoderDecoderConfig, inputs: Array,
                      max_len: int) -> dict:
  """Encode inputs [B, S] and build the decoder state for `decode_step` (per-layer params).

  Every leaf has leading axis B: {'inputs_segmentation': [B, S],
  'decoder_i': {'self': {k [B, H, K, C], v [B, H, C, K]},
  'cross': {k [B, H, K, S], v [B, H, S, K]}}}.
  """
  assert not config.scan_layers, 'call unstack_layers first'
  model = EncoderDecoder(config)
  encoded = model.apply({'params': params}, inputs, method=EncoderDecoder.encode)  # [B, S, D]
  b = inputs.shape[0]
  state = {'inputs_segmentation': (inputs != 0).astype(jnp.int32)}
  for i in range(config.num_decoder_layers):
    state[f'decoder_{i}'] = {
        'self': attention.init_cache(b, config.num_heads, config.d_model // config.num_heads,
                                     max_len),
        'cross': attention.project_kv(params[f'decoder_{i}']['cross_attn'], encoded,
                                      config.compute_dtype,
                                      custom_vjp=config.custom_vjp)}
  return state


def decode_step(params: dict, config: EncoderDecoderConfig, tokens: Array, state: dict,
                t: Array):
  """tokens [B] at position t -> (logits [B, V], state). Per-layer params, as above."""
  model = EncoderDecoder(config)
  cache = {k: v for k, v in state.items() if k != 'inputs_segmentation'}
  logits, cache = model.apply({'params': params}, None, state['inputs_segmentation'],
                              tokens[:, None], cache=cache, cache_index=t,
                              method=EncoderDecoder.decode)
  return logits[:, 0], dict(cache, inputs_segmentation=state['inputs_segmentation'])
