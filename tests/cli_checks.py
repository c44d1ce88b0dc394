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


# Every test process compiles at LLVM's lowest optimisation level: the suite is mostly XLA
# compiles of tiny programs, and this cuts their CPU time by about a quarter (test_mlm.py: 115 s
# of CPU against 88 s). HLO optimisation and fusion are unchanged; only the machine code is
# less tuned, which the tests' tolerances do not see. Benchmarks never run under it.
XLA_TEST_FLAGS = '--xla_backend_optimization_level=0'


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a test's child process: `devices` simulated CPU devices (None: XLA's
  default of one) and the tests' compile setting."""
  count = f'--xla_force_host_platform_device_count={devices} ' if devices else ''
  return count + XLA_TEST_FLAGS


def signal_when(argv: list, ready, sig, *, env: dict, cwd: str, wait_s: float = 400,
                timeout: float = 300):
  """Starts argv, sends `sig` once ready() is true (polled every 0.2 s; the process must still
  be running and wait_s not spent), and returns (returncode, stdout, stderr). The child starts
  with `sig` at its default disposition, as from a shell: pytest-xdist's workers ignore SIGINT,
  and a child inherits that (Python then installs no KeyboardInterrupt handler)."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
  try:
    deadline = time.time() + wait_s
    while not ready(proc):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()
      time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, out, err
