"""Attention and the Transformer LM against direct computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import attention, transformer


def _np_attention(q, k, v, mask):
  """softmax(q kᵀ/√d + mask) v for q [B,T,H,K], k/v [B,S,H,K], mask [B,T,S] (numpy, f64)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask[:, None], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bhts,bshk->bthk', w, v)


def test_causal_attention_matches_numpy():
  rng = np.random.default_rng(0)
  b, t, h, k = 2, 7, 3, 8
  q, key, v = (rng.normal(size=(b, t, h, k)).astype(np.float32) for _ in range(3))
  pos = np.broadcast_to(np.arange(t), (b, t))
  mask = attention.causal_mask(jnp.asarray(pos), jnp.asarray(pos))
  out = attention.dot_product_attention(
      jnp.asarray(q), jnp.transpose(jnp.asarray(key), (0, 2, 3, 1)),
      jnp.transpose(jnp.asarray(v), (0, 2, 1, 3)), mask)
  causal = np.tril(np.ones((t, t), bool))[None].repeat(b, 0)
  np.testing.assert_allclose(np.asarray(out), _np_attention(q, key, v, causal), atol=1e-5)
  # The first position can only see itself: its output is exactly its own value.
  np.testing.assert_allclose(np.asarray(out)[:, 0], v[:, 0], atol=1e-6)


def test_padding_mask_matches_numpy():
  rng = np.random.default_rng(1)
  b, t, s, h, k = 2, 4, 6, 2, 4
  q = rng.normal(size=(b, t, h, k)).astype(np.float32)
  key, v = (rng.normal(size=(b, s, h, k)).astype(np.float32) for _ in range(2))
  kv_valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  mask = attention.padding_mask(jnp.ones((b, t), bool), jnp.asarray(kv_valid))
  out = attention.dot_product_attention(
      jnp.asarray(q), jnp.transpose(jnp.asarray(key), (0, 2, 3, 1)),
      jnp.transpose(jnp.asarray(v), (0, 2, 1, 3)), mask)
  ref = _np_attention(q, key, v, np.broadcast_to(kv_valid[:, None], (b, t, s)))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_multihead_module_matches_numpy_projections():
  """Q/K/V/output projections around the attention core, against numpy."""
  rng = np.random.default_rng(2)
  b, t, d, h = 2, 5, 12, 3
  x = rng.normal(size=(b, t, d)).astype(np.float32)
  mha = attention.MultiHeadAttention(num_heads=h, head_dim=d // h)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  mask = attention.causal_mask(pos, pos)
  params = nn.meta.unbox(mha.init(jax.random.key(0), x, x, mask)['params'])
  out, _ = mha.apply({'params': params}, x, x, mask)
  p = jax.tree.map(np.asarray, params)
  q = np.einsum('btd,dhk->bthk', x, p['query'])
  key = np.einsum('btd,dhk->bthk', x, p['key'])
  v = np.einsum('btd,dhk->bthk', x, p['value'])
  ref = np.einsum('bthk,hkd->btd', _np_attention(q, key, v, np.tril(np.ones((t, t), bool))[None]
                                                 .repeat(b, 0)), p['out'])
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_rotary_is_relative():
  """q·k after rotary depends only on the position difference."""
  rng = np.random.default_rng(3)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  def score(pq, pk):
    return float(jnp.sum(attention.rotary(q, jnp.array([[pq]])) *
                         attention.rotary(k, jnp.array([[pk]]))))
  assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-4)
  assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


@pytest.mark.parametrize('position,scan_layers', [('learned', True), ('sinusoidal', False),
                                                  ('rotary', True), ('rotary', False)])
def test_cached_decoding_equals_full_sequence(position, scan_layers):
  cfg = transformer.TransformerConfig(vocab_size=40, d_model=32, num_heads=4, num_layers=2,
                                      d_ff=48, max_len=32, dropout_rate=0.0,
                                      position=position, scan_layers=scan_layers)
  model = transformer.TransformerLM(cfg)
  toks = jax.random.randint(jax.random.key(0), (3, 11), 0, 40)
  params = nn.meta.unbox(model.init(jax.random.key(1), toks)['params'])
  full = model.apply({'params': params}, toks)  # [B, T, V]
  cache = transformer.init_cache(cfg, 3, 16)
  logits, cache = model.apply({'params': params}, toks[:, :5], cache=cache, cache_index=0)
  steps = [logits]
  for i in range(5, 11):
    logits, cache = model.apply({'params': params}, toks[:, i:i + 1], cache=cache,
                                cache_index=i)
    steps.append(logits)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full),
                             atol=2e-5)


def test_causality_future_tokens_do_not_change_past_logits():
  cfg = transformer.TransformerConfig(vocab_size=30, d_model=16, num_heads=2, num_layers=2,
                                      d_ff=32, max_len=16, dropout_rate=0.0)
  model = transformer.TransformerLM(cfg)
  a = jnp.array([[1, 2, 3, 4, 5, 6]])
  b = a.at[0, 4:].set(jnp.array([9, 9]))
  params = nn.meta.unbox(model.init(jax.random.key(0), a)['params'])
  la, lb = model.apply({'params': params}, a), model.apply({'params': params}, b)
  np.testing.assert_allclose(np.asarray(la[:, :4]), np.asarray(lb[:, :4]), atol=1e-6)
  assert not np.allclose(np.asarray(la[:, 4:]), np.asarray(lb[:, 4:]))


def test_scan_and_unrolled_layers_compute_the_same_function():
  kw = dict(vocab_size=30, d_model=16, num_heads=2, num_layers=3, d_ff=32, max_len=16,
            dropout_rate=0.0)
  scanned = transformer.TransformerLM(transformer.TransformerConfig(scan_layers=True, **kw))
  unrolled = transformer.TransformerLM(transformer.TransformerConfig(scan_layers=False, **kw))
  toks = jnp.array([[1, 2, 3, 4, 5]])
  ps = nn.meta.unbox(scanned.init(jax.random.key(0), toks)['params'])
  pu, cfg = transformer.unstack_layers(ps, scanned.config)
  assert not cfg.scan_layers
  np.testing.assert_allclose(np.asarray(scanned.apply({'params': ps}, toks)),
                             np.asarray(unrolled.apply({'params': pu}, toks)), atol=1e-5)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize('kind', attention.SCORES)
def test_rnn_attention_scores_match_numpy(kind):
  """Bahdanau (additive) and Luong dot/general scores, masked softmax and context."""
  B, S, E, N, A = 3, 5, 4, 4, 6  # pylint: disable=invalid-name
  rng = np.random.default_rng(0)
  values = rng.normal(size=(B, S, E))  # h̄_j
  query = rng.normal(size=(B, N))  # s_{t-1} (Bahdanau) or s_t (Luong)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
  u_a, w_a, v_a = rng.normal(size=(E, A)), rng.normal(size=(N, A)), rng.normal(size=A)
  w_gen = rng.normal(size=(E, N))
  if kind == 'bahdanau':
    params = {'key_kernel': u_a, 'query_kernel': w_a, 'score_vector': v_a}
    # e_j = v_a · tanh(W_a s + U_a h_j), written per position.
    scores = np.array([[v_a @ np.tanh(query[b] @ w_a + values[b, j] @ u_a) for j in range(S)]
                       for b in range(B)])
  elif kind == 'luong_dot':
    params = {}
    scores = np.einsum('bn,bsn->bs', query, values)
  else:
    params = {'key_kernel': w_gen}
    scores = np.array([[values[b, j] @ w_gen @ query[b] for j in range(S)] for b in range(B)])
  want_w = np.zeros((B, S))
  for b in range(B):
    n = mask[b].sum()  # masks are prefixes here
    want_w[b, :n] = _softmax(scores[b, :n])
  want_ctx = np.einsum('bs,bse->be', want_w, values)

  f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
  keys = attention.score_keys(kind, f32(params), f32(values), jnp.float32)
  got_scores = attention.score(kind, f32(params), f32(query), keys, jnp.float32)
  ctx, w = attention.attend(got_scores, f32(values), jnp.asarray(mask), jnp.float32)
  np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(w, want_w, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(w)[~mask] == 0.0)
  np.testing.assert_allclose(ctx, want_ctx, rtol=1e-5, atol=1e-5)
