"""Encoder-only Transformer (BERT, Devlin et al. 2019) with its masked-LM head and pooler.

Axis legend:
  B batch, T length, D embed (d_model), H heads, K head dim, F mlp (d_ff), V vocab,
  Y token types (segments), L layers (stacked when the layer stack is scanned).

    embeddings  x = LN(word[tokens] + position[t] + token_type[types])          [B, T, D]
    layers      num_layers x layers.Block under the padding mask (post-LN: x = LN(x + Attn(x)),
                x = LN(x + MLP(x)); erf GELU; biases on every projection)       [B, T, D]
    pooler      tanh(W_p · x[:, 0] + b_p)                                       [B, D]
    mlm_head    LN(gelu(W_t · x + b_t)) · wordᵀ + b                            [B, T, V]

With the defaults (and the fields of a Hugging Face config.json, lmjax.hf.model_fields) this
is BERT exactly: learned absolute positions, token types, LayerNorm epsilon 1e-12, exact erf
GELU, post-LN blocks. For models trained from scratch, norm='pre' (x + Attn(LN(x)), a final
LayerNorm, no embedding LayerNorm), position='rotary' and type_vocab_size=0 (no token types)
are options.

Parameters: the encoder's under 'encoder' ({'embeddings', 'layers' | 'layer_i', 'pooler',
'ln_final'}), the masked-LM head's under 'mlm_head', so that a classifier ({'encoder',
'classifier'}) warm-starts from an MLM run or an import by parameter path (config.init_from).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import models
from lmjax.errors import UserError
from lmjax.models import attention, layers

Array = jax.Array

NORMS = ('post', 'pre')
POSITIONS = ('learned', 'rotary')
GELUS = ('erf', 'tanh')


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyper-parameters (defaults: BERT-base, Devlin et al. 2019)."""
  vocab_size: int
  d_model: int = 768
  num_heads: int = 12
  num_layers: int = 12
  d_ff: int = 3072
  max_len: int = 512  # learned position rows (max_position_embeddings)
  type_vocab_size: int = 2  # 0: no token-type embedding
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  norm: str = 'post'  # post (BERT) | pre
  position: str = 'learned'  # learned | rotary
  layer_norm_eps: float = 1e-12
  gelu: str = 'erf'  # erf (BERT's exact GELU) | tanh
  pooler: bool = True  # dense + tanh on the first token
  # N(0, σ²) init of the embeddings, pooler and MLM head, as BERT's (the blocks keep the
  # shared layers' fan-in init).
  initializer_range: float = 0.02
  scan_layers: bool = True
  remat: str = 'none'  # a key of layers.REMAT_POLICIES
  compute_dtype: Any = jnp.float32  # matmul input dtype; accumulation is always float32
  param_dtype: Any = jnp.float32
  # Hand-written matmul backward (attention.matmul): 'auto' (on for CPU) | 'on' | 'off'.
  custom_vjp: str = 'auto'

  def __post_init__(self):
    for field, value, choices in (('norm', self.norm, NORMS),
                                  ('position', self.position, POSITIONS),
                                  ('gelu', self.gelu, GELUS),
                                  ('remat', self.remat, tuple(layers.REMAT_POLICIES)),
                                  ('custom_vjp', self.custom_vjp, attention.CUSTOM_VJP)):
      if value not in choices:
        raise UserError(f'config.model.{field}: {value!r} is not one of {choices}')
    for field in ('vocab_size', 'd_model', 'num_heads', 'num_layers', 'd_ff', 'max_len'):
      if getattr(self, field) < 1:
        raise UserError(f'config.model.{field}={getattr(self, field)} must be at least 1')
    if self.type_vocab_size < 0:
      raise UserError(f'config.model.type_vocab_size={self.type_vocab_size} must be >= 0')
    if self.d_model % self.num_heads:
      raise UserError(f'config.model.num_heads={self.num_heads} does not divide '
                      f'config.model.d_model={self.d_model}')
    if self.position == 'rotary' and self.head_dim % 2:
      raise UserError(f'config.model.position=rotary needs an even head dim (d_model/num_heads'
                      f'={self.head_dim})')
    if not self.layer_norm_eps > 0:
      raise UserError(f'config.model.layer_norm_eps={self.layer_norm_eps} must be positive')

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  def layer_config(self) -> layers.LayerConfig:
    """The shared layers' view of this config; resolves custom_vjp (call at trace time)."""
    return layers.LayerConfig(
        d_model=self.d_model, num_heads=self.num_heads, d_ff=self.d_ff,
        num_layers=self.num_layers, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, rotary=self.position == 'rotary',
        scan_layers=self.scan_layers, remat=self.remat, compute_dtype=self.compute_dtype,
        param_dtype=self.param_dtype, custom_vjp=attention.use_custom_vjp(self.custom_vjp),
        attention_bias=True, post_ln=self.norm == 'post', layer_norm_eps=self.layer_norm_eps,
        gelu_approximate=self.gelu == 'tanh')


def _normal(cfg: BertConfig, axes: tuple):
  return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes)


def _zeros(axes: tuple):
  return nn.with_logical_partitioning(nn.initializers.zeros, axes)


class Dense(nn.Module):
  """x [..., D] -> x · kernel + bias, kernel [D, E] ~ N(0, σ²) (the pooler, the MLM transform)."""
  features: int
  config: BertConfig
  axes: tuple = ('embed', 'mlp')

  @nn.compact
  def __call__(self, x: Array, custom_vjp: bool) -> Array:
    cfg = self.config
    kernel = self.param('kernel', _normal(cfg, self.axes), (x.shape[-1], self.features),
                        cfg.param_dtype)
    bias = self.param('bias', _zeros(self.axes[1:]), (self.features,), cfg.param_dtype)
    eq = '...d,de->...e'
    if x.ndim == 3:
      eq = 'btd,de->bte'
    elif x.ndim == 2:
      eq = 'bd,de->be'
    return attention.matmul(eq, x, kernel, cfg.compute_dtype, custom_vjp=custom_vjp) + bias


class Embeddings(nn.Module):
  """tokens, token types [B, T] -> [B, T] embeddings (LN for post-LN models), before dropout."""
  config: BertConfig

  @nn.compact
  def __call__(self, tokens: Array, token_types: Array, positions: Array) -> Array:
    cfg = self.config
    word = self.param('word', _normal(cfg, ('vocab', 'embed')), (cfg.vocab_size, cfg.d_model),
                      cfg.param_dtype)  # [V, D]
    pos_table = None
    if cfg.position == 'learned':
      pos_table = self.param('position', _normal(cfg, (None, 'embed')),
                             (cfg.max_len, cfg.d_model), cfg.param_dtype)  # [max_len, D]
    x = layers.embed(word, tokens, positions, cfg.position, pos_table, scale=False)  # [B, T, D]
    if cfg.type_vocab_size:
      types = self.param('token_type', _normal(cfg, (None, 'embed')),
                         (cfg.type_vocab_size, cfg.d_model), cfg.param_dtype)  # [Y, D]
      x = x + jnp.take(types, token_types, axis=0).astype(jnp.float32)
    if cfg.norm == 'post':
      x = layers.layer_norm('ln', cfg.layer_norm_eps)(x)
    return x


class BertEncoder(nn.Module):
  """(inputs, token_types, mask [B, T]) -> (hidden [B, T, D] float32, pooled [B, D] or None)."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs: Array, token_types: Array, mask: Array):
    cfg = self.config
    lcfg = cfg.layer_config()
    b, t = inputs.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))  # [B, T]
    x = Embeddings(cfg, name='embeddings')(inputs, token_types, positions)  # [B, T, D]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    # Every query attends to the real keys of its row (padded queries too, as BERT does: their
    # outputs are never read).
    attn_mask = attention.padding_mask(jnp.ones_like(mask, bool), mask)  # [B, 1, T, T]
    stack = layers.layer_stack(layers.Block, lcfg, self.deterministic, 3, scan_name='layers',
                               layer_prefix='layer')
    x, _ = layers.apply_stack(stack, cfg.scan_layers, x, None, attn_mask, positions, None,
                              cache_prefix='layer')  # [B, T, D]
    if cfg.norm == 'pre':
      x = layers.layer_norm('ln_final', cfg.layer_norm_eps)(x)
    pooled = None
    if cfg.pooler:
      pooled = jnp.tanh(Dense(cfg.d_model, cfg, ('embed', 'mlp'), name='pooler')(
          x[:, 0], lcfg.custom_vjp))  # [B, D]
    return x, pooled


class BertMLM(nn.Module):
  """batch -> masked-LM logits [B, T, V] float32 (the decoder tied to the word embeddings)."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs: Array, token_types: Array, mask: Array) -> Array:
    cfg = self.config
    custom_vjp = attention.use_custom_vjp(cfg.custom_vjp)
    encoder = BertEncoder(cfg, self.deterministic, name='encoder')
    x, _ = encoder(inputs, token_types, mask)  # [B, T, D]
    word = nn.meta.unbox(encoder.variables['params']['embeddings']['word'])  # [V, D]
    head = MlmHead(cfg, name='mlm_head')
    return head(x, word, custom_vjp)


class MlmHead(nn.Module):
  """x [B, T, D] -> LN(gelu(x · W + b)) · wordᵀ + bias, [B, T, V] float32."""
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, word: Array, custom_vjp: bool) -> Array:
    cfg = self.config
    h = Dense(cfg.d_model, cfg, ('embed', 'mlp'), name='dense')(x, custom_vjp)  # [B, T, D]
    h = jax.nn.gelu(h, approximate=cfg.gelu == 'tanh')
    h = layers.layer_norm('ln', cfg.layer_norm_eps)(h)
    bias = self.param('bias', _zeros(('vocab',)), (cfg.vocab_size,), cfg.param_dtype)  # [V]
    return layers.logits(h, word, True, cfg.compute_dtype, custom_vjp) + bias  # [B, T, V]


def model_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0) -> BertConfig:
  """config.model -> BertConfig; config.model.vocab_size, when given, may exceed the
  tokenizer's (an embedding table padded past the vocabulary), never fall short of it."""
  del source_vocab_size
  cfg = models.dataclass_from_config(BertConfig, model_cfg, vocab_size=vocab_size)
  if cfg.vocab_size < vocab_size:
    raise UserError(f'config.model.vocab_size={cfg.vocab_size} is smaller than the '
                    f"tokenizer's vocabulary ({vocab_size})")
  return cfg


def _batch_arrays(batch):
  """(inputs, token_types, mask) of a batch dict; a bare [B, T] array is inputs alone (no
  token types, mask inputs != 0)."""
  if not isinstance(batch, dict):
    batch = {'inputs': batch}
  inputs = batch['inputs']
  mask = batch['mask'] if 'mask' in batch else inputs != 0
  types = batch['token_types'] if 'token_types' in batch else jnp.zeros_like(inputs)
  return inputs, types, mask


def family(cfg: BertConfig) -> models.LMFamily:
  """The BERT family: apply -> (MLM logits [B, T, V], None); encode -> (hidden, pooled).

  init, apply and encode take the batch dict {'inputs', 'token_types', 'mask'} (or inputs
  [B, T] alone); encode reads only variables['params']['encoder'].
  """
  mlm = {det: BertMLM(cfg, det) for det in (True, False)}
  encoders = {det: BertEncoder(cfg, det) for det in (True, False)}

  def init(rng, batch):
    return mlm[True].init(rng, *_batch_arrays(batch))

  def apply(variables, batch, carry, rngs, deterministic):
    return mlm[deterministic].apply(variables, *_batch_arrays(batch), rngs=rngs), carry

  def encode(variables, batch, rngs, deterministic):
    params = {'params': variables['params']['encoder']}
    return encoders[deterministic].apply(params, *_batch_arrays(batch), rngs=rngs)

  return models.LMFamily(config=cfg, init=init, apply=apply, stateful=False,
                         init_carry=lambda b: None, encode=encode)



def mlm_logits(cfg: BertConfig, params: dict, hidden: Array) -> Array:
  """The masked-LM head on hidden states [B, P, D] (e.g. gathered at the masked positions):
  logits [B, P, V] float32, decoder tied to params['encoder']['embeddings']['word']."""
  word = params['encoder']['embeddings']['word']  # [V, D]
  return MlmHead(cfg).apply({'params': params['mlm_head']}, hidden, word,
                            attention.use_custom_vjp(cfg.custom_vjp))
