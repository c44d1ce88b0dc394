"""Run a sweep (rows x seeds of lmjax.main runs) and write its table and plots.

  python -m lmjax.ablate --sweep=experiments/ablations/NAME.py --root=DIR \
      [--set data.train=PATH ...] [--parallel=N] [--status] [--force]
  python -m lmjax.ablate ... --launch=slurm|gke|tpu_vm [--launch_args='...'] [--dry-run]

Every row x seed is an ordinary `lmjax.main` run in DIR/<row>/seed<k> (lmjax/sweeps.py builds
its command), so each checkpoints, resumes and fails like any run. Rerunning the command
skips finished runs, resumes interrupted ones and retries failed ones; a failed run is
reported and does not stop the others. --parallel=N runs N processes at once, each pinned to
its own share of the CPU cores. SIGTERM or Ctrl-C stops the running processes the way they
stop on preemption (each finishes its step and checkpoints) and the next invocation resumes
them.

Each run's record, DIR/<row>/seed<k>/ablate.json, holds its command, status, wall time and
the last error line; its output goes to DIR/<row>/seed<k>/log.txt. A root whose runs were
made by another sweep definition (another command for the same run directory) is refused,
naming the first such run, unless --force.

--reuse=DIR takes finished runs made elsewhere (a workdir, or a directory of them, e.g.
another sweep's root): a pending run whose config equals a finished workdir's saved config
exactly (checkpoint meta; the same experiment, overrides, data paths and seed) gets a copy of
that workdir instead of being trained, and its record names where it came from. A workdir
counts as finished when its newest checkpoint step has the eval (and, where the sweep
tabulates it, test) report the trainer writes at the end, and is num_train_steps where that
is set.

When every run has finished, DIR/results.{md,csv,tex,json} and DIR/plots/*.{png,svg} are
written (lmjax/sweep_report.py); --status prints done / running / failed / interrupted /
pending per run, and the table for what has finished.

--launch emits one job per run instead of running them here: a SLURM job array (one task
per run; --dry-run prints the batch script, else sbatch reads it), or one launch/gke.py /
launch/tpu_vm.py invocation per run with --launch_args passed through (--dry-run passes
--dry-run to them, which print what they would create).
"""

import fcntl
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from absl import flags

from lmjax import cli, config_base, paths, sweeps
from lmjax.errors import UserError

flags.DEFINE_string('sweep', None, 'A sweep file (experiments/ablations/NAME.py[:arg]).')
flags.DEFINE_string('root', None, 'Directory holding one workdir per row x seed.')
flags.DEFINE_multi_string('set', [], 'FIELD=VALUE applied to every run, e.g. data paths.')
flags.DEFINE_integer('parallel', 1, 'Runs at once (local processes, pinned to cores).')
flags.DEFINE_bool('status', False, 'Print the state of every run and the partial table.')
flags.DEFINE_bool('force', False, 'Run in a root made by another sweep definition.')
flags.DEFINE_enum('launch', None, ['slurm', 'gke', 'tpu_vm'], 'Emit one job per run.')
flags.DEFINE_string('launch_args', '', 'Extra flags for the launcher (gke, tpu_vm) or '
                    '#SBATCH options (slurm), one string.')
flags.DEFINE_multi_string(
    'reuse', [], 'A finished lmjax.main workdir, or a directory holding them (searched two '
    'levels down), that a pending run is copied from instead of trained when its saved config '
    'equals the run\'s exactly; repeatable.')
flags.DEFINE_bool('dry-run', False, 'With --launch: print the jobs instead of submitting.')
FLAGS = flags.FLAGS

LOG = 'log.txt'
_DONE_PREFIXES = ('done:', 'nothing left to train')


def _locked(path: str) -> bool:
  """Whether an lmjax.main process holds the workdir's lock (cli.lock_workdir)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
  except OSError:
    return True
  finally:
    os.close(fd)


def status(run: sweeps.Run) -> str:
  """done, running, failed, interrupted (a workdir with progress) or pending."""
  if _locked(run.workdir):
    return 'running'
  record = run.record()
  if record.get('status') in ('done', 'failed'):
    return record['status']
  if os.path.isdir(os.path.join(run.workdir, 'checkpoints')) or record:
    return 'interrupted'
  return 'pending'


def check_root(runs: list, root: str, force: bool) -> None:
  """Refuse a root whose runs were made with other commands (another sweep definition)."""
  for run in runs:
    record = run.record()
    if record and list(record.get('command', [])) != list(run.command) and not force:
      old = set(record.get('command', [])) - set(run.command)
      new = set(run.command) - set(record.get('command', []))
      raise UserError(f'--root {root}: run {run.name} was made by another sweep definition '
                      f'(then {" ".join(sorted(old)) or "-"}; now {" ".join(sorted(new)) or "-"})'
                      '; use another --root, or --force to run this definition there')


def _cores(slot: int, parallel: int) -> set:
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux: no pinning
    return set()
  share = max(1, len(cores) // parallel)
  return set(cores[(slot * share) % len(cores):][:share]) or set(cores)


class _Running:
  """One child lmjax.main process and where its output goes."""

  def __init__(self, run: sweeps.Run, slot: int, parallel: int, python: str):
    self.run, self.slot = run, slot
    os.makedirs(run.workdir, exist_ok=True)
    self.record = run.record()
    self.record.update(command=list(run.command), status='running')
    self.record.setdefault('wall_s', 0.0)
    self.record['segments'] = self.record.get('segments', 0) + 1
    run.write_record(self.record)
    log_path = os.path.join(run.workdir, LOG)
    self.offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    self.log = open(log_path, 'ab')
    cores = _cores(slot, parallel)
    preexec = (lambda: os.sched_setaffinity(0, cores)) if cores and parallel > 1 else None
    self.t0 = time.time()
    self.proc = subprocess.Popen([python, '-m', 'lmjax.main', *run.command],
                                 stdout=self.log, stderr=subprocess.STDOUT,
                                 preexec_fn=preexec, start_new_session=True)

  def finish(self) -> str:
    """Records how the process ended; returns the run's new status."""
    self.log.close()
    with open(os.path.join(self.run.workdir, LOG), 'rb') as f:
      f.seek(self.offset)
      lines = f.read().decode('utf-8', 'replace').strip().splitlines()
    rc = self.proc.returncode
    done = rc == 0 and any(l.startswith(_DONE_PREFIXES) for l in lines[-50:])
    state = 'done' if done else ('interrupted' if rc in (0, 130, -signal.SIGTERM) else 'failed')
    errors = [l for l in lines if l.startswith('error:')]
    self.record.update(status=state, returncode=rc,
                       wall_s=self.record['wall_s'] + time.time() - self.t0,
                       error=(errors[-1] if errors else (lines[-1] if lines else ''))
                       if state == 'failed' else '')
    self.run.write_record(self.record)
    return state


def execute(runs: list, parallel: int, say=print, python: str = sys.executable) -> dict:
  """Runs what is not done, `parallel` at a time; returns {run name: status}."""
  states = {r.name: status(r) for r in runs}
  todo = [r for r in runs if states[r.name] != 'done']
  for r in runs:
    if states[r.name] == 'running':
      raise UserError(f'run {r.name} is running in another process ({r.workdir} is locked); '
                      'wait for it, or stop it, before starting the sweep again')
  say(f'{len(runs) - len(todo)} of {len(runs)} runs done; running {len(todo)}'
      + (f', {parallel} at a time' if parallel > 1 and todo else ''))
  active, results, stopping = [], {}, []

  def stop(signum, frame):
    del frame
    stopping.append(signum)
    for a in active:  # each finishes its step, checkpoints and exits (lmjax preemption)
      if a.proc.poll() is None:
        a.proc.send_signal(signal.SIGTERM)

  old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while todo or active:
      while todo and len(active) < parallel and not stopping:
        free = min(set(range(parallel)) - {a.slot for a in active})
        run = todo.pop(0)
        say(f'start {run.name}: {run.workdir}')
        active.append(_Running(run, free, parallel, python))
      time.sleep(0.2)
      for a in [a for a in active if a.proc.poll() is not None]:
        active.remove(a)
        state = a.finish()
        results[a.run.name] = state
        note = f': {a.record["error"]}' if state == 'failed' else ''
        say(f'{state} {a.run.name} ({a.record["wall_s"]:.0f}s in all){note}')
      if stopping and not active:
        break
  finally:
    for s, h in old.items():
      signal.signal(s, h)
  if stopping:
    say('stopped: the interrupted runs resume when the same command is run again')
  return results


def average_rows(sweep: sweeps.Sweep, runs: list, say=print, python: str = sys.executable) -> None:
  """For rows with average_last=N: WORKDIR/averaged (lmjax.average of the last N
  checkpoints), evaluated by lmjax.main with the run's own command (it resumes at the end of
  the schedule, so it only runs the final eval and test)."""
  from lmjax import sweep_report  # pylint: disable=g-import-not-at-top
  for run in runs:
    n = run.row.average_last
    if not n or run.record().get('status') != 'done':
      continue
    out = os.path.join(run.workdir, 'averaged')
    if sweep_report.final(sweep_report.read_metrics(out), 'eval'):
      continue
    command = [c if not c.startswith('--workdir=') else f'--workdir={out}' for c in run.command]
    steps = ([[python, '-m', 'lmjax.average', f'--workdir={run.workdir}', f'--last={n}',
               f'--out={out}']] if not os.path.isdir(out) else [])
    steps.append([python, '-m', 'lmjax.main', *command])
    for cmd in steps:
      proc = subprocess.run(cmd, capture_output=True, text=True)
      if proc.returncode:
        say(f'failed to average {run.name}: '
            + (proc.stderr.strip().splitlines() or ['no output'])[-1])
        break
      with open(os.path.join(out, LOG), 'a', encoding='utf-8') as f:
        f.write(proc.stdout)
    else:
      say(f'averaged the last {n} checkpoints of {run.name}: {out}')


# --------------------------------------------------------------------------- launchers


def _launch_slurm(sweep_path: str, runs: list, root: str, dry_run: bool, extra: str) -> None:
  """One SLURM job array, one task per run; each task runs its lmjax.main on one node."""
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  'launch'))
  import common  # pylint: disable=g-import-not-at-top
  lines = ['#!/bin/bash', f'#SBATCH --job-name=ablate-{os.path.basename(root.rstrip("/"))}',
           f'#SBATCH --array=0-{len(runs) - 1}', f'#SBATCH --output={root}/slurm-%A_%a.out']
  lines += [f'#SBATCH {opt}' for opt in shlex.split(extra)]
  lines += ['set -euo pipefail', f'# {sweep_path}: {len(runs)} runs (rows x seeds)',
            'case "$SLURM_ARRAY_TASK_ID" in']
  for i, run in enumerate(runs):
    cmd = common.shell_join(['python', '-m', 'lmjax.main', *run.command])
    lines.append(f'  {i}) exec {cmd} ;;  # {run.name}')
  lines += ['esac']
  common.pipe(['sbatch'], '\n'.join(lines) + '\n', dry_run)


def _launch_each(launcher: str, runs: list, root: str, dry_run: bool, extra: str) -> None:
  """launch/<launcher>.py once per run (its own name, workdir and overrides)."""
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'launch', f'{launcher}.py')
  base = os.path.basename(root.rstrip('/'))
  for run in runs:
    name = f'{base}-{run.row.name}-s{run.seed}'.lower()
    name = ''.join(ch if ch.isalnum() or ch == '-' else '-' for ch in name)[:60]
    cmd = [sys.executable, script, f'--name={name}', *shlex.split(extra), *run.command]
    if dry_run:
      cmd.append('--dry-run')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode:
      raise UserError(f'launch/{launcher}.py for run {run.name}: '
                      + (proc.stderr.strip().splitlines() or ['failed'])[-1])


# --------------------------------------------------------------------------- reusing runs


def _candidates(where: str) -> list:
  """Workdirs (directories with checkpoints/) at, one or two levels below `where`."""
  if not os.path.isdir(where):
    raise UserError(f'--reuse {where}: no such directory')
  found = []
  for depth_glob in ('', '*', os.path.join('*', '*')):
    pattern = os.path.join(where, depth_glob, 'checkpoints')
    found += sorted(os.path.dirname(p) for p in glob.glob(pattern) if os.path.isdir(p))
  return found


def finished_config(workdir: str, splits: set) -> Optional[dict]:
  """The saved config of a workdir whose training finished, else None: its newest checkpoint
  step has a metrics.jsonl line for every split in `splits` (the eval and test reports the
  trainer writes at the end), and is config.num_train_steps where that sets the length (no
  num_epochs). An lmjax.ablate
  run counts only when its record says done."""
  from lmjax import checkpoint, sweep_report  # pylint: disable=g-import-not-at-top
  record = sweeps.read_record(workdir)
  if os.path.exists(os.path.join(workdir, sweeps.RECORD)) and record.get('status') != 'done':
    return None
  try:
    mngr = checkpoint.manager(workdir, create=False)
    step = mngr.latest_step()
    meta = checkpoint.read_meta(mngr, step) if step is not None else None
    mngr.close()
  except Exception:  # pylint: disable=broad-except  (unreadable: not reusable, say nothing)
    return None
  if not meta or not isinstance(meta.get('config'), dict):
    return None
  lines = sweep_report.read_metrics(workdir)
  if any(not any(l.get('split') == sp and l.get('step') == step for l in lines) for sp in splits):
    return None
  # With num_epochs the trainer's step count comes from the epoch length, not num_train_steps.
  epochs = meta['config'].get('num_epochs') or 0
  steps = 0 if epochs else meta['config'].get('num_train_steps') or 0
  return meta['config'] if not steps or steps == step else None


def _with_defaults(saved: dict, defaults: dict, now: dict) -> dict:
  """saved, with each field that it lacks and `now` has taken from defaults (recursively)."""
  out = dict(saved)
  for key, value in now.items():
    if key not in out and key in defaults:
      out[key] = defaults[key]
    elif isinstance(out.get(key), dict) and isinstance(value, dict):
      out[key] = _with_defaults(out[key], defaults.get(key) or {}, value)
  return out


def reuse(runs: list, sweep: sweeps.Sweep, sets: dict, places: list, flag: str,
          say=print) -> list:
  """Copies a finished workdir found under `places` into each pending run's workdir whose
  config it matches exactly (checkpoint.config_changes finds no difference), records the run
  done with `reused_from`, and returns the reused runs."""
  from lmjax import checkpoint  # pylint: disable=g-import-not-at-top
  pending = [r for r in runs if status(r) == 'pending' and not os.path.exists(r.workdir)]
  if not pending or not places:
    return []
  splits = {m.split for m in sweep.metrics} | {'eval'}
  found = {}
  for place in places:
    for wd in _candidates(os.path.abspath(place)):
      if wd not in found and not any(os.path.abspath(r.workdir) == wd for r in runs):
        found[wd] = finished_config(wd, splits)
  # A field added to lmjax after a run was made is absent from its saved config; the run had
  # that field's default behaviour, so it is compared as the default.
  defaults = json.loads(config_base.base_config().to_json_best_effort())
  found = {wd: c for wd, c in found.items() if c is not None}
  reused = []
  for run in pending:
    config = sweeps.row_config(sweep, run.row, sets, flag, seed=run.seed)
    now = json.loads(config.to_json_best_effort())
    match = next((wd for wd, saved in found.items()
                  if not checkpoint.config_changes(_with_defaults(saved, defaults, now), now)),
                 None)
    if match is None:
      continue
    shutil.copytree(match, run.workdir, ignore=shutil.ignore_patterns(sweeps.RECORD))
    run.write_record({'command': list(run.command), 'status': 'done', 'reused_from': match,
                      'wall_s': sweeps.read_record(match).get('wall_s'), 'segments': 0,
                      'returncode': 0,
                      'error': ''})
    say(f'reused {run.name}: copied {match} (its saved config is this run\'s)')
    reused.append(run)
  return reused


# --------------------------------------------------------------------------- entry point


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.sweep:
    raise UserError('--sweep is required (e.g. --sweep=experiments/ablations/tiny.py)')
  if not FLAGS.root:
    raise UserError('--root is required')
  if FLAGS.parallel < 1:
    raise UserError(f'--parallel={FLAGS.parallel}: must be at least 1')
  if not FLAGS.launch and paths.is_remote(FLAGS.root):
    raise UserError(f'--root {FLAGS.root}: a sweep run here keeps its records and logs in a '
                    'local directory; a gs:// root is for --launch (the jobs write there)')
  path, _, arg = FLAGS.sweep.partition(':')
  sweep = sweeps.load(path, arg)
  sets = sweeps.parse_sets(FLAGS.set)
  root = os.path.abspath(FLAGS.root) if not FLAGS.launch else FLAGS.root
  runs = sweeps.runs(sweep, root, sets)
  from lmjax import sweep_report  # pylint: disable=g-import-not-at-top
  if FLAGS.status:
    for run in runs:
      rec = run.record()
      note = f'  {rec.get("error", "")}' if rec.get('status') == 'failed' else ''
      wall = rec.get('wall_s')  # None: reused from a workdir lmjax.ablate did not run
      print(f'{status(run):<12} {run.name:<40} '
            + (f'{wall:8.0f}s' if wall is not None else f'{"-":>8} ') + note)
    sweep_report.write(sweep, runs, root, say=print, partial=True)
    return
  sweeps.check(sweep, FLAGS.sweep, sets)
  if FLAGS.launch:
    if FLAGS.launch == 'slurm':
      _launch_slurm(FLAGS.sweep, runs, root, FLAGS['dry-run'].value, FLAGS.launch_args)
    else:
      _launch_each(FLAGS.launch, runs, root, FLAGS['dry-run'].value, FLAGS.launch_args)
    return
  cli.check_workdir(root)
  check_root(runs, root, FLAGS.force)
  os.makedirs(root, exist_ok=True)
  paths.write_text(os.path.join(root, 'sweep.json'),
                   json.dumps({'sweep': FLAGS.sweep, 'config': sweep.config,
                               'runs': {r.name: list(r.command) for r in runs}}, indent=1))
  reuse(runs, sweep, sets, FLAGS.reuse, f'--sweep={FLAGS.sweep}')
  execute(runs, FLAGS.parallel)
  average_rows(sweep, runs)
  sweep_report.write(sweep, runs, root)
  failed = [r for r in runs if status(r) == 'failed']
  if failed:
    raise UserError(f'{len(failed)} of {len(runs)} runs failed (first: {failed[0].name}: '
                    f'{failed[0].record().get("error", "")}); the table holds the others; '
                    'rerun the same command to retry the failed ones')


if __name__ == '__main__':
  cli.run(main)
