"""Stopping cleanly: SIGTERM (preemption) finishes the step, checkpoints and exits 0; Ctrl-C
does the same and exits 130 (lmjax.cli); restarting the same command resumes."""

import signal
import threading

import jax
import numpy as np


def agree_to_stop(local: bool) -> bool:
  """True on every process if any process was asked to stop: all save at the same step."""
  if jax.process_count() == 1:
    return bool(local)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(bool(local))], np.int32))
  return bool(np.any(flags))


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, handled: the step in flight finished and a checkpoint was saved."""


class StopWatch:
  """Catches SIGTERM (preemption notices, `kill`, SLURM/GKE shutdown) and Ctrl-C (SIGINT) as a
  request to stop after the current step.

  The loop asks `should_stop(step)` after each step; with several processes the local flags
  are combined every `every` steps (a tiny all-gather), so all processes stop at one step.
  `signal_name` says which signal asked. A second Ctrl-C does not wait: it raises
  KeyboardInterrupt at once (the newest checkpoint stays the last one saved).
  """

  def __init__(self, every: int = 1):
    self.requested, self.every, self._old = False, max(1, int(every)), {}
    self.signal_name = ''
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT and self.signal_name == 'SIGINT':
      self.close()
      raise KeyboardInterrupt('second Ctrl-C: stopped at once, without saving')
    self.requested = True
    self.signal_name = self.signal_name or signal.Signals(signum).name

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1 and step % self.every:
      return False
    return agree_to_stop(self.requested)

  def close(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}
