"""Checks shared by the tests that run lmjax's entry points as real processes."""

import os
import socket

import pytest

from lmjax.errors import UserError


def one_line_error(proc, *needles):
  """The process failed with exit 2 and exactly one 'error: ...' line naming the needles."""
  assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-3000:]
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  for n in needles:
    assert n in lines[0], lines[0]
  return lines[0]


def listing(path):
  """{file: (size, mtime)} below path: equal before and after means nothing was written."""
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      out[p] = (os.path.getsize(p), os.path.getmtime(p))
  return out


def user_error(fn, *args, needles=(), **kwargs) -> str:
  """Runs `fn`, expecting a one-line UserError that contains every needle."""
  with pytest.raises(UserError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert '\n' not in message, message
  for needle in needles:
    assert str(needle) in message, (needle, message)
  return message


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]
