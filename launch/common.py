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
