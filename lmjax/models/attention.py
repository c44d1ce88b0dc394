"""Attention, the one implementation in lmjax: dot-product (Transformers) and the additive /
multiplicative scores of the attention RNN (Bahdanau et al. 2015; Luong et al. 2015).

Axis legend (used in einsum strings and shape comments):
  B batch, T query length, S key/value length, D embed (d_model),
  H heads, K head dim, C max cache length,
  N recurrent query width (RNN decoder hidden), E value width (RNN encoder outputs),
  A additive/general score width.

Self-attention, cross-attention and cached incremental decoding all go through
`dot_product_attention`. Parameters and activations carry logical axis names
(batch, length, embed, heads, kv); the config's rules table maps them onto the mesh.
The RNN scores (`score_keys`, `score`, `attend`) are pure functions of a parameter dict.

`matmul` is the models' one matmul: bf16 inputs with float32 accumulation, and on CPU a
hand-written weight-gradient backward (the `custom_vjp` option: 'auto' | 'on' | 'off', see
`use_custom_vjp`).

The key/value cache is a plain pytree {'k': [B, H, K, C], 'v': [B, H, C, K]} passed in and
returned, so decoding stays a pure function. K is stored transposed so that the per-step
q·k product reads the cache without XLA transposing it every step (measured ~38% of decode
time at batch 8 with the [B, C, H, K] layout on CPU).
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DType = Any

NEG_INF = -1e10  # finite, so that fully masked rows give a uniform softmax, not NaN

CUSTOM_VJP = ('auto', 'on', 'off')


def use_custom_vjp(option) -> bool:
  """Resolves a model's custom_vjp option: 'on', 'off', or 'auto' (on for the CPU backend).

  The hand-written backward passes (here `matmul`'s, rnn.py's recurrent one) were measured
  faster on XLA CPU; elsewhere autodiff is the default. Call at trace time (inside the model),
  so that the backend in use decides. A bool passes through (already resolved).
  """
  if isinstance(option, bool):
    return option
  if option not in CUSTOM_VJP:
    raise ValueError(f'custom_vjp={option!r}: expected one of {CUSTOM_VJP}')
  return option == 'on' or (option == 'auto' and jax.default_backend() == 'cpu')


def matmul(eq: str, x: Array, w: Array, compute_dtype: DType, *,
           custom_vjp='auto') -> Array:
  """einsum with inputs cast to compute_dtype and float32 accumulation/output.

  On CPU, bf16 matmuls are only fast with f32 accumulation; bf16 outputs are slower than f32.
  Activations therefore stay float32 and only the matmul inputs are cast.

  A weight matmul (no batch axis shared by x and w, e.g. 'btd,dhk->bthk') is computed as one
  2-D dot [M, C] x [C, N] with a hand-written backward (`_dense`): the weight gradient is formed
  explicitly as xᵀ·dy contracting over all tokens, and both gradients are accumulated and
  returned in float32. Measured on CPU this avoids XLA fusing the residual/LayerNorm backward
  chain into each weight-gradient dot (DESIGN.md performance notes) and the bf16-output
  gradient dots that autodiff of a bf16 einsum produces. Other contractions (the batched
  attention products) stay a plain einsum, and so does every matmul when custom_vjp resolves
  to off (`use_custom_vjp`): then autodiff differentiates the einsum.
  """
  plan = _dense_plan(eq) if use_custom_vjp(custom_vjp) else None
  if plan is None:
    return jnp.einsum(eq, x.astype(compute_dtype), w.astype(compute_dtype),
                      preferred_element_type=jnp.float32)
  x_perm, w_perm, w_t, n_free_x, out_perm = plan
  x = jnp.transpose(x, x_perm) if x_perm != tuple(range(x.ndim)) else x
  w = jnp.transpose(w, w_perm) if w_perm != tuple(range(w.ndim)) else w
  free_x = x.shape[:n_free_x]
  n_c = x.ndim - n_free_x
  free_w = w.shape[:w.ndim - n_c] if w_t else w.shape[n_c:]
  c = int(np.prod(x.shape[n_free_x:]))
  w2 = w.reshape((-1, c) if w_t else (c, -1))
  y = _dense(x.reshape(-1, c), w2, w_t, np.dtype(compute_dtype), np.dtype(x.dtype),
             np.dtype(w.dtype))  # [M, N] float32
  y = y.reshape(free_x + free_w)
  return jnp.transpose(y, out_perm) if out_perm != tuple(range(y.ndim)) else y


@functools.lru_cache(maxsize=None)
def _dense_plan(eq: str):
  """How to compute a weight einsum as x2 [M, C] · w2: (x_perm, w_perm, w_t, n_free_x, out_perm).

  None when eq is not a weight matmul (a batch axis in both operands, a repeated or summed-away
  letter, or no contraction).
  """
  lhs, out = eq.replace(' ', '').split('->')
  xs, ws = lhs.split(',')
  letters = xs + ws
  if (len(set(xs)) != len(xs) or len(set(ws)) != len(ws) or len(set(out)) != len(out)
      or set(xs) & set(ws) & set(out) or any(ch not in out and letters.count(ch) != 2
                                             for ch in letters)):
    return None
  contract = [ch for ch in xs if ch in ws]
  if not contract:
    return None
  free_x = [ch for ch in xs if ch not in contract]
  free_w = [ch for ch in ws if ch not in contract]
  x_perm = tuple(xs.index(ch) for ch in free_x + contract)
  if [ch for ch in ws if ch in contract] == contract and ws.endswith(''.join(contract)):
    w_order, w_t = free_w + contract, True  # e.g. 'vd': contract over w's trailing axes
  else:
    w_order, w_t = contract + free_w, False
  w_perm = tuple(ws.index(ch) for ch in w_order)
  out_perm = tuple((free_x + free_w).index(ch) for ch in out)
  return x_perm, w_perm, w_t, len(free_x), out_perm


def _dense_dot(x, w, w_t):
  """x [M, C] · w [C, N] (or w [N, C] when w_t) -> [M, N] float32."""
  return jax.lax.dot_general(x, w, (((1,), (1 if w_t else 0,)), ((), ())),
                             preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _dense(x, w, w_t, compute_dtype, x_dtype, w_dtype):
  return _dense_dot(x.astype(compute_dtype), w.astype(compute_dtype), w_t)


def _dense_fwd(x, w, w_t, compute_dtype, x_dtype, w_dtype):
  xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
  return _dense_dot(xc, wc, w_t), (xc, wc)


def _dense_bwd(w_t, compute_dtype, x_dtype, w_dtype, res, dy):
  xc, wc = res
  dy = dy.astype(compute_dtype)  # [M, N]
  f32 = jnp.float32
  # dx = dy · wᵀ: [M, N] x [N, C]
  dx = jax.lax.dot_general(dy, wc, (((1,), (0 if w_t else 1,)), ((), ())),
                           preferred_element_type=f32)
  # dw = xᵀ · dy ([C, N]) or dyᵀ · x ([N, C]), contracting over all M tokens at once.
  if w_t:
    dw = jax.lax.dot_general(dy, xc, (((0,), (0,)), ((), ())), preferred_element_type=f32)
  else:
    dw = jax.lax.dot_general(xc, dy, (((0,), (0,)), ((), ())), preferred_element_type=f32)
  return dx.astype(x_dtype), dw.astype(w_dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def rotary(x: Array, positions: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding (Su et al. 2021), rotating pairs (i, i + K/2).

  x: [B, T, H, K]; positions: [B, T] integer positions.
  """
  k = x.shape[-1]
  half = k // 2
  inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) / half))  # [K/2]
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, K/2]
  sin = jnp.sin(angles)[:, :, None, :]  # [B, T, 1, K/2]
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def causal_mask(q_positions: Array, kv_positions: Array) -> Array:
  """[B, 1, T, S] boolean: query at position p sees keys at positions <= p."""
  return (kv_positions[:, None, None, :] <= q_positions[:, None, :, None])


def padding_mask(q_valid: Array, kv_valid: Array) -> Array:
  """[B, 1, T, S] boolean from [B, T] and [B, S] validity (non-padding) flags."""
  return q_valid[:, None, :, None] & kv_valid[:, None, None, :]


def dot_product_attention(q: Array, k: Array, v: Array, mask: Optional[Array], *,
                          compute_dtype: DType = jnp.float32,
                          dropout_rate: float = 0.0,
                          dropout_rng: Optional[Array] = None) -> Array:
  """softmax(q kᵀ / √K + mask) v.

  q: [B, T, H, K]; k: [B, H, K, S] (transposed, as in the cache); v: [B, H, S, K];
  mask: boolean, broadcastable to [B, H, T, S] (True = attend). Returns [B, T, H, K].
  """
  scale = 1.0 / np.sqrt(q.shape[-1])
  logits = matmul('bthk,bhks->bhts', q * scale, k, compute_dtype)  # [B, H, T, S]
  if mask is not None:
    logits = jnp.where(mask, logits, NEG_INF)
  weights = jax.nn.softmax(logits, axis=-1)  # [B, H, T, S], float32
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return matmul('bhts,bhsk->bthk', weights, v, compute_dtype)  # [B, T, H, K]


def init_cache(batch_size: int, num_heads: int, head_dim: int, max_len: int,
               dtype: DType = jnp.float32) -> dict:
  """A preallocated, zeroed key/value cache for one attention layer (C = max_len)."""
  return {'k': jnp.zeros((batch_size, num_heads, head_dim, max_len), dtype),  # [B, H, K, C]
          'v': jnp.zeros((batch_size, num_heads, max_len, head_dim), dtype)}  # [B, H, C, K]


class MultiHeadAttention(nn.Module):
  """Multi-head attention with Q/K/V and output projections.

  Call with x_q [B, T, D] and x_kv [B, S, D] (the same array for self-attention). With a
  `cache`, the new keys/values are written at `cache_index` and the queries attend over the
  whole preallocated cache under `mask` (which the caller builds from positions); the updated
  cache is returned alongside the output. With x_kv=None the cache holds keys/values projected
  beforehand (`project_kv`) and is used as it is.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  rotary: bool = False
  compute_dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  init_scale: float = 1.0
  custom_vjp: Any = 'auto'  # of the projections' matmuls, see `use_custom_vjp`
  # Biases on the Q/K/V and output projections (BERT): 'bias_query', 'bias_key', 'bias_value'
  # [H, K] and 'bias_out' [D], zero-initialised and declared after the kernels, so that a model
  # without them keeps its parameters and their init values.
  use_bias: bool = False

  @nn.compact
  def __call__(self, x_q: Array, x_kv: Optional[Array], mask: Optional[Array], *,
               q_positions: Optional[Array] = None, kv_positions: Optional[Array] = None,
               cache: Optional[dict] = None, cache_index: Optional[Array] = None,
               deterministic: bool = True):
    d_model = x_q.shape[-1]
    h, k = self.num_heads, self.head_dim

    def proj(name, axes, shape, in_axis, out_axis):
      # Fan-in scaled normal, with (H, K) treated as one axis of size d_model.
      init = nn.initializers.variance_scaling(self.init_scale, 'fan_in', 'truncated_normal',
                                              in_axis=in_axis, out_axis=out_axis)
      return self.param(name, nn.with_logical_partitioning(init, axes), shape,
                        self.param_dtype)

    w_q = proj('query', ('embed', 'heads', 'kv'), (d_model, h, k), 0, (1, 2))
    w_k = proj('key', ('embed', 'heads', 'kv'), (d_model, h, k), 0, (1, 2))
    w_v = proj('value', ('embed', 'heads', 'kv'), (d_model, h, k), 0, (1, 2))
    w_o = proj('out', ('heads', 'kv', 'embed'), (h, k, d_model), (0, 1), 2)
    bias = lambda name, axes, shape: (self.param(
        name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape,
        self.param_dtype) if self.use_bias else 0.0)
    b_q = bias('bias_query', ('heads', 'kv'), (h, k))
    b_k = bias('bias_key', ('heads', 'kv'), (h, k))
    b_v = bias('bias_value', ('heads', 'kv'), (h, k))
    b_o = bias('bias_out', ('embed',), (d_model,))

    mm = lambda eq, a, b: matmul(eq, a, b, self.compute_dtype, custom_vjp=self.custom_vjp)
    q = mm('btd,dhk->bthk', x_q, w_q)  # [B, T, H, K]
    if self.use_bias:
      q = q + b_q
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
    if self.rotary:
      q = rotary(q, q_positions)
    if x_kv is None:
      # Keys/values computed once beforehand (cross-attention over a fixed encoder output
      # while decoding, see `project_kv`): read them from the cache, write nothing.
      key, v = cache['k'], cache['v']
    else:
      key = mm('bsd,dhk->bshk', x_kv, w_k)  # [B, S, H, K]
      v = mm('bsd,dhk->bhsk', x_kv, w_v)  # [B, H, S, K]
      if self.use_bias:
        key = key + b_k
        v = v + b_v[:, None, :]  # [H, 1, K]
      if self.rotary:
        key = rotary(key, kv_positions)
      key = jnp.transpose(key, (0, 2, 3, 1))  # [B, H, K, S]

    if cache is not None and x_kv is not None:
      # Write this chunk at cache_index; attend over the whole preallocated cache.
      key = jax.lax.dynamic_update_slice(cache['k'], key.astype(cache['k'].dtype),
                                         (0, 0, 0, cache_index))  # [B, H, K, C]
      v = jax.lax.dynamic_update_slice(cache['v'], v.astype(cache['v'].dtype),
                                       (0, 0, cache_index, 0))  # [B, H, C, K]
      cache = {'k': key, 'v': v}

    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    out = dot_product_attention(q, key, v, mask, compute_dtype=self.compute_dtype,
                                dropout_rate=self.dropout_rate,
                                dropout_rng=dropout_rng)  # [B, T, H, K]
    out = mm('bthk,hkd->btd', out, w_o)  # [B, T, D]
    if self.use_bias:
      out = out + b_o
    out = nn.with_logical_constraint(out, ('batch', 'length', 'embed'))
    return out, cache


def project_kv(params: dict, x_kv: Array, compute_dtype: DType = jnp.float32, *,
               custom_vjp='auto') -> dict:
  """Keys/values of a MultiHeadAttention's parameters over x_kv [B, S, D], cache layout.

  For cross-attention while decoding: the encoder output is fixed, so its keys and values are
  projected once per sentence instead of once per generated token.
  """
  mm = lambda eq, w: matmul(eq, x_kv, w, compute_dtype, custom_vjp=custom_vjp)
  k = mm('bsd,dhk->bhks', params['key'])  # [B, H, K, S]
  v = mm('bsd,dhk->bhsk', params['value'])  # [B, H, S, K]
  if 'bias_key' in params:  # use_bias
    k, v = k + params['bias_key'][:, :, None], v + params['bias_value'][:, None, :]
  return {'k': k, 'v': v}


# ----------------------------------------------------------------------------------------
# Scores of the attention RNN encoder-decoder: one query per step against the source.
# ----------------------------------------------------------------------------------------

# 'bahdanau' (additive)  e_j = v_a · tanh(W_a q + U_a h̄_j)    keys U_a h̄_j  [B, S, A]
# 'luong_dot'            e_j = q · h̄_j                        keys h̄_j      [B, S, E]
# 'luong_general'        e_j = q · (h̄_j W_a)                  keys h̄_j W_a  [B, S, N]
SCORES = ('bahdanau', 'luong_dot', 'luong_general')


def score_keys(kind: str, params: dict, values: Array, compute_dtype: DType, *,
               custom_vjp='auto') -> Array:
  """The query-independent part of the scores, computed once per source sentence.

  Args:
    kind: one of SCORES.
    params: {'key_kernel': U_a [E, A] (bahdanau) or W_a [E, N] (luong_general)}; unused for
      'luong_dot'.
    values: encoder outputs h̄ [B, S, E].
    compute_dtype: matmul operand dtype.
    custom_vjp: see `use_custom_vjp`.

  Returns:
    keys [B, S, A] (the values themselves for 'luong_dot').
  """
  if kind == 'luong_dot':
    return values
  return matmul('bse,ea->bsa', values, params['key_kernel'], compute_dtype,
                custom_vjp=custom_vjp)  # [B, S, A]


def score(kind: str, params: dict, query: Array, keys: Array, compute_dtype: DType, *,
          custom_vjp='auto') -> Array:
  """Unnormalised scores e_j of one query against every source position.

  Args:
    kind: one of SCORES.
    params: for 'bahdanau', {'query_kernel': W_a [N, A], 'score_vector': v_a [A]}.
    query: decoder hidden [B, N].
    keys: from `score_keys`, [B, S, A].
    compute_dtype: matmul operand dtype.
    custom_vjp: see `use_custom_vjp`.

  Returns:
    scores [B, S] float32.
  """
  mm = lambda eq, a, b: matmul(eq, a, b, compute_dtype, custom_vjp=custom_vjp)
  if kind == 'bahdanau':
    q = mm('bn,na->ba', query, params['query_kernel'])  # [B, A]
    hidden = jnp.tanh(keys + q[:, None, :])  # [B, S, A]
    return mm('bsa,a->bs', hidden, params['score_vector'])  # [B, S]
  return mm('bn,bsn->bs', query, keys)  # [B, S]


def attend(scores: Array, values: Array, mask: Array, compute_dtype: DType, *,
           custom_vjp='auto'):
  """Masked softmax over the source and the weighted sum of the values.

  Args:
    scores: [B, S]; values: [B, S, E]; mask: [B, S] bool, True at real source tokens.

  Returns:
    (context [B, E], weights [B, S]); masked positions get weight exactly 0.
  """
  # A finite -1e10 (not -inf) underflows to exactly 0 after the max subtraction, and an
  # all-padding row still gets a finite (uniform) softmax instead of NaN.
  scores = jnp.where(mask, scores.astype(jnp.float32), NEG_INF)  # [B, S]
  weights = jax.nn.softmax(scores, axis=-1)  # [B, S]
  context = matmul('bs,bse->be', weights, values, compute_dtype,
                   custom_vjp=custom_vjp)  # [B, E]
  return context, weights
