"""Model families and how the tasks build them from config.model.

A family is a module class with a frozen config dataclass, plus an adapter that the tasks
call: `apply(variables, inputs, carry, rngs, deterministic) -> (logits, carry)`. Stateful families
(RNNs under truncated BPTT) carry a recurrent state between windows; the Transformer's carry is
None.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from lmjax.errors import UserError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# config.model fields of every family, read by the trainer, not the family:
# init_embeddings (a word-vector file for the token embedding tables, lmjax/warm_start.py)
# and freeze_embeddings (those tables get no updates).
EMBEDDING_INIT_FIELDS = ('init_embeddings', 'freeze_embeddings')


@dataclasses.dataclass(frozen=True)
class LMFamily:
  """What the tasks need of a model family.

  init(rng, tokens [B, T]) -> variables;
  apply(variables, tokens, carry, rngs, deterministic) -> (logits [B, T, V], carry).
  """
  config: Any  # the family's frozen config dataclass
  init: Callable[..., Any]
  apply: Callable[..., Any]
  stateful: bool  # carries a recurrent state between consecutive windows (truncated BPTT)
  init_carry: Callable[[int], Any]  # batch_size -> carry pytree (None when not stateful)
  # Sequence-to-sequence families take the batch dict (inputs, decoder_inputs, ...) where a
  # language model takes tokens, and decode through `decoder(params) -> (init_state, step)`:
  # init_state(inputs [B, S], max_len) -> state (every leaf [B, ...]);
  # step(tokens [B], state, t) -> (logits [B, V], state). See lmjax.decoding.
  seq2seq: bool = False
  input_keys: tuple = ('inputs',)
  decoder: Optional[Callable[[Any], Any]] = None
  # Encoder families (BERT, bidirectional RNNs) also give contextual states for the encoder
  # tasks (classification, masked LM, sentence embeddings):
  # encode(variables, batch, rngs, deterministic) -> (hidden [B, T, D] float32, pooled [B, D]
  # or None), batch = {'inputs' [B, T] int32 (0 = padding), 'token_types' [B, T] int32,
  # 'mask' [B, T] bool (True at real tokens)}; the encoder's parameters sit under 'encoder'.
  encode: Optional[Callable[..., Any]] = None

  def model_inputs(self, batch: dict) -> Any:
    if not self.seq2seq:
      return batch['inputs']
    return {k: batch[k] for k in self.input_keys if k in batch}


def dataclass_from_config(cls, model_cfg: Any, **extra) -> Any:
  """Build a frozen config dataclass from config.model, naming unknown fields.

  config.model.dtype ('float32' | 'bfloat16') is the matmul input dtype: the dataclass's
  compute_dtype (Transformer) or matmul_dtype (RNN); accumulation stays float32.
  """
  names = {f.name for f in dataclasses.fields(cls)}
  values = dict(extra)
  for key, value in model_cfg.items():
    if key in ('name',) + EMBEDDING_INIT_FIELDS:
      continue
    if key == 'dtype':
      if value not in DTYPES:
        raise UserError(f'config.model.dtype: {value!r} is not one of {sorted(DTYPES)}')
      key = 'compute_dtype' if 'compute_dtype' in names else 'matmul_dtype'
      value = DTYPES[value]
    if key not in names:
      raise UserError(f'config.model.{key}: not a field of {cls.__name__} '
                      f'(model {model_cfg.name!r})')
    values[key] = tuple(value) if isinstance(value, list) else value
  try:
    return cls(**values)
  except UserError as e:
    if str(e).startswith('config.model'):
      raise
    raise UserError(f'config.model: {e}') from e


def _transformer_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0):
  del source_vocab_size
  from lmjax.models import transformer
  cfg = dataclass_from_config(transformer.TransformerConfig, model_cfg, vocab_size=vocab_size)
  if cfg.d_model % cfg.num_heads:
    raise UserError(f'config.model.num_heads={cfg.num_heads} does not divide '
                    f'config.model.d_model={cfg.d_model}')
  if cfg.position not in ('learned', 'sinusoidal', 'rotary'):
    raise UserError(f'config.model.position: {cfg.position!r} is not learned, sinusoidal '
                    'or rotary')
  if cfg.remat not in transformer.REMAT_POLICIES:
    raise UserError(f'config.model.remat: {cfg.remat!r} is not one of '
                    f'{sorted(transformer.REMAT_POLICIES)}')
  return cfg


def _transformer(cfg: Any) -> LMFamily:
  from lmjax.models import transformer
  models = {det: transformer.TransformerLM(cfg, det) for det in (True, False)}

  def apply(variables, tokens, carry, rngs, deterministic):
    return models[deterministic].apply(variables, tokens, rngs=rngs), carry

  return LMFamily(config=cfg, init=lambda rng, tokens: models[True].init(rng, tokens),
                  apply=apply, stateful=False, init_carry=lambda b: None)


def _rnn_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0):
  del source_vocab_size
  from lmjax.models import rnn
  return dataclass_from_config(rnn.RNNLMConfig, model_cfg, vocab_size=vocab_size)


def _rnn(cfg: Any) -> LMFamily:
  from lmjax.models import rnn
  model = rnn.RNNLM(cfg)

  def init(rng, tokens):
    return model.init(rng, tokens, rnn.init_carry(cfg, tokens.shape[0]))

  def apply(variables, tokens, carry, rngs, deterministic):
    return model.apply(variables, tokens, carry, deterministic=deterministic, rngs=rngs)

  return LMFamily(config=cfg, init=init, apply=apply, stateful=True,
                  init_carry=lambda b: rnn.init_carry(cfg, b))


ENCDEC_PACKED_KEYS = ('inputs', 'decoder_inputs', 'inputs_segmentation', 'targets_segmentation',
                      'inputs_position', 'targets_position')


def _encoder_decoder_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0):
  from lmjax.models import encoder_decoder as ed
  return dataclass_from_config(ed.EncoderDecoderConfig, model_cfg, vocab_size=vocab_size,
                               source_vocab_size=source_vocab_size)


def _encoder_decoder(cfg: Any) -> LMFamily:
  from lmjax.models import encoder_decoder as ed
  models = {det: ed.EncoderDecoder(cfg, det) for det in (True, False)}

  def apply(variables, inputs, carry, rngs, deterministic):
    return models[deterministic].apply(variables, **inputs, rngs=rngs), carry

  def decoder(params):
    p, c = ed.unstack_layers(params, cfg)
    return (lambda inputs, max_len: ed.init_decode_state(p, c, inputs, max_len),
            lambda tokens, state, t: ed.decode_step(p, c, tokens, state, t))

  return LMFamily(config=cfg, init=lambda rng, inputs: models[True].init(rng, **inputs),
                  apply=apply, stateful=False, init_carry=lambda b: None, seq2seq=True,
                  input_keys=ENCDEC_PACKED_KEYS, decoder=decoder)


def _rnn_seq2seq_config(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0):
  from lmjax.models import rnn_seq2seq as rs
  return dataclass_from_config(rs.RNNSeq2SeqConfig, model_cfg, vocab_size=vocab_size,
                               source_vocab_size=source_vocab_size)


def _rnn_seq2seq(cfg: Any) -> LMFamily:
  from lmjax.models import rnn_seq2seq as rs
  models = {det: rs.RNNSeq2Seq(cfg, det) for det in (True, False)}

  def apply(variables, inputs, carry, rngs, deterministic):
    return models[deterministic].apply(variables, inputs['inputs'], inputs['decoder_inputs'],
                                       rngs=rngs), carry

  def decoder(params):
    model = models[True]

    def init_state(inputs, max_len):
      del max_len  # the recurrent state does not grow
      memory = model.apply({'params': params}, inputs, method=rs.RNNSeq2Seq.encode)
      return model.apply({'params': params}, memory, method=rs.RNNSeq2Seq.init_decode_state)

    def step(tokens, state, t):
      del t
      return model.apply({'params': params}, state, tokens, method=rs.RNNSeq2Seq.decode_step)

    return init_state, step

  return LMFamily(
      config=cfg, init=lambda rng, inputs: models[True].init(
          rng, inputs['inputs'], inputs['decoder_inputs']),
      apply=apply, stateful=False, init_carry=lambda b: None, seq2seq=True,
      input_keys=('inputs', 'decoder_inputs'), decoder=decoder)


# name -> (config dataclass from config.model, family from that dataclass, packs rows)
def _from_module(module_name: str):
  """(config, family) builders of a family whose module defines them itself:
  `model_config(model_cfg, vocab_size, source_vocab_size) -> frozen dataclass` and
  `family(cfg) -> LMFamily`."""
  import importlib  # pylint: disable=g-import-not-at-top
  module = lambda: importlib.import_module(module_name)
  return (lambda *a, **k: module().model_config(*a, **k), lambda cfg: module().family(cfg))


FAMILIES = {'transformer': (_transformer_config, _transformer, False),
            'rnn': (_rnn_config, _rnn, False),
            'encoder_decoder': (_encoder_decoder_config, _encoder_decoder, True),
            'rnn_seq2seq': (_rnn_seq2seq_config, _rnn_seq2seq, False),
            'bert': (*_from_module('lmjax.models.bert'), False),
            'rnn_encoder': (*_from_module('lmjax.models.rnn_encoder'), False)}


def _entry(model_cfg: Any):
  if model_cfg.name not in FAMILIES:
    raise UserError(f'config.model.name: unknown model {model_cfg.name!r} '
                    f'(one of {sorted(FAMILIES)})')
  return FAMILIES[model_cfg.name]


def backend_defaults(model_cfg: Any) -> str:
  """'backend B' and what the model's custom_vjp option resolves to there (hand-written
  backward passes, attention.use_custom_vjp), for the start-up line."""
  line = f'backend {jax.default_backend()}'
  if model_cfg.name not in FAMILIES:  # n-gram and word-vector models: no such option
    return line
  from lmjax.models import attention  # pylint: disable=g-import-not-at-top
  option = model_cfg.get('custom_vjp', 'auto')
  on = attention.use_custom_vjp(option)
  return (f'{line}: hand-written backward passes {"on" if on else "off"} '
          f'(model.custom_vjp={option}{", on for CPU only" if option == "auto" else ""})')


def check_model_config(model_cfg: Any, seq_len: int) -> None:
  """Config errors of config.model, before any data is read (the vocabulary is not known yet
  and does not matter to them): only the frozen dataclass is built."""
  cfg = _entry(model_cfg)[0](model_cfg, vocab_size=2)
  limit = getattr(cfg, 'max_len', None)
  if limit is not None and seq_len > limit:
    raise UserError(f'config.seq_len={seq_len} exceeds config.model.max_len={limit}')


def accepts_packing(model_cfg: Any) -> bool:
  """Whether the model takes packed rows (several pairs per row, with segment ids)."""
  return _entry(model_cfg)[2]


def build_lm(model_cfg: Any, vocab_size: int, source_vocab_size: int = 0) -> LMFamily:
  """The family of config.model; source_vocab_size > 0 (seq2seq): separate vocabularies."""
  make_config, make_family, _ = _entry(model_cfg)
  return make_family(make_config(model_cfg, vocab_size, source_vocab_size))


def max_len(family: LMFamily) -> Optional[int]:
  return getattr(family.config, 'max_len', None)
