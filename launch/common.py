"""What the launchers share: flags with one-line errors, the lmjax command, TPU slice shapes, and
running (or, with --dry-run, printing) commands.

Every launcher runs the same trainer command on every host/process:

  python -m lmjax.main --config=CONFIG --workdir=WORKDIR [--config.field=value ...] [dist flags]

Arguments of the form --config.field=value are passed through to it unchanged; any other
unknown flag is an error.
"""

import argparse
import dataclasses
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg: str, code: int = 2):
  """One line on stderr, non-zero exit."""
  print(f'error: {msg}', file=sys.stderr)
  sys.exit(code)


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (exit 2) and no prefix matching of flag names."""

  def __init__(self, **kw):
    kw.setdefault('allow_abbrev', False)
    super().__init__(**kw)

  def error(self, message):
    fail(' '.join(message.split()))


def add_lmjax_flags(p: Parser, python: str = 'python3') -> None:
  p.add_argument('--config', required=True,
                 help='experiment config, relative to the repo: experiments/X.py[:variant]')
  p.add_argument('--workdir', required=True, help='checkpoints and metrics (shared storage)')
  p.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                 help='print what would run, run nothing')
  p.add_argument('--python', default=python, help='python interpreter on the hosts')


def parse(p: Parser, argv: Sequence[str] | None = None, passthrough_all: bool = False):
  """(args, extra): extra holds the --config.field=value overrides (or, with passthrough_all,
  every argument the launcher does not know) in order."""
  args, extra = p.parse_known_args(argv)
  if not passthrough_all:
    for a in extra:
      if not re.match(r'^--config\.[A-Za-z_][\w.]*=', a):
        fail(f'unknown flag {a!r} (only --config.FIELD=VALUE overrides are passed to lmjax)')
  return args, list(extra)


def positive_int(text: str) -> int:
  """argparse type for a positive integer flag (argparse names the flag in the error)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f'must be positive, got {value}')
  return value


def lmjax_command(python: str, config: str, workdir: str, overrides: Sequence[str] = (),
                  extra: Sequence[str] = ()) -> list[str]:
  """The trainer's command line, the same on every host."""
  return [python, '-m', 'lmjax.main', f'--config={config}', f'--workdir={workdir}',
          *overrides, *extra]


def dist_flags(coordinator: str, num_processes: str, process_id: str) -> list[str]:
  """lmjax.main's jax.distributed flags (values may be shell variables, left unquoted)."""
  return [f'--coordinator_address={coordinator}', f'--num_processes={num_processes}',
          f'--process_id={process_id}']


def shell_join(cmd: Sequence[str], raw_tail: Sequence[str] = ()) -> str:
  """Quote cmd for a POSIX shell; raw_tail is appended as is (it may hold $VARIABLES)."""
  return ' '.join([shlex.join(cmd), *raw_tail]).strip()


def run(cmds: Sequence[Sequence[str]], dry_run: bool) -> None:
  """Print the commands (dry run) or run them in order, stopping at the first failure."""
  for cmd in cmds:
    if dry_run:
      print(shlex.join(cmd))
      continue
    if shutil.which(cmd[0]) is None:
      fail(f'{cmd[0]} not found on PATH (use --dry-run to print the commands)')
    print(f'+ {shlex.join(cmd)}', file=sys.stderr, flush=True)
    rc = subprocess.run(list(cmd), check=False).returncode
    if rc:
      fail(f'{cmd[0]} exited with status {rc}: {shlex.join(cmd)[:200]}', rc)


def pipe(cmd: Sequence[str], text: str, dry_run: bool) -> None:
  """Run cmd with text on stdin; with --dry-run print only the text (e.g. a manifest)."""
  if dry_run:
    print(text, end='' if text.endswith('\n') else '\n')
    return
  if shutil.which(cmd[0]) is None:
    fail(f'{cmd[0]} not found on PATH (use --dry-run to print what would be submitted)')
  rc = subprocess.run(list(cmd), input=text, text=True, check=False).returncode
  if rc:
    fail(f'{shlex.join(cmd)} exited with status {rc}', rc)


# --- Cloud TPU slices ---

@dataclasses.dataclass(frozen=True)
class TpuSlice:
  accelerator: str  # gcloud's accelerator type, e.g. v5p-64
  generation: str  # v4, v5p, v5e, v6e
  chips: int
  hosts: int
  chips_per_host: int
  topology: str  # e.g. 2x4x4
  gke_accelerator: str  # GKE node label cloud.google.com/gke-tpu-accelerator
  runtime_version: str  # default TPU VM software version


# generation: (name prefix, cores per chip in the type's suffix, topology dims, GKE label,
#              TPU VM runtime)
_TPU = {
    'v4': ('v4', 2, 3, 'tpu-v4-podslice', 'tpu-ubuntu2204-base'),
    'v5p': ('v5p', 2, 3, 'tpu-v5p-slice', 'v2-alpha-tpuv5'),
    'v5e': ('v5litepod', 1, 2, 'tpu-v5-lite-podslice', 'v2-alpha-tpuv5-lite'),
    'v6e': ('v6e', 1, 2, 'tpu-v6e-slice', 'v2-alpha-tpuv6e'),
}


def _topology(chips: int, dims: int) -> str:
  """Google's default slice shape: grow by doubling the last of the smallest dimensions
  (v5p: 4 chips 2x2x1, 8 2x2x2, 16 2x2x4, 32 2x4x4, 64 4x4x4; v5e: 4 2x2, 8 2x4, 16 4x4)."""
  if chips == 1:
    return 'x'.join(['1'] * dims)
  shape = [2, 2] + [1] * (dims - 2)
  while math.prod(shape) < chips:
    smallest = min(shape)
    i = max(j for j, s in enumerate(shape) if s == smallest)
    shape[i] *= 2
    shape.sort()
  if dims == 3 and shape[0] == 1:
    shape = shape[1:] + [1]  # 4 chips: 2x2x1
  return 'x'.join(map(str, shape))


def tpu_slice(accelerator: str) -> TpuSlice:
  """Shape of a TPU slice from its accelerator type (v4-N, v5p-N: N TensorCores, 2 per chip;
  v5litepod-N, v6e-N: N chips)."""
  m = re.fullmatch(r'(v4|v5p|v5litepod|v6e)-(\d+)', accelerator)
  if not m:
    fail(f'--accelerator={accelerator}: expected v4-N, v5p-N, v5litepod-N or v6e-N')
  gen = {'v5litepod': 'v5e'}.get(m.group(1), m.group(1))
  _, per_chip, dims, label, runtime = _TPU[gen]
  n = int(m.group(2))
  chips = n // per_chip
  if chips < 1 or n % per_chip or chips & (chips - 1):
    fail(f'--accelerator={accelerator}: not a slice size ({m.group(1)}-N needs N = '
         f'{per_chip} x a power of two)')
  if dims == 2 and chips <= 8:
    hosts, per_host = 1, chips  # v5e/v6e: up to 8 chips on one host
  else:
    hosts, per_host = max(1, chips // 4), min(4, chips)
  return TpuSlice(accelerator, gen, chips, hosts, per_host, _topology(chips, dims), label, runtime)


# --- the experiment against the devices: checked before anything is printed or run ---

@dataclasses.dataclass(frozen=True)
class Plan:
  config: object  # the experiment's ml_collections.ConfigDict, overrides applied
  mesh: dict  # {'data': d, 'fsdp': f, 'tensor': t}, resolved against the device count
  num_devices: int


def _lmjax():
  """lmjax (this checkout's) and ml_collections' config flags; one line if they do not import."""
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  try:
    from absl import flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
    from lmjax import errors, sharding  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    fail(f'cannot check --config: {e} (run the launcher with the Python lmjax is installed '
         'in, e.g. .venv/bin/python)')
  return flags, config_flags, errors, sharding


def _override_name(arg: str) -> str:
  """'--config.model.num_layers=8' -> 'model.num_layers' (also --noconfig.x, --config.x)."""
  return re.sub(r'^--?(no)?config\.', '', arg.split('=', 1)[0])


def _last_line(text: str) -> str:
  lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
  return lines[-1] if lines else ''


def load_config(config: str, overrides: Sequence[str], base_dir: str = REPO_ROOT):
  """The experiment's config as lmjax.main will see it: CONFIG[:variant] loaded the way
  ml_collections' --config flag loads it, then the --config.FIELD=VALUE overrides applied by
  the same parser. A relative path is taken from base_dir (where the job will run). A missing
  file, a variant get_config refuses, an unknown field or a bad value: one line, exit 2."""
  flags, config_flags, _, _ = _lmjax()
  import logging  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  path, colon, variant = config.partition(':')
  full = path if os.path.isabs(path) else os.path.join(base_dir, path)
  if not os.path.isfile(full):
    fail(f'--config={config}: no such file' + ('' if os.path.isabs(path) else f' in {base_dir}'))
  config_arg = f'--config={full}{colon}{variant}'

  def parse(argv):
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', None, 'experiment', flag_values=fv,
                                    lock_config=True, sys_argv=['launcher', *argv])
    absl_log = logging.getLogger('absl')  # ml_collections warns there ("returned None")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
      with warnings.catch_warnings():  # its loader uses the deprecated importlib load_module
        warnings.simplefilter('ignore', DeprecationWarning)
        fv(['launcher', *argv])
        return fv.config
    except flags.IllegalFlagValueError as e:
      msg = str(e)
      if msg.startswith('flag --config='):  # get_config raised (ml_collections adds the trace)
        fail(f'--config={config}: {re.sub(r"^ValueError: ", "", _last_line(msg))}')
      fail(' '.join(msg.splitlines()[0].split()).removeprefix('flag '))
    except flags.Error as e:  # e.g. a field of a type ml_collections cannot override
      msg = str(e).strip().splitlines()[0]
      m = re.search(r"Type <class '(\w+)'> of field config\.(\S+) is not supported", msg)
      fail(f'--config.{m.group(2)}: a {m.group(1)} field cannot be overridden on the command '
           'line' if m else msg.split('. ')[0])
    except Exception as e:  # pylint: disable=broad-except  (the file itself fails to load)
      fail(f'--config={config}: cannot load it: {type(e).__name__}: {_last_line(e)}')
    finally:
      absl_log.setLevel(level)

  cfg = parse([config_arg])
  if not hasattr(cfg, 'to_dict'):
    fail(f'--config={config}: get_config({variant!r}) returned {type(cfg).__name__}, '
         'not a ConfigDict')
  for arg in overrides:  # name the unknown field before ml_collections' KeyError does
    node, parts = cfg, _override_name(arg).split('.')
    for i, part in enumerate(parts):
      if '[' in part:
        break  # an index into a sequence: ml_collections checks it
      if not hasattr(node, 'to_dict') or part not in node:
        where = '.'.join(['config', *parts[:i]])
        fail(f'{arg.split("=", 1)[0]}: {where} has no field {part!r}')
      node = node[part]
  return parse([config_arg, *overrides]) if overrides else cfg


def plan(config: str, overrides: Sequence[str], num_devices: int, devices_from: str,
         base_dir: str = REPO_ROOT) -> Plan:
  """Load the experiment and fit its mesh and batch to num_devices, as lmjax.main's first
  steps will (lmjax.sharding's own checks, on an abstract mesh: no devices, no compile).
  devices_from names the flags the device count comes from, for the error line."""
  cfg = load_config(config, overrides, base_dir)
  _, _, errors, sharding = _lmjax()
  from jax.sharding import AbstractMesh  # pylint: disable=g-import-not-at-top
  try:
    shape = sharding.mesh_shape(cfg.mesh, num_devices)
    mesh = AbstractMesh(shape, sharding.MESH_AXES)
    sharding.check_batch(cfg.batch_size, mesh)
    sharding.check_batch(cfg.eval_batch_size, mesh, 'config.eval_batch_size')
    accum, dp = int(cfg.grad_accum_steps), sharding.data_parallel_size(mesh)
    if accum < 1 or cfg.batch_size % (accum * dp):
      raise errors.UserError(
          f'config.grad_accum_steps={accum}: config.batch_size={cfg.batch_size} must split '
          f'into {accum} microbatches that the data-parallel size {dp} divides')
    # And every rule lmjax.main checks before it writes anything, but the data files (read on
    # the pod): ranges and choices, the model's dimensions against the mesh axes.
    from lmjax import config_schema  # pylint: disable=g-import-not-at-top
    config_schema.check(cfg, num_devices=num_devices, data=False)
  except errors.UserError as e:
    fail(f'{e} ({devices_from})')
  except (KeyError, TypeError, ValueError) as e:
    fail(f'config.mesh: {e} ({devices_from})')
  return Plan(cfg, dict(zip(sharding.MESH_AXES, shape)), num_devices)


def say_plan(p: Plan, config: str) -> None:
  """One line on stderr (stdout holds the commands or the manifest)."""
  mesh = ' '.join(f'{k}={v}' for k, v in p.mesh.items())
  dp = p.mesh['data'] * p.mesh['fsdp']
  print(f'plan: {config} on {p.num_devices} devices, mesh {mesh}, batch '
        f'{p.config.batch_size} (per data-parallel shard: {p.config.batch_size // dp})',
        file=sys.stderr, flush=True)
