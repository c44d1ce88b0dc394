"""Preemption: SIGTERM -> finish the step, checkpoint, exit 0 (restart the command to resume)."""

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


class StopWatch:
  """Catches SIGTERM (preemption notices, `kill`, SLURM/GKE shutdown) as a request to stop.

  The loop asks `should_stop(step)` after each step; with several processes the local flags
  are combined every `every` steps (a tiny all-gather), so all processes stop at one step.
  """

  def __init__(self, every: int = 1):
    self.requested, self.every, self._old = False, max(1, int(every)), None
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1 and step % self.every:
      return False
    return agree_to_stop(self.requested)

  def close(self) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None
