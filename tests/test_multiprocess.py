"""A real multi-process run (2 processes x 4 CPU devices over jax.distributed) gets the loss
trajectory of 1 process x 8 devices."""

import json
import os
import subprocess
import sys

from cli_checks import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--config=experiments/synthetic_lm.py:tiny', '--config.num_train_steps=6',
        '--config.log_every=1', '--config.eval_every=6', '--config.checkpoint.every=6',
        '--config.sample.num_samples=0', '--config.mesh.data=4', '--config.mesh.fsdp=2']


def losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return ([r['loss'] for r in rows if r['split'] == 'train'],
          [r['ppl'] for r in rows if r['split'] == 'eval'])


def test_two_processes_match_one(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  multi = subprocess.run(
      [sys.executable, 'launch/local.py', '--num_processes=2', '--devices_per_process=4',
       '--timeout=300', '--', *ARGS, f'--workdir={tmp_path / "multi"}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=330)
  assert multi.returncode == 0, multi.stdout[-3000:] + multi.stderr[-3000:]
  single = subprocess.run(  # --verbose: the libraries' own notices too
      [sys.executable, '-m', 'lmjax.main', *ARGS, f'--workdir={tmp_path / "single"}',
       '--verbose'],
      cwd=REPO, env=dict(env, XLA_FLAGS=xla_flags(8)),
      capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  (ml, me), (sl, se) = losses(tmp_path / 'multi'), losses(tmp_path / 'single')
  assert len(ml) == len(sl) == 6
  for a, b in zip(ml + me, sl + se):
    assert abs(a - b) <= 1e-5 * abs(b), (ml, sl, me, se)
  # Only process 0 reports; both processes trained.
  assert '[0] done: 6 steps' in multi.stdout and '[1] done' not in multi.stdout
  # XLA's SPMD notes on this mesh and Gloo's connection lines are shown with --verbose only.
  assert 'SPMD' in single.stderr, single.stderr[-3000:]
  assert 'SPMD' not in multi.stdout + multi.stderr and '[Gloo]' not in multi.stdout, \
      multi.stdout[-3000:]
