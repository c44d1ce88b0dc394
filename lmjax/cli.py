"""Shared entry-point plumbing: one-line errors, --debug for tracebacks."""

import logging as py_logging
import os
import sys
import warnings
from typing import Callable

from absl import app, flags, logging

from lmjax import paths
from lmjax.errors import UserError, first_line

flags.DEFINE_bool('debug', False, 'Show full tracebacks for errors.')
flags.DEFINE_bool('verbose', False, 'Show the libraries\' own warnings too (XLA/Gloo C++ log '
                  'lines, sacreBLEU\'s tokenized-input notice), hidden by default.')
flags.DEFINE_bool('keep_host_memory', True,
                  'On the CPU backend only: set glibc malloc to one arena, no mmap and no '
                  'trimming (mallopt), so memory XLA frees is reused instead of returned to '
                  'the kernel and page-faulted in again every step; costs a higher peak RSS. '
                  'Skipped when JAX_PLATFORMS (or an installed accelerator plugin) selects a '
                  'GPU/TPU backend.')

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc malloc.h
# What `run` chose for --keep_host_memory, for the start-up line; '' outside an entry point.
HOST_MEMORY = ''


def quiet_unretrieved_read_errors() -> None:
  """For the rest of the process, drops asyncio's 'Task exception was never retrieved' log
  records and 'coroutine ... was never awaited' warnings (lmjax's entry points without --debug).

  A failed checkpoint read fails the other reads orbax started with it; restore_good reports
  the failure in one line and checkpoint._quiet_closed_loop_callbacks filters these echoes
  while it reads, but a failed task can be collected later, after that block has closed (seen
  on the CI machine: a 3,000-character TensorStore traceback after the one-line error). Under
  --debug they are left alone.
  """
  log = py_logging.getLogger('asyncio')
  if not any(getattr(f, 'lmjax_quiet', False) for f in log.filters):
    never_retrieved = lambda r: 'exception was never retrieved' not in str(r.msg)
    never_retrieved.lmjax_quiet = True
    log.addFilter(never_retrieved)
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                          category=RuntimeWarning)


def keep_freed_host_memory() -> bool:
  """Make glibc malloc keep freed memory for reuse instead of handing it back to the kernel.

  XLA:CPU allocates every execution's outputs and temporaries afresh. glibc serves allocations
  this large with mmap (or, from a worker thread's arena, with its mmap fallback) and unmaps
  them on free, so each train step page-faults and zero-fills a few hundred MB again: on the
  PTB-medium LSTM step ~53,000 minor faults (~210 MB) and ~10% of the step's CPU time in the
  kernel. One arena, no mmap and no trimming make later steps reuse the same pages
  (benchmarks/README.md, "host memory"). Call it before JAX starts its thread pools; `run`
  does, with --keep_host_memory, when the backend will be CPU (cpu_backend_expected): on GPU
  and TPU hosts XLA's device memory is not malloc's and the single arena would only serialise
  the host threads' allocations.
  Returns False where the C library has no mallopt (not glibc).
  """
  import ctypes
  import ctypes.util
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all([mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
              mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)])


def cpu_backend_expected() -> bool:
  """Whether jax's default backend will be CPU, decided without starting any backend.

  keep_freed_host_memory has to run before a backend exists (its thread pools would have
  their malloc arenas already), and a backend cannot be started this early: jax.distributed
  must initialise first. So read what jax will read: jax_platforms (its config, if jax is
  imported, else $JAX_PLATFORMS), whose first entry is the default; when unset, the legacy
  $JAX_PLATFORM_NAME; when neither is set, jax takes an accelerator if a plugin for one is
  installed (a jax_plugins package or entry point, or libtpu), else CPU. A plugin installed on
  a machine without its device reads as not CPU: the setting is then skipped, which only
  costs CPU speed.
  """
  import importlib.metadata
  import importlib.util
  jax = sys.modules.get('jax')
  platforms = (jax.config.jax_platforms if jax is not None and hasattr(jax, 'config')
               else os.environ.get('JAX_PLATFORMS')) or os.environ.get('JAX_PLATFORM_NAME')
  if platforms:
    return platforms.split(',')[0].strip().lower() == 'cpu'
  plugins = (importlib.util.find_spec('jax_plugins') is not None
             or importlib.util.find_spec('libtpu') is not None
             or bool(importlib.metadata.entry_points(group='jax_plugins')))
  return not plugins


def _config_file_arg(argv: list[str]) -> str | None:
  """The value of --config=FILE[:variant] (or --config FILE) when this program defines it."""
  if 'config' not in flags.FLAGS:
    return None
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == '--':
      break
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def load_config_file(spec: str):
  """get_config(variant) of an experiment file named FILE[:variant], as config_flags loads it.

  Raises UserError with one line naming the flag: a missing or unreadable file, an error while
  the file runs, an unknown variant (the ValueError an experiment's get_config raises).
  """
  import importlib.machinery  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(':')
  flag = f'--config={spec}'
  if not path:
    raise UserError(f'{flag}: no config file given')
  if os.path.isdir(path):
    raise UserError(f'{flag}: {path} is a directory, expected a Python config file')
  if not os.path.exists(path):
    raise UserError(f'{flag}: no such file {path}')
  if not os.access(path, os.R_OK):
    raise UserError(f'{flag}: cannot read {path}')
  try:
    loader = importlib.machinery.SourceFileLoader('lmjax_config_check', path)
    module_spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      raise UserError(f'{flag}: {path} defines no get_config()')
    config = module.get_config(variant) if ':' in spec else module.get_config()
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [''])[0]
    what = first if isinstance(e, ValueError) and first else f'{type(e).__name__}: {first}'
    raise UserError(f'{flag}: {what}') from e
  import ml_collections  # pylint: disable=g-import-not-at-top
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f'{flag}: get_config() returned {type(config).__name__}, not a ConfigDict')
  return config


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag, config file or config override prints one line and
  exits 2."""
  try:
    spec = _config_file_arg(argv)
    if spec is not None:
      # config_flags would print a traceback for these (or defer a missing file to the first
      # use of the config); load it once here for a one-line error naming the flag.
      load_config_file(spec)
    return flags.FLAGS(argv)
  except UserError as e:
    if '--debug' in argv:
      raise
    msg = str(e)
  except flags.Error as e:
    msg = ' '.join(str(e).split())
  except (AttributeError, KeyError) as e:
    # ml_collections reports an unknown --config.a.b field this way; its message is a repr
    # of a repr ("'\\'b\\'\\nDid you mean ...'").
    text = str(e.args[0] if e.args else e).encode().decode('unicode_escape')
    lines = [ln.strip('\\\'" ') for ln in text.splitlines()] or ['']
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    msg = f'unknown config field {lines[0]}'
    if len(lines) > 1:
      msg += ' (' + ' '.join(lines[1:]) + ')'
    bad = [o for o in overrides if o.rsplit('.', 1)[-1] == lines[0]]
    if bad:
      msg = f'flag {bad[0]}: {msg}'
  print(f'error: {msg}', file=sys.stderr)
  sys.exit(2)


def check_workdir(path: str, must_exist: bool = False) -> str:
  """Refuse a workdir that cannot be used, without creating it (make_workdir does)."""
  if not path:
    raise UserError('--workdir is required')
  if paths.is_remote(path):
    return _check_remote_workdir(path, must_exist)
  if must_exist and not os.path.isdir(path):
    raise UserError(f'--workdir {path}: no such directory')
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'--workdir {path}: exists and is not a directory')
  if os.path.isdir(path):
    if not os.access(path, os.W_OK | os.X_OK):
      raise UserError(f'--workdir {path}: not writable')
    return path
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f'--workdir {path}: cannot create it ({parent} is not a directory)')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f'--workdir {path}: cannot create it ({parent} is not writable)')
  return path


def existing_workdir(path: str) -> str:
  """The --workdir of a tool that reads a trained run: given, and a directory (local or on an
  object store)."""
  if not path:
    raise UserError('--workdir is required')
  if paths.is_remote(path):
    return _check_remote_workdir(path, must_exist=True)
  if not os.path.isdir(path):
    raise UserError(f'--workdir {path}: no such directory')
  return path


def _check_remote_workdir(path: str, must_exist: bool) -> str:
  """An object-store workdir (gs://...): its filesystem library is installed and answers."""
  try:
    found = paths.isdir(path)
    if not found and paths.isfile(path):
      raise UserError(f'--workdir {path}: exists and is not a directory')
  except UserError:
    raise
  except ImportError as e:
    raise UserError(f'--workdir {path}: {first_line(e)} (pip install -e ".[gcs]" brings what '
                    'gs:// needs)') from None
  except Exception as e:  # pylint: disable=broad-except  (auth, bucket, network)
    raise UserError(f'--workdir {path}: cannot reach it ({type(e).__name__}: '
                    f'{first_line(e)})') from None
  if must_exist and not found:
    raise UserError(f'--workdir {path}: no such directory')
  return path


def make_workdir(path: str) -> str | None:
  """Create the (checked) workdir; returns the topmost directory this call created (the
  workdir or a missing parent), or None if it existed."""
  check_workdir(path)
  if paths.is_remote(path):
    # An object store has no empty directories: the workdir exists once a file lands in it,
    # and a refused run that wrote nothing leaves nothing behind.
    return None
  if os.path.isdir(path):
    return None
  top = os.path.abspath(path)
  while not os.path.exists(os.path.dirname(top)):
    top = os.path.dirname(top)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir {path}: cannot create it ({e.strerror})') from e
  return top


def remove_empty_dirs(path: str) -> None:
  """Remove path and the directories below it that hold no file (bottom up); files are never
  touched: a run refused after creating its workdir leaves nothing behind."""
  if not os.path.isdir(path):
    return
  for root, _, _ in os.walk(path, topdown=False):
    try:
      os.rmdir(root)
    except OSError:
      pass  # not empty


def files_below(path: str) -> set:
  """The files below a local directory (an empty set for a missing or remote one)."""
  if paths.is_remote(path) or not os.path.isdir(path):
    return set()
  return {os.path.join(root, f) for root, _, files in os.walk(path) for f in files}


def tokenizer_files(workdir: str) -> set:
  """The files below WORKDIR/tokenizer now: what undo_refused_run leaves in place."""
  return files_below(os.path.join(workdir, 'tokenizer'))


def undo_refused_run(workdir: str, before: set, created: str | None) -> None:
  """After a run refused before its first checkpoint (bad data found while loading it):
  remove the files it wrote under WORKDIR/tokenizer, which belong to no model, and the
  directories it created. `before` is tokenizer_files(workdir) from before the run: those
  files are never touched, and nothing is removed once the workdir holds a checkpoint step."""
  ckpts = os.path.join(workdir, 'checkpoints')
  if paths.is_remote(workdir) or (os.path.isdir(ckpts) and any(
      d.isdigit() for d in os.listdir(ckpts))):
    return
  tok_dir = os.path.join(workdir, 'tokenizer')
  for f in tokenizer_files(workdir) - before:
    os.unlink(f)
  if created:
    remove_empty_dirs(created)
  elif os.path.isdir(tok_dir):
    remove_empty_dirs(tok_dir)


_LOCKS = []  # open lock descriptors: a lock lives as long as the process


def _lock_holder(path: str) -> str:
  """' (pid N)' for the process holding an flock on path, from /proc/locks; '' if unknown."""
  try:
    st = os.stat(path)
    with open('/proc/locks') as f:
      for line in f:
        parts = line.split()
        if 'FLOCK' not in parts or '->' in parts:
          continue
        i = parts.index('FLOCK')
        pid, dev_ino = parts[i + 3], parts[i + 4].split(':')
        if (len(dev_ino) == 3 and int(dev_ino[2]) == st.st_ino
            and int(dev_ino[0], 16) == os.major(st.st_dev)
            and int(dev_ino[1], 16) == os.minor(st.st_dev)):
          return f' (pid {pid})'
  except (OSError, ValueError, IndexError):
    pass
  return ''


def lock_workdir(path: str) -> None:
  """Refuse a second training process on one workdir, in one line naming the holder.

  Two runs in one workdir interleave their checkpoints and metrics, e.g. a restart issued while
  the preempted process is still saving. The lock is an flock on the workdir directory itself:
  no file is written, and the kernel drops it when this process exits, crash or kill included,
  so nothing stale can block a restart. Multi-process runs share one workdir: only process 0
  takes it. Where the filesystem cannot flock a directory, the run goes on unlocked; an
  object-store workdir (gs://...) has no lock at all (see lmjax/paths.py).
  """
  import errno
  import fcntl
  if paths.is_remote(path):
    return  # object stores have no locks: one job per workdir is the launcher's to ensure
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
      raise UserError(f'--workdir {path}: in use by another lmjax process'
                      f'{_lock_holder(path)}; wait for it to exit (or stop it) before starting '
                      'another run there') from None
    return
  _LOCKS.append(fd)


def _not_orbax(record: py_logging.LogRecord) -> bool:
  """A logging filter: drop orbax's own log lines (absl logging, below CRITICAL)."""
  where = record.pathname.replace(os.sep, '/')
  return record.levelno >= py_logging.CRITICAL or '/orbax/' not in where


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with UserError -> one line on stderr and exit status 2."""

  def wrapped(argv):
    global HOST_MEMORY
    if not flags.FLAGS.keep_host_memory:
      HOST_MEMORY = 'glibc malloc at its defaults (--nokeep_host_memory)'
    elif not cpu_backend_expected():
      HOST_MEMORY = 'glibc malloc at its defaults (not a CPU backend)'
    elif keep_freed_host_memory():
      HOST_MEMORY = 'glibc malloc keeps freed memory (--keep_host_memory)'
    else:
      HOST_MEMORY = 'glibc malloc at its defaults (no mallopt in this C library)'
    if not flags.FLAGS.debug and not flags.FLAGS['verbosity'].present:
      # orbax and jax log every step at INFO, through absl and through the root logger.
      logging.set_verbosity(logging.WARNING)
      py_logging.getLogger().setLevel(py_logging.WARNING)
    if not (flags.FLAGS.verbose or flags.FLAGS.debug):
      # sacreBLEU warns on every tokenized reference set, as the synthetic corpus is; orbax logs
      # an error line for each checkpoint file it cannot parse, which lmjax reports itself (the
      # step skipped, the one used). XLA's and Gloo's C++ warnings are hidden by
      # lmjax/__init__.py, before jax loads.
      py_logging.getLogger('sacrebleu').setLevel(py_logging.ERROR)
      py_logging.getLogger('absl').addFilter(_not_orbax)
    if not flags.FLAGS.debug:
      quiet_unretrieved_read_errors()
    try:
      main(argv)
    except UserError as e:
      if flags.FLAGS.debug:
        raise
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C: train checkpoints first (lmjax.preemption)
      if flags.FLAGS.debug:
        raise
      print(f'interrupted: {e}' if str(e) else 'interrupted', file=sys.stderr)
      # Out at once, without the interpreter's teardown: an interrupted decode leaves XLA's
      # threads running, and finalizing under them crashed translate (2 of 5 tries). Training
      # has checkpointed before it raises; nothing else here holds unwritten output.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(130)

  # JAX logs at INFO while importing (e.g. the missing TPU runtime); keep start-up quiet.
  py_logging.getLogger('jax._src.xla_bridge').setLevel(py_logging.WARNING)
  app.run(wrapped, flags_parser=_parse_flags)
