"""Attention RNN encoder-decoder for translation (Bahdanau et al. 2015; Luong et al. 2015).

Axis legend (used in shape comments and einsum strings; H is heads in the Transformer files,
so the recurrent width is N, as in rnn.py):
  B  batch
  S  source length
  T  target length
  D  embed
  N  decoder hidden (recurrent state) width
  E  encoder output width: the two directions' outputs concatenated, E = N
  A  attention width (the Bahdanau/general key width), A = N
  O  attentional-vector width: D with tied embeddings (it feeds the tied output layer), else N
  V  vocab (joint source/target; pad id 0)
  G  gates: 4 for LSTM, 3 for GRU; fused gate axes have width G*N
  I  a decoder layer's input width
  L  decoder layers

Model (y_0 = bos; h̄_j the encoder outputs; s_t the decoder's top-layer hidden):
  encoder   x -> embed -> dropout -> bidirectional StackedRNN with N/2 units per direction
            (so E = N and the 'luong_dot' score h_t · h̄_j needs no projection); source
            padding (x == 0) is masked, so the backward direction starts at each row's real
            end and padded positions output zeros.
  bridge    the initial decoder state of every layer is tanh(W_b [→h_S; ←h_1] + b_b) from the
            top encoder layer's final hidden states (both c and h for an LSTM), so the decoder
            starts from a summary of the source rather than from zeros; Bahdanau's first query
            s_0 needs it to say something about the source.
  step t    input e_t = dropout(embed(y_{t-1})); h̃_0 = 0.
    'bahdanau'  (query = previous state, context fed to the bottom layer)
                c_t = attend(s_{t-1});  s_t = RNN([e_t; c_t (; h̃_{t-1})], s_{t-1})
    'luong_*'   (query = current state)
                s_t = RNN([e_t (; h̃_{t-1})], s_{t-1});  c_t = attend(s_t)
    both        h̃_t = tanh(W_c [c_t; s_t])  (the attentional vector, Luong eq. 5);
                with input feeding h̃_{t-1} joins the bottom layer's input.
  output    logits_t = dropout(h̃_t) W_out + b, W_out = embedding^T when tied (O = D).
  Bahdanau's maxout deep output is replaced by the same attentional layer as Luong's, so the
  variants differ only in the score and in where the context enters.

Scores (lmjax.models.attention: `score_keys`, `score`, `attend`; masked source positions get
-1e10 before the softmax, i.e. exactly zero weight):
  'bahdanau'       e_tj = v_a · tanh(W_a s_{t-1} + U_a h̄_j)     keys U_a h̄_j   [B, S, A]
  'luong_dot'      e_tj = s_t · h̄_j                             keys h̄_j       [B, S, E]
  'luong_general'  e_tj = s_t · (h̄_j W_a)                       keys h̄_j W_a   [B, S, N]
  a_t = softmax_j(e_tj), c_t = Σ_j a_tj h̄_j. Keys do not depend on t and are computed once
  in `encode`. The recurrent cells, their parameters and init schemes are rnn.py's.

Pure-function use (every method works as `model.apply(variables, ..., method=...)`):
  logits = model.apply(v, inputs, decoder_inputs)                   # teacher forcing
  memory = model.apply(v, inputs, method=RNNSeq2Seq.encode)
  state = model.apply(v, memory, method=RNNSeq2Seq.init_decode_state)   # no parameters used
  logits, state = model.apply(v, state, token, method=RNNSeq2Seq.decode_step)

  memory = {'outputs': [B, S, E], 'mask': [B, S] bool, 'keys': [B, S, A] (absent for
            'luong_dot', whose keys are the outputs), 'init_carries': decoder carries}
  state  = {'memory': {'outputs', 'mask'[, 'keys']},
            'carries': tuple over L layers of (c [B, N], h [B, N]) for LSTM or h [B, N] for GRU,
            'feed': h̃_{t-1} [B, O] (kept, and zero-initialised, even without input feeding)}
  Every leaf of memory and state has the batch as its leading axis, so a beam search can tile
  and gather all of them along axis 0.

Teacher forcing scans `decoder_step` (the function `decode_step` calls) over T and projects
all T attentional vectors to the vocabulary in one matmul afterwards, so the two paths are the
same computation. Dropout: on embeddings (source and target), between encoder layers, between
decoder layers (masks drawn before the scan) and on h̃_t before the output projection.
Activations and carries are float32; matmul operands are `matmul_dtype` with float32
accumulation (`attention.matmul`, whose hand-written backward is the `custom_vjp` option; the
encoder's recurrence stays on autodiff).
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import UserError
from lmjax.models import attention, rnn

Array = jax.Array
Dtype = Any

CELLS = ('lstm', 'gru')
ATTENTIONS = attention.SCORES  # 'bahdanau' | 'luong_dot' | 'luong_general'


@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqConfig:
  """Attention encoder-decoder hyperparameters (see the module docstring for the model)."""
  vocab_size: int  # joint source/target vocabulary (shared SentencePiece); pad id is 0
  # > 0: the source has its own vocabulary of this size and its own embedding table (separate
  # SentencePiece models); vocab_size is then the target's.
  source_vocab_size: int = 0
  cell: str = 'lstm'  # 'lstm' | 'gru'
  embed_dim: int = 256
  hidden_size: int = 256  # decoder width N; each encoder direction has N // 2 (N must be even)
  num_encoder_layers: int = 1  # bidirectional layers
  num_decoder_layers: int = 1
  attention: str = 'luong_general'  # 'bahdanau' | 'luong_dot' | 'luong_general'
  input_feeding: bool = True  # previous attentional vector joins the next bottom-layer input
  dropout_rate: float = 0.2
  tie_embeddings: bool = True  # one [V, D] matrix for source (joint vocab), target and output
  init: str = 'uniform'  # 'uniform' | 'gaussian' | 'orthogonal', as in rnn.py
  init_scale: float = 0.1  # half-width of the uniform init
  forget_bias: float = 1.0  # LSTM forget-gate bias (encoder and decoder)
  matmul_dtype: Dtype = jnp.float32  # matmul operand dtype; accumulation is float32
  param_dtype: Dtype = jnp.float32
  max_len: int = 256  # longest source/target; used only for validation by the trainer
  # Hand-written matmul backward (attention.matmul): 'auto' (on for CPU) | 'on' | 'off'.
  custom_vjp: str = 'auto'

  def __post_init__(self):
    def bad(field, message):
      raise UserError(f'config.model.{field}: {message}')

    def choice(field, choices):
      value = getattr(self, field)
      if value not in choices:
        bad(field, f'{value!r} is not one of {choices}')

    def at_least(field, minimum):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bad(field, f'{value!r} must be an integer >= {minimum}')

    choice('cell', CELLS)
    choice('attention', ATTENTIONS)
    choice('init', rnn.INITS)
    choice('custom_vjp', attention.CUSTOM_VJP)
    at_least('vocab_size', 2)
    if self.source_vocab_size:
      at_least('source_vocab_size', 2)
    at_least('embed_dim', 1)
    at_least('hidden_size', 2)
    at_least('num_encoder_layers', 1)
    at_least('num_decoder_layers', 1)
    at_least('max_len', 1)
    if self.hidden_size % 2:
      bad('hidden_size', f'{self.hidden_size} must be even (each encoder direction has '
          'hidden_size // 2 units)')
    for field in ('input_feeding', 'tie_embeddings'):
      if not isinstance(getattr(self, field), bool):
        bad(field, f'{getattr(self, field)!r} is not a bool')
    if not 0.0 <= self.dropout_rate < 1.0:
      bad('dropout_rate', f'{self.dropout_rate!r} is not in [0, 1)')
    if not self.init_scale > 0.0:
      bad('init_scale', f'{self.init_scale!r} must be > 0')
    for field in ('matmul_dtype', 'param_dtype'):
      try:
        ok = jnp.issubdtype(jnp.dtype(getattr(self, field)), jnp.floating)
      except TypeError:
        ok = False
      if not ok:
        bad(field, f'{getattr(self, field)!r} is not a floating-point dtype')

  @property
  def output_width(self) -> int:
    """O: the tied output layer needs h̃ in embedding space."""
    return self.embed_dim if self.tie_embeddings else self.hidden_size

  @property
  def decoder_input_width(self) -> int:
    """Width of the bottom decoder layer's input [e_t; c_t (Bahdanau); h̃_{t-1} (feeding)]."""
    width = self.embed_dim
    if self.attention == 'bahdanau':
      width += self.hidden_size  # the context c_t, E = N
    if self.input_feeding:
      width += self.output_width
    return width


# ----------------------------------------------------------------------------------------
# One decoder step as a pure function.
# ----------------------------------------------------------------------------------------


def _f32(x: Array) -> Array:
  return x.astype(jnp.float32)


def decoder_step(cfg: RNNSeq2SeqConfig, params: dict, memory: dict, state: dict, emb: Array,
                 keep: Optional[Array] = None):
  """Advances the decoder by one target token (no output projection).

  Args:
    cfg: the model config.
    params: {'layers': per-layer {'input_kernel', 'bias', 'recurrent_kernel'
      [, 'recurrent_bias']} (rnn.layer_param_specs), 'attention': {'output_kernel'
      W_c [E + N, O], ...}}.
    memory: {'outputs' [B, S, E], 'mask' [B, S] bool[, 'keys' [B, S, A]]}.
    state: {'carries': per-layer carries, 'feed': h̃_{t-1} [B, O]}.
    emb: the (dropped-out) embedding of the previous target token, [B, D].
    keep: optional inverted-dropout multipliers between decoder layers, [L-1, B, N].

  Returns:
    (new state {'carries', 'feed'}, attentional vector h̃_t [B, O]).
  """
  dt, cv = cfg.matmul_dtype, attention.use_custom_vjp(cfg.custom_vjp)
  mm = lambda eq, a, b: attention.matmul(eq, a, b, dt, custom_vjp=cv)
  att = params['attention']
  values, mask = memory['outputs'], memory['mask']  # [B, S, E], [B, S]
  keys = memory.get('keys', values)  # [B, S, A]
  carries = state['carries']

  def context_for(query):  # [B, N] -> [B, E]
    scores = attention.score(cfg.attention, att, query, keys, dt, custom_vjp=cv)  # [B, S]
    return attention.attend(scores, values, mask, dt, custom_vjp=cv)[0]

  parts = [emb]
  if cfg.attention == 'bahdanau':
    # Bahdanau attends with the state *before* this step and feeds the context in.
    context = context_for(rnn.hidden_state(cfg.cell, carries[-1]))  # [B, E]
    parts.append(context)
  if cfg.input_feeding:
    parts.append(state['feed'])  # [B, O]
  x = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else emb  # [B, I]

  new_carries = []
  for layer, (p, carry) in enumerate(zip(params['layers'], carries)):
    if layer > 0 and keep is not None:
      x = x * keep[layer - 1]  # [B, N]
    x_proj = mm('bi,ig->bg', x, p['input_kernel']) + _f32(p['bias'])  # [B, G*N]
    rec = mm('bn,ng->bg', rnn.hidden_state(cfg.cell, carry), p['recurrent_kernel'])  # [B, G*N]
    if 'recurrent_bias' in p:
      rec = rec + _f32(p['recurrent_bias'])
    carry, x = rnn.cell_update(cfg.cell, carry, x_proj, rec, cfg.forget_bias)  # x [B, N]
    new_carries.append(carry)

  if cfg.attention != 'bahdanau':
    context = context_for(x)  # [B, E]
  both = jnp.concatenate([context, x], axis=-1)  # [B, E + N]
  attn_vec = jnp.tanh(mm('bi,io->bo', both, att['output_kernel']))  # [B, O]
  return {'carries': tuple(new_carries), 'feed': attn_vec}, attn_vec


# ----------------------------------------------------------------------------------------
# The module.
# ----------------------------------------------------------------------------------------


class _Params(nn.Module):
  """Declares a group of parameters and returns them as a dict.

  Lets `setup` give parameters a nested name (e.g. params['decoder_0']['input_kernel']) and
  hand them to the pure `decoder_step` as one pytree, outside any scan.

  Attributes:
    specs: tuple of (name, shape, initializer, logical axes).
    param_dtype: dtype of the parameters.
  """
  specs: tuple
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> dict:
    return {name: self.param(name, nn.with_logical_partitioning(init, axes), shape,
                             self.param_dtype)
            for name, shape, init, axes in self.specs}


class RNNSeq2Seq(nn.Module):
  """Attention RNN encoder-decoder; see the module docstring for the model and the state.

  Attributes:
    config: RNNSeq2SeqConfig.
    deterministic: False applies dropout (needs a 'dropout' rng).
  """
  config: RNNSeq2SeqConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    d, n, v, o = cfg.embed_dim, cfg.hidden_size, cfg.vocab_size, cfg.output_width
    dense_init, bias_init = rnn.dense_initializers(cfg.init, cfg.init_scale)
    if cfg.init == 'uniform':  # Zaremba-style: every parameter U(-scale, scale)
      emb_init = vec_init = rnn.uniform(cfg.init_scale)
    else:
      # Unit-variance embeddings unless they double as the output layer, whose logits
      # h̃ · embedding would then have a standard deviation of about sqrt(D).
      emb_init = nn.initializers.normal(d ** -0.5 if cfg.tie_embeddings else 1.0)
      vec_init = nn.initializers.normal(n ** -0.5)  # lecun_normal needs a 2-D shape

    def group(name, *specs):
      return _Params(specs=tuple(specs), param_dtype=cfg.param_dtype, name=name)

    emb_spec = lambda name, n=v: (name, (n, d), emb_init, ('vocab', 'embed'))
    source = ([emb_spec('source', cfg.source_vocab_size or v)]
              if cfg.source_vocab_size or not cfg.tie_embeddings else [])
    target = emb_spec('embedding') if cfg.tie_embeddings else emb_spec('target')
    self.embeddings = group('embeddings', *source, target)
    out_specs = [('bias', (v,), bias_init, ('vocab',))]
    if not cfg.tie_embeddings:
      out_specs.insert(0, ('kernel', (o, v), dense_init, ('embed', 'vocab')))
    self.output = group('output', *out_specs)

    self.encoder = rnn.StackedRNN(
        cell=cfg.cell, hidden_size=n // 2, num_layers=cfg.num_encoder_layers,
        bidirectional=True, dropout=cfg.dropout_rate, forget_bias=cfg.forget_bias,
        initializer=cfg.init, init_scale=cfg.init_scale, dtype=jnp.float32,
        param_dtype=cfg.param_dtype, matmul_dtype=cfg.matmul_dtype)

    # One tanh layer makes every decoder layer's initial state (c and h for an LSTM).
    per_layer = 2 if cfg.cell == 'lstm' else 1
    width = cfg.num_decoder_layers * per_layer * n
    self.bridge = group('bridge', ('kernel', (n, width), dense_init, (None, 'mlp')),
                        ('bias', (width,), bias_init, ('mlp',)))

    att_specs = [('output_kernel', (2 * n, o), dense_init, (None, 'embed'))]  # W_c
    if cfg.attention != 'luong_dot':
      att_specs.append(('key_kernel', (n, n), dense_init, (None, 'mlp')))  # U_a or W_a
    if cfg.attention == 'bahdanau':
      att_specs += [('query_kernel', (n, n), dense_init, (None, 'mlp')),  # W_a
                    ('score_vector', (n,), vec_init, ('mlp',))]  # v_a
    self.attention = group('attention', *att_specs)

    # The decoder's cells run inside `decoder_step`, one layer's parameters per group.
    self.decoder_layers = [
        group(f'decoder_{layer}', *rnn.layer_param_specs(
            cfg.cell, cfg.decoder_input_width if layer == 0 else n, n, cfg.init,
            cfg.init_scale))
        for layer in range(cfg.num_decoder_layers)]
    self.dropout = nn.Dropout(cfg.dropout_rate)

  # -- pieces --------------------------------------------------------------------------

  def _embed(self, tokens: Array, side: str) -> Array:
    """tokens [...] -> dropped-out embeddings [..., D] float32."""
    table = self.embeddings()
    if side == 'target' or 'source' not in table:
      table = table['embedding'] if self.config.tie_embeddings else table['target']  # [V, D]
    else:
      table = table['source']  # [V_src, D]
    x = _f32(jnp.take(table, tokens, axis=0))  # [..., D]
    return self.dropout(x, deterministic=self.deterministic)

  def _decoder_params(self) -> dict:
    return {'layers': tuple(layer() for layer in self.decoder_layers),
            'attention': self.attention()}

  def _logits(self, attn_vec: Array) -> Array:
    """attentional vectors [..., O] -> logits [..., V] float32 (dropout first)."""
    cfg = self.config
    x = self.dropout(attn_vec, deterministic=self.deterministic)  # [..., O]
    out = self.output()
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])  # [M, O], M = all leading positions
    cv = attention.use_custom_vjp(cfg.custom_vjp)
    if cfg.tie_embeddings:
      logits = attention.matmul('mo,vo->mv', x, self.embeddings()['embedding'],
                                cfg.matmul_dtype, custom_vjp=cv)  # [M, V]
    else:
      logits = attention.matmul('mo,ov->mv', x, out['kernel'], cfg.matmul_dtype,
                                custom_vjp=cv)  # [M, V]
    logits = logits + _f32(out['bias'])
    return logits.reshape(lead + (cfg.vocab_size,))  # [..., V]

  # -- public API ------------------------------------------------------------------------

  def encode(self, inputs: Array) -> dict:
    """Source tokens [B, S] int -> memory (see the module docstring)."""
    cfg = self.config
    mask = inputs != 0  # [B, S]
    x = self._embed(inputs, 'source')  # [B, S, D]
    outputs, carry = self.encoder(x, mask=mask, deterministic=self.deterministic)  # [B, S, E]
    att = self.attention()
    memory = {'outputs': outputs, 'mask': mask}
    cv = attention.use_custom_vjp(cfg.custom_vjp)
    if cfg.attention != 'luong_dot':
      memory['keys'] = attention.score_keys(cfg.attention, att, outputs, cfg.matmul_dtype,
                                            custom_vjp=cv)  # [B, S, A]

    # Masked steps keep their carry, so the forward final state is the one at each row's
    # last real token and the backward one the one at its first token.
    fwd, bwd = carry[-1]
    summary = jnp.concatenate([rnn.hidden_state(cfg.cell, fwd),
                               rnn.hidden_state(cfg.cell, bwd)], -1)  # [B, E]
    b = self.bridge()
    init = jnp.tanh(attention.matmul('be,ew->bw', summary, b['kernel'], cfg.matmul_dtype,
                                     custom_vjp=cv)
                    + _f32(b['bias']))  # [B, L*(2 or 1)*N]
    chunks = jnp.split(init, init.shape[-1] // cfg.hidden_size, axis=-1)  # each [B, N]
    if cfg.cell == 'lstm':
      carries = tuple((chunks[2 * i], chunks[2 * i + 1])
                      for i in range(cfg.num_decoder_layers))  # (c, h)
    else:
      carries = tuple(chunks)
    memory['init_carries'] = carries
    return memory

  def init_decode_state(self, memory: dict) -> dict:
    """memory from `encode` -> decoder state before the first (bos) token; no parameters."""
    batch = memory['outputs'].shape[0]
    return {'memory': {k: a for k, a in memory.items() if k != 'init_carries'},
            'carries': memory['init_carries'],
            'feed': jnp.zeros((batch, self.config.output_width), jnp.float32)}  # [B, O]

  def decode_step(self, state: dict, token: Array):
    """state, previous tokens [B] int -> (logits [B, V] float32, new state)."""
    emb = self._embed(token, 'target')  # [B, D]
    new, attn_vec = decoder_step(self.config, self._decoder_params(), state['memory'], state,
                                 emb)
    return self._logits(attn_vec), {'memory': state['memory'], **new}  # [B, V]

  def __call__(self, inputs: Array, decoder_inputs: Array) -> Array:
    """Teacher forcing.

    Args:
      inputs: source tokens [B, S] int, 0-padded.
      decoder_inputs: [B, T] int, [bos, y_1, ..., y_{T-1}] (0-padded).

    Returns:
      logits [B, T, V] float32 for y_1..y_T.
    """
    cfg = self.config
    full = self.init_decode_state(self.encode(inputs))
    memory = full['memory']
    state = {'carries': full['carries'], 'feed': full['feed']}
    emb = jnp.swapaxes(self._embed(decoder_inputs, 'target'), 0, 1)  # [T, B, D]
    keep = None
    if not self.deterministic and cfg.dropout_rate > 0.0 and cfg.num_decoder_layers > 1:
      # Dropout between decoder layers, drawn here because the scan body cannot draw rngs.
      steps, batch = decoder_inputs.shape[1], decoder_inputs.shape[0]
      shape = (steps, cfg.num_decoder_layers - 1, batch, cfg.hidden_size)
      kept = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - cfg.dropout_rate, shape)
      keep = kept.astype(jnp.float32) / (1.0 - cfg.dropout_rate)  # [T, L-1, B, N]
    params = self._decoder_params()  # read outside the scan: linen state stays out of it

    def body(dec_state, xs):
      emb_t, keep_t = xs  # [B, D], [L-1, B, N] or None
      return decoder_step(cfg, params, memory, dec_state, emb_t, keep_t)

    _, attn_vecs = jax.lax.scan(body, state, (emb, keep))  # [T, B, O]
    return self._logits(jnp.swapaxes(attn_vecs, 0, 1))  # [B, T, V]
