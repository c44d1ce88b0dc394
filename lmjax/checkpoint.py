"""Checkpoints: an orbax CheckpointManager over {state, data iterator, meta, tokenizer}.

A checkpoint step directory holds
  state:     the train state pytree (params, opt_state, step, rng[, carry]), saved sharded;
  data:      the input iterator's state (JSON), so a resumed run reads exactly the next batch;
  meta:      JSON with the config, vocabulary size, tokenizer fingerprint and a checksum of
             every state leaf (`state_checksum`), checked when the state is restored;
  tokenizer: JSON {file name: base64 contents} of the tokenizer's files, so a step directory
             is self-contained (WORKDIR/tokenizer is what runs read; it is checked against this
             copy through the fingerprint, and rebuilt from it when missing);
  metrics:   (orbax's) the eval report of that step, when there was one; it ranks the best.
Nothing is pickled: orbax stores arrays with tensorstore and the rest as JSON.

Which steps are kept: the last `max_to_keep` plus the best one by `best_metric` (mode min).
Saves are asynchronous; orbax writes a step into a temporary directory and renames it when
complete, so a process killed mid-save leaves the previous checkpoints as they were and the
half-written step is ignored (and cleaned up by the next run).

`restore_good` restores the newest step that reads back intact (orbax raises, or the state's
checksum differs from meta's) and moves the broken newer ones aside to WORKDIR/checkpoints_bad.
"""

import asyncio
import base64
import contextlib
import errno
import gc
import json
import logging as py_logging
import math
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocp_policies

from lmjax import paths
from lmjax.errors import UserError


def manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
            create: bool = True, best_metric: str = '',
            best_mode: str = 'min') -> ocp.CheckpointManager:
  """Keeps the last `max_to_keep` steps, plus the best by eval `best_metric` when it is set."""
  directory = paths.Path(workdir) / 'checkpoints'
  if best_mode not in ('min', 'max'):
    raise UserError(f'config.checkpoint.best_mode: {best_mode!r} is not min or max')
  if best_metric:
    # Every save passes metrics ({} without an eval); those rank worst and only LatestN keeps
    # them. orbax stores the metrics in the step, so the ranking survives restarts.
    worst = math.inf if best_mode == 'min' else -math.inf

    def key(m):
      v = (m or {}).get(best_metric, worst)
      return worst if v is None or math.isnan(v) else v

    keep = [ocp_policies.LatestN(n=max_to_keep),
            ocp_policies.BestN(get_metric_fn=key, reverse=best_mode == 'min', n=1,
                               keep_checkpoints_without_metrics=False)]
    kw = dict(preservation_policy=ocp_policies.AnyPreservationPolicy(keep), best_fn=key,
              best_mode=best_mode, keep_checkpoints_without_metrics=False)
  else:
    kw = dict(max_to_keep=max_to_keep)
  options = ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=async_save,
                                         cleanup_tmp_directories=create, **kw)
  return _Manager(directory, options=options)


_WARNED_METRICS = set()


class _Manager(ocp.CheckpointManager):
  """orbax's manager, except that a step whose metrics file is damaged counts as a step without
  metrics (one warning naming the file) instead of failing every open of the workdir: orbax
  reads each step's metrics when it opens the directory, and those only rank the best step."""

  def _get_metrics(self, step: int):
    try:
      return super()._get_metrics(step)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
      where = os.path.join(os.fspath(self.directory), str(step), 'metrics')
      if where not in _WARNED_METRICS:
        _WARNED_METRICS.add(where)
        _warn(f'{where} is unreadable ({_first_line(e)}); step {step} is kept but cannot rank '
              'as the best checkpoint')
      return None


def step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
  return paths.join(os.fspath(mngr.directory), str(step))


def _oserror(e: BaseException) -> Optional[OSError]:
  """The OSError behind e (orbax re-raises background-thread errors wrapped), if any."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def _write_error(mngr, step: int, e: BaseException) -> UserError:
  ose = _oserror(e)
  what = (f'{ose.strerror or ose}' + (' (disk full?)' if ose.errno == errno.ENOSPC else '')
          if ose else f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}')
  return UserError(f'cannot write checkpoint step {step} to {step_dir(mngr, step)}: {what}; '
                   f'earlier checkpoints are intact (latest complete: step '
                   f'{_latest_complete(mngr)})')


def _latest_complete(mngr) -> Optional[int]:
  try:
    mngr.reload()
    return mngr.latest_step()
  except Exception:  # pylint: disable=broad-except
    return None


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict, meta: dict,
         tokenizer_files: Optional[dict] = None, metrics: Optional[dict] = None,
         fail_with_enospc: bool = False) -> None:
  """Starts an (async) save; a write error, now or from the previous save, is a UserError.

  fail_with_enospc: test hook (config.debug_fail_save_at_step) simulating a full disk.
  """
  items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
               meta=ocp.args.JsonSave(meta))
  if tokenizer_files is not None:
    items['tokenizer'] = ocp.args.JsonSave(tokenizer_files)
  try:
    if fail_with_enospc:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics)
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(mngr, step, e) from e


def finish(mngr: ocp.CheckpointManager, raising: bool = True) -> None:
  """Waits for the in-flight save and closes; raising=False when already failing."""
  try:
    mngr.wait_until_finished()
    mngr.close()
  except Exception as e:  # pylint: disable=broad-except
    if raising:
      raise _write_error(mngr, mngr.latest_step() or -1, e) from e


def meta(config: Any, tok: Any, state_checksum: Optional[list] = None) -> dict:
  """What every checkpoint's meta holds: the config, the vocabulary size and tokenizer
  fingerprint (checked on resume and by the tools), and the state's per-leaf checksum."""
  out = {'config': json.loads(config.to_json_best_effort()),
         'vocab_size': int(tok.vocab_size), 'tokenizer_fingerprint': tok.fingerprint()}
  if state_checksum is not None:
    out['checksum'] = state_checksum
  return out


def read_meta(mngr: ocp.CheckpointManager, step: Optional[int] = None) -> Optional[dict]:
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def abstract_with_sharding(shapes: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def check_meta(meta: dict, vocab_size: int, fingerprint: str, where: str) -> None:
  """The checkpoint's vocabulary must be the tokenizer's: same size and same fingerprint."""
  if meta.get('vocab_size') != vocab_size:
    raise UserError(f'{where}: checkpoint vocabulary size {meta.get("vocab_size")} does not '
                    f'match the tokenizer\'s {vocab_size}')
  if meta.get('tokenizer_fingerprint') not in (None, fingerprint):
    raise UserError(f'{where}: the tokenizer does not match the one the checkpoint was '
                    'trained with (fingerprints differ)')


# ----------------------------------------------------------------------------- checksums


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """sum_i bits(x_i) * (2i + 1) mod 2^32: integer arithmetic, so the same on every mesh."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  width = x.dtype.itemsize
  if width == 8:
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  else:
    bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width])
  bits = bits.astype(jnp.uint32).reshape(-1)
  weight = jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
  return jnp.sum(bits * weight, dtype=jnp.uint32)


def checksum_fn(replicated_sharding: Any) -> Callable[[Any], list]:
  """A function state -> [uint32 per leaf], jitted once; compares bitwise equality of states."""
  f = jax.jit(lambda st: [_leaf_checksum(x) for x in jax.tree.leaves(st)],
              out_shardings=replicated_sharding)
  return lambda st: [int(v) for v in jax.device_get(f(st))]


# ----------------------------------------------------------------------------- tokenizer copy


def tokenizer_files(tok: Any) -> dict:
  """{file name: base64 bytes} of what tok.save writes (tokenizer.json and its files)."""
  with tempfile.TemporaryDirectory() as d:
    tok.save(d)
    return {'files': {name: base64.b64encode(open(os.path.join(d, name), 'rb').read()).decode()
                      for name in sorted(os.listdir(d))}}


def write_tokenizer_files(payload: dict, directory: str) -> None:
  """Writes a checkpoint's tokenizer copy (plain files; load with tokenizers.load_tokenizer)."""
  paths.makedirs(directory)
  for name, b64 in payload['files'].items():
    if os.path.basename(name) != name or name in ('', '.', '..'):
      raise UserError(f'checkpoint tokenizer copy names a bad file {name!r}')
    paths.write_bytes(paths.join(directory, name), base64.b64decode(b64))


def restore_tokenizer_dir(mngr: ocp.CheckpointManager, directory: str) -> Optional[int]:
  """Writes the newest checkpoint's tokenizer copy to `directory`; the step, or None."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      with _quiet_closed_loop_callbacks():
        payload = mngr.restore(step, args=ocp.args.Composite(
            tokenizer=ocp.args.JsonRestore())).tokenizer
    except Exception:  # pylint: disable=broad-except  (older or broken step: try the next)
      continue
    write_tokenizer_files(payload, directory)
    return step
  return None


# ----------------------------------------------------------------------------- restore


def _warn(msg: str) -> None:
  if jax.process_index() == 0:
    print(f'warning: {msg}', file=sys.stderr, flush=True)


def _first_line(e: BaseException, limit: int = 160) -> str:
  """'Type: the first line of the message', without TensorStore's pointer to its details (a
  bound-method repr) and cut at a word boundary."""
  text = (str(e).strip().splitlines() or [''])[0]
  text = re.split(r'\.? *See full TensorStore details', text)[0].strip()
  if len(text) > limit:
    text = text[:limit].rsplit(' ', 1)[0].rstrip(' ,;:(') + ' ...'
  return f'{type(e).__name__}: {text}'


def config_changes(saved: dict, now: dict, prefix: str = 'config') -> list[str]:
  """'config.model.num_layers: 2 in the checkpoint, 3 now' for every field that differs."""
  out = []
  for key in sorted(set(saved) | set(now)):
    a, b = saved.get(key, '<absent>'), now.get(key, '<absent>')
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_changes(a, b, f'{prefix}.{key}')
    elif a != b:
      out.append(f'{prefix}.{key}: {a!r} in the checkpoint, {b!r} now')
  return out


def _key_name(k: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _layout(tree: Any) -> dict:
  """{'opt_state/1/0/mu/embedding': shape} of a state tree or of its saved metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(_key_name(k) for k in path): tuple(getattr(x, 'shape', ()))
          for path, x in leaves}


def saved_layout(directory: str) -> Optional[dict]:
  """The layout of a step's saved state, from its metadata (no array read); None if unknown."""
  try:
    meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(directory) / 'state')
  except Exception:  # pylint: disable=broad-except  (unreadable: restore decides)
    return None
  return _layout(getattr(meta, 'tree', meta))


def restore_good(mngr: ocp.CheckpointManager, abstract_state: Any,
                 checksum: Callable[[Any], list], vocab_size: int, fingerprint: str,
                 where: str, config_now: Optional[dict] = None,
                 steps: Optional[list] = None, move_bad: bool = True):
  """(step, state, data iterator state) of the newest checkpoint that restores intact.

  A step that orbax cannot read, whose meta is unreadable, or whose state's checksum differs
  from the one saved in its meta is skipped with a warning naming it and the step used
  instead; the skipped steps are moved (not deleted) to WORKDIR/checkpoints_bad so that the
  resumed run can write those steps again (move_bad=False: read-only tools warn only). A vocabulary mismatch is the user's to fix and
  raises at once, and so does a state of another layout (another model or optimizer): with
  config_now, the error lists the config fields that differ from the checkpoint's; when the
  layout matches, changed fields (a longer schedule, another mesh) are printed and accepted.
  If no step restores, UserError (and nothing is moved).
  """
  with _quiet_closed_loop_callbacks():  # before any read
    steps = sorted(mngr.all_steps(), reverse=True) if steps is None else steps
    bad = []  # (step, reason)
    for step in steps:
      try:
        meta = read_meta(mngr, step)
      except Exception as e:  # pylint: disable=broad-except
        bad.append((step, f'meta unreadable ({_first_line(e)})'))
        continue
      check_meta(meta, vocab_size, fingerprint, where)
      changes = _check_layout(mngr, step, meta, abstract_state, config_now, where)
      try:
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        bad.append((step, _first_line(e)))
        continue
      saved_sum = meta.get('checksum')
      if saved_sum is not None and checksum(out.state) != saved_sum:
        bad.append((step, 'state checksum does not match the one saved in meta'))
        continue
      if bad:
        aside = os.fspath(paths.Path(mngr.directory).parent / 'checkpoints_bad')
        for b, reason in bad:
          _warn(f'checkpoint step {b} ({step_dir(mngr, b)}) cannot be restored: {reason}; '
                f'falling back to step {step} ({step_dir(mngr, step)})'
                + (f'; moved it to {aside}' if move_bad else ''))
        if move_bad:
          _move_aside(mngr, [b for b, _ in bad], aside)
      if changes and jax.process_index() == 0:  # the restored step's, once
        print(f'resuming with a changed config: {"; ".join(changes)}', flush=True)
      return step, out.state, out.data
    tried = ', '.join(str(b) for b, _ in bad)
    advice = ('nothing was deleted: move the checkpoints directory away to start from scratch'
              if move_bad else 'nothing was moved or deleted')  # a reading tool: no restart
    raise UserError(f'no checkpoint in {mngr.directory} can be restored (tried steps {tried}; '
                    f'step {bad[0][0]}: {bad[0][1]}); {advice}')


def _check_layout(mngr, step: int, meta: dict, abstract_state: Any,
                  config_now: Optional[dict], where: str) -> list:
  """The config fields that differ from the step's; UserError if its state has another
  layout (another model or optimizer)."""
  changes = config_changes(meta.get('config') or {}, config_now) if config_now else []
  saved = saved_layout(step_dir(mngr, step))
  if saved is not None and saved != _layout(abstract_state):
    what = '; '.join(changes[:8]) + (f'; and {len(changes) - 8} more' if len(changes) > 8
                                     else '') if changes else 'the config fields are the same'
    raise UserError(f'{where}: checkpoint step {step} holds the state of another model or '
                    f'optimizer ({what}); use another workdir, or restore those fields')
  return changes


_quiet_lock = threading.Lock()
_quiet_depth = 0  # how many _quiet_closed_loop_callbacks blocks are open (all threads)
_quiet_undo: Optional[contextlib.ExitStack] = None


@contextlib.contextmanager
def _quiet_closed_loop_callbacks():
  """Keeps a failed restore to the one warning line restore_good prints; for a `with` around
  checkpoint reads, undone when the last such block (of any thread) exits.

  tensorstore finishes the reads still in flight and hands them to orbax's event loop, already
  closed: each prints an 'Event loop is closed' traceback from a C++ thread. Such a call has
  nothing left to do, so inside the block it is a no-op (an open loop behaves as before).
  tensorstore binds the loop's method when a read starts, so enter the block before any read:
  a read started inside keeps the quiet method even if its callback comes after the block;
  callbacks that look the method up later find the no-op that a loop closed inside the block
  keeps as its own attribute.
  The failed reads' tasks are also reported, when collected, as 'Task exception was never
  retrieved' with a traceback, and the reads it never started as 'coroutine ... was never
  awaited': the error was retrieved once and reported by restore_good, so both are filtered
  while the block is open, and it collects garbage before closing so they are emitted then.
  On exit asyncio.BaseEventLoop.call_soon_threadsafe and close, the 'asyncio' logger's filters
  and warnings.filters are as they were before the outermost block.
  """
  global _quiet_depth, _quiet_undo
  with _quiet_lock:
    if _quiet_depth == 0:
      _quiet_undo = _install_quiet_callbacks()
    _quiet_depth += 1
  try:
    yield
  finally:
    with _quiet_lock:
      last = _quiet_depth == 1
    if last:
      gc.collect()  # unreferenced failed tasks and unawaited coroutines report now, filtered
    with _quiet_lock:
      _quiet_depth -= 1
      if _quiet_depth == 0:
        undo, _quiet_undo = _quiet_undo, None
        undo.close()


def _install_quiet_callbacks() -> contextlib.ExitStack:
  """Installs what _quiet_closed_loop_callbacks describes; closing the stack undoes it."""
  undo = contextlib.ExitStack()
  undo.enter_context(warnings.catch_warnings())  # restores warnings.filters on close
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                          category=RuntimeWarning)
  log = py_logging.getLogger('asyncio')
  never_retrieved = lambda r: 'exception was never retrieved' not in str(r.msg)
  log.addFilter(never_retrieved)
  undo.callback(log.removeFilter, never_retrieved)
  base = asyncio.BaseEventLoop
  orig = vars(base)['call_soon_threadsafe']

  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return orig(self, *args, **kwargs)

  base.call_soon_threadsafe = call_soon_threadsafe
  undo.callback(setattr, base, 'call_soon_threadsafe', orig)
  # Reads still in flight when the block ends call back later, and some look the method up
  # only then (asyncio.wrap_future's done callback): a loop closed inside the block keeps a
  # no-op call_soon_threadsafe of its own (a closed loop can schedule nothing anyway), so
  # those stay quiet after the class method is restored, and no other loop is touched.
  orig_close = vars(base)['close']

  def close(self):
    orig_close(self)
    self.call_soon_threadsafe = _closed_loop_call

  base.close = close
  undo.callback(setattr, base, 'close', orig_close)
  return undo


def _closed_loop_call(*args, **kwargs):
  """call_soon_threadsafe of a loop closed while restoring: there is nothing left to run."""
  del args, kwargs


def _move_aside(mngr, steps: list, aside: str) -> None:
  if jax.process_index() == 0:
    paths.makedirs(aside)
    for b in steps:
      dest = paths.join(aside, f'{b}.{time.strftime("%Y%m%d-%H%M%S")}')
      paths.move(step_dir(mngr, b), dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('lmjax_checkpoints_moved_aside')
  mngr.reload()


def saved_config(saved: dict) -> Any:
  """A checkpoint's config over today's defaults (checkpoints from before a field existed)."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  from lmjax import config_base  # pylint: disable=g-import-not-at-top
  task = saved.get('task') or ('translation' if saved.get('model', {}).get('name') in
                               ('encoder_decoder', 'rnn_seq2seq') else 'lm')
  base = {'translation': config_base.translation_config, 'classify': config_base.classify_config,
          'mlm': config_base.mlm_config,
          'embeddings': config_base.embeddings_config}.get(task, config_base.base_config)()
  merged = base.to_dict()

  def update(dst: dict, src: dict) -> None:
    for k, v in src.items():
      if isinstance(v, dict) and isinstance(dst.get(k), dict) and k != 'model':
        update(dst[k], v)
      else:
        dst[k] = v  # config.model is the family's own: taken whole

  update(merged, saved)
  merged['task'] = task
  return ml_collections.ConfigDict(merged)


def _load_tokenizer(workdir: str, mngr, step: int, meta: dict):
  """WORKDIR/tokenizer, or the checkpoint's own copy when that is missing or unreadable (one
  warning); a readable tokenizer that is not the checkpoint's is refused in one line."""
  from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top
  tok_dir = paths.join(workdir, 'tokenizer')
  problem = 'missing'
  if paths.exists(paths.join(tok_dir, 'tokenizer.json')):
    try:
      tok = tokenizers.load_tokenizer(tok_dir)
    except Exception as e:  # pylint: disable=broad-except  (garbled: use the checkpoint's copy)
      problem = f'unreadable ({_first_line(e)})'
    else:  # a readable tokenizer of another run is the user's to sort out: refuse
      check_meta(meta, tok.vocab_size, tok.fingerprint(), tok_dir)
      return tok
  # The newest step's copy, else an older step's (every step saves the run's one tokenizer;
  # check_meta below holds whichever is read to the checkpoint's vocabulary).
  tried = [step] + [s for s in sorted(mngr.all_steps(), reverse=True) if s < step]
  payload = None
  for s in tried:
    try:
      with _quiet_closed_loop_callbacks():
        payload = mngr.restore(s, args=ocp.args.Composite(
            tokenizer=ocp.args.JsonRestore())).tokenizer
      break
    except Exception:  # pylint: disable=broad-except
      continue
  if payload is None:
    raise UserError(f'--workdir {workdir}: {tok_dir} is {problem} and no checkpoint holds a '
                    f'readable copy of it (tried steps {", ".join(map(str, tried))})')
  _warn(f'{tok_dir} is {problem}; using the copy saved in checkpoint step {s}')
  with tempfile.TemporaryDirectory() as d:
    write_tokenizer_files(payload, d)
    return tokenizers.load_tokenizer(d)


def load_trained(workdir: str, step: Optional[int] = None):
  """(config, model family, params, tokenizer, step) of a training workdir, for decoding tools.

  The one loader behind generate, translate and every tool that opens a trained workdir. It
  reads the config and tokenizer saved with the run (no data files needed), restores the state
  with the trainer's own layout on one device, and verifies every leaf against the checksum
  saved in the step's meta. Without --step, a step that does not restore intact is skipped with
  one warning naming it and the step used instead (nothing is moved: the tool only reads);
  with --step, that step or an error.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  t = restore_trained(workdir, step)
  return t.config, t.run.task.model, nn.meta.unbox(t.state['params']), t.tok, t.step


class Trained(NamedTuple):
  """What restore_trained restores: a step's whole state, and what restores the run's others."""
  config: Any  # saved_config of the step's meta, on one device (mesh 1x1x1, no init_from)
  run: Any  # steps.Run on that device: abstract_state() and mesh restore the run's other steps
  tok: Any
  step: int
  meta: dict  # the step's meta as saved (config, vocabulary, checksum)
  state: Any  # {'params', 'opt_state', 'step', 'rng'[, 'carry']}, verified against meta
  data: Any  # the input iterator's state


def restore_trained(workdir: str, step: Optional[int] = None) -> Trained:
  """load_trained's restore, returning the whole state (for tools that write a checkpoint of
  the run again, lmjax.average) with the step's meta, data state and one-device steps.Run."""
  from lmjax import sharding, steps as steps_lib  # pylint: disable=g-import-not-at-top

  if not paths.isdir(paths.join(workdir, 'checkpoints')):
    raise UserError(f'--workdir {workdir}: no checkpoints/ directory')
  mngr = manager(workdir, create=False, async_save=False)
  all_steps = sorted(mngr.all_steps(), reverse=True)
  if not all_steps or (step is not None and step not in all_steps):
    raise UserError(f'--workdir {workdir}: no checkpoint'
                    + (f' at step {step} (steps: {sorted(all_steps)})' if step is not None
                       else ''))
  candidates = [step] if step is not None else all_steps
  meta, newest = None, None
  for s in candidates:
    try:
      meta, newest = read_meta(mngr, s), s
      break
    except Exception:  # pylint: disable=broad-except  (restore_good reports it)
      continue
  if meta is None:
    raise UserError(f'--workdir {workdir}: no checkpoint has a readable meta (tried steps '
                    f'{", ".join(map(str, candidates))})')
  tok = _load_tokenizer(workdir, mngr, newest, meta)
  config = saved_config(meta['config'])
  with config.unlocked():
    config.mesh.update(data=1, fsdp=1, tensor=1)
    config.init_from = ''
  device = jax.local_devices()[:1]
  run = steps_lib.prepare(config, None, devices=device, vocab_size=tok.vocab_size,
                          source_vocab_size=getattr(tok, 'source_vocab_size', 0))
  step, state, data = restore_good(mngr, run.abstract_state(),
                                   checksum_fn(sharding.replicated(run.mesh)), tok.vocab_size,
                                   tok.fingerprint(), f'--workdir {workdir}', steps=candidates,
                                   move_bad=False)
  if step != newest:  # fell back past a broken step: that step's own meta
    meta = read_meta(mngr, step)
  mngr.close()
  return Trained(config, run, tok, step, meta, state, data)
