"""Bidirectional recurrent encoder (LSTM/GRU/Elman) for the encoder tasks (classification).

Axis legend (rnn.py's letters):
  B  batch
  T  length
  D  embed
  N  hidden width of one direction; the encoder's states are [forward; backward], 2N wide
  V  vocab
  Y  token types (segments of a sentence pair)

Model: tokens -> embedding (+ token-type embedding) -> dropout -> rnn.StackedRNN, bidirectional,
with dropout between layers -> hidden [B, T, 2N]. Padding (token id 0) is masked: the forward
direction keeps its state over padded steps, the backward one starts at each row's last real
token, and padded positions output zeros. There is no pooler (`encode` returns pooled None):
the classification task pools the first token or the mean over real tokens.

Built only from rnn.py's public API (StackedRNN, its cells, initializers and custom VJP). The
family implements `LMFamily.encode`; it has no language-model head (`apply` refuses).
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import models
from lmjax.errors import UserError
from lmjax.models import attention, rnn

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class RNNEncoderConfig:
  """Bidirectional recurrent encoder hyperparameters (config.model, name 'rnn_encoder')."""
  vocab_size: int = 8000
  embed_dim: int = 128
  hidden_size: int = 128  # per direction: the hidden states are 2 * hidden_size wide
  num_layers: int = 1
  cell: str = 'lstm'
  dropout: float = 0.1  # on the embeddings and between layers
  init: str = 'orthogonal'  # rnn.INITS
  init_scale: float = 0.1  # the 'uniform' init's half-width
  forget_bias: float = 1.0
  type_vocab_size: int = 2  # token-type (segment) embeddings for sentence pairs; 0: none
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None  # e.g. jnp.bfloat16 operands, f32 accumulation
  custom_vjp: str = 'auto'  # the recurrence's hand-written backward (rnn.recurrent_scan)

  def __post_init__(self):
    if self.cell not in rnn.CELLS:
      raise UserError(f'config.model.cell: {self.cell!r} is not one of {rnn.CELLS}')
    if self.init not in rnn.INITS:
      raise UserError(f'config.model.init: {self.init!r} is not one of {rnn.INITS}')
    if not 0.0 <= self.dropout < 1.0:
      raise UserError(f'config.model.dropout={self.dropout}: expected 0 <= dropout < 1')
    for field in ('vocab_size', 'embed_dim', 'hidden_size', 'num_layers'):
      if getattr(self, field) < 1:
        raise UserError(f'config.model.{field}={getattr(self, field)}: must be positive')
    if self.type_vocab_size < 0:
      raise UserError(f'config.model.type_vocab_size={self.type_vocab_size}: must be >= 0')
    if self.custom_vjp not in attention.CUSTOM_VJP:
      raise UserError(f'config.model.custom_vjp: {self.custom_vjp!r} is not one of '
                      f'{attention.CUSTOM_VJP}')


class RNNEncoder(nn.Module):
  """tokens [B, T], token_types [B, T], mask [B, T] bool -> hidden [B, T, 2N]."""
  config: RNNEncoderConfig

  @nn.compact
  def __call__(self, tokens: Array, token_types: Optional[Array], mask: Array, *,
               deterministic: bool = True) -> Array:
    cfg = self.config
    emb_init = (rnn.uniform(cfg.init_scale) if cfg.init == 'uniform'
                else nn.initializers.normal(stddev=0.1))
    embedding = self.param('embedding', nn.with_logical_partitioning(emb_init, ('vocab', 'embed')),
                           (cfg.vocab_size, cfg.embed_dim), cfg.param_dtype)  # [V, D]
    x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)  # [B, T, D]
    if cfg.type_vocab_size:
      types = self.param('type_embedding', nn.with_logical_partitioning(emb_init, (None, 'embed')),
                         (cfg.type_vocab_size, cfg.embed_dim), cfg.param_dtype)  # [Y, D]
      if token_types is None:
        token_types = jnp.zeros_like(tokens)
      x = x + jnp.take(types, token_types, axis=0).astype(cfg.dtype)  # [B, T, D]
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    hidden, _ = rnn.StackedRNN(
        cell=cfg.cell, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        bidirectional=True, dropout=cfg.dropout, forget_bias=cfg.forget_bias,
        initializer=cfg.init, init_scale=cfg.init_scale, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, matmul_dtype=cfg.matmul_dtype,
        custom_vjp=cfg.custom_vjp, name='rnn')(
            x, mask=mask, deterministic=deterministic)  # [B, T, 2N]
    return hidden


def model_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0):
  del source_vocab_size  # one vocabulary
  return models.dataclass_from_config(RNNEncoderConfig, model_cfg, vocab_size=vocab_size)


def family(cfg: RNNEncoderConfig) -> models.LMFamily:
  """The encoder family: parameters under 'encoder'; encode -> (hidden [B, T, 2N], None)."""
  module = RNNEncoder(cfg)

  def init(rng, tokens):
    params = module.init(rng, tokens, jnp.zeros_like(tokens), tokens != 0)['params']
    return {'params': {'encoder': params}}

  def encode(variables, batch, rngs, deterministic):
    hidden = module.apply({'params': variables['params']['encoder']}, batch['inputs'],
                          batch.get('token_types'), batch['mask'],
                          deterministic=deterministic, rngs=rngs or {})
    return hidden.astype(jnp.float32), None

  def apply(variables, tokens, carry, rngs, deterministic):
    del variables, tokens, carry, rngs, deterministic
    raise UserError("config.model.name='rnn_encoder' is a bidirectional encoder with no "
                    "language-model head: use it with config.task='classify'")

  return models.LMFamily(config=cfg, init=init, apply=apply, stateful=False,
                         init_carry=lambda b: None, encode=encode)
