"""Translation input: parallel text -> joint SentencePiece -> packed or bucketed batches.

config.data fields (translation experiments):
  source: text | tfds | synthetic
  train, eval, test: file prefixes, fairseq style: PREFIX.{source_lang} / PREFIX.{target_lang}
    (test optional: evaluated, with BLEU, at the end)
  source_lang, target_lang: the direction (also the TFDS feature keys)
  name, train_split, eval_split, test_split, data_dir: TFDS translation datasets
  vocab_size, spm_model, spm_type, spm_input_sentence_size: the joint SentencePiece model,
    trained on both sides of the training pairs unless spm_model is given
  joint_vocab: False trains separate source (source_vocab_size, 0 = vocab_size) and target
    (vocab_size) models instead; the model then gets a separate source embedding
  max_source_len, max_target_len: training pairs longer than this (tokens, with eos) are
    dropped and counted; eval and test pairs are truncated to the row length instead, never
    dropped, so that every reference is scored
  packing: True packs several pairs into each row of config.seq_len tokens with segment ids
    (Transformer); False pads batches of pairs of similar length (RNN seq2seq) to a multiple
    of pad_multiple tokens per side (smaller: less padding, more shapes to compile; on
    Multi30k at batch 32, 8 -> ~19% / 21% padding source / target and 18 shapes, 4 -> ~9% /
    12% and 48 shapes)
  synthetic_lines, synthetic_eval_lines, seed: the embedded synthetic corpus

Batches are dicts of int32 [B, L] arrays: inputs, decoder_inputs (bos then the target shifted
right, per pair), targets (ending in eos), weights (float32, 1 on real target tokens); packed
batches add inputs_segmentation / targets_segmentation (pair number in the row, 0 = padding)
and inputs_position / targets_position (restart at 0 for each pair).
"""

import dataclasses
from typing import Any, Iterator, Optional

import jax
import numpy as np

from lmjax import paths
from lmjax.data import lm as lm_data, synthetic, text, tokenizers
from lmjax.errors import UserError

_CHUNK = 4096  # pairs packed or bucketed together: similar lengths meet, order stays random


@dataclasses.dataclass
class ParallelSplit:
  """A tokenized split: ids per pair (eos appended) and the raw text for BLEU."""
  src: list  # of int32 arrays
  tgt: list
  src_lines: list
  tgt_lines: list
  num_dropped_blank: int = 0
  num_dropped_long: int = 0

  def __len__(self) -> int:
    return len(self.src)

  @property
  def num_target_tokens(self) -> int:
    return int(sum(len(t) for t in self.tgt))


def _raw_pairs(cfg: Any, split: str) -> Optional[text.ParallelPairs]:
  if cfg.source == 'synthetic':
    if split == 'test':
      return None
    n = cfg.synthetic_lines if split == 'train' else cfg.synthetic_eval_lines
    return text.ParallelPairs(synthetic.generate_pairs(n, cfg.seed + (split != 'train')))
  if cfg.source == 'text':
    prefix = cfg.get(split, '')
    if not prefix:
      if split == 'test':
        return None
      raise UserError(f'config.data.{split} must be set for data.source=text (a file prefix: '
                      f'PREFIX.{cfg.source_lang} and PREFIX.{cfg.target_lang})')
    return text.read_parallel(f'{prefix}.{cfg.source_lang}', f'{prefix}.{cfg.target_lang}')
  if cfg.source == 'tfds':
    name = cfg.get(f'{split}_split', '')
    if not name:
      if split == 'test':
        return None
      raise UserError(f'config.data.{split}_split must be set for data.source=tfds')
    from lmjax.data import tfds_source  # tensorflow_datasets is slow to import
    return tfds_source.load_parallel_split(cfg.name, name, cfg.source_lang, cfg.target_lang,
                                           data_dir=cfg.get('data_dir') or None)
  raise UserError(f'config.data.source: unknown source {cfg.source!r} (synthetic, text, tfds)')


def encode_split(pairs: text.ParallelPairs, tok: Any, max_src: int, max_tgt: int,
                 drop_long: bool) -> ParallelSplit:
  out = ParallelSplit([], [], [], [], num_dropped_blank=pairs.num_dropped)
  encode_source = getattr(tok, 'encode_source', tok.encode)
  for s, t in pairs:
    si = np.asarray(encode_source(s) + [tok.eos_id], np.int32)
    ti = np.asarray(tok.encode(t) + [tok.eos_id], np.int32)
    if len(si) > max_src or len(ti) > max_tgt:
      if drop_long:
        out.num_dropped_long += 1
        continue
      si = np.concatenate([si[:max_src - 1], si[-1:]])
      ti = np.concatenate([ti[:max_tgt - 1], ti[-1:]])
    out.src.append(si)
    out.tgt.append(ti)
    out.src_lines.append(s)
    out.tgt_lines.append(t)
  return out


def load_translation_data(cfg: Any, seq_len: int, workdir: Optional[str]):
  """(tokenizer, {'train': ParallelSplit, 'eval': ..., 'test': ... or None})."""
  if cfg.source_lang == cfg.target_lang:
    raise UserError(f'config.data.source_lang and target_lang are both {cfg.source_lang!r}')
  max_src, max_tgt = int(cfg.max_source_len), int(cfg.max_target_len)
  for field, value in (('max_source_len', max_src), ('max_target_len', max_tgt)):
    if not 2 <= value <= seq_len:
      raise UserError(f'config.data.{field}={value} must be in [2, config.seq_len={seq_len}]')
  raw = {split: _raw_pairs(cfg, split) for split in ('train', 'eval', 'test')}
  tok = build_tokenizer(cfg, raw['train'], workdir)
  if tok.bos_id == tok.eos_id:
    raise UserError('translation needs a tokenizer with a bos id distinct from eos '
                    '(SentencePiece models trained by lmjax have one)')
  splits = {name: None if pairs is None else encode_split(pairs, tok, max_src, max_tgt,
                                                          drop_long=name == 'train')
            for name, pairs in raw.items()}
  if not len(splits['train']):
    raise UserError(f'config.data: every training pair is longer than max_source_len={max_src}'
                    f' / max_target_len={max_tgt} tokens')
  return tok, splits


def build_tokenizer(cfg: Any, train_pairs: text.ParallelPairs, workdir: Optional[str]):
  """The workdir's saved tokenizer (a resumed run), else a joint or a source/target pair."""
  if cfg.get('joint_vocab', True):
    # One vocabulary over both sides, as the shared embedding needs.
    return lm_data.build_tokenizer(cfg, _both_sides(train_pairs), workdir)
  saved = paths.join(workdir, 'tokenizer') if workdir else None
  if saved and paths.exists(paths.join(saved, tokenizers.TOKENIZER_JSON)):
    tok = tokenizers.load_tokenizer(saved)
    if not isinstance(tok, tokenizers.PairTokenizer):
      raise UserError(f'config.data.joint_vocab=False but {saved} holds a joint tokenizer')
    lm_data.check_training_text(saved, _both_sides(train_pairs), cfg)
    return tok
  if cfg.tokenizer != 'sentencepiece' or cfg.get('spm_model'):
    raise UserError('config.data.joint_vocab=False trains two SentencePiece models: it needs '
                    "config.data.tokenizer='sentencepiece' and no spm_model")
  train = lambda lines, size: tokenizers.SentencePieceTokenizer.train(
      lines, vocab_size=size, model_type=cfg.get('spm_type', 'unigram'),
      input_sentence_size=int(cfg.get('spm_input_sentence_size', 0)))
  source_size = int(cfg.get('source_vocab_size', 0) or cfg.vocab_size)
  tok = tokenizers.PairTokenizer(train([s for s, _ in train_pairs], source_size),
                                 train([t for _, t in train_pairs], int(cfg.vocab_size)))
  for field, asked, got in (('source_vocab_size', source_size, tok.source_vocab_size),
                            ('vocab_size', int(cfg.vocab_size), tok.vocab_size)):
    if got < asked:
      lm_data.warn_small_vocab(f'config.data.{field}', asked, got)
  if saved and jax.process_index() == 0:
    tok.save(saved)
    lm_data.record_training_text(saved, _both_sides(train_pairs), cfg)
  return tok


def _both_sides(pairs: text.ParallelPairs) -> list[str]:
  return [s for s, _ in pairs] + [t for _, t in pairs]


def _shift_right(ids: np.ndarray, bos: int) -> np.ndarray:
  return np.concatenate([[bos], ids[:-1]]).astype(np.int32)


def pack_rows(src_lens: np.ndarray, tgt_lens: np.ndarray, order: np.ndarray,
              row_len: int) -> list[list[int]]:
  """First-fit decreasing within chunks: rows of pair indices whose sides fit row_len."""
  rows = []
  for c in range(0, len(order), _CHUNK):
    chunk = order[c:c + _CHUNK]
    chunk = chunk[np.argsort(-np.maximum(src_lens[chunk], tgt_lens[chunk]), kind='stable')]
    free_s = np.zeros(len(chunk), np.int64)
    free_t = np.zeros(len(chunk), np.int64)
    members: list[list[int]] = []
    for i in chunk:
      fits = np.flatnonzero((free_s[:len(members)] >= src_lens[i])
                            & (free_t[:len(members)] >= tgt_lens[i]))
      r = fits[0] if len(fits) else len(members)
      if r == len(members):
        members.append([])
        free_s[r], free_t[r] = row_len, row_len
      members[r].append(int(i))
      free_s[r] -= src_lens[i]
      free_t[r] -= tgt_lens[i]
    rows.extend(members)
  return rows


def packed_batch(split: ParallelSplit, rows: list[list[int]], row_len: int, bos: int) -> dict:
  b = len(rows)
  out = {k: np.zeros((b, row_len), np.int32) for k in (
      'inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs', 'targets',
      'targets_segmentation', 'targets_position')}
  for r, members in enumerate(rows):
    ps = pt = 0
    for n, i in enumerate(members, start=1):
      s, t = split.src[i], split.tgt[i]
      out['inputs'][r, ps:ps + len(s)] = s
      out['inputs_segmentation'][r, ps:ps + len(s)] = n
      out['inputs_position'][r, ps:ps + len(s)] = np.arange(len(s))
      out['targets'][r, pt:pt + len(t)] = t
      out['decoder_inputs'][r, pt:pt + len(t)] = _shift_right(t, bos)
      out['targets_segmentation'][r, pt:pt + len(t)] = n
      out['targets_position'][r, pt:pt + len(t)] = np.arange(len(t))
      ps, pt = ps + len(s), pt + len(t)
  out['weights'] = (out['targets_segmentation'] > 0).astype(np.float32)
  return out


def _bucket(n: int, row_len: int, multiple: int) -> int:
  """Padded length of a bucketed batch: a multiple of `multiple` (each shape compiles once)."""
  return min(row_len, -(-n // multiple) * multiple)


def padded_batch(split: ParallelSplit, members: list[int], rows: int, row_len: int,
                 bos: int, pad_multiple: int = 8) -> dict:
  """One pair per row, padded to a shared bucket length; rows past len(members) are empty."""
  ls = _bucket(max(len(split.src[i]) for i in members), row_len, pad_multiple)
  lt = _bucket(max(len(split.tgt[i]) for i in members), row_len, pad_multiple)
  out = {'inputs': np.zeros((rows, ls), np.int32),
         'decoder_inputs': np.zeros((rows, lt), np.int32),
         'targets': np.zeros((rows, lt), np.int32)}
  for r, i in enumerate(members):
    s, t = split.src[i], split.tgt[i]
    out['inputs'][r, :len(s)] = s
    out['targets'][r, :len(t)] = t
    out['decoder_inputs'][r, :len(t)] = _shift_right(t, bos)
  out['weights'] = (out['targets'] > 0).astype(np.float32)
  return out


def plan_batches(split: ParallelSplit, batch_size: int, row_len: int, packing: bool,
                 order: np.ndarray, keep_partial: bool) -> list[list]:
  """Each batch as its members: rows of pair indices (packing) or pair indices (padding)."""
  src_lens = np.asarray([len(s) for s in split.src])
  tgt_lens = np.asarray([len(t) for t in split.tgt])
  if packing:
    rows = pack_rows(src_lens, tgt_lens, order, row_len)
  else:
    # As fairseq does: sort the whole split by (source, target) length, the shuffled order
    # breaking ties, so that a batch's pairs match on both sides; the batches are shuffled.
    rows = [int(i) for i in order[np.lexsort((tgt_lens[order], src_lens[order]))]]
  n = -(-len(rows) // batch_size) if keep_partial else len(rows) // batch_size
  return [rows[k * batch_size:(k + 1) * batch_size] for k in range(n)]


def make_batch(split: ParallelSplit, members: list, batch_size: int, row_len: int,
               packing: bool, bos: int, pad_multiple: int = 8) -> dict:
  if packing:
    return packed_batch(split, list(members) + [[]] * (batch_size - len(members)), row_len, bos)
  return padded_batch(split, members, batch_size, row_len, bos, pad_multiple)


def padding_waste(batches: list[dict]) -> dict:
  """Fraction of source / target slots that hold padding."""
  out = {}
  for side, key in (('source', 'inputs'), ('target', 'targets')):
    slots = sum(b[key].size for b in batches)
    real = sum(int((b[key] != 0).sum()) for b in batches)
    out[side] = 1.0 - real / max(slots, 1)
  return out


class TranslationIterator:
  """Endless shuffled training batches; deterministic in (seed, epoch) for exact resumption."""

  def __init__(self, split: ParallelSplit, batch_size: int, row_len: int, packing: bool,
               bos: int, seed: int, pad_multiple: int = 8):
    self.split, self.batch_size, self.row_len = split, batch_size, row_len
    self.packing, self.bos, self.seed = packing, bos, seed
    self.pad_multiple = pad_multiple
    self.epoch, self.index = 0, 0
    self._plan_epoch = None
    self.steps_per_epoch = len(self._plan(0))
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split ({len(split)} pairs) fills fewer than one batch of '
                      f'config.batch_size={batch_size} rows')

  def _plan(self, epoch: int) -> list:
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      plan = plan_batches(self.split, self.batch_size, self.row_len, self.packing,
                          rng.permutation(len(self.split)), keep_partial=False)
      self._batches = [plan[i] for i in rng.permutation(len(plan))]
      self._plan_epoch = epoch
    return self._batches

  get_state = lm_data.WindowIterator.get_state
  set_state = lm_data.WindowIterator.set_state

  def __iter__(self) -> Iterator[dict]:
    return self

  def _batch(self, members) -> dict:
    return make_batch(self.split, members, self.batch_size, self.row_len, self.packing,
                      self.bos, self.pad_multiple)

  def peek(self, n: int) -> list[dict]:
    """Up to n batches of the current epoch from its start, without advancing."""
    return [self._batch(m) for m in self._plan(self.epoch)[:n]]

  def __next__(self) -> dict:
    if self.index >= len(self._plan(self.epoch)):
      self.epoch, self.index = self.epoch + 1, 0
    members = self._plan(self.epoch)[self.index]
    self.index += 1
    return self._batch(members)


def eval_batches(split: ParallelSplit, batch_size: int, row_len: int, packing: bool,
                 bos: int, pad_multiple: int = 8) -> list[dict]:
  """Every pair of the split once, in a fixed order; the last batch is filled with padding."""
  plan = plan_batches(split, batch_size, row_len, packing, np.arange(len(split)),
                      keep_partial=True)
  return [make_batch(split, m, batch_size, row_len, packing, bos, pad_multiple)
          for m in plan]
