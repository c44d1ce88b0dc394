"""Tests for lmjax.models.ngram against a direct dict-based transcription of Chen & Goodman."""
import collections
import math

import numpy as np
import pytest

from lmjax.models.ngram import BOS, KneserNeyLM

EOS = 0


def _corpus(num_sentences, num_words, seed, chain_seed=0):
  """Sentences over ids 1..num_words, each ending with EOS = 0, from a Markov chain.

  Global Zipf frequencies reweighted per predecessor: some structure for context to exploit,
  and rare words, so every count-of-count n1..n4 is non-zero at small sizes.
  """
  chain = np.random.default_rng(chain_seed)
  trans = (1.0 / np.arange(1, num_words + 1)) * chain.lognormal(0.0, 1.5,
                                                                (num_words + 1, num_words))
  trans /= trans.sum(1, keepdims=True)  # row num_words: the start of a sentence
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_sentences):
    prev, sentence = num_words, []
    for _ in range(rng.integers(1, 12)):
      prev = int(rng.choice(num_words, p=trans[prev]))
      sentence.append(prev + 1)
    out.append(sentence + [EOS])
  return out


class ReferenceKN:
  """Interpolated modified Kneser-Ney written straight from the formulas, with tuples."""

  def __init__(self, sentences, vocab_size, order):
    self.v, self.n = vocab_size, order
    raw = collections.Counter()
    for s in sentences:
      seq = [BOS] + s
      for p in range(1, len(seq)):
        for j in range(1, min(order, p + 1) + 1):
          raw[tuple(seq[p - j + 1:p + 1])] += 1
    left = collections.Counter(g[1:] for g in raw if len(g) > 1)  # distinct left extensions
    self.adj = {g: c if len(g) == order or g[0] == BOS else left[g] for g, c in raw.items()}
    self.count_of_counts, self.d = {}, {}
    for j in range(1, order + 1):
      a = collections.Counter(c for g, c in self.adj.items() if len(g) == j)
      n1, n2, n3, n4 = a[1], a[2], a[3], a[4]
      self.count_of_counts[j] = (n1, n2, n3, n4)
      y = n1 / (n1 + 2 * n2)
      self.d[j] = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)

  def discount(self, j, a):
    return 0.0 if a == 0 else self.d[j][min(a, 3) - 1]

  def prob(self, context, w):
    context = tuple(context)
    if BOS in context:
      context = context[len(context) - 1 - context[::-1].index(BOS):]
    context = context[len(context) - (self.n - 1):] if self.n > 1 else ()
    p = 1.0 / self.v
    for j in range(1, len(context) + 2):
      h = context[len(context) - (j - 1):] if j > 1 else ()
      followers = [a for g, a in self.adj.items() if len(g) == j and g[:-1] == h]
      total = sum(followers)
      if total == 0:
        continue  # unseen context: p_j = p_{j-1}
      gamma = sum(self.discount(j, a) for a in followers)
      a = self.adj.get(h + (w,), 0)
      p = (max(a - self.discount(j, a), 0.0) + gamma * p) / total
    return p


@pytest.mark.parametrize('order', [1, 2, 3, 4, 5])
def test_prob_vector_sums_to_one(order):
  train = _corpus(300, 40, seed=order)
  vocab_size = 45  # ids 41..44 never occur in training
  lm = KneserNeyLM(order).fit(train, vocab_size)
  contexts = [[BOS], [], train[0][:3], [BOS] + train[1][:4], [BOS, 44, 43], [17, 42, 3, 3, 9, 1],
              [5, 5, 5, 5, 5, 5, 5, BOS, 2]]
  for ctx in contexts:
    p = lm.prob_vector(ctx)
    assert p.shape == (vocab_size,)
    assert np.all(p > 0)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    for w in (0, 7, 44):
      np.testing.assert_allclose(lm.logprob(ctx, w), math.log(p[w]), rtol=1e-12)


@pytest.mark.parametrize('order', [2, 3])
def test_matches_direct_transcription(order):
  train = _corpus(200, 80, seed=1)
  vocab_size = 83  # 81, 82 never occur
  lm = KneserNeyLM(order).fit(train, vocab_size)
  ref = ReferenceKN(train, vocab_size, order)
  for j in range(1, order + 1):
    # The formula's discounts are defined and in (0, k]: no fallback or clipping involved.
    assert min(ref.count_of_counts[j]) > 0 and all(0 < d <= k for k, d in zip((1, 2, 3), ref.d[j]))
    np.testing.assert_allclose(lm.discounts[j - 1], ref.d[j], rtol=1e-12)
  test = _corpus(20, 80, seed=7)
  for s in test:  # every prefix of held-out sentences, plus some off-sentence contexts
    ctx = [BOS]
    for w in s:
      np.testing.assert_allclose(math.exp(lm.logprob(ctx, w)), ref.prob(ctx, w), rtol=1e-10)
      ctx.append(w)
  for ctx in ([], [3], [2, 1], [BOS, 1, 2]):
    want = [ref.prob(ctx, w) for w in range(vocab_size)]
    np.testing.assert_allclose(lm.prob_vector(ctx), want, rtol=1e-10)


def test_bigram_by_hand():
  # Sentences "1 0" and "1 2 0" with vocab {0, 1, 2}, where 0 is <eos>. Bigram adjusted
  # counts are raw: (<s>,1)=2, (1,0)=1, (1,2)=1, (2,0)=1. Unigram continuation counts
  # (distinct left neighbours): 1:{<s>}=1, 0:{1,2}=2, 2:{1}=1.
  lm = KneserNeyLM(2).fit([[1, 0], [1, 2, 0]], 3)
  # n3 = 0 makes D2 = 2 - 3 Y n3 / n2 = 2, and D3+ falls back to 3 Y.
  d1, d2, d3 = lm.discounts[0]  # unigrams: n1=2, n2=1 -> Y = 1/2
  np.testing.assert_allclose([d1, d2, d3], [1 - 2 * 0.5 * 1 / 2, 2, 1.5])
  b1, b2, b3 = lm.discounts[1]  # bigrams: n1=3, n2=1 -> Y = 3/5
  np.testing.assert_allclose([b1, b2, b3], [1 - 2 * 0.6 * 1 / 3, 2, 1.8])
  uni = {0: (max(2 - d2, 0) + (d1 + d1 + d2) / 3) / 4,
         1: (max(1 - d1, 0) + (d1 + d1 + d2) / 3) / 4,
         2: (max(1 - d1, 0) + (d1 + d1 + d2) / 3) / 4}
  # Context 1 has followers 0 and 2 (one each): T = 2, gamma = 2 * b1.
  for w, a in ((0, 1), (1, 0), (2, 1)):
    want = (max(a - b1, 0) + 2 * b1 * uni[w]) / 2
    np.testing.assert_allclose(math.exp(lm.logprob([BOS, 1], w)), want, rtol=1e-12)
  # Context <s>: only "1", seen twice: T = 2, gamma = b2.
  np.testing.assert_allclose(math.exp(lm.logprob([BOS], 1)), (max(2 - b2, 0) + b2 * uni[1]) / 2)
  # Context 0 (<eos>) is never followed by anything: pure unigram.
  np.testing.assert_allclose(math.exp(lm.logprob([0], 2)), uni[2])


def test_nll_counts_every_token_and_matches_logprob():
  train, test = _corpus(200, 30, seed=5), _corpus(20, 30, seed=6)
  lm = KneserNeyLM(4).fit(train, 31)
  total, count = lm.nll(test)
  assert count == sum(len(s) for s in test)
  want = 0.0
  for s in test:
    for i, w in enumerate(s):
      want -= lm.logprob([BOS] + s[:i], w)
  np.testing.assert_allclose(total, want, rtol=1e-12)
  # More context should help on data from the same source.
  unigram = KneserNeyLM(1).fit(train, 31).nll(test)[0]
  assert total < unigram


def test_bad_ids_raise():
  lm = KneserNeyLM(2).fit([[1, 0]], 3)
  with pytest.raises(ValueError):
    lm.logprob([BOS], 3)
  with pytest.raises(ValueError):
    lm.prob_vector([7])
  with pytest.raises(ValueError):
    KneserNeyLM(2).fit([[1, 5, 0]], 3)
