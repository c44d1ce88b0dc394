"""Local text files: strict reading, parallel pairs, byte counts.

Every check on a file raises `UserError` with one line that names the file, so a bad corpus fails
before any compile. Files are read whole (a 10 MB file, or a single 10 MB line, reads in well under
a second); lines are split on '\\n' only, with '\\r\\n' read as '\\n', so a line is exactly what an
editor shows and nothing else (form feeds, U+2028, …) splits it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence

from lmjax.errors import UserError

_BOM = '\ufeff'


def split_lines(text: str) -> list[str]:
  """Splits `text` on newlines; a final newline does not add an empty last line."""
  if '\r' in text:
    text = text.replace('\r\n', '\n')
  lines = text.split('\n')
  if lines[-1] == '':
    lines.pop()
  return lines


def read_lines(path: str | os.PathLike, *, what: str = 'data file') -> list[str]:
  """Reads a UTF-8 text file as a list of lines without their newlines.

  Args:
    path: the file.
    what: how to call the file in error messages ('source file', 'validation data', …).

  Returns:
    The lines, blank ones included (for LM on raw text a blank line is a real paragraph break). A
    leading UTF-8 byte-order mark is dropped.

  Raises:
    UserError: the file is missing, a directory, empty, not UTF-8 or has only blank lines.
  """
  return decode_lines(read_bytes(path, what), f'{what} {os.fspath(path)}')


def read_bytes(path: str | os.PathLike, what: str = 'data file') -> bytes:
  """The file's bytes; a missing, unreadable or directory path is a UserError naming `what`."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise UserError(f'{what} {path} is a directory, expected a file')
  try:
    with open(path, 'rb') as f:
      return f.read()
  except FileNotFoundError:
    raise UserError(f'{what} not found: {path}') from None
  except OSError as e:
    raise UserError(f'cannot read {what} {path}: {e.strerror or e}') from None


def read_stdin_lines(what: str = 'standard input') -> list[str]:
  """Standard input read exactly as read_lines reads a file (UTF-8, BOM, the same errors)."""
  return decode_lines(sys.stdin.buffer.read(), what)


def decode_text(data: bytes, what: str) -> str:
  """UTF-8 bytes -> text with a leading byte-order mark dropped; `what` names the input in the
  one-line error."""
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    # Decoding the whole buffer at once is fast; only on failure count the lines up to the bad byte.
    line = data.count(b'\n', 0, e.start) + 1
    raise UserError(f'{what} is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} '
                    f'(line {line}): {e.reason}') from None
  return text[1:] if text.startswith(_BOM) else text


def decode_lines(data: bytes, what: str) -> list[str]:
  """UTF-8 bytes -> lines; `what` names the input in the one-line errors (empty input, not
  UTF-8, only blank lines)."""
  if not data:
    raise UserError(f'{what} is empty (0 bytes)')
  text = decode_text(data, what)
  del data
  if not text or text.isspace():
    raise UserError(f'{what} has only blank lines')
  return split_lines(text)


class ParallelPairs(list):
  """A list of (source, target) pairs that remembers how many blank pairs were dropped."""

  def __init__(self, pairs: Iterable[tuple[str, str]] = (), num_dropped: int = 0):
    super().__init__(pairs)
    self.num_dropped = num_dropped


def drop_blank_pairs(src: Sequence[str], tgt: Sequence[str]) -> ParallelPairs:
  """Pairs up `src` and `tgt` (same length), dropping pairs where either side is blank."""
  pairs = [(s, t) for s, t in zip(src, tgt) if s.strip() and t.strip()]
  return ParallelPairs(pairs, num_dropped=len(src) - len(pairs))


def read_parallel(src_path: str | os.PathLike,
                  tgt_path: str | os.PathLike) -> ParallelPairs:
  """Reads line-aligned source and target files as (source, target) pairs.

  Pairs where either side is blank are dropped (a blank line says nothing to translate, or a
  translation lost in alignment); their count is in the result's `num_dropped` attribute.

  Raises:
    UserError: a file fails `read_lines`, the files differ in line count, or every pair is blank.
  """
  src = read_lines(src_path, what='source file')
  tgt = read_lines(tgt_path, what='target file')
  if len(src) != len(tgt):
    raise UserError(f'parallel files differ in line count: source {os.fspath(src_path)} has '
                    f'{len(src)} lines, target {os.fspath(tgt_path)} has {len(tgt)}')
  pairs = drop_blank_pairs(src, tgt)
  if not pairs:
    raise UserError(f'parallel files {os.fspath(src_path)} and {os.fspath(tgt_path)} have no pair '
                    'with both sides non-blank')
  return pairs


def count_utf8_bytes(lines: Iterable[str]) -> int:
  """UTF-8 bytes of `lines` as a file: the text plus one newline per line (for bits per byte)."""
  return sum(len(line.encode('utf-8')) + 1 for line in lines)
