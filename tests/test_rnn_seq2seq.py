"""Tests for lmjax.models.rnn_seq2seq: teacher forcing vs step-by-step decoding, padding
invariance, gradients, a tiny reversal task, config validation. (Its attention scores are
attention.py's, tested in test_attention.py.)"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.errors import UserError
from lmjax.models import rnn_seq2seq as s2s

BOS, EOS = 1, 2


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _cfg(**kw):
  base = dict(vocab_size=13, embed_dim=6, hidden_size=8, dropout_rate=0.0, init_scale=0.3)
  base.update(kw)
  return s2s.RNNSeq2SeqConfig(**base)


def _batch(rng, batch, src_lens, tgt_len, vocab=13):
  src = np.zeros((batch, max(src_lens)), np.int32)
  for b, n in enumerate(src_lens):
    src[b, :n] = rng.integers(3, vocab, size=n)
  dec = rng.integers(3, vocab, size=(batch, tgt_len)).astype(np.int32)
  dec[:, 0] = BOS
  return jnp.asarray(src), jnp.asarray(dec)


def _unbox(variables):
  return jax.tree.map(lambda x: x.value if hasattr(x, 'value') else x, variables,
                      is_leaf=lambda x: hasattr(x, 'value'))


@pytest.mark.parametrize('attention', ['bahdanau', 'luong_general'])
def test_decoder_step_matches_numpy(attention):
  """One full step (bridge, LSTM, attention, h̃, tied logits) against a numpy transcription."""
  cfg = _cfg(attention=attention, input_feeding=True, tie_embeddings=True)
  model = s2s.RNNSeq2Seq(cfg)
  src, dec = _batch(np.random.default_rng(1), 2, [4, 2], 1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), src, dec)
  logits = jax.jit(model.apply)(variables, src, dec)[:, 0]  # [B, V]
  memory = jax.jit(functools.partial(model.apply, method=s2s.RNNSeq2Seq.encode))(variables, src)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), _unbox(variables)['params'])
  hbar = np.asarray(memory['outputs'], np.float64)  # [B, S, E]
  mask = np.asarray(src) != 0
  ba = p['attention']

  # The bridge from the encoder's final states: forward at the last real token, backward at 0.
  last = mask.sum(1) - 1
  hid = cfg.hidden_size
  h2 = hid // 2
  fwd = hbar[np.arange(2), last, :h2]
  summary = np.concatenate([fwd, hbar[:, 0, h2:]], -1)
  init = np.tanh(summary @ p['bridge']['kernel'] + p['bridge']['bias'])
  c, h = init[:, :hid], init[:, hid:2 * hid]

  def context(q):
    if attention == 'bahdanau':
      e = np.tanh((hbar @ ba['key_kernel']) + (q @ ba['query_kernel'])[:, None]) @ ba[
          'score_vector']
    else:
      e = np.einsum('bse,eh,bh->bs', hbar, ba['key_kernel'], q)
    a = _softmax(np.where(mask, e, -1e30))
    return np.einsum('bs,bse->be', a, hbar)

  table = p['embeddings']['embedding']
  emb = table[np.asarray(dec[:, 0])]
  feed = np.zeros((2, cfg.embed_dim))
  d0 = p['decoder_0']
  if attention == 'bahdanau':
    ctx = context(h)
    x = np.concatenate([emb, ctx, feed], -1)
  else:
    x = np.concatenate([emb, feed], -1)
  z = x @ d0['input_kernel'] + d0['bias'] + h @ d0['recurrent_kernel']
  i, f, g, o = np.split(z, 4, -1)
  c = _sigmoid(f + cfg.forget_bias) * c + _sigmoid(i) * np.tanh(g)
  h = _sigmoid(o) * np.tanh(c)
  if attention != 'bahdanau':
    ctx = context(h)
  attn_vec = np.tanh(np.concatenate([ctx, h], -1) @ ba['output_kernel'])
  want = attn_vec @ table.T + p['output']['bias']
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# 2. Teacher forcing == token-by-token decoding.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('input_feeding', [True, False])
@pytest.mark.parametrize('attention', s2s.ATTENTIONS)
@pytest.mark.parametrize('cell', s2s.CELLS)
def test_teacher_forcing_matches_decode_steps(cell, attention, input_feeding):
  cfg = _cfg(cell=cell, attention=attention, input_feeding=input_feeding,
             num_decoder_layers=2, tie_embeddings=cell == 'lstm')
  model = s2s.RNNSeq2Seq(cfg)
  src, dec = _batch(np.random.default_rng(2), 3, [5, 3, 1], 4)

  @jax.jit
  def run(rng):
    variables = model.init(rng, src, dec)
    forced = model.apply(variables, src, dec)  # [B, T, V]
    memory = model.apply(variables, src, method=s2s.RNNSeq2Seq.encode)
    state = model.apply(variables, memory, method=s2s.RNNSeq2Seq.init_decode_state)
    stepped = []
    for t in range(dec.shape[1]):
      logits, state = model.apply(variables, state, dec[:, t],
                                  method=s2s.RNNSeq2Seq.decode_step)
      stepped.append(logits)
    return forced, jnp.stack(stepped, 1), state

  forced, stepped, state = run(jax.random.PRNGKey(0))
  assert forced.shape == (3, 4, 13) and forced.dtype == jnp.float32
  np.testing.assert_allclose(forced, stepped, rtol=1e-5, atol=1e-5)
  # Every state leaf is batch-major, so a beam search can tile/gather along axis 0.
  assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(state))
  assert float(jnp.std(forced)) > 1e-3  # not a degenerate constant output


# ----------------------------------------------------------------------------------------
# 3. Padding invariance.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('cell,attention', [('lstm', 'bahdanau'), ('gru', 'luong_dot'),
                                            ('lstm', 'luong_general')])
def test_source_padding_invariance(cell, attention):
  cfg = _cfg(cell=cell, attention=attention, num_encoder_layers=2)
  model = s2s.RNNSeq2Seq(cfg)
  src, dec = _batch(np.random.default_rng(3), 2, [6, 3], 4)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), src, dec)
  apply = jax.jit(model.apply)
  batched = apply(variables, src, dec)[1]  # row 1 is padded from 3 to 6
  alone = apply(variables, src[1:, :3], dec[1:])[0]
  np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------
# 4. Gradients and learning.
# ----------------------------------------------------------------------------------------


def _loss(model, params, src, dec, tgt, rng=None):
  rngs = None if rng is None else {'dropout': rng}
  logits = model.apply({'params': params}, src, dec, rngs=rngs)  # [B, T, V]
  weights = (tgt != 0).astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
  return (nll * weights).sum() / weights.sum(), logits


def test_gradients_finite_and_nonzero():
  # Untied, so that the source and target embeddings and the output kernel are separate
  # parameters; two decoder layers, so that the inter-layer dropout path is exercised.
  cfg = _cfg(attention='bahdanau', num_decoder_layers=2,
             tie_embeddings=False, dropout_rate=0.2)
  model = s2s.RNNSeq2Seq(cfg, deterministic=False)
  src, dec = _batch(np.random.default_rng(4), 3, [5, 3, 2], 4)
  tgt = jnp.concatenate([dec[:, 1:], jnp.full((3, 1), EOS, jnp.int32)], 1)
  params = _unbox(jax.jit(model.init)({'params': jax.random.PRNGKey(0),
                              'dropout': jax.random.PRNGKey(1)}, src, dec))['params']
  grads = jax.jit(jax.grad(lambda p: _loss(model, p, src, dec, tgt, jax.random.PRNGKey(2))[0]))(
      params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(g)), name
    assert float(jnp.abs(g).max()) > 0.0, name


def test_learns_to_reverse():
  vocab, length, batch = 12, 5, 32
  cfg = s2s.RNNSeq2SeqConfig(vocab_size=vocab, embed_dim=16, hidden_size=32,
                             attention='luong_general', dropout_rate=0.0, init_scale=0.1)
  model = s2s.RNNSeq2Seq(cfg)

  def make(key):
    src = jax.random.randint(key, (batch, length), 3, vocab)
    tgt = jnp.concatenate([src[:, ::-1], jnp.full((batch, 1), EOS, src.dtype)], 1)  # [B, 6]
    dec = jnp.concatenate([jnp.full((batch, 1), BOS, src.dtype), tgt[:, :-1]], 1)
    return src, dec, tgt

  src0, dec0, _ = make(jax.random.PRNGKey(0))
  params = _unbox(jax.jit(model.init)(jax.random.PRNGKey(1), src0, dec0))['params']
  opt = optax.adam(3e-2)

  @jax.jit
  def train(params, key):
    def step(carry, k):
      params, opt_state = carry
      src, dec, tgt = make(k)
      (loss, _), g = jax.value_and_grad(functools.partial(_loss, model), has_aux=True)(
          params, src, dec, tgt)
      updates, opt_state = opt.update(g, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)),
                                       jax.random.split(key, 200))
    return params, losses

  params, losses = train(params, jax.random.PRNGKey(2))
  src, dec, tgt = make(jax.random.PRNGKey(3))
  _, logits = _loss(model, params, src, dec, tgt)
  acc = float((logits.argmax(-1) == tgt).mean())
  assert float(losses[-10:].mean()) < 0.1 * float(losses[:5].mean()), losses
  assert acc > 0.9, acc


# ----------------------------------------------------------------------------------------
# 5. Config validation.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('field,value', [
    ('attention', 'foo'), ('cell', 'elman'), ('init', 'xavier'), ('hidden_size', 7),
    ('hidden_size', 0), ('vocab_size', 1), ('num_encoder_layers', 0),
    ('num_decoder_layers', 0), ('embed_dim', 0), ('dropout_rate', 1.0),
    ('init_scale', 0.0), ('input_feeding', 'yes'), ('tie_embeddings', 1),
    ('matmul_dtype', jnp.int32), ('param_dtype', 'nonsense'), ('max_len', 0)])
def test_config_validation_names_field(field, value):
  kwargs = {'vocab_size': 10, field: value}
  with pytest.raises(UserError, match=rf'^config\.model\.{field}: '):
    s2s.RNNSeq2SeqConfig(**kwargs)
  s2s.RNNSeq2SeqConfig(vocab_size=10)  # the defaults are valid
