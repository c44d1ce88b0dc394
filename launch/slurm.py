"""Train on a SLURM GPU cluster: one sbatch job, N nodes x G GPUs, one process per GPU.

  python launch/slurm.py --nodes=2 --gpus_per_node=8 --config=experiments/decoder_lm.py:1b \
      --workdir=/shared/runs/1b [--partition=gpu] [--time=24:00:00] [--account=A] \
      [--setup='source .venv/bin/activate'] [--config.x=y ...] [--dry-run]

The batch script starts N x G tasks with srun. The first node of the allocation is the
jax.distributed coordinator; each task passes lmjax.main
  --coordinator_address=$COORDINATOR --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID
and sees only its own GPU (CUDA_VISIBLE_DEVICES=$SLURM_LOCALID, with srun --gpu-bind=none so
that SLURM's own binding does not renumber the devices first). The job runs from the directory
sbatch is called in (the repository on a shared filesystem); the workdir must be shared too.

Before the script is printed or submitted, the experiment is loaded as lmjax.main will load it
(file, relative to the current directory where the job runs; variant; --config.* overrides) and
its mesh and batch are fitted to --nodes x --gpus_per_node devices; a bad one is one line
`error: ...` naming the flag or config field, exit status 2. The plan goes to stderr as one
`plan: ...` line. --dry-run prints the batch script instead of submitting it (`sbatch` reads it
on stdin).
"""

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position


def build_parser() -> common.Parser:
  p = common.Parser(prog='launch/slurm.py',
                    description='Train lmjax on a SLURM GPU cluster (extra --config.* overrides '
                                'are passed to lmjax.main).')
  p.add_argument('--nodes', type=common.positive_int, required=True)
  p.add_argument('--gpus_per_node', type=common.positive_int, default=8)
  p.add_argument('--cpus_per_task', type=common.positive_int, default=None)
  p.add_argument('--job_name', default='lmjax')
  p.add_argument('--partition', default=None)
  p.add_argument('--account', default=None)
  p.add_argument('--time', default=None, help='time limit, e.g. 24:00:00')
  p.add_argument('--output', default='lmjax-%j.out', help='sbatch --output pattern')
  p.add_argument('--port', type=common.positive_int, default=12345,
                 help='coordinator port on the first node')
  p.add_argument('--setup', default=None,
                 help='shell line run before srun, e.g. "source .venv/bin/activate"')
  common.add_lmjax_flags(p, python='python')
  return p


def script(args, overrides: list[str]) -> str:
  n, g = args.nodes, args.gpus_per_node
  common.say_plan(common.plan(args.config, overrides, n * g,
                              f'--nodes={n} x --gpus_per_node={g}: {n * g} GPUs',
                              base_dir=os.getcwd()), args.config)
  sb = [f'--job-name={args.job_name}', f'--nodes={n}', f'--ntasks={n * g}',
        f'--ntasks-per-node={g}', f'--gpus-per-node={g}', f'--output={args.output}']
  if args.cpus_per_task:
    sb.append(f'--cpus-per-task={args.cpus_per_task}')
  for flag in ('partition', 'account', 'time'):
    if getattr(args, flag):
      sb.append(f'--{flag}={getattr(args, flag)}')
  train = common.lmjax_command(args.python, args.config, args.workdir, overrides)
  task = common.shell_join(train, common.dist_flags('"$COORDINATOR"', '"$SLURM_NTASKS"',
                                                     '"$SLURM_PROCID"'))
  lines = ['#!/bin/bash', *(f'#SBATCH {s}' for s in sb), 'set -euo pipefail']
  if args.setup:
    lines.append(args.setup)
  lines += [
      '# jax.distributed: the first node coordinates; one process per GPU.',
      # sed, not head: head's early exit would kill scontrol with SIGPIPE under pipefail.
      'COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p):'
      f'{args.port}"',
      'export COORDINATOR',
      '# Each task expands its own SLURM_PROCID/SLURM_LOCALID, hence the single quotes.',
      f'srun --nodes={n} --ntasks={n * g} --ntasks-per-node={g} --gpu-bind=none bash -c '
      + shlex.quote(f'export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"; exec {task}'),
  ]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  args, overrides = common.parse(build_parser(), argv)
  common.pipe(['sbatch'], script(args, overrides), args.dry_run)


if __name__ == '__main__':
  main()
