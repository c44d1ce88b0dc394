"""User-facing errors.

A `UserError` is bad input the user can fix (a missing file, a bad config field). Entry points
catch it and print its message as one line, exiting non-zero; `--debug` shows the traceback.
Messages name the culprit: the file, flag or config field.
"""

import contextlib
import sys


class UserError(Exception):
  """Bad input: printed as one line by the entry points, no traceback."""


def first_line(e: BaseException) -> str:
  """The first line of an exception's message (its type name when the message is empty)."""
  return (str(e).strip().splitlines() or [type(e).__name__])[0]


_held = None  # the warnings held while a run's input is being checked (warnings_after_checks)


def warn(msg: str) -> None:
  """'warning: msg' on stderr, or held until the checks pass inside warnings_after_checks."""
  if _held is not None:
    _held.append(msg)
  else:
    print(f'warning: {msg}', file=sys.stderr, flush=True)


@contextlib.contextmanager
def warnings_after_checks():
  """Holds `warn`'s warnings while a run checks its input, then prints them: a run refused
  there (UserError) says only its one error line. Any other exit prints what was held."""
  global _held
  if _held is not None:  # nested: the outermost block decides
    yield
    return
  _held = []
  refused = False
  try:
    yield
  except UserError:
    refused = True
    raise
  finally:
    held, _held = _held, None
    if not refused:
      for msg in held:
        warn(msg)
