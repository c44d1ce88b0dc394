"""Masked-LM input: text -> WordPiece rows -> masked batches (BERT's recipe, Devlin et al. 2019).

Rows. The split's non-blank lines are encoded and concatenated, and the token stream is cut
into rows of seq_len - 2 tokens, each wrapped as [CLS] tokens [SEP] (the last one padded with
[PAD] = 0), so every token of the split is in exactly one row (RoBERTa's "full sentences").

Masking (`Masker`), per row: of its real tokens (not [CLS]/[SEP]/[PAD]),
n = min(max_predictions, max(1, round(mask_rate x count))) are chosen uniformly without
replacement; with whole_word, whole words are chosen in random order (a word is a token and
the '##' continuations after it) and a word that would overshoot n is skipped, as BERT's
create_pretraining_data does. Each chosen token becomes [MASK] with probability
mask_token_rate (0.8), a uniformly drawn non-special token with random_token_rate (0.1), and
stays itself otherwise. The batch carries the chosen positions [B, P], their original tokens
and weight 1 (P = max_predictions; unused slots weight 0), so the loss reads only the masked
positions and the vocabulary projection runs on P, not T, rows.

Training masks are dynamic: drawn afresh for every batch from (seed, epoch, index), so the
iterator's state resumes them exactly. Evaluation uses one fixed masking of the whole split,
row by row from (config.mlm.eval_seed, row index): independent of config.seed, the eval batch
size and the mesh, so masked-token perplexity and accuracy are reproducible and comparable
between runs.

Axis legend: B batch, T length (config.seq_len), P predictions per row.
"""

import dataclasses
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from lmjax.data import lm as lm_data
from lmjax.data import text, tokenizers
from lmjax.errors import UserError


@dataclasses.dataclass
class Rows:
  """A split as [N, T] rows of token ids ([CLS] ... [SEP], 0-padded)."""
  ids: np.ndarray  # int32 [N, T]
  num_tokens: int  # real tokens, specials excluded

  def __len__(self) -> int:
    return len(self.ids)


def make_rows(lines: Sequence[str], tok: Any, seq_len: int) -> Rows:
  """The lines' tokens concatenated and cut into [CLS] chunk [SEP] rows of seq_len."""
  lines = [line for line in lines if line.strip()]
  encode = getattr(tok, 'encode_batch', None)
  pieces = encode(lines) if encode else [tok.encode(line) for line in lines]
  stream = np.fromiter((i for p in pieces for i in p), np.int32)
  width = seq_len - 2
  n = -(-len(stream) // width)
  ids = np.zeros((n, seq_len), np.int32)
  body = np.zeros(n * width, np.int32)
  body[:len(stream)] = stream
  ids[:, 1:-1] = body.reshape(n, width)
  ids[:, 0] = tok.cls_id
  last = len(stream) - (n - 1) * width  # real tokens in the last row
  ids[:-1, -1] = tok.sep_id
  if n:
    ids[-1, 1 + last] = tok.sep_id
  return Rows(ids=ids, num_tokens=len(stream))


def continuation_table(tok: Any) -> np.ndarray:
  """bool [V]: the token continues the previous one's word (WordPiece '##' pieces)."""
  return np.asarray([tok.id_to_token(i).startswith('##') for i in range(tok.vocab_size)])


@dataclasses.dataclass(frozen=True)
class Masker:
  """BERT's masking of one batch of rows (see the module docstring)."""
  mask_id: int
  vocab_size: int
  special_ids: tuple  # never chosen, never drawn as random tokens
  normal_ids: np.ndarray  # int32: the other ids, from which random replacements are drawn
  continuation: np.ndarray  # bool [V]
  max_predictions: int
  mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  whole_word: bool = False

  def _choose(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cand = np.flatnonzero(~np.isin(row, self.special_ids))
    if not len(cand):
      return cand
    n = min(self.max_predictions, max(1, int(round(self.mask_rate * len(cand)))))
    if not self.whole_word:
      return np.sort(rng.choice(cand, n, replace=False))
    starts = ~self.continuation[row[cand]]
    starts[0] = True
    words = np.split(cand, np.flatnonzero(starts)[1:])
    chosen = []
    for w in rng.permutation(len(words)):
      if len(chosen) >= n:
        break
      if len(chosen) + len(words[w]) <= n:
        chosen.extend(words[w])
    return np.sort(np.asarray(chosen, np.int64))

  def __call__(self, rows: np.ndarray, rng: np.random.Generator,
               row_weights: Optional[np.ndarray] = None) -> dict:
    b, p = len(rows), self.max_predictions
    inputs = rows.copy()
    positions = np.zeros((b, p), np.int32)
    targets = np.zeros((b, p), np.int32)
    weights = np.zeros((b, p), np.float32)
    for r in range(b):
      if row_weights is not None and not row_weights[r]:
        continue
      pos = self._choose(rows[r], rng)
      k = len(pos)
      u = rng.random(k)
      replace = rng.choice(self.normal_ids, k)
      new = np.where(u < self.mask_token_rate, self.mask_id,
                     np.where(u < self.mask_token_rate + self.random_token_rate, replace,
                              rows[r, pos]))
      inputs[r, pos] = new
      positions[r, :k], targets[r, :k], weights[r, :k] = pos, rows[r, pos], 1.0
    return {'inputs': inputs, 'positions': positions, 'targets': targets, 'weights': weights}


def max_predictions(cfg: Any, seq_len: int) -> int:
  """P: config.mlm.max_predictions, or (0) mask_rate of a row's seq_len - 2 tokens, rounded
  up."""
  return max(1, int(cfg.max_predictions) or int(np.ceil(cfg.mask_rate * (seq_len - 2))))


def make_masker(tok: Any, cfg: Any, seq_len: int) -> Masker:
  """The Masker of config.mlm for this tokenizer."""
  if getattr(tok, 'mask_id', None) is None:
    raise UserError('config.task=mlm: the tokenizer has no [MASK] token (a WordPiece '
                    "vocabulary with [MASK] is needed: config.data.tokenizer='wordpiece')")
  specials = tuple(sorted({tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id}))
  normal = np.setdiff1d(np.arange(tok.vocab_size), specials).astype(np.int32)
  return Masker(mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=specials,
                normal_ids=normal,
                continuation=continuation_table(tok), max_predictions=max_predictions(cfg, seq_len),
                mask_rate=cfg.mask_rate, mask_token_rate=cfg.mask_token_rate,
                random_token_rate=cfg.random_token_rate, whole_word=bool(cfg.whole_word))


@dataclasses.dataclass
class Data:
  tokenizer: Any
  train: Rows
  eval: Rows
  test: Optional[Rows]


def load_mlm_data(cfg: Any, seq_len: int, workdir: Optional[str]) -> Data:
  """The tokenizer (built or resumed as for language modelling, lmjax.data.lm) and the rows of
  each split."""
  train_lines = lm_data.raw_lines(cfg, 'train')
  eval_lines = lm_data.raw_lines(cfg, 'eval')
  tok = lm_data.build_tokenizer(cfg, train_lines, workdir)
  if not isinstance(tok, tokenizers.WordPieceTokenizer):
    raise UserError(f'config.data.tokenizer={cfg.tokenizer!r}: masked-LM pretraining needs '
                    "the WordPiece tokenizer (config.data.tokenizer='wordpiece')")
  test = None
  if cfg.get('test'):
    test = make_rows(text.read_lines(cfg.test, what='config.data.test'), tok, seq_len)
  return Data(tok, make_rows(train_lines, tok, seq_len), make_rows(eval_lines, tok, seq_len),
              test)


class MaskedRowIterator:
  """Shuffled rows, freshly masked: endless batches with get_state()/set_state()."""

  def __init__(self, rows: Rows, batch_size: int, seed: int, masker: Masker):
    self.rows, self.batch_size, self.seed, self.masker = rows, batch_size, seed, masker
    self.steps_per_epoch = len(rows) // batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split has {len(rows)} rows of config.seq_len tokens: too '
                      f'few for one batch of config.batch_size={batch_size}')
    self.epoch, self.index = 0, 0

  get_state = lm_data.WindowIterator.get_state
  set_state = lm_data.WindowIterator.set_state

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))
    sel = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
    rng = np.random.default_rng([self.seed, self.epoch, self.index, 1])
    self.index += 1
    return self.masker(self.rows.ids[sel], rng)


def eval_batches(rows: Rows, batch_size: int, masker: Masker, seed: int) -> list[dict]:
  """Every row once, in order, each masked by its own draw from (seed, row index), so the
  masking is the same whatever the batch size or device count; the last batch is padded with
  weight-0 rows."""
  n = -(-len(rows) // batch_size) * batch_size
  width = rows.ids.shape[1]
  masked = [masker(rows.ids[i:i + 1], np.random.default_rng([seed, 2, i]))
            for i in range(len(rows))]
  pad = masker(np.zeros((1, width), np.int32), np.random.default_rng(0), np.zeros(1))
  masked += [pad] * (n - len(rows))
  return [{k: np.concatenate([m[k] for m in masked[i:i + batch_size]]) for k in pad}
          for i in range(0, n, batch_size)]
