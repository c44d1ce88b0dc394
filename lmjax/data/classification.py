"""Classification input: labelled sentences or sentence pairs -> ids, token types, labels ->
length-bucketed batches.

config.data fields (config_base.classify_config):
  source: text | tfds | synthetic
  train, eval, test: local files with named columns: TSV with a header row (GLUE's layout,
    e.g. `sentence<TAB>label`; no quoting, as GLUE's files are written), CSV with a header row,
    or JSON lines (one object per line); format: '' (from the extension: .tsv, .csv, .jsonl or
    .json) | tsv | csv | jsonl
  text_column, text_pair_column ('' for single sentences), label_column
  classes: the class names; [] reads them from the training labels (numerically when every
    label is an integer, else sorted; TFDS class-label features keep their own names and order)
  regression: True reads label_column as a number (a mean-squared-error head)
  name, train_split, eval_split, test_split, data_dir (tfds: e.g. name='glue/sst2')
  tokenizer: wordpiece | sentencepiece | word; vocab_size, wordpiece_vocab, lowercase,
    spm_model (lmjax.data.lm.build_tokenizer: trained on the training text unless given)
  pad_multiple: batch lengths round up to a multiple of this (fewer shapes to compile)
  synthetic_lines, synthetic_eval_lines, seed (synthetic: a cue word decides the class)

Each example becomes `[CLS] a [SEP] (b [SEP])` with token types 0/1 (WordPiece's own
post-processor; bos/eos around each side for the other tokenizers), truncated longest-first to
config.seq_len tokens (the count of truncated examples is reported). Train batches are drawn
per epoch from a seeded permutation, sorted by length inside windows of BUCKET_BATCHES batches so
that rows of a batch have similar lengths, and shuffled as whole batches; each batch is padded
only to its longest row (rounded up to pad_multiple). The iterator is deterministic and resumes
exactly from get_state()/set_state(). Every bad row is a UserError naming file, line and column.

Batch: inputs [B, L] int32 (0 = padding), token_types [B, L] int32, labels [B] (int32 class
index, or float32 target), weights [B] float32 (0 for the rows that pad the last eval batch).
"""

import csv
import dataclasses
import io
import json
import os
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from lmjax.data import lm as lm_data
from lmjax.data import text as text_lib
from lmjax.errors import UserError

BUCKET_BATCHES = 32  # train batches per length-sorted window
FORMATS = ('tsv', 'csv', 'jsonl')
SYNTHETIC_CLASSES = ('negative', 'positive')
_FILLER = ('the', 'a', 'cat', 'dog', 'bird', 'child', 'king', 'river', 'tree', 'house', 'sees',
           'likes', 'follows', 'near', 'under', 'with', 'small', 'old', 'red', 'quiet')
_CUES = (('bad', 'awful', 'dull'), ('good', 'great', 'fine'))


@dataclasses.dataclass
class Table:
  """Raw examples of one split: first texts, second texts (or None), raw label values."""
  first: list
  second: Optional[list]
  labels: list
  where: list  # 'FILE line N' per example, for errors
  label_names: Optional[tuple] = None  # a TFDS ClassLabel's names


@dataclasses.dataclass
class Split:
  """An encoded split."""
  ids: list  # int32 arrays, one per example
  types: list  # int32 arrays
  labels: np.ndarray  # [N] int32 or float32
  num_truncated: int

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def lengths(self) -> np.ndarray:
    return np.asarray([len(x) for x in self.ids], np.int64)


# ----------------------------------------------------------------------------- reading


def file_format(path: str, fmt: str) -> str:
  if fmt:
    if fmt not in FORMATS:
      raise UserError(f'config.data.format: {fmt!r} is not one of {FORMATS}')
    return fmt
  ext = os.path.splitext(path)[1].lower()
  found = {'.tsv': 'tsv', '.csv': 'csv', '.jsonl': 'jsonl', '.json': 'jsonl'}.get(ext)
  if found is None:
    raise UserError(f'{path}: cannot tell the format from the extension {ext or "(none)"!r}; '
                    f'set config.data.format to one of {FORMATS}')
  return found


def _read_text(path: str, field: str) -> str:
  what = f'config.data.{field}'
  return text_lib.decode_text(text_lib.read_bytes(path, what), f'{what} {path}')


def _rows(path: str, fmt: str, field: str) -> Iterator[tuple[int, dict]]:
  """(line number, {column: value}) of every example row."""
  text = _read_text(path, field)
  if not text.strip():
    raise UserError(f'config.data.{field} {path} is empty')
  if fmt == 'jsonl':
    for n, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise UserError(f'{path} line {n}: not JSON ({e})') from None
      if not isinstance(row, dict):
        raise UserError(f'{path} line {n}: a JSON object per line expected, got '
                        f'{type(row).__name__}')
      yield n, row
    return
  if fmt == 'tsv':  # GLUE writes no quoting: a quote is an ordinary character
    reader = csv.reader(io.StringIO(text), delimiter='\t', quoting=csv.QUOTE_NONE)
  else:
    reader = csv.reader(io.StringIO(text))
  header = next(reader)
  for n, values in enumerate(reader, 2):
    if not values or values == ['']:
      continue
    if len(values) != len(header):
      raise UserError(f'{path} line {n}: {len(values)} fields, the header has {len(header)} '
                      f'({", ".join(header)})')
    yield n, dict(zip(header, values))


def _check_columns(path: str, row: dict, cfg: Any) -> None:
  for flag in ('text_column', 'text_pair_column', 'label_column'):
    name = cfg.get(flag)
    if name and name not in row:
      raise UserError(f'{path}: no column {name!r} (config.data.{flag}); columns: '
                      f'{", ".join(map(str, row))}')


def read_file(path: str, cfg: Any, field: str) -> Table:
  """One local file as a Table; every row has non-empty text fields (and a label)."""
  fmt = file_format(path, cfg.get('format', ''))
  pair = cfg.get('text_pair_column') or ''
  first, second, labels, where = [], [] if pair else None, [], []
  for n, row in _rows(path, fmt, field):
    if not where:
      _check_columns(path, row, cfg)
    for col in (cfg.text_column,) + ((pair,) if pair else ()):
      if col not in row:
        raise UserError(f'{path} line {n}: no {col!r} field')
      value = row[col]
      if not isinstance(value, str) or not value.strip():
        raise UserError(f'{path} line {n}: empty {col!r} field' if isinstance(value, str) or
                        value is None else f'{path} line {n}: {col!r} is not text')
    first.append(row[cfg.text_column])
    if pair:
      second.append(row[pair])
    if cfg.label_column not in row:
      raise UserError(f'{path} line {n}: no {cfg.label_column!r} field')
    labels.append(row[cfg.label_column])
    where.append(f'{path} line {n}')
  if not first:
    raise UserError(f'config.data.{field} {path} has a header but no example')
  return Table(first, second, labels, where)


def _tfds_table(cfg: Any, split: str) -> Table:
  from lmjax.data import tfds_source  # tensorflow_datasets is slow to import
  pair = cfg.get('text_pair_column') or ''
  columns = [cfg.text_column] + ([pair] if pair else []) + [cfg.label_column]
  values, names = tfds_source.load_columns(cfg.name, split, columns,
                                           data_dir=cfg.get('data_dir') or None)
  where = [f"TFDS '{cfg.name}' split '{split}' example {i}" for i in range(len(values[columns[0]]))]
  for col in columns[:-1]:
    for w, v in zip(where, values[col]):
      if not v.strip():
        raise UserError(f'{w}: empty {col!r} field')
  return Table(values[cfg.text_column], values[pair] if pair else None,
               values[cfg.label_column], where, names.get(cfg.label_column))


def synthetic_table(n: int, seed: int, regression: bool = False) -> Table:
  """Sentences of filler words with cue words: the class is which cue set appears (a trivially
  separable task); for regression the target is the number of positive cues."""
  rng = np.random.default_rng(seed)
  first, labels = [], []
  for _ in range(n):
    words = list(rng.choice(_FILLER, size=int(rng.integers(3, 12))))
    if regression:
      k = int(rng.integers(0, 4))
      cues = list(rng.choice(_CUES[1], size=k))
      labels.append(str(k))
    else:
      c = int(rng.integers(2))
      cues = [str(rng.choice(_CUES[c]))]
      labels.append(SYNTHETIC_CLASSES[c])
    for cue in cues:
      words.insert(int(rng.integers(len(words) + 1)), cue)
    first.append(' '.join(words))
  return Table(first, None, labels, [f'synthetic example {i}' for i in range(n)])


def read_table(cfg: Any, split: str) -> Optional[Table]:
  """The raw examples of 'train', 'eval' or 'test' (None when test is not configured)."""
  if cfg.source == 'synthetic':
    if split == 'test':
      return None
    n = cfg.synthetic_lines if split == 'train' else cfg.synthetic_eval_lines
    return synthetic_table(n, cfg.seed + (0 if split == 'train' else 1), cfg.regression)
  if cfg.source == 'text':
    path = cfg.get(split, '')
    if not path:
      if split == 'test':
        return None
      raise UserError(f'config.data.{split} must be set for data.source=text')
    return read_file(path, cfg, split)
  if cfg.source == 'tfds':
    name = {'train': cfg.train_split, 'eval': cfg.eval_split,
            'test': cfg.get('test_split', '')}[split]
    return _tfds_table(cfg, name) if name else None
  raise UserError(f'config.data.source: unknown source {cfg.source!r} (text, tfds, synthetic)')


# ----------------------------------------------------------------------------- labels


def _sort_key(names: Sequence[str]):
  """Numeric order when every name is an integer ('2' before '10'), else string order."""
  try:
    [int(x) for x in names]
  except ValueError:
    return lambda x: x
  return int


def _label_str(value: Any, names: Optional[tuple]) -> str:
  if names is not None and isinstance(value, (int, np.integer)) and 0 <= value < len(names):
    return names[int(value)]  # a TFDS ClassLabel index
  if isinstance(value, bool):
    return str(value).lower()
  return str(value).strip()


def class_list(cfg: Any, train: Table) -> tuple:
  """config.data.classes, else the class names of the training data."""
  if cfg.classes:
    classes = tuple(str(c) for c in cfg.classes)
    if len(set(classes)) != len(classes):
      raise UserError(f'config.data.classes {list(classes)} has duplicates')
  elif train.label_names is not None:
    classes = tuple(train.label_names)
  else:
    seen = sorted({_label_str(v, None) for v in train.labels})
    classes = tuple(sorted(seen, key=_sort_key(seen)))
  if len(classes) < 2:
    raise UserError(f'config.data.classes: a classifier needs 2+ classes, got {list(classes)}'
                    + ('' if cfg.classes else ' in the training labels'))
  return classes


def map_labels(table: Table, cfg: Any, classes: Optional[tuple]) -> np.ndarray:
  """Class indices [N] int32, or targets [N] float32 for regression (classes None)."""
  col = cfg.label_column
  if classes is None:
    out = np.zeros(len(table.labels), np.float32)
    for i, (v, w) in enumerate(zip(table.labels, table.where)):
      try:
        out[i] = float(v)
        if not np.isfinite(out[i]):
          raise ValueError
      except (TypeError, ValueError):
        raise UserError(f'{w}: label {v!r} in column {col!r} is not a number '
                        '(config.data.regression=True)') from None
    return out
  index = {c: i for i, c in enumerate(classes)}
  out = np.zeros(len(table.labels), np.int32)
  for i, (v, w) in enumerate(zip(table.labels, table.where)):
    name = _label_str(v, table.label_names)
    if name not in index:
      raise UserError(f'{w}: label {name!r} in column {col!r} is not one of the classes '
                      f'{list(classes)} (config.data.classes'
                      + (')' if cfg.classes else ', read from the training data)'))
    out[i] = index[name]
  return out


# ----------------------------------------------------------------------------- encoding


def _truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
  """Longest-first: drop a token from the longer side (the second on a tie, as the Hugging Face
  library does) until both fit in budget."""
  while la + lb > budget:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def encode_texts(tok: Any, first: Sequence[str], second: Optional[Sequence[str]],
                 max_len: int) -> tuple[list, list, int]:
  """(ids, token types, number truncated) of the examples, specials included, each at most
  max_len tokens."""
  if hasattr(tok, 'encode_pairs'):  # WordPiece: the library's post-processor and truncation
    full = tok.encode_pairs(first, second)
    long = [i for i, (ids, _) in enumerate(full) if len(ids) > max_len]
    if long:
      cut = tok.encode_pairs([first[i] for i in long],
                             None if second is None else [second[i] for i in long], max_len)
      for i, enc in zip(long, cut):
        full[i] = enc
    return ([np.asarray(ids, np.int32) for ids, _ in full],
            [np.asarray(t, np.int32) for _, t in full], len(long))
  ids_out, types_out, truncated = [], [], 0
  bos, eos = tok.bos_id, tok.eos_id
  for i, a in enumerate(first):
    ea = tok.encode(a)
    eb = tok.encode(second[i]) if second is not None else None
    specials = 2 if eb is None else 3
    la, lb = _truncate_pair(len(ea), len(eb) if eb is not None else 0, max_len - specials)
    truncated += (la, lb) != (len(ea), len(eb) if eb is not None else 0)
    ids = [bos] + ea[:la] + [eos]
    types = [0] * len(ids)
    if eb is not None:
      ids += eb[:lb] + [eos]
      types += [1] * (lb + 1)
    ids_out.append(np.asarray(ids, np.int32))
    types_out.append(np.asarray(types, np.int32))
  return ids_out, types_out, truncated


def encode_table(table: Table, tok: Any, max_len: int, labels: np.ndarray) -> Split:
  ids, types, truncated = encode_texts(tok, table.first, table.second, max_len)
  return Split(ids, types, labels, truncated)


@dataclasses.dataclass
class Data:
  tokenizer: Any
  classes: Optional[tuple]  # None for regression
  train: Split
  eval: Split
  test: Optional[Split]


def _cleaned(cfg: Any, table: Optional[Table], split: str) -> Optional[Table]:
  """The table's texts through config.data.clean; an example it empties is an error naming
  its file and line."""
  if table is None:
    return None
  columns = [lm_data.clean_lines(cfg, col, f'config.data.{split}')
             for col in (table.first, table.second) if col is not None]
  for col in columns:
    for value, where in zip(col, table.where):
      if not value.strip():
        raise UserError(f'{where}: the text is empty after config.data.clean')
  return dataclasses.replace(table, first=columns[0],
                             second=columns[1] if table.second is not None else None)


def load_classification_data(cfg: Any, max_len: int, workdir: Optional[str]) -> Data:
  """Reads, checks and tokenizes every split (the tokenizer is built from the training
  text unless one is given or saved in the workdir)."""
  tables = {s: _cleaned(cfg, read_table(cfg, s), s) for s in ('train', 'eval', 'test')}
  train = tables['train']
  classes = None if cfg.regression else class_list(cfg, train)
  labels = {s: map_labels(t, cfg, classes) for s, t in tables.items() if t is not None}
  text = train.first + (train.second or [])
  tok = lm_data.build_tokenizer(cfg, text, workdir)
  splits = {s: (encode_table(t, tok, max_len, labels[s]) if t is not None else None)
            for s, t in tables.items()}
  return Data(tok, classes, splits['train'], splits['eval'], splits['test'])


# ----------------------------------------------------------------------------- batches


def _row_len(longest: int, max_len: int, multiple: int) -> int:
  return min(max_len, -(-longest // multiple) * multiple)


def make_batch(split: Split, members: Sequence[int], batch_size: int, max_len: int,
               multiple: int) -> dict:
  """Rows `members` padded to their longest (rounded up); missing rows have weight 0."""
  members = list(members)
  length = _row_len(max(len(split.ids[i]) for i in members), max_len, multiple)
  inputs = np.zeros((batch_size, length), np.int32)
  types = np.zeros((batch_size, length), np.int32)
  labels = np.zeros((batch_size,), split.labels.dtype)
  weights = np.zeros((batch_size,), np.float32)
  for r, i in enumerate(members):
    n = len(split.ids[i])
    inputs[r, :n], types[r, :n] = split.ids[i], split.types[i]
    labels[r], weights[r] = split.labels[i], 1.0
  return {'inputs': inputs, 'token_types': types, 'labels': labels, 'weights': weights}


class BucketIterator:
  """Endless train batches of batch_size rows, deterministic from (seed, epoch, index)."""

  def __init__(self, split: Split, batch_size: int, max_len: int, seed: int,
               multiple: int = 8, bucket: bool = True):
    self.split, self.batch_size, self.max_len = split, batch_size, max_len
    self.seed, self.multiple, self.bucket = seed, multiple, bucket
    self.steps_per_epoch = len(split) // batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split has {len(split)} examples: too few for one batch '
                      f'of config.batch_size={batch_size}')
    self.epoch, self.index = 0, 0
    self._plan = None  # (epoch, [member arrays])

  def get_state(self) -> dict:
    return {'epoch': self.epoch, 'index': self.index}

  def set_state(self, state: dict) -> None:
    self.epoch, self.index = int(state['epoch']), int(state['index'])

  def plan(self, epoch: int) -> list:
    """The batches (lists of example indices) of one epoch, in order."""
    if self._plan is not None and self._plan[0] == epoch:
      return self._plan[1]
    rng = np.random.default_rng([self.seed, epoch])
    b, steps = self.batch_size, self.steps_per_epoch
    order = rng.permutation(len(self.split))[:steps * b]
    batches = []
    if self.bucket:
      lengths = self.split.lengths
      window = b * BUCKET_BATCHES
      for s in range(0, len(order), window):
        chunk = order[s:s + window]
        chunk = chunk[np.argsort(lengths[chunk], kind='stable')]
        batches += [chunk[i:i + b] for i in range(0, len(chunk), b)]
      batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
      batches = [order[i:i + b] for i in range(0, len(order), b)]
    self._plan = (epoch, batches)
    return batches

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    members = self.plan(self.epoch)[self.index]
    self.index += 1
    return make_batch(self.split, members, self.batch_size, self.max_len, self.multiple)

  def peek(self, num: int) -> list:
    """The next `num` batches of the current epoch without moving the iterator."""
    plan = self.plan(self.epoch)[self.index:self.index + num]
    return [make_batch(self.split, m, self.batch_size, self.max_len, self.multiple)
            for m in plan]


def eval_batches(split: Split, batch_size: int, max_len: int, multiple: int = 8) -> list:
  """Every example once, sorted by length; the last batch is padded with weight-0 rows."""
  order = np.argsort(split.lengths, kind='stable')
  return [make_batch(split, order[i:i + batch_size], batch_size, max_len, multiple)
          for i in range(0, len(order), batch_size)]


def padding_fraction(batches: Sequence[dict]) -> float:
  """Padded token slots over all slots of the real rows."""
  real = sum(float((b['inputs'] != 0).sum()) for b in batches)
  slots = sum(float(b['weights'].sum()) * b['inputs'].shape[1] for b in batches)
  return 1.0 - real / max(slots, 1.0)
