"""Interpolated modified Kneser-Ney n-gram language model (Chen & Goodman 1998), numpy only.

Notation: an n-gram is (h, w), a context h of j-1 tokens followed by a token w.

  p_j(w | h) = [max(a_j(h w) - D_j(a_j(h w)), 0) + γ_j(h) p_{j-1}(w | h')] / T_j(h)
  γ_j(h)     = D_j1 N1(h ·) + D_j2 N2(h ·) + D_j3+ N3+(h ·)
  T_j(h)     = Σ_w a_j(h w)

h' drops the first token of h; p_0 is uniform over the V vocabulary entries; when
T_j(h) = 0 (h never seen with a successor) p_j(w | h) = p_{j-1}(w | h'). N_k(h ·) counts
tokens w with a_j(h w) = k (k >= 3 for N3+). The adjusted counts a_j are
  * raw counts at the highest order and for n-grams that start with <s>, which no token can
    precede;
  * otherwise continuation counts: the number of distinct tokens seen right before (h w).
Three discounts per order come from the count-of-counts n_k of the adjusted counts:
  Y = n1 / (n1 + 2 n2),  D_jk = k - (k + 1) Y n_{k+1} / n_k  (k = 1, 2, 3).

Sentences are token ids ending in <eos>; the begin-of-sentence context symbol is `BOS` (-1),
not a vocabulary id. Contexts are truncated at <s> as in KenLM/SRILM: the first token of a
sentence is predicted from (<s>) alone, the second from (<s>, w1), ...

Implementation: each n-gram of order j gets an integer id = its row in the sorted array of
keys id_{j-1}(h) * (V + 1) + w, so contexts, n-grams and their suffixes are all integer
arrays and fitting/evaluating is a handful of np.unique / searchsorted / bincount calls.
"""

from typing import Iterable, List, Sequence, Tuple

import numpy as np

BOS = -1


def _discounts(adjusted: np.ndarray) -> np.ndarray:
  """[D1, D2, D3+] from the count-of-counts of one order's adjusted counts."""
  n = np.array([np.sum(adjusted == k) for k in range(1, 5)], np.float64)  # n1..n4
  y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.5
  d = np.empty(3)
  for k in range(1, 4):
    # Tiny corpora can lack some count-of-counts: fall back to D_k = k Y.
    d[k - 1] = k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] > 0 else k * y
  # Keep 0 < D_k <= k: every seen context then leaves mass for unseen tokens and the
  # discounted counts stay non-negative, so each distribution sums to one.
  return np.clip(d, 1e-3, np.arange(1, 4))


def _stream(sentences: Iterable[Sequence[int]], vocab_size: int):
  """Concatenates sentences as [<s>, w1, ..., <eos>] blocks.

  Returns:
    tokens [N] int64 with <s> mapped to vocab_size; pos [N] index of each token within its
    block (0 at <s>).
  """
  toks, pos = [], []
  for s in sentences:
    s = np.asarray(s, np.int64)
    if s.size and (s.min() < 0 or s.max() >= vocab_size):
      raise ValueError(f'token ids must lie in [0, {vocab_size}); got a sentence with '
                       f'ids in [{s.min()}, {s.max()}]')
    toks.append(np.concatenate([[vocab_size], s]))
    pos.append(np.arange(s.size + 1))
  if not toks:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(toks), np.concatenate(pos)


class KneserNeyLM:
  """Interpolated modified Kneser-Ney LM of a given order (1 = unigram ... 5 = 5-gram)."""

  BOS = BOS

  def __init__(self, order: int):
    if order < 1:
      raise ValueError(f'order must be >= 1, got {order}')
    self.order = order
    self.vocab_size = None
    self.discounts = []  # per order j = 1..n: [D1, D2, D3+]

  # -- fitting -------------------------------------------------------------------------

  def fit(self, sentences: Sequence[Sequence[int]], vocab_size: int) -> 'KneserNeyLM':
    """Counts n-grams of `sentences` (token ids, each ending with <eos>)."""
    self.vocab_size = vocab_size
    tokens, pos = _stream(sentences, vocab_size)
    target = pos > 0  # every position but <s> is a predicted token
    n, base = self.order, vocab_size + 1

    # keys[j - 1]: sorted unique keys of order j; ids[j - 1][p]: id of the order-j n-gram
    # ending at position p (-1 where it would reach back past <s>).
    self._keys, ids = [], []
    prev = np.zeros_like(tokens)  # id of the empty context
    for j in range(1, n + 1):
      valid = pos >= j - 1
      key = prev * base + tokens
      uniq, inv = np.unique(key[valid], return_inverse=True)
      cur = np.full_like(tokens, -1)
      cur[valid] = inv
      self._keys.append(uniq)
      ids.append(cur)
      prev = np.concatenate([[-1], cur[:-1]])  # context of the next order: ends at p - 1

    # Adjusted counts a_j per n-gram id.
    adjusted = []
    for j in range(1, n + 1):
      cur = ids[j - 1]
      raw = np.bincount(cur[target & (cur >= 0)], minlength=len(self._keys[j - 1]))
      if j == n:
        adjusted.append(raw)
        continue
      # Continuation count: distinct order-(j+1) n-grams whose suffix is this n-gram. The
      # order-(j+1) n-gram ending at p has as suffix the order-j n-gram ending at p.
      longer = ids[j]
      has = longer >= 0
      suffix_of = np.zeros(len(self._keys[j]), np.int64)
      suffix_of[longer[has]] = cur[has]
      cont = np.bincount(suffix_of, minlength=len(self._keys[j - 1]))
      starts_bos = np.zeros(len(self._keys[j - 1]), bool)
      starts_bos[cur[pos == j - 1]] = True  # n-grams whose first token is <s>
      adjusted.append(np.where(starts_bos, raw, cont))

    # Per-order discounts and per-context totals / interpolation weights.
    self.discounts, self._adjusted, self._total, self._gamma = [], [], [], []
    for j in range(1, n + 1):
      a = adjusted[j - 1]
      d = _discounts(a[a > 0])
      ctx = self._keys[j - 1] // base  # context id (order j-1) of each n-gram
      num_ctx = 1 if j == 1 else len(self._keys[j - 2])
      discount = np.where(a >= 3, d[2], np.where(a == 2, d[1], np.where(a == 1, d[0], 0.0)))
      self.discounts.append(d)
      self._adjusted.append(a.astype(np.float64))
      self._total.append(np.bincount(ctx, weights=a, minlength=num_ctx))
      self._gamma.append(np.bincount(ctx, weights=discount, minlength=num_ctx))
    return self

  # -- evaluation ----------------------------------------------------------------------

  def _lookup(self, j: int, ctx_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Ids of the order-j n-grams (ctx, token); -1 where unseen or ctx is -1."""
    keys = self._keys[j - 1]
    key = ctx_ids * (self.vocab_size + 1) + tokens
    at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
    return np.where((ctx_ids >= 0) & (keys[at] == key), at, -1)

  def _interpolate(self, ctx_ids: List[np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """Probabilities of `tokens` given per-order context ids (ctx_ids[j-1]: order j-1)."""
    d_of = lambda a, d: np.where(a >= 3, d[2], np.where(a == 2, d[1], np.where(a == 1, d[0], 0.)))
    p = np.full(tokens.shape, 1.0 / self.vocab_size)
    for j in range(1, self.order + 1):
      ctx = np.broadcast_to(ctx_ids[j - 1], tokens.shape)
      gram = self._lookup(j, ctx, tokens)
      a = np.where(gram >= 0, self._adjusted[j - 1][gram], 0.0)
      seen = ctx >= 0
      total = np.where(seen, self._total[j - 1][np.maximum(ctx, 0)], 0.0)
      gamma = np.where(seen, self._gamma[j - 1][np.maximum(ctx, 0)], 0.0)
      seen &= total > 0  # a context never followed by anything: back off fully
      interpolated = (np.maximum(a - d_of(a, self.discounts[j - 1]), 0.0) + gamma * p) / np.where(
          seen, total, 1.0)
      p = np.where(seen, interpolated, p)
    return p

  def _context_ids(self, tokens: np.ndarray, pos: np.ndarray) -> List[np.ndarray]:
    """Per order j, id of the order-(j-1) context ending right before each position."""
    ctx = [np.zeros_like(tokens)]  # order 1: the empty context, id 0
    prev = np.zeros_like(tokens)
    for j in range(1, self.order):
      valid = pos >= j - 1
      cur = np.where(valid, self._lookup(j, prev, tokens), -1)  # order-j ids ending at p
      shifted = np.concatenate([[-1], cur[:-1]])
      ctx.append(shifted)
      prev = shifted
    return ctx

  def _check_fitted(self):
    if self.vocab_size is None:
      raise RuntimeError('KneserNeyLM: call fit() first')

  def _context_stream(self, context: Sequence[int]):
    """A context as a stream: kept from its last <s> on, at most order-1 tokens."""
    context = [int(t) for t in context]
    if BOS in context:
      context = context[len(context) - 1 - context[::-1].index(BOS):]
    context = context[max(0, len(context) - (self.order - 1)):] if self.order > 1 else []
    if any(t != BOS and not 0 <= t < self.vocab_size for t in context):
      raise ValueError(f'context ids must lie in [0, {self.vocab_size}) or be BOS={BOS}')
    return np.array([self.vocab_size if t == BOS else t for t in context], np.int64)

  def prob_vector(self, context: Sequence[int]) -> np.ndarray:
    """p(. | context) over the vocabulary, [V], summing to one."""
    self._check_fitted()
    stream = self._context_stream(context)
    # Append a dummy next token; its context ids are those of the query.
    tokens = np.concatenate([stream, [0]])
    ctx = [c[-1] for c in self._context_ids(tokens, np.arange(tokens.size))]
    return self._interpolate(ctx, np.arange(self.vocab_size))

  def logprob(self, context_ids: Sequence[int], token: int) -> float:
    """Natural log p(token | context_ids); start a sentence's context with BOS."""
    self._check_fitted()
    if not 0 <= token < self.vocab_size:
      raise ValueError(f'token {token} outside [0, {self.vocab_size})')
    tokens = np.concatenate([self._context_stream(context_ids), [token]])
    ctx = [c[-1:] for c in self._context_ids(tokens, np.arange(tokens.size))]
    return float(np.log(self._interpolate(ctx, tokens[-1:])[0]))

  def nll(self, sentences: Sequence[Sequence[int]]) -> Tuple[float, int]:
    """(total negative log-likelihood in nats, number of tokens incl. every <eos>)."""
    self._check_fitted()
    tokens, pos = _stream(sentences, self.vocab_size)
    ctx = self._context_ids(tokens, pos)
    target = pos > 0
    probs = self._interpolate([c[target] for c in ctx], tokens[target])
    return float(-np.log(probs).sum()), int(target.sum())
