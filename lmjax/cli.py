"""Shared entry-point plumbing: one-line errors, --debug for tracebacks."""

import os
import sys
from typing import Callable

from absl import app, flags

from lmjax.errors import UserError

flags.DEFINE_bool('debug', False, 'Show full tracebacks for errors.')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag or config override prints one line and exits 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    msg = ' '.join(str(e).split())
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)


def check_workdir(path: str, must_exist: bool = False) -> str:
  if not path:
    raise UserError('--workdir is required')
  if must_exist and not os.path.isdir(path):
    raise UserError(f'--workdir {path}: no such directory')
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'--workdir {path}: exists and is not a directory')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir {path}: cannot create it ({e.strerror})') from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f'--workdir {path}: not writable')
  return path


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with UserError -> one line on stderr and exit status 2."""

  def wrapped(argv):
    try:
      main(argv)
    except UserError as e:
      if flags.FLAGS.debug:
        raise
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(wrapped, flags_parser=_parse_flags)
