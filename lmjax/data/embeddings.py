"""Word-embedding input: a corpus of vocabulary words, word2vec batches, GloVe co-occurrences.

The corpus is the training text's whitespace words (after config.data.clean), each line a
segment that no window crosses (a line of WikiText-2 is a paragraph, as gensim's LineSentence
reads it). Words below config.data.min_count, or past config.data.max_vocab, are dropped
before any window is taken, as the reference tools drop them.

word2vec batches (`Word2VecIterator`): the corpus cut into rows of config.seq_len words, taken
in corpus order (the reference tools read the file in order), config.batch_size rows per step.
Each epoch every row is subsampled afresh (word w is kept with probability
(sqrt(f_w / (s T)) + 1) s T / f_w, s = config.embeddings.sample, T the corpus size: the C
tool's formula, also gensim's), the kept words close up, and every kept word draws its reduced
window b in [1, window]. The draws come from (config.seed, epoch, step), so a resumed run sees
the batches an uninterrupted one would.

GloVe (`cooccurrence`, `GloveIterator`): X_ij = Σ 1/d over the occurrences of j at distance
d <= window from i in the same line, both directions, counted once on the host in chunks
(scipy sparse), then the non-zero entries shuffled per epoch.

Axis legend: B rows per batch, L words per row, N entries per GloVe batch, V vocabulary.
"""

import dataclasses
from typing import Any, Iterator

import numpy as np

from lmjax.data import lm as lm_data
from lmjax.errors import UserError

FIRST_WORD = 3  # WordVocab ids 0..2 are <pad>, <eos>, <unk>: never a corpus word


@dataclasses.dataclass
class Corpus:
  ids: np.ndarray  # int32 [N]: vocabulary word ids in corpus order
  segment: np.ndarray  # int32 [N]: the line each word came from
  counts: np.ndarray  # int64 [V]: occurrences of each id in `ids`
  num_dropped: int  # words of the text not in the vocabulary (min_count, max_vocab)


def encode(lines: list[str], vocab: Any, what: str) -> Corpus:
  """Vocabulary ids of the lines' words, out-of-vocabulary words dropped."""
  ids, segs, dropped = [], [], 0
  for n, line in enumerate(lines):
    line_ids, _ = vocab.encode_with_oov(line)
    kept = [i for i in line_ids if i >= FIRST_WORD]
    dropped += len(line_ids) - len(kept)
    ids.extend(kept)
    segs.extend([n] * len(kept))
  if not ids:
    raise UserError(f'{what}: no word of the vocabulary left to train on')
  ids = np.asarray(ids, np.int32)
  counts = np.bincount(ids, minlength=vocab.vocab_size).astype(np.int64)
  return Corpus(ids, np.asarray(segs, np.int32), counts, dropped)


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
  """[V] probability of keeping each word under frequent-word subsampling (1: sample=0)."""
  if sample <= 0:
    return np.ones(len(counts), np.float64)
  threshold = sample * counts.sum()
  f = np.maximum(counts, 1).astype(np.float64)
  return np.minimum(1.0, (np.sqrt(f / threshold) + 1.0) * threshold / f)


def noise_cdf(counts: np.ndarray, power: float) -> np.ndarray:
  """[V] cumulative noise distribution ∝ count^power (0 for words never seen)."""
  weights = np.where(counts > 0, counts.astype(np.float64) ** power, 0.0)
  cdf = np.cumsum(weights)
  return (cdf / cdf[-1]).astype(np.float32)


class Word2VecIterator:
  """Endless batches {'words', 'segment', 'window'} [B, L] int32 with get_state()/set_state()."""

  def __init__(self, corpus: Corpus, batch_size: int, seq_len: int, window: int,
               sample: float, seed: int):
    n = len(corpus.ids)
    num_rows = -(-n // seq_len)
    self.steps_per_epoch = -(-num_rows // batch_size)
    total = self.steps_per_epoch * batch_size * seq_len
    shape = (self.steps_per_epoch * batch_size, seq_len)
    self.words = np.zeros(total, np.int32)
    self.words[:n] = corpus.ids
    self.words = self.words.reshape(shape)
    self.segment = np.full(total, -1, np.int32)
    self.segment[:n] = corpus.segment
    self.segment = self.segment.reshape(shape)
    self.keep = keep_probability(corpus.counts, sample)
    self.batch_size, self.window, self.seed = batch_size, window, seed
    self.epoch, self.index = 0, 0

  get_state = lm_data.WindowIterator.get_state
  set_state = lm_data.WindowIterator.set_state

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    rows = slice(self.index * self.batch_size, (self.index + 1) * self.batch_size)
    rng = np.random.default_rng([self.seed, self.epoch, self.index])
    self.index += 1
    return subsample(self.words[rows], self.segment[rows], self.keep, self.window, rng)


def subsample(words: np.ndarray, segment: np.ndarray, keep_prob: np.ndarray, window: int,
              rng: np.random.Generator) -> dict:
  """One batch: each row's kept words moved to its front (in order), the rest padding."""
  keep = (segment >= 0) & (rng.random(words.shape) < keep_prob[words])  # [B, L]
  order = np.argsort(~keep, axis=1, kind='stable')  # kept positions first, in order
  n_kept = keep.sum(1, keepdims=True)  # [B, 1]
  real = np.arange(words.shape[1])[None, :] < n_kept  # [B, L]
  return {'words': np.where(real, np.take_along_axis(words, order, 1), 0).astype(np.int32),
          'segment': np.where(real, np.take_along_axis(segment, order, 1), -1).astype(np.int32),
          'window': rng.integers(1, window + 1, words.shape).astype(np.int32)}


def cooccurrence(corpus: Corpus, vocab_size: int, window: int,
                 chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(rows, cols int32, counts float32) of the non-zero X_ij, sorted by (i, j).

  The corpus is counted `chunk` centre positions at a time, so the pair arrays never exceed
  2·window·chunk entries; the running total is a sparse matrix."""
  import scipy.sparse  # pylint: disable=g-import-not-at-top
  ids, seg = corpus.ids, corpus.segment
  n = len(ids)
  total = scipy.sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
  for start in range(0, n, chunk):
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
      i = np.arange(start, min(start + chunk, n - d))
      if not len(i):
        break
      i = i[seg[i] == seg[i + d]]
      a, b = ids[i], ids[i + d]
      rows += [a, b]
      cols += [b, a]
      vals.append(np.full(2 * len(i), 1.0 / d))
    if rows:
      part = scipy.sparse.coo_matrix(
          (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
          shape=(vocab_size, vocab_size)).tocsr()
      total = total + part
  coo = total.tocoo()
  order = np.lexsort((coo.col, coo.row))
  return (coo.row[order].astype(np.int32), coo.col[order].astype(np.int32),
          coo.data[order].astype(np.float32))


class GloveIterator:
  """Endless batches {'row', 'col' int32, 'count' float32} [N] of shuffled non-zero entries
  (the last batch of an epoch padded with count 0)."""

  def __init__(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray,
               batch_size: int, seed: int):
    if not len(rows):
      raise UserError('the training text has no co-occurring words within the window')
    self.rows, self.cols, self.counts = rows, cols, counts
    self.batch_size, self.seed = batch_size, seed
    self.steps_per_epoch = -(-len(rows) // batch_size)
    self.epoch, self.index = 0, 0
    self._order = (None, None)

  get_state = lm_data.WindowIterator.get_state
  set_state = lm_data.WindowIterator.set_state

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    if self._order[0] != self.epoch:
      perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))
      self._order = (self.epoch, perm)
    sel = self._order[1][self.index * self.batch_size:(self.index + 1) * self.batch_size]
    self.index += 1
    pad = self.batch_size - len(sel)
    take = lambda a, fill: np.concatenate([a[sel], np.full(pad, fill, a.dtype)])
    return {'row': take(self.rows, 0), 'col': take(self.cols, 0),
            'count': take(self.counts, 0.0)}
