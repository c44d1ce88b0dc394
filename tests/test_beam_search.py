"""Greedy and beam search against brute-force enumeration of every hypothesis.

The "models" are tiny step functions over random tables, small enough (V=5, max_len=4) that a
numpy depth-first search can score every eos-terminated sequence exactly. Token 0 (pad) gets
-inf logits, so each step has 3 non-eos choices: at most 3**3 = 27 alive prefixes, and a beam of
27 keeps them all, making beam search exact.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding

V, T, BOS, EOS = 5, 4, 1, 2
EXHAUSTIVE_BEAM = 27  # every alive prefix: 3 non-eos tokens over T-1 = 3 free steps
ALPHAS = (0.0, 0.6, 1.0)


def random_tables(seeds, scale=2.0):
  """One [T, V(prev), V(next)] logit table per seed, pad never predicted. -> [B, T, V, V]."""
  tables = np.stack([np.random.default_rng(s).normal(size=(T, V, V)) * scale for s in seeds])
  tables[..., 0] = -np.inf
  return tables.astype(np.float32)


def table_step(table):
  """logits = table[example, t, previous token]; the state only carries the example id."""
  def step(tokens, state, t):  # tokens [N]
    return table[state['ex'], t, tokens], state  # [N, V]
  return step


def table_step_np(table_b):
  def step(prev, state, t):
    return table_b[t, prev], state
  return step


# A model whose logits depend on the whole history only through the decoder state: a unique
# code of the prefix (base-V digits) indexes a table, plus a running embedding sum. If the
# search did not reorder state with the parent beams, logits would come from the wrong prefix.
NUM_CODES = V ** T


def prefix_params(seeds):
  tables, embs, outs = [], [], []
  for s in seeds:
    rng = np.random.default_rng(1000 + s)
    tables.append(rng.normal(size=(NUM_CODES, V)) * 2.0)
    embs.append(rng.normal(size=(V, 2)))
    outs.append(rng.normal(size=(2, V)))
  tables = np.stack(tables)
  tables[..., 0] = -np.inf
  return (tables.astype(np.float32), np.stack(embs).astype(np.float32),
          np.stack(outs).astype(np.float32))


def prefix_step(params):
  table, emb, out = params  # [B, NUM_CODES, V], [B, V, 2], [B, 2, V]

  def step(tokens, state, t):  # tokens [N]
    del t
    ex = state['ex']  # [N]
    code = state['code'] * V + tokens  # [N]
    hist = state['hist'] + emb[ex, tokens]  # [N, 2]
    logits = table[ex, code] + jnp.einsum('nd,ndv->nv', hist, out[ex])  # [N, V]
    return logits, {'ex': ex, 'code': code, 'hist': hist}
  return step


def prefix_step_np(params, b):
  table, emb, out = (p[b].astype(np.float64) for p in params)

  def step(prev, state, t):
    del t
    code, hist = state
    code = code * V + prev
    hist = hist + emb[prev]
    return table[code] + hist @ out, (code, hist)
  return step


def prefix_state(batch):
  return {'ex': jnp.arange(batch, dtype=jnp.int32), 'code': jnp.zeros((batch,), jnp.int32),
          'hist': jnp.zeros((batch, 2), jnp.float32)}


def enumerate_np(step, state, alpha, limit=T):
  """Every eos-terminated hypothesis of one example: sorted [(score, tokens [T] tuple)]."""
  found = []

  def visit(prefix, prev, state, logp):
    t = len(prefix)
    logits, state = step(prev, state, t)
    logits = np.asarray(logits, np.float64)
    lsm = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    for tok in range(V):
      if not np.isfinite(lsm[tok]) or (t >= limit - 1 and tok != EOS):
        continue
      total = logp + lsm[tok]
      if tok == EOS:
        seq = prefix + [EOS]
        lp = ((5.0 + len(seq)) / 6.0) ** alpha
        found.append((total / lp, tuple(seq + [0] * (T - len(seq)))))
      else:
        visit(prefix + [tok], tok, state, total)

  visit([], BOS, state, 0.0)
  return sorted(found, reverse=True)


def score_of(hyps, tokens):
  return dict((seq, s) for s, seq in hyps)[tuple(int(x) for x in tokens)]


@functools.partial(jax.jit, static_argnames=('beam', 'alpha'))
def beam_tables(tables, max_lens, *, beam, alpha):
  b = tables.shape[0]
  return decoding.beam_search(table_step(tables), {'ex': jnp.arange(b, dtype=jnp.int32)},
                              batch_size=b, beam_size=beam, max_len=T, bos_id=BOS, eos_id=EOS,
                              alpha=alpha, max_lens=max_lens)


@jax.jit
def greedy_tables(tables, max_lens):
  b = tables.shape[0]
  return decoding.greedy_search(table_step(tables), {'ex': jnp.arange(b, dtype=jnp.int32)},
                                batch_size=b, max_len=T, bos_id=BOS, eos_id=EOS,
                                max_lens=max_lens)


@functools.partial(jax.jit, static_argnames=('beam', 'alpha'))
def beam_prefix(params, *, beam, alpha):
  b = params[0].shape[0]
  return decoding.beam_search(prefix_step(params), prefix_state(b), batch_size=b,
                              beam_size=beam, max_len=T, bos_id=BOS, eos_id=EOS, alpha=alpha)


def full_lens(b):
  return jnp.full((b,), T, jnp.int32)


def check_against_enumeration(tokens, scores, all_hyps, exhaustive):
  """Every returned hypothesis is real and correctly scored; exhaustive beams are exact."""
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  for b, hyps in enumerate(all_hyps):
    assert np.all(np.diff(scores[b]) <= 1e-6), 'scores must be best first'
    assert scores[b, 0] <= hyps[0][0] + 1e-5
    for k in range(tokens.shape[1]):
      if np.isfinite(scores[b, k]):
        assert scores[b, k] == pytest.approx(score_of(hyps, tokens[b, k]), abs=1e-5)
    if exhaustive:
      want = hyps[:tokens.shape[1]]
      np.testing.assert_allclose(scores[b], [s for s, _ in want], atol=1e-5)
      np.testing.assert_array_equal(tokens[b], np.array([seq for _, seq in want]))


@pytest.mark.parametrize('alpha', ALPHAS)
def test_exhaustive_beam_finds_the_true_best_and_beats_beam_one(alpha):
  seeds = [0, 1, 2, 3]
  tables = random_tables(seeds)
  all_hyps = [enumerate_np(table_step_np(tables[b]), None, alpha) for b in range(len(seeds))]
  assert len(all_hyps[0]) == 1 + 3 + 9 + 27
  lens = full_lens(len(seeds))
  tok_x, score_x = beam_tables(tables, lens, beam=EXHAUSTIVE_BEAM, alpha=alpha)
  check_against_enumeration(tok_x, score_x, all_hyps, exhaustive=True)
  tok_1, score_1 = beam_tables(tables, lens, beam=1, alpha=alpha)
  check_against_enumeration(tok_1, score_1, all_hyps, exhaustive=False)
  assert np.all(np.asarray(score_x)[:, 0] >= np.asarray(score_1)[:, 0] - 1e-6)


def test_beam_beats_greedy_when_the_likely_first_token_is_a_trap():
  """First step prefers token 3 (p~0.6), but after it every token is uniform; after token 4,
  eos is near certain. Greedy commits to 3; any beam >= 2 finds [4, eos]."""
  table = np.zeros((1, T, V, V), np.float32)
  table[..., 3] = 0.1  # a slight preference for 3 everywhere, so greedy has no ties
  table[0, 0, BOS] = [0.0, -np.inf, -10.0, 1.0, 0.5]
  table[0, 1, 4, EOS] = 10.0
  table[..., 0] = -np.inf
  greedy = np.asarray(greedy_tables(table, full_lens(1)))
  np.testing.assert_array_equal(greedy, [[3, 3, 3, EOS]])
  for alpha in ALPHAS:
    hyps = enumerate_np(table_step_np(table[0]), None, alpha)
    tokens, scores = beam_tables(table, full_lens(1), beam=2, alpha=alpha)
    np.testing.assert_array_equal(np.asarray(tokens)[0, 0], [4, EOS, 0, 0])
    assert hyps[0][1] == (4, EOS, 0, 0)
    assert float(scores[0, 0]) == pytest.approx(hyps[0][0], abs=1e-5)
    assert float(scores[0, 0]) > score_of(hyps, greedy[0]) + 0.1


def test_beam_one_equals_greedy():
  """With alpha=0 a beam of one is greedy: it stops at the first eos it would have chosen."""
  seeds = list(range(10, 16))
  tables = random_tables(seeds, scale=1.5)
  lens = jnp.array([4, 3, 4, 2, 1, 4], jnp.int32)
  greedy = np.asarray(greedy_tables(tables, lens))
  tokens, _ = beam_tables(tables, lens, beam=1, alpha=0.0)
  np.testing.assert_array_equal(np.asarray(tokens)[:, 0], greedy)
  # The greedy output is itself well formed: eos once, zeros after.
  for row, limit in zip(greedy, np.asarray(lens)):
    end = list(row).index(EOS)
    assert end < limit and np.all(row[end + 1:] == 0) and np.all(row[:end] != 0)


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_state_is_reordered_with_the_parent_beams(alpha):
  seeds = [0, 1, 2]
  params = prefix_params(seeds)
  state0 = (0, np.zeros(2))
  all_hyps = [enumerate_np(prefix_step_np(params, b), state0, alpha) for b in range(len(seeds))]
  tok_x, score_x = beam_prefix(params, beam=EXHAUSTIVE_BEAM, alpha=alpha)
  check_against_enumeration(tok_x, score_x, all_hyps, exhaustive=True)
  # A narrow beam drops and reorders prefixes every step; scores must still match the
  # tokens it returns, which fails if state rows do not follow their hypotheses.
  tok_3, score_3 = beam_prefix(params, beam=3, alpha=alpha)
  check_against_enumeration(tok_3, score_3, all_hyps, exhaustive=False)


def test_max_lens_forces_eos_at_the_limit():
  seeds = [5, 6, 7]
  lens = np.array([1, 2, 3], np.int32)
  # Eos is never chosen freely (logit -10 against a dominant token 3), so every output runs to
  # its limit; with alpha=1 the length penalty makes the longest allowed hypothesis best.
  table = np.zeros((len(seeds), T, V, V), np.float32)
  table[..., 3], table[..., EOS], table[..., 0] = 5.0, -10.0, -np.inf
  greedy = np.asarray(greedy_tables(table, jnp.asarray(lens)))
  tokens, scores = beam_tables(table, jnp.asarray(lens), beam=2, alpha=1.0)
  tokens = np.asarray(tokens)
  for b, limit in enumerate(lens):
    want = [3] * (limit - 1) + [EOS] + [0] * (T - limit)
    np.testing.assert_array_equal(greedy[b], want)
    np.testing.assert_array_equal(tokens[b, 0], want)
    hyps = enumerate_np(table_step_np(table[b]), None, 1.0, limit=limit)
    assert float(scores[b, 0]) == pytest.approx(hyps[0][0], abs=1e-5)
  # Random tables with per-example limits: the exhaustive beam is exact under the limits.
  tables = random_tables([20, 21, 22, 23])
  lens = np.array([4, 3, 2, 1], np.int32)
  all_hyps = [enumerate_np(table_step_np(tables[b]), None, 0.6, limit=int(lens[b]))
              for b in range(4)]
  tok_x, score_x = beam_tables(tables, jnp.asarray(lens), beam=EXHAUSTIVE_BEAM, alpha=0.6)
  tok_x, score_x = np.asarray(tok_x), np.asarray(score_x)
  for b, limit in enumerate(lens):
    n = len(all_hyps[b])
    assert n == sum(3 ** i for i in range(limit))
    check_against_enumeration(tok_x[b:b + 1, :n], score_x[b:b + 1, :n], all_hyps[b:b + 1],
                              exhaustive=True)
    assert np.all(np.isneginf(score_x[b, n:]))  # fewer hypotheses exist than beam slots
    assert np.all(tok_x[b, :, limit:] == 0)


def test_no_finished_hypothesis_returns_the_alive_ones():
  """A model that can never emit eos (logit -inf) leaves nothing finished."""
  table = random_tables([30])
  table[..., EOS] = -np.inf
  tokens, scores = beam_tables(table, full_lens(1), beam=2, alpha=0.0)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  lsm = np.asarray(jax.nn.log_softmax(jnp.asarray(table[0], jnp.float32), axis=-1))
  for k in range(2):
    seq = tokens[0, k]
    assert np.all(seq[:T - 1] != 0) and seq[T - 1] == 0 and np.all(seq != EOS)
    prevs = [BOS] + list(seq[:T - 2])
    want = sum(lsm[t, prevs[t], seq[t]] for t in range(T - 1))  # alpha=0: raw log-prob
    assert scores[0, k] == pytest.approx(want, abs=1e-5)


def test_length_penalty_matches_the_formula():
  assert float(decoding._length_penalty(jnp.int32(3), 0.6)) == pytest.approx(
      math.pow(8 / 6, 0.6), rel=1e-6)
