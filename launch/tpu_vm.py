"""Train on a Cloud TPU VM slice: create it, install lmjax on every worker, run, delete it.

  python launch/tpu_vm.py --name=lmjax-1b --zone=us-east5-a --project=PROJECT \
      --accelerator=v5p-64 --config=experiments/decoder_lm.py:1b --workdir=gs://BUCKET/run1 \
      [--config.num_train_steps=1000 ...] [--queued] [--spot] [--repo=GIT_URL] \
      [--stages=create,install,run,delete] [--dry-run]

Stages (run in this order; --stages picks a subset, e.g. `run` to rerun on an existing slice):
  create   gcloud compute tpus tpu-vm create (or, with --queued, a queued resource and a wait until
           it is ACTIVE)
  install  copy this working tree (tar, without .git/.venv/workdirs) to every worker, or clone
           --repo there, then pip install -e ".[gcs]" "jax[tpu]" (the gcs extra: gs:// workdirs)
  run      the same `python3 -m lmjax.main ...` on all workers (ssh --worker=all); on a TPU VM,
           jax.distributed finds its peers by itself, so no coordinator flags are needed
  delete   gcloud compute tpus tpu-vm delete (or queued-resources delete --force); it runs
           even when an earlier stage fails

The workdir must be a gs:// path on multi-host slices: every worker writes checkpoints there.
It is passed to lmjax.main unchanged.

Before anything is printed or run (when the stages include create or run), the experiment is
loaded as lmjax.main will load it (the file, the variant, the --config.* overrides) and its
mesh and batch are fitted to the slice's chips (one jax device per chip); a bad one is one line
`error: ...` naming the flag or config field, exit status 2. The plan goes to stderr as one
`plan: ...` line. --dry-run prints the commands, one per line, and runs nothing.
"""

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

STAGES = ('create', 'install', 'run', 'delete')
TARBALL = '/tmp/lmjax-src.tar.gz'


def build_parser() -> common.Parser:
  p = common.Parser(prog='launch/tpu_vm.py',
                    description='Train lmjax on a Cloud TPU VM slice (extra --config.* '
                                'overrides are passed to lmjax.main).')
  p.add_argument('--name', required=True, help='TPU VM (and queued resource) name')
  p.add_argument('--zone', required=True)
  p.add_argument('--project', required=True)
  p.add_argument('--accelerator', required=True, help='accelerator type, e.g. v5p-64')
  p.add_argument('--runtime_version', default=None,
                 help='TPU software version (default: by generation, e.g. v2-alpha-tpuv5)')
  p.add_argument('--queued', action='store_true', help='create through a queued resource')
  p.add_argument('--spot', action='store_true', help='spot capacity')
  p.add_argument('--repo', default=None,
                 help='git URL to clone on the workers (default: copy this working tree)')
  p.add_argument('--stages', default=','.join(STAGES),
                 help=f'comma-separated subset of {",".join(STAGES)}')
  common.add_lmjax_flags(p)
  return p


def commands(args, overrides: list[str]) -> list[list[str]]:
  slc = common.tpu_slice(args.accelerator)
  stages = [s for s in args.stages.split(',') if s]
  bad = [s for s in stages if s not in STAGES]
  if bad or not stages:
    common.fail(f'--stages={args.stages}: expected a comma-separated subset of {",".join(STAGES)}')
  if slc.hosts > 1 and not args.workdir.startswith('gs://'):
    common.fail(f'--workdir={args.workdir}: {args.accelerator} has {slc.hosts} hosts; use a '
                'gs:// path that every worker can write')
  if 'create' in stages or 'run' in stages:  # before the slice costs anything
    common.say_plan(common.plan(args.config, overrides, slc.chips,
                                f'--accelerator={args.accelerator}: {slc.chips} chips'),
                    args.config)
  loc = [f'--zone={args.zone}', f'--project={args.project}']
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  queued = ['gcloud', 'compute', 'tpus', 'queued-resources']
  runtime = args.runtime_version or slc.runtime_version
  spot = ['--spot'] if args.spot else []

  def on_all_workers(command: str) -> list[str]:
    return [*tpu, 'ssh', args.name, *loc, '--worker=all', f'--command={command}']

  cmds = []
  if 'create' in stages:
    if args.queued:
      cmds.append([*queued, 'create', args.name, f'--node-id={args.name}', *loc,
                   f'--accelerator-type={args.accelerator}', f'--runtime-version={runtime}',
                   *spot])
      describe = shlex.join([*queued, 'describe', args.name, *loc,
                             '--format=value(state.state)'])
      cmds.append(['bash', '-c', f'until [ "$({describe})" = ACTIVE ]; do sleep 30; done'])
    else:
      cmds.append([*tpu, 'create', args.name, *loc, f'--accelerator-type={args.accelerator}',
                   f'--version={runtime}', *spot])
  if 'install' in stages:
    pip = f'{shlex.quote(args.python)} -m pip install -q -e ".[gcs]" "jax[tpu]"'
    if args.repo:
      cmds.append(on_all_workers(
          f'(git clone -q {shlex.quote(args.repo)} lmjax || git -C lmjax pull -q) && '
          f'cd lmjax && {pip}'))
    else:
      cmds.append(['tar', '-czf', TARBALL, '--exclude=.git', '--exclude=.venv',
                   '--exclude=workdirs', '--exclude=__pycache__', '-C', common.REPO_ROOT, '.'])
      cmds.append([*tpu, 'scp', TARBALL, f'{args.name}:lmjax-src.tar.gz', *loc, '--worker=all'])
      cmds.append(on_all_workers(
          f'mkdir -p lmjax && tar -xzf lmjax-src.tar.gz -C lmjax && cd lmjax && {pip}'))
  if 'run' in stages:
    train = common.lmjax_command(args.python, args.config, args.workdir, overrides)
    cmds.append(on_all_workers(f'cd lmjax && {shlex.join(train)}'))
  teardown = []
  if 'delete' in stages:
    if args.queued:
      teardown.append([*queued, 'delete', args.name, *loc, '--force', '--quiet'])
    else:
      teardown.append([*tpu, 'delete', args.name, *loc, '--quiet'])
  return cmds, teardown


def main(argv=None) -> None:
  args, overrides = common.parse(build_parser(), argv)
  cmds, teardown = commands(args, overrides)
  try:
    common.run(cmds, args.dry_run)
  finally:  # the slice is deleted even when a stage fails (the error is reported after)
    common.run(teardown, args.dry_run)


if __name__ == '__main__':
  main()
