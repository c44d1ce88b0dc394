"""User-facing errors.

A `UserError` is bad input the user can fix (a missing file, a bad config field). Entry points
catch it and print its message as one line, exiting non-zero; `--debug` shows the traceback.
Messages name the culprit: the file, flag or config field.
"""


class UserError(Exception):
  """Bad input: printed as one line by the entry points, no traceback."""


def first_line(e: BaseException) -> str:
  """The first line of an exception's message (its type name when the message is empty)."""
  return (str(e).strip().splitlines() or [type(e).__name__])[0]
