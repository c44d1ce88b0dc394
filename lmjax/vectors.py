"""Word-vector files (word2vec text and binary, GloVe text) and aligning them to a vocabulary.

Formats, all with UTF-8 words and float32 vectors, rows in file order (for our files the most
frequent word first, which `embeddings_eval`'s restrict_vocab relies on):

  word2vec_text    a header line 'N D', then N lines 'word v1 ... vD'.
  word2vec_binary  a header line 'N D', then N records: the word's UTF-8 bytes, one space, D
                   little-endian float32 (4·D bytes) and a newline. The reference C tool writes
                   that newline, gensim 4 writes none; both read here (newlines before a word are
                   skipped, as gensim does).
  glove            no header; lines 'word v1 ... vD', D taken from the first line.

Text fields are separated by spaces or tabs (a trailing space, as the C tool writes, is fine);
lines end in '\\n' or '\\r\\n'. Written floats have 9 significant digits, enough to read back the
same float32. A word may not be empty nor hold a space, tab or newline (it would not read back).

`read_vectors(path)` detects the format: no 'N D' header (two integers on line 1) means GloVe;
after a header, the file is word2vec text when the bytes after it read as text (valid UTF-8 with
no NUL byte, or a first row of a word and D numbers), else binary. Raw float32 bytes are neither,
except by a coincidence that only a tiny file could meet; pass `fmt` to skip the guess (also for
a GloVe file whose first line is two integers: a word '3' with the one value 7 reads as a header).

Every problem with a file is a `UserError` of one line naming the file and the line (text) or the
vector and byte offset (binary). Writes go to a temporary file beside the target, renamed over
it when complete: an interrupted or refused write leaves an existing file as it was.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lmjax import paths
from lmjax.data import text
from lmjax.errors import UserError

FORMATS = ('auto', 'word2vec_text', 'word2vec_binary', 'glove')
INITS = ('normal', 'zeros')

_FIELD_SEP = re.compile('[ \t]+')
_NOT_IN_WORDS = re.compile('[ \t\r\n]')
_BOM = b'\xef\xbb\xbf'


@dataclasses.dataclass(frozen=True, eq=False)
class Vectors:
  """Word vectors in file order.

  Attributes:
    words: the N words, in file order (most frequent first for our files).
    matrix: [N, D] float32, row i the vector of words[i].
  """
  words: list[str]
  matrix: np.ndarray  # [N, D] float32

  def __post_init__(self):
    matrix = np.asarray(self.matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(self.words):
      raise ValueError(f'Vectors: matrix of shape {matrix.shape} for {len(self.words)} words; '
                       'expected [len(words), D]')
    object.__setattr__(self, 'words', list(self.words))
    object.__setattr__(self, 'matrix', matrix)

  @functools.cached_property
  def index(self) -> dict[str, int]:
    """word -> row; a word listed twice maps to its first row."""
    index = {}
    for i, word in enumerate(self.words):
      index.setdefault(word, i)
    return index

  @property
  def dim(self) -> int:
    """D, the vector width."""
    return self.matrix.shape[1]

  def __len__(self) -> int:
    return len(self.words)


# ---------------------------------------------------------------------------------------------
# Writing


def write_word2vec_text(path: str | os.PathLike, words: Sequence[str], matrix) -> None:
  """Writes 'N D' then one line 'word v1 ... vD' per word (9 significant digits)."""
  matrix = _checked(path, words, matrix)
  header = f'{matrix.shape[0]} {matrix.shape[1]}\n'.encode()
  paths.write_atomically(path, _chain([header], _text_rows(words, matrix)))


def write_glove_text(path: str | os.PathLike, words: Sequence[str], matrix) -> None:
  """Writes one line 'word v1 ... vD' per word, no header (GloVe's own format)."""
  paths.write_atomically(path, _text_rows(words, _checked(path, words, matrix)))


def write_word2vec_binary(path: str | os.PathLike, words: Sequence[str], matrix) -> None:
  """Writes 'N D\\n' then per word: UTF-8 word, a space, D little-endian float32, a newline."""
  matrix = _checked(path, words, matrix).astype('<f4')
  header = f'{matrix.shape[0]} {matrix.shape[1]}\n'.encode()
  records = (w.encode('utf-8') + b' ' + row.tobytes() + b'\n' for w, row in zip(words, matrix))
  paths.write_atomically(path, _chain([header], records))


def _checked(path, words: Sequence[str], matrix) -> np.ndarray:
  """`matrix` as [N, D] float32 after checking it and `words` can be written and read back."""
  matrix = np.asarray(matrix, dtype=np.float32)
  if matrix.ndim != 2 or matrix.shape[0] != len(words) or matrix.shape[1] == 0:
    raise ValueError(f'cannot write {os.fspath(path)}: matrix of shape {matrix.shape} for '
                     f'{len(words)} words; expected [len(words), D] with D >= 1')
  if not len(words):
    raise UserError(f'cannot write {os.fspath(path)}: no words')
  for i, word in enumerate(words):
    if not word or _NOT_IN_WORDS.search(word):
      raise UserError(f'cannot write {os.fspath(path)}: word {i + 1} ({word!r}) is empty or '
                      'holds a space, tab or newline, which would not read back')
  return matrix


def _text_rows(words: Sequence[str], matrix: np.ndarray) -> Iterator[bytes]:
  for word, row in zip(words, matrix.tolist()):  # tolist: Python floats, exact float32 values
    yield (word + ' ' + ' '.join(['%.9g' % v for v in row]) + '\n').encode('utf-8')


def _chain(*parts: Iterable[bytes]) -> Iterator[bytes]:
  for part in parts:
    yield from part


# ---------------------------------------------------------------------------------------------
# Reading


def read_vectors(path: str | os.PathLike, fmt: str = 'auto') -> Vectors:
  """Reads a word-vector file.

  Args:
    path: the file.
    fmt: 'auto' (see the module docstring), 'word2vec_text', 'word2vec_binary' or 'glove'.

  Returns:
    The file's `Vectors`, rows in file order.

  Raises:
    UserError: the file is missing or empty; a header that is not 'N D' (N, D >= 1); a row with
      another number of values than the header's D (GloVe: than the first row's); a value that
      is not a number; N disagreeing with the number of rows; a truncated binary file or bytes
      after its N-th vector; text that is not UTF-8.
  """
  if fmt not in FORMATS:
    raise UserError(f'vectors format {fmt!r}: expected one of {", ".join(FORMATS)}')
  path = os.fspath(path)
  what = f'vectors file {path}'
  data = text.read_bytes(path, what='vectors file')
  if not data.strip():
    raise UserError(f'{what} is empty' + (' (0 bytes)' if not data else ' (only blank lines)'))
  if fmt == 'auto':
    fmt = detect_format(data)
  if fmt == 'word2vec_binary':
    return _parse_binary(data, what)
  return _parse_text(data, what, has_header=fmt == 'word2vec_text')


def detect_format(data: bytes) -> str:
  """'glove', 'word2vec_text' or 'word2vec_binary' for a file's bytes (module docstring)."""
  first, _, rest = data.removeprefix(_BOM).partition(b'\n')
  header = _header(first.decode('latin-1'))
  if header is None:
    return 'glove'
  if b'\0' not in rest:
    try:
      rest.decode('utf-8')
      return 'word2vec_text'
    except UnicodeDecodeError:
      pass
  row = rest.partition(b'\n')[0]
  try:
    fields = _fields(row.decode('utf-8'))
    if b'\0' not in row and len(fields) == header[1] + 1:
      np.array(fields[1:], dtype=np.float32)
      return 'word2vec_text'
  except (UnicodeDecodeError, ValueError):
    pass
  return 'word2vec_binary'


def _header(line: str) -> tuple[int, int] | None:
  """(N, D) when `line` is two decimal integers, else None."""
  fields = line.split()
  if len(fields) == 2 and all(f.isascii() and f.isdigit() for f in fields):
    return int(fields[0]), int(fields[1])
  return None


def _checked_header(line: str, what: str, kind: str) -> tuple[int, int]:
  header = _header(line)
  if header is None:
    shown = line[:60] + ('...' if len(line) > 60 else '')
    raise UserError(f"{what} line 1: expected the 'N D' header of a {kind} file (two "
                    f'integers), got {shown!r}')
  if min(header) < 1:
    raise UserError(f"{what} line 1: header '{line.strip()}' needs N >= 1 vectors and D >= 1")
  return header


def _parse_text(data: bytes, what: str, has_header: bool) -> Vectors:
  """word2vec text (has_header) or GloVe; see read_vectors."""
  lines = text.decode_lines(data, what)
  while not lines[-1].strip(' \t\r'):  # blank lines at the end; decode_lines left one non-blank
    lines.pop()
  num, dim, start = None, None, 0
  if has_header:
    num, dim = _checked_header(lines[0], what, 'word2vec text')
    start = 1
  words = []
  matrix = np.empty((len(lines) - start, dim or 0), np.float32)  # [N, D], D fixed by row 1
  for n in range(start + 1, len(lines) + 1):  # n: the 1-based line number
    fields = _fields(lines[n - 1])
    word, values = fields[0], fields[1:]
    if not word:
      raise UserError(f'{what} line {n}: blank line, expected a word and its values')
    if dim is None:  # GloVe: the first row sets D
      if not values:
        raise UserError(f'{what} line {n}: a word ({word!r}) without values')
      dim = len(values)
      matrix = np.empty((len(lines), dim), np.float32)
    if len(values) != dim:
      source = 'the header (line 1)' if has_header else f'line {start + 1}'
      raise UserError(f'{what} line {n}: {len(values)} values after {word!r}, {source} has {dim}')
    try:
      matrix[len(words)] = np.array(values, dtype=np.float32)
    except ValueError:
      bad = next((j for j, v in enumerate(values) if not _is_number(v)), 0)
      raise UserError(f'{what} line {n}: value {bad + 1} of {word!r}, {values[bad][:40]!r}, '
                      'is not a number') from None
    words.append(word)
  if has_header and len(words) != num:
    raise UserError(f'{what}: the header (line 1) says {num} vectors, the file has '
                    f'{len(words)}')
  if not words:
    raise UserError(f'{what}: a header and no vectors')
  return Vectors(words, matrix[:len(words)])


def _fields(line: str) -> list[str]:
  """The fields of a text row, split at runs of spaces and tabs ([''] for a blank line)."""
  line = line.strip(' \t\r')
  fields = line.split(' ')  # the common case, 3x faster than the regular expression
  if '\t' in line or '' in fields:
    fields = _FIELD_SEP.split(line)
  return fields


def _is_number(value: str) -> bool:
  try:
    np.float32(value)
    return True
  except ValueError:
    return False


def _parse_binary(data: bytes, what: str) -> Vectors:
  """word2vec binary; see read_vectors. Errors name the vector (1-based) and its byte offset."""
  first, newline, _ = data.partition(b'\n')
  if not newline:
    raise UserError(f"{what}: no newline after line 1, expected an 'N D' header and binary "
                    'vectors')
  num, dim = _checked_header(first.decode('latin-1'), what, 'word2vec binary')
  width = 4 * dim  # bytes per vector
  words, matrix = [], np.empty((num, dim), np.float32)  # [N, D]
  pos = len(first) + 1
  for i in range(num):
    while pos < len(data) and data[pos] == 0x0a:  # the newline that ends the previous record
      pos += 1
    if pos == len(data):
      raise UserError(f'{what}: the header (line 1) says {num} vectors, the file ends after {i}')
    space = data.find(b' ', pos)
    where = f'vector {i + 1} of {num} (byte offset {pos})'
    if space < 0:
      raise UserError(f'{what}: truncated at {where}: no space after its word')
    try:
      word = data[pos:space].decode('utf-8')
    except UnicodeDecodeError:
      raise UserError(f'{what}: {where}: the word is not UTF-8; is this a word2vec binary '
                      'file?') from None
    if not word:
      raise UserError(f'{what}: {where}: empty word')
    left = len(data) - space - 1
    if left < width:
      raise UserError(f'{what}: truncated at {where}, {word[:40]!r}: {width} bytes of float32 '
                      f'expected, {left} left')
    matrix[i] = np.frombuffer(data, '<f4', dim, space + 1)
    words.append(word)
    pos = space + 1 + width
  extra = data[pos:].strip(b'\n')
  if extra:
    raise UserError(f'{what}: {len(extra)} bytes after the {num} vectors that the header (line '
                    '1) announces; is N right?')
  return Vectors(words, matrix)


# ---------------------------------------------------------------------------------------------
# Aligning to a vocabulary


def align(vectors: Vectors, vocab_tokens: Sequence[str], *, init: str = 'normal',
          scale: float = 1.0, seed: int = 0,
          lowercase_fallback: bool = True) -> tuple[np.ndarray, int, list[str]]:
  """An embedding table for `vocab_tokens` initialised from `vectors`.

  A token takes the file's vector of the same word; failing that, with `lowercase_fallback`,
  the vector of `token.lower()` (so 'The' takes 'the' when the file has no 'The'). A word the
  file lists twice gives its first row.

  Tokens the file lacks get fresh rows, drawn independently of the found ones:
    init='normal': entry (i, d) ~ Normal(0, (scale * sigma_d)^2), sigma_d the standard
      deviation (numpy's, ddof=0) of column d over all the file's rows: the file's own spread
      per dimension, around zero. The draws come from np.random.default_rng(seed) as one
      [M, D] block, M missing tokens in vocabulary order: the same arguments, the same table.
    init='zeros': zeros (scale and seed unused).

  Args:
    vectors: the file's vectors.
    vocab_tokens: the model's vocabulary, row i for token i.
    init: 'normal' or 'zeros', for the missing rows.
    scale: multiplies sigma_d for init='normal'.
    seed: seeds the draws of init='normal'.
    lowercase_fallback: try token.lower() when the token itself is not in the file.

  Returns:
    (table [V, D] float32, found: tokens given a file vector (fallbacks included),
     missing: the tokens given a fresh row, in vocabulary order).
  """
  if init not in INITS:
    raise UserError(f'align init {init!r}: expected one of {", ".join(INITS)}')
  index = vectors.index
  rows = np.full(len(vocab_tokens), -1, np.int64)  # [V] file row per token, -1: missing
  for i, token in enumerate(vocab_tokens):
    row = index.get(token)
    if row is None and lowercase_fallback:
      row = index.get(token.lower())
    if row is not None:
      rows[i] = row
  found = rows >= 0  # [V]
  table = np.zeros((len(vocab_tokens), vectors.dim), np.float32)  # [V, D]
  table[found] = vectors.matrix[rows[found]]
  num_missing = int((~found).sum())
  if init == 'normal' and num_missing:
    sigma = vectors.matrix.astype(np.float64).std(axis=0)  # [D]
    draws = np.random.default_rng(seed).standard_normal((num_missing, vectors.dim))  # [M, D]
    table[~found] = draws * (scale * sigma)
  missing = [t for t, ok in zip(vocab_tokens, found) if not ok]
  return table, int(found.sum()), missing
