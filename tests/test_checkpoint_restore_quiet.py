"""checkpoint.restore_good silences a broken checkpoint's closed-loop noise only while it reads.

A failed tensorstore read calls back into orbax's closed event loop; restore_good makes that a
no-op and filters asyncio's 'never retrieved' log and 'never awaited' warnings. These tests
check that none of it outlives the call: afterwards asyncio.BaseEventLoop.call_soon_threadsafe
is the original, the 'asyncio' logger has the filters it had and warnings.filters is unchanged,
whether the restore succeeded, fell back or failed, and when two restores overlap in threads.
"""

import asyncio
import logging
import os
import subprocess
import sys
import threading
import warnings

import jax
import numpy as np
import pytest

from lmjax import checkpoint
from lmjax.errors import UserError

SHAPE = (32, 64)


def _process_state():
  return (vars(asyncio.BaseEventLoop)['call_soon_threadsafe'],
          list(logging.getLogger('asyncio').filters), list(warnings.filters))


def _closed_loop_raises() -> bool:
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(lambda: None)
  except RuntimeError:
    return True
  return False


def _corrupt(step_dir):
  """Flip bytes in the middle of every array data file of a step's state (as a bad disk)."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, 'state'))
           for f in fs if os.sep + 'd' + os.sep in os.path.join(r, f)]
  assert files
  for f in files:
    data = bytearray(open(f, 'rb').read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
    open(f, 'wb').write(bytes(data))


@pytest.fixture
def saved(tmp_path):
  """(workdir, manager, abstract state, checksum fn) with steps 1 and 2 of a 6-array state."""
  sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  csum = checkpoint.checksum_fn(sh)
  mngr = checkpoint.manager(str(tmp_path), async_save=False)
  rng = np.random.default_rng(0)
  for step in (1, 2):
    st = {f'w{i}': jax.device_put(rng.normal(size=SHAPE).astype(np.float32), sh)
          for i in range(6)}
    checkpoint.save(mngr, step, st, {'index': step}, {'vocab_size': 5, 'checksum': csum(st)})
  abstract = {f'w{i}': jax.ShapeDtypeStruct(SHAPE, np.float32, sharding=sh) for i in range(6)}
  return tmp_path, mngr, abstract, csum


def test_intact_restore_leaves_the_process_as_it_was(saved):
  _, mngr, abstract, csum = saved
  before = _process_state()
  seen = []

  def checksum(state):  # runs inside restore_good, after the read
    seen.append(vars(asyncio.BaseEventLoop)['call_soon_threadsafe'] is before[0])
    seen.append(_closed_loop_raises())
    return csum(state)

  step, _, data = checkpoint.restore_good(mngr, abstract, checksum, 5, 'fp', 'here')
  assert step == 2 and data == {'index': 2}
  assert seen == [False, False]  # quiet while reading ...
  assert _process_state() == before  # ... and nothing left behind
  assert _closed_loop_raises()


def test_broken_restore_warns_once_and_leaves_the_process_as_it_was(saved, capfd):
  wd, mngr, abstract, csum = saved
  _corrupt(wd / 'checkpoints' / '2')
  before = _process_state()
  step, _, _ = checkpoint.restore_good(mngr, abstract, csum, 5, 'fp', 'here')
  assert step == 1
  assert _process_state() == before
  assert _closed_loop_raises()
  err = capfd.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('warning: checkpoint step 2 '), err


def test_failed_restore_leaves_the_process_as_it_was(saved, capfd):
  wd, mngr, abstract, csum = saved
  for step in (1, 2):
    _corrupt(wd / 'checkpoints' / str(step))
  before = _process_state()
  with pytest.raises(UserError, match='no checkpoint in'):
    checkpoint.restore_good(mngr, abstract, csum, 5, 'fp', 'here')
  assert _process_state() == before
  assert _closed_loop_raises()
  assert capfd.readouterr().err == ''  # the UserError is the whole report


def test_overlapping_restores_in_threads_undo_once_both_are_done(saved, tmp_path_factory):
  """Two restores whose reads overlap: the first to finish must not undo the other's quiet
  method, and the last to finish restores the original."""
  _, mngr, abstract, csum = saved
  wd2 = tmp_path_factory.mktemp('second')
  sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  mngr2 = checkpoint.manager(str(wd2), async_save=False)
  st = {k: jax.device_put(np.ones(SHAPE, np.float32), sh) for k in abstract}
  checkpoint.save(mngr2, 1, st, {'index': 1}, {'vocab_size': 5, 'checksum': csum(st)})
  before = _process_state()
  both_inside = threading.Barrier(2, timeout=30)
  first_done = threading.Event()
  quiet_after_first = []
  results, errors = {}, []

  def checksum_first(state):
    both_inside.wait()
    return csum(state)

  def checksum_second(state):
    both_inside.wait()
    assert first_done.wait(30)
    quiet_after_first.append(not _closed_loop_raises())
    return csum(state)

  def restore(name, m, fn, done=None):
    try:
      results[name] = checkpoint.restore_good(m, abstract, fn, 5, 'fp', 'here')[0]
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
      both_inside.abort()
    finally:
      if done is not None:
        done.set()

  threads = [threading.Thread(target=restore, args=('a', mngr, checksum_first, first_done)),
             threading.Thread(target=restore, args=('b', mngr2, checksum_second))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not errors, errors
  assert results == {'a': 2, 'b': 1}
  assert quiet_after_first == [True]
  assert _process_state() == before
  assert _closed_loop_raises()


LATE_FAILURE = r"""
import asyncio, gc, sys
from lmjax import cli
if sys.argv[1] == 'quiet':
  cli.quiet_unretrieved_read_errors()

async def fails():
  raise ValueError('OUT_OF_RANGE: a read that failed after the restore had reported')

async def never_awaited():
  pass

loop = asyncio.new_event_loop()
task = loop.create_task(fails())
loop.run_until_complete(asyncio.sleep(0.01))  # the task fails; nobody retrieves it
loop.close()
coro = never_awaited()
del task, coro
gc.collect()
print('done')
"""


@pytest.mark.parametrize('mode', ['quiet', 'debug'])
def test_entry_points_drop_the_late_echoes_of_a_failed_read(mode):
  """A failed read's task collected after restore_good's block has closed: lmjax's entry
  points (cli.run without --debug) print nothing for it; under --debug asyncio reports it."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', LATE_FAILURE, mode], cwd=repo, text=True,
                        capture_output=True, timeout=120, env=dict(os.environ, PYTHONPATH=repo))
  assert proc.returncode == 0 and proc.stdout == 'done\n', proc.stderr
  if mode == 'quiet':
    assert proc.stderr == ''
  else:
    assert 'Task exception was never retrieved' in proc.stderr
    assert 'was never awaited' in proc.stderr
