"""Recurrent language models: Elman RNN, LSTM and GRU (Zaremba et al. 2014 style).

Axis legend (used in shape comments and einsum strings; the same letters as the Transformer
files, where H is heads, so the recurrent width is N here):
  B  batch
  T  length (time)
  D  embed / layer input width
  N  hidden (recurrent state) width
  V  vocab
  G  gates: 1 for Elman, 3 for GRU, 4 for LSTM; fused gate axes have width G*N

Structure, bottom-up:
  * `elman_step`, `lstm_step`, `gru_step`: one time step as a pure function of
    (carry, x_proj), where x_proj = x W_x + b is the input projection for that step,
    computed beforehand for all steps at once. Bind the recurrent weights with
    `functools.partial` and scan over time-major projections:

      step = functools.partial(lstm_step, w_h, forget_bias=1.0)
      carry, hs = jax.lax.scan(step, carry0, x_proj)  # x_proj [T, B, 4N] -> hs [T, B, N]

    `cell_update` is the elementwise part shared by the three (given both projections);
    other models that run a cell themselves (rnn_seq2seq's decoder) use it, with
    `hidden_state`, `layer_param_specs` and the initializer schemes below.
  * `recurrent_scan`: the scan above plus padding masks, reverse direction,
    bf16 matmuls and an optional hand-written backward pass (`custom_vjp`).
  * `RecurrentLayer`: parameters + one matmul for the input projection of all steps,
    then `recurrent_scan`, which only does the recurrent matmul per step.
  * `StackedRNN`: layers (optionally bidirectional) with dropout between them.
  * `RNNLM`: embedding -> dropout -> StackedRNN -> dropout -> logits; `lm_decoder` runs it
    one token at a time from a carried state, for lmjax.decoding's sampling loop.

Carries: an LSTM carry is the pair (c, h), each [B, N]; Elman and GRU carries are h [B, N].
Carries are kept in float32 (or float64 under x64) whatever the activation dtype.
For stateful truncated BPTT, feed the returned carry (under `jax.lax.stop_gradient`) into
the next window.
"""

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.errors import UserError
from lmjax.models import attention

Array = jax.Array
Dtype = Any

CELLS = ('lstm', 'gru', 'elman')
INITS = ('uniform', 'gaussian', 'orthogonal')
NUM_GATES = {'elman': 1, 'gru': 3, 'lstm': 4}


# ----------------------------------------------------------------------------------------
# Single-step cells.
# ----------------------------------------------------------------------------------------


def _acc_dtype(dtype: Dtype) -> Dtype:
  """Accumulation/carry dtype: at least float32 (bf16 matmuls accumulate in f32)."""
  return jnp.promote_types(dtype, jnp.float32)


def _dot(a: Array, b: Array, matmul_dtype: Optional[Dtype] = None) -> Array:
  """a @ b, optionally with `matmul_dtype` operands and (at least) f32 accumulation."""
  if matmul_dtype is None:
    return jnp.dot(a, b)
  return jnp.dot(a.astype(matmul_dtype), b.astype(matmul_dtype),
                 preferred_element_type=_acc_dtype(a.dtype))


def hidden_state(cell: str, carry):
  """The part of the carry that feeds the recurrent matmul (and is the layer's output)."""
  return carry[1] if cell == 'lstm' else carry


def cell_update(cell: str, carry, x_proj: Array, rec: Array, forget_bias: float = 0.0):
  """The elementwise part of one step, given both projections.

  Args:
    cell: 'lstm' | 'gru' | 'elman'.
    carry: previous carry ((c, h) for LSTM, h otherwise), each [B, N].
    x_proj: input projection x W_x + b for this step, [B, G*N].
    rec: recurrent projection h W_h (+ b_h for GRU), [B, G*N].
    forget_bias: added to the LSTM forget-gate pre-activation.

  Returns:
    (new_carry, h_out) with h_out [B, N].
  """
  if cell == 'elman':
    h = jnp.tanh(x_proj + rec)  # [B, N]
    return h, h
  if cell == 'lstm':
    c, _ = carry
    i, f, g, o = jnp.split(x_proj + rec, 4, axis=-1)  # 4 x [B, N]
    c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)  # [B, N]
    h = jax.nn.sigmoid(o) * jnp.tanh(c)  # [B, N]
    return (c, h), h
  if cell == 'gru':
    h = carry
    x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)  # 3 x [B, N]
    h_r, h_z, h_n = jnp.split(rec, 3, axis=-1)  # 3 x [B, N]
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    # The reset gate scales the recurrent candidate *after* its bias (Cho et al. 2014 /
    # cuDNN / PyTorch form), which is why the GRU keeps a separate recurrent bias.
    n = jnp.tanh(x_n + r * h_n)  # [B, N]
    h = (1.0 - z) * n + z * h  # [B, N]
    return h, h
  raise ValueError(f'unknown cell {cell!r}; expected one of {CELLS}')


def elman_step(w_h: Array, h: Array, x_proj: Array):
  """Elman step h' = tanh(x W_x + b + h W_h).

  Args:
    w_h: recurrent kernel [N, N].
    h: carry [B, N].
    x_proj: x W_x + b for this step [B, N].

  Returns:
    (h', h'), scan-ready: `jax.lax.scan(functools.partial(elman_step, w_h), h0, x_proj)`.
  """
  return cell_update('elman', h, x_proj, h @ w_h)


def lstm_step(w_h: Array, carry, x_proj: Array, forget_bias: float = 0.0):
  """LSTM step with the four gates (i, f, g, o) in one fused recurrent matmul.

    [i, f, g, o] = x W_x + b + h W_h
    c' = σ(f + forget_bias) c + σ(i) tanh(g)
    h' = σ(o) tanh(c')

  Args:
    w_h: recurrent kernel [N, 4N], gate blocks in the order i, f, g, o.
    carry: (c, h), each [B, N].
    x_proj: x W_x + b for this step [B, 4N].
    forget_bias: constant added to the forget-gate pre-activation.

  Returns:
    ((c', h'), h').
  """
  return cell_update('lstm', carry, x_proj, carry[1] @ w_h, forget_bias)


def gru_step(w_h: Array, b_h: Array, h: Array, x_proj: Array):
  """GRU step (Cho et al. 2014, in the cuDNN/PyTorch form).

    [x_r, x_z, x_n] = x W_x + b        [h_r, h_z, h_n] = h W_h + b_h
    r = σ(x_r + h_r),  z = σ(x_z + h_z),  n = tanh(x_n + r ⊙ h_n)
    h' = (1 - z) ⊙ n + z ⊙ h

  Args:
    w_h: recurrent kernel [N, 3N], gate blocks in the order r, z, n.
    b_h: recurrent bias [3N] (its n block sits inside the reset gate's product).
    h: carry [B, N].
    x_proj: x W_x + b for this step [B, 3N].

  Returns:
    (h', h').
  """
  return cell_update('gru', h, x_proj, h @ w_h + b_h)


def zeros_carry(cell: str, batch_size: int, hidden_size: int, dtype: Dtype = jnp.float32):
  """All-zero carry for one layer and direction."""
  h = jnp.zeros((batch_size, hidden_size), _acc_dtype(dtype))  # [B, N]
  return (h, h) if cell == 'lstm' else h


# ----------------------------------------------------------------------------------------
# Scanning a cell over time.
# ----------------------------------------------------------------------------------------


def _masked_update(cell, forget_bias, carry, x_proj, rec, m):
  """One step's elementwise update; rows with m == False keep their carry, output 0."""
  new_carry, out = cell_update(cell, carry, x_proj, rec, forget_bias)
  if m is None:
    return new_carry, out
  keep = m[:, None]  # [B, 1]
  new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
  return new_carry, jnp.where(keep, out, jnp.zeros_like(out))


def _recurrent_proj(h, w_h, b_h, matmul_dtype):
  rec = _dot(h, w_h, matmul_dtype)  # [B, G*N]
  return rec if b_h is None else rec + b_h


def _scan_autodiff(cell, forget_bias, reverse, matmul_dtype, w_h, b_h, x_proj, carry, mask):
  """The plain scan; JAX differentiates through it step by step."""
  if matmul_dtype is not None:
    w_h = w_h.astype(matmul_dtype)  # cast once, outside the loop

  def body(carry, inputs):
    xp, m = inputs  # [B, G*N], [B]
    rec = _recurrent_proj(hidden_state(cell, carry), w_h, b_h, matmul_dtype)  # [B, G*N]
    return _masked_update(cell, forget_bias, carry, xp, rec, m)

  return jax.lax.scan(body, carry, (x_proj, mask), reverse=reverse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_fast(cell, forget_bias, reverse, matmul_dtype, w_h, b_h, x_proj, carry, mask):
  return _scan_autodiff(cell, forget_bias, reverse, matmul_dtype, w_h, b_h, x_proj, carry,
                        mask)


def _scan_fast_fwd(cell, forget_bias, reverse, matmul_dtype, w_h, b_h, x_proj, carry, mask):
  w_mm = w_h if matmul_dtype is None else w_h.astype(matmul_dtype)

  def body(carry, inputs):
    xp, m = inputs
    rec = _recurrent_proj(hidden_state(cell, carry), w_mm, b_h, matmul_dtype)  # [B, G*N]
    new_carry, out = _masked_update(cell, forget_bias, carry, xp, rec, m)
    # Save the step's inputs (previous carry, recurrent projection) for the backward pass,
    # which then needs no recurrent matmul to recompute them.
    return new_carry, (out, carry, rec)

  final, (outs, prev_carries, recs) = jax.lax.scan(body, carry, (x_proj, mask),
                                                   reverse=reverse)
  residuals = (w_h, b_h, x_proj, mask, prev_carries, recs)
  return (final, outs), residuals


def _scan_fast_bwd(cell, forget_bias, reverse, matmul_dtype, residuals, cotangents):
  w_h, b_h, x_proj, mask, prev_carries, recs = residuals
  d_final, d_outs = cotangents  # carry-shaped, [T, B, N]
  w_t = w_h.T if matmul_dtype is None else w_h.T.astype(matmul_dtype)  # [G*N, N]

  def body(d_carry, inputs):
    prev, xp, rec, m, d_out = inputs
    _, vjp = jax.vjp(lambda c, x, r: _masked_update(cell, forget_bias, c, x, r, m),
                     prev, xp, rec)
    d_prev, d_xp, d_rec = vjp((d_carry, d_out))
    # Only the gradient w.r.t. h needs the recurrent matmul inside the loop; the weight
    # gradient is formed once, over all steps, after it.
    d_h = hidden_state(cell, d_prev) + _dot(d_rec, w_t, matmul_dtype).astype(d_rec.dtype)
    d_prev = (d_prev[0], d_h) if cell == 'lstm' else d_h
    # LSTM and Elman see only the sum x_proj + rec, so both gradients are the same array.
    return d_prev, (d_xp, d_rec if cell == 'gru' else None)

  d_carry, (d_x_proj, d_recs) = jax.lax.scan(
      body, d_final, (prev_carries, x_proj, recs, mask, d_outs), reverse=not reverse)
  d_recs = d_x_proj if d_recs is None else d_recs  # [T, B, G*N]
  h_prev = hidden_state(cell, prev_carries)  # [T, B, N]
  d_w_h = jnp.einsum('tbn,tbg->ng', h_prev, d_recs).astype(w_h.dtype)  # [N, G*N]
  d_b_h = None if b_h is None else d_recs.sum((0, 1)).astype(b_h.dtype)  # [G*N]
  return d_w_h, d_b_h, d_x_proj, d_carry, None


_scan_fast.defvjp(_scan_fast_fwd, _scan_fast_bwd)


def recurrent_scan(cell: str,
                   w_h: Array,
                   b_h: Optional[Array],
                   x_proj: Array,
                   carry,
                   mask: Optional[Array] = None,
                   *,
                   forget_bias: float = 0.0,
                   reverse: bool = False,
                   matmul_dtype: Optional[Dtype] = None,
                   custom_vjp=False):
  """Runs a cell over time-major input projections.

  Args:
    cell: 'lstm' | 'gru' | 'elman'.
    w_h: recurrent kernel [N, G*N].
    b_h: recurrent bias [G*N] (GRU) or None.
    x_proj: input projections, time-major [T, B, G*N].
    carry: initial carry (see module docstring).
    mask: [T, B] bool, True at real tokens. Masked steps leave the carry unchanged and
      output zeros, so any padding pattern works in either direction; with right padding a
      reverse scan starts each row at its last real token.
    forget_bias: LSTM forget-gate bias.
    reverse: scan from T-1 down to 0 (outputs stay at their own positions).
    matmul_dtype: operand dtype of the recurrent matmul (e.g. bfloat16); accumulation is
      float32. None: the operands' own dtype.
    custom_vjp: use the hand-written backward pass, which forms the recurrent-weight
      gradient as one matmul after the reverse loop instead of one small matmul per step.
      Same values as autodiff (tested); faster on CPU. A bool or a model option ('auto':
      on for the CPU backend, 'on', 'off'; see attention.use_custom_vjp).

  Returns:
    (final carry, outputs [T, B, N]).
  """
  if cell not in CELLS:
    raise ValueError(f'unknown cell {cell!r}; expected one of {CELLS}')
  fn = _scan_fast if attention.use_custom_vjp(custom_vjp) else _scan_autodiff
  return fn(cell, float(forget_bias), bool(reverse), matmul_dtype, w_h, b_h, x_proj, carry,
            mask)


# ----------------------------------------------------------------------------------------
# Flax modules.
# ----------------------------------------------------------------------------------------


def uniform(scale: float):
  """U(-scale, scale), Zaremba et al.'s init for every parameter."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def _block_orthogonal(num_blocks: int):
  """Orthogonal [N, N] block per gate, so each gate's recurrence starts norm-preserving."""
  def init(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, num_blocks)
    width = shape[-1] // num_blocks
    # QR runs in float32 (LAPACK has no bfloat16); the result is cast to the param dtype.
    blocks = [nn.initializers.orthogonal()(k, shape[:-1] + (width,), jnp.float32) for k in keys]
    return jnp.concatenate(blocks, axis=-1).astype(dtype)
  return init


def initializers(init: str, init_scale: float, num_gates: int):
  """(input kernel, recurrent kernel, bias) initializers of a recurrent layer for one scheme."""
  if init == 'uniform':  # Zaremba et al.: every parameter U(-scale, scale)
    u = uniform(init_scale)
    return u, u, u
  if init == 'gaussian':
    return nn.initializers.lecun_normal(), nn.initializers.lecun_normal(), nn.initializers.zeros
  if init == 'orthogonal':
    return (nn.initializers.lecun_normal(), _block_orthogonal(num_gates),
            nn.initializers.zeros)
  raise ValueError(f'unknown init {init!r}; expected one of {INITS}')


def dense_initializers(init: str, init_scale: float):
  """(kernel, bias) initializers of the non-recurrent dense layers (output, bridge, ...).

  'uniform': both U(±init_scale); otherwise LeCun-normal kernels and zero biases.
  """
  if init == 'uniform':
    u = uniform(init_scale)
    return u, u
  return nn.initializers.lecun_normal(), nn.initializers.zeros


def layer_param_specs(cell: str, input_width: int, hidden_size: int, init: str,
                      init_scale: float) -> tuple:
  """A recurrent layer's parameters: (name, shape, initializer, logical axes) each.

  input_kernel W_x [D, G*N], bias b [G*N], recurrent_kernel W_h [N, G*N] and, for the GRU,
  recurrent_bias b_h [G*N] (it sits inside the reset gate's product, see `cell_update`), in
  the order `RecurrentLayer` declares them (flax derives init values from that order).
  """
  gates = NUM_GATES[cell]
  k_init, r_init, b_init = initializers(init, init_scale, gates)
  width = gates * hidden_size
  specs = [('input_kernel', (input_width, width), k_init, ('embed', 'mlp')),
           ('bias', (width,), b_init, ('mlp',)),
           ('recurrent_kernel', (hidden_size, width), r_init, (None, 'mlp'))]
  if cell == 'gru':
    specs.append(('recurrent_bias', (width,), b_init, ('mlp',)))
  return tuple(specs)


class RecurrentLayer(nn.Module):
  """One recurrent layer in one direction.

  (`initializer` is `RNNLMConfig.init`; a linen Module cannot have a field named `init`.)

  Attributes:
    cell: 'lstm' | 'gru' | 'elman'.
    hidden_size: N.
    forget_bias: LSTM forget-gate bias (added in the step, not a parameter).
    initializer: 'uniform' (U(±init_scale) for all parameters, Zaremba et al.) | 'gaussian'
      (LeCun-normal kernels, zero biases) | 'orthogonal' (LeCun-normal input kernel,
      orthogonal recurrent block per gate, zero biases).
    init_scale: half-width of the uniform init.
    dtype: dtype of the layer's outputs.
    param_dtype: dtype of the parameters.
    matmul_dtype: operand dtype of the matmuls (f32 accumulation); None: `dtype`.
    reverse: run from the end of each sequence to its start.
    custom_vjp: hand-written backward pass (see `recurrent_scan`): a bool, or 'auto' (on for
      the CPU backend) | 'on' | 'off', resolved at trace time.
  """
  cell: str = 'lstm'
  hidden_size: int = 256
  forget_bias: float = 0.0
  initializer: str = 'uniform'
  init_scale: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None
  reverse: bool = False
  custom_vjp: Any = False

  @nn.compact
  def __call__(self, x: Array, carry=None, mask: Optional[Array] = None):
    """x [B, T, D], carry (None: zeros), mask [B, T] bool -> (outputs [B, T, N], carry)."""
    batch, _, width = x.shape
    hidden = self.hidden_size
    p = {name: self.param(name, nn.with_logical_partitioning(init, axes), shape,
                          self.param_dtype)
         for name, shape, init, axes in layer_param_specs(
             self.cell, width, hidden, self.initializer, self.init_scale)}
    w_x, b_x, w_h = p['input_kernel'], p['bias'], p['recurrent_kernel']  # [D|N, G*N], [G*N]
    b_h = p.get('recurrent_bias')  # [G*N] (GRU) or None

    acc = _acc_dtype(self.dtype)
    mm = self.matmul_dtype or self.dtype
    # The input projection of every step in one matmul, time-major for the scan. The input
    # is transposed rather than the (G times wider) projection; also, XLA CPU cannot run a
    # bf16 x bf16 -> f32 dot whose output dims are permuted ('btd,dg->tbg').
    x_tm = jnp.swapaxes(x, 0, 1).astype(mm)  # [T, B, D]
    x_proj = jnp.einsum('tbd,dg->tbg', x_tm, w_x.astype(mm),
                        preferred_element_type=acc) + b_x.astype(acc)  # [T, B, G*N]
    if carry is None:
      carry = zeros_carry(self.cell, batch, hidden, acc)
    if mask is not None:
      mask = jnp.asarray(mask, bool).T  # [T, B]
    carry, outs = recurrent_scan(
        self.cell, w_h.astype(acc), None if b_h is None else b_h.astype(acc), x_proj, carry,
        mask, forget_bias=self.forget_bias, reverse=self.reverse,
        matmul_dtype=None if jnp.dtype(mm) == jnp.dtype(acc) else mm,
        custom_vjp=self.custom_vjp)  # outs [T, B, N]
    return jnp.transpose(outs, (1, 0, 2)).astype(self.dtype), carry  # [B, T, N]


class StackedRNN(nn.Module):
  """Layers of `RecurrentLayer`, optionally bidirectional, with dropout between layers.

  Dropout touches only the non-recurrent connections (the outputs of one layer feeding the
  next), as in Zaremba et al. 2014. With `variational`, one dropout mask per sequence and
  feature is shared across time (Gal & Ghahramani 2016).

  The carry is a tuple over layers of tuples over directions (forward[, backward]) of cell
  carries.
  """
  cell: str = 'lstm'
  hidden_size: int = 256
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  variational: bool = False
  forget_bias: float = 0.0
  initializer: str = 'uniform'
  init_scale: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None
  custom_vjp: Any = False  # see RecurrentLayer

  def initial_carry(self, batch_size: int):
    directions = 2 if self.bidirectional else 1
    one = zeros_carry(self.cell, batch_size, self.hidden_size, self.dtype)
    return tuple(tuple(one for _ in range(directions)) for _ in range(self.num_layers))

  @nn.compact
  def __call__(self, x: Array, carry=None, *, mask: Optional[Array] = None,
               deterministic: bool = True):
    """x [B, T, D] -> (outputs [B, T, N or 2N], carry)."""
    if carry is None:
      carry = self.initial_carry(x.shape[0])
    directions = (False, True) if self.bidirectional else (False,)
    drop = nn.Dropout(self.dropout, broadcast_dims=(1,) if self.variational else ())
    new_carry = []
    for layer in range(self.num_layers):
      if layer > 0:
        x = drop(x, deterministic=deterministic)
      outs, layer_carry = [], []
      for d, reverse in enumerate(directions):
        rnn = RecurrentLayer(
            cell=self.cell, hidden_size=self.hidden_size, forget_bias=self.forget_bias,
            initializer=self.initializer, init_scale=self.init_scale, dtype=self.dtype,
            param_dtype=self.param_dtype, matmul_dtype=self.matmul_dtype, reverse=reverse,
            custom_vjp=self.custom_vjp,
            name=f'layer_{layer}' + ('_bwd' if reverse else ''))
        y, c = rnn(x, carry[layer][d], mask)  # [B, T, N]
        outs.append(y)
        layer_carry.append(c)
      x = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]  # [B, T, N or 2N]
      new_carry.append(tuple(layer_carry))
    return x, tuple(new_carry)


@dataclasses.dataclass(frozen=True)
class RNNLMConfig:
  """Recurrent LM hyperparameters. Defaults: Zaremba et al. 2014 'medium' (2x650 LSTM)."""
  vocab_size: int = 10000
  embed_dim: int = 650
  hidden_size: int = 650
  num_layers: int = 2
  cell: str = 'lstm'
  dropout: float = 0.5
  variational_dropout: bool = False
  init: str = 'uniform'
  init_scale: float = 0.05
  forget_bias: float = 0.0
  tie_embeddings: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  matmul_dtype: Optional[Dtype] = None  # e.g. jnp.bfloat16: bf16 operands, f32 accumulation
  # Hand-written recurrent backward pass (recurrent_scan): 'auto' (on for CPU) | 'on' | 'off'.
  custom_vjp: str = 'auto'

  def __post_init__(self):
    if self.cell not in CELLS:
      raise UserError(f'RNNLMConfig.cell={self.cell!r}: expected one of {CELLS}')
    if self.init not in INITS:
      raise UserError(f'RNNLMConfig.init={self.init!r}: expected one of {INITS}')
    if not 0.0 <= self.dropout < 1.0:
      raise UserError(f'RNNLMConfig.dropout={self.dropout}: expected 0 <= dropout < 1')
    if min(self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers) < 1:
      raise UserError('RNNLMConfig: vocab_size, embed_dim, hidden_size, num_layers must be >= 1')
    if self.tie_embeddings and self.embed_dim != self.hidden_size:
      raise UserError(f'RNNLMConfig.tie_embeddings needs embed_dim == hidden_size, got '
                      f'{self.embed_dim} != {self.hidden_size}')
    if self.custom_vjp not in attention.CUSTOM_VJP:
      raise UserError(f'config.model.custom_vjp: {self.custom_vjp!r} is not one of '
                      f'{attention.CUSTOM_VJP}')

  def lm_decoder(self, params: dict):
    """(prefill, step) for lmjax.decoding's sampling loop, see `lm_decoder`."""
    return lm_decoder(params, self)


def init_carry(config: RNNLMConfig, batch_size: int):
  """Zero carry of an `RNNLM`: tuple over layers of 1-tuples (one direction)."""
  one = zeros_carry(config.cell, batch_size, config.hidden_size, config.dtype)
  return tuple((one,) for _ in range(config.num_layers))


class RNNLM(nn.Module):
  """Recurrent language model: tokens [B, T] -> (logits [B, T, V] float32, carry)."""
  config: RNNLMConfig

  def initial_carry(self, batch_size: int):
    return init_carry(self.config, batch_size)

  @nn.compact
  def __call__(self, tokens: Array, carry=None, *, deterministic: bool = True,
               mask: Optional[Array] = None):
    """Runs the LM over a window.

    Args:
      tokens: [B, T] int token ids.
      carry: the state after the previous window (`initial_carry` when None). Under
        truncated BPTT pass the returned carry through `jax.lax.stop_gradient`.
      deterministic: False applies dropout (needs a 'dropout' rng).
      mask: optional [B, T] bool, True at real tokens; padded steps keep the carry.

    Returns:
      (logits [B, T, V] float32, carry after the window).
    """
    cfg = self.config
    emb_init = (uniform(cfg.init_scale) if cfg.init == 'uniform'
                else nn.initializers.normal(stddev=1.0))
    out_init, bias_init = dense_initializers(cfg.init, cfg.init_scale)
    drop = nn.Dropout(cfg.dropout, broadcast_dims=(1,) if cfg.variational_dropout else ())

    embedding = self.param('embedding', nn.with_logical_partitioning(emb_init, ('vocab', 'embed')),
                           (cfg.vocab_size, cfg.embed_dim), cfg.param_dtype)  # [V, D]
    x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)  # [B, T, D]
    x = drop(x, deterministic=deterministic)
    x, carry = StackedRNN(
        cell=cfg.cell, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        dropout=cfg.dropout, variational=cfg.variational_dropout, forget_bias=cfg.forget_bias,
        initializer=cfg.init, init_scale=cfg.init_scale, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, matmul_dtype=cfg.matmul_dtype,
        custom_vjp=cfg.custom_vjp, name='rnn')(
            x, carry, mask=mask, deterministic=deterministic)  # [B, T, N]
    x = drop(x, deterministic=deterministic)

    if cfg.tie_embeddings:
      kernel = embedding.T  # [N, V]
    else:
      kernel = self.param('output_kernel',
                          nn.with_logical_partitioning(out_init, ('embed', 'vocab')),
                          (cfg.hidden_size, cfg.vocab_size), cfg.param_dtype)  # [N, V]
    bias = self.param('output_bias', nn.with_logical_partitioning(bias_init, ('vocab',)),
                      (cfg.vocab_size,), cfg.param_dtype)  # [V]
    mm = cfg.matmul_dtype or cfg.dtype
    acc = _acc_dtype(cfg.dtype)
    logits = jnp.einsum('btn,nv->btv', x.astype(mm), kernel.astype(mm),
                        preferred_element_type=acc)  # [B, T, V]
    return (logits + bias.astype(acc)).astype(jnp.float32), carry


def lm_decoder(params: dict, config: RNNLMConfig):
  """(prefill, step) for lmjax.decoding's sampling loop; the state is the recurrent carry.

    prefill(prompt [B, P], max_len) -> (logits [B, V] after the last prompt token, carry)
    step(tokens [B], carry, t) -> (logits [B, V], carry)

  The prompt runs as one window from the zero carry (as training starts a stream); each new
  token is then a window of length 1 fed the carried state, so no step re-reads the prefix
  and the state does not grow with max_len.
  """
  model = RNNLM(config)

  def prefill(prompt: Array, max_len: int):
    del max_len  # the carry does not grow
    logits, carry = model.apply({'params': params}, prompt, init_carry(config, prompt.shape[0]))
    return logits[:, -1], carry  # [B, V]

  def step(tokens: Array, carry, t: Array):
    del t  # position is in the carry
    logits, carry = model.apply({'params': params}, tokens[:, None], carry)  # [B, 1, V]
    return logits[:, 0], carry

  return prefill, step
