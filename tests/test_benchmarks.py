"""The benchmarks time the product: benchmarks/transformer_lm.py's step is the trainer's.

The benchmark runs as a subprocess at experiments/decoder_lm.py:tiny with --json; its XLA FLOP
count must equal cost_analysis() of the step lmjax.steps.prepare compiles for the same config
(a hand-built step with the same model and optimizer differs by ~1.4% at this size), and its
analytic count must equal 6·N + 12·L·T·D per token, computed here from the config. Then
benchmarks/compare.py --dry-run runs lmjax's scripts and their peers as separate processes and
prints one table line per case (without torch, one line says so and the lmjax side still runs);
with the peers there, the translation cases give numbers on both sides and compare.py checks
that their parameter counts agree (equal for training; for beam search, Marian's attention
biases and missing final LayerNorms are the only, named, difference).

The subprocesses inherit conftest's XLA compilation cache, so the compare run's train_fp32
case reuses the first test's compile.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from lmjax import config_base
from lmjax import steps as lmjax_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/decoder_lm.py:tiny'
# The same flags as compare.py --dry-run's train_fp32 case, so the compile is shared.
TRAIN = ['benchmarks/transformer_lm.py', '--dtype=float32', f'--config={TINY}', '--no-mfu',
         '--steps=1', '--repeats=1', '--json']
# One case per script and mode: transformer train, transformer decode, LSTM train,
# translation train and beam search.
CASES = ('train_fp32', 'decode_b1', 'lstm_fp32', 'mt_train_fp32', 'mt_beam4')
PEER_NEEDS = {'mt_beam4': ('torch', 'transformers')}  # the others: torch


def _run(argv: list, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_transformer_benchmark_times_the_trainers_step():
  r = _run(TRAIN)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stdout.strip().splitlines()
  assert len(lines) == 1, r.stdout  # --json: one line and nothing else
  row = json.loads(lines[0])
  assert row['tokens_per_s'] > 0 and row['compile_s'] >= 0 and row['peak_rss_mb'] > 0
  assert row['dtype'] == 'float32' and row['scan'] is True  # the flag and the config's default

  c = config_base.load_experiment('decoder_lm.py', 'tiny')
  c.model.dtype = 'float32'
  c.mesh.update(data=1, fsdp=1, tensor=1)
  vocab = c.data.vocab_size
  run = lmjax_steps.prepare(c, None, devices=jax.devices()[:1], vocab_size=vocab)
  with run.context():
    compiled = run.p_train.lower(run.abstract_state(), run.abstract_batch()).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert row['flops_per_step_xla'] == pytest.approx(cost['flops'], rel=1e-3)

  m = c.model
  n = m.num_layers * (4 * m.d_model ** 2 + 2 * m.d_model * m.d_ff) + m.d_model * vocab
  per_token = 6 * n + 12 * m.num_layers * c.seq_len * m.d_model
  assert row['flops_per_step_analytic'] == pytest.approx(
      per_token * c.batch_size * c.seq_len, rel=1e-6)
  assert row['params'] == sum(x.size for x in jax.tree.leaves(run.state_shapes['params']))


def test_compare_dry_run_prints_one_line_per_case(tmp_path):
  out = tmp_path / 'results.md'
  r = _run(['benchmarks/compare.py', '--dry-run', f'--cases={",".join(CASES)}',
            f'--out={out}'])
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert out.read_text() == r.stdout
  rows = [l for l in r.stdout.splitlines() if l.startswith('| ')][2:]  # past header, rule
  assert [l.split(':')[0][2:] for l in rows] == list(CASES), r.stdout
  has_torch = importlib.util.find_spec('torch') is not None
  has_peer = {c: all(importlib.util.find_spec(m) is not None
                     for m in PEER_NEEDS.get(c, ('torch',))) for c in CASES}
  numbers = {}
  for case, line in zip(CASES, rows):
    cells = [x.strip() for x in line.strip('|').split('|')]
    assert float(cells[1].replace(',', '')) > 0, line  # lmjax tokens/s (or sentences/s)
    assert (cells[2] != '—') == has_peer[case], line  # the peer's, when torch is there
    numbers[case] = cells[1:3]
  if not has_torch:
    assert 'pip install torch==2.13.0+cpu' in r.stdout
  if has_peer['mt_train_fp32']:
    assert all(float(x.replace(',', '')) > 0 for x in numbers['mt_train_fp32']), numbers
    assert 'Parameters, mt_train_fp32: lmjax 24,320, peer 24,320 (equal).' in r.stdout
  if has_peer['mt_beam4']:
    assert all(float(x.replace(',', '')) > 0 for x in numbers['mt_beam4']), numbers
    assert 'Parameters, mt_beam4: lmjax 24,320, peer 24,576 (peer: +384 q, k, v, out' in r.stdout
  assert r.stderr.count('load ') == sum(2 if has_peer[c] else 1 for c in CASES)


def test_profile_sums_the_steps_thunks_by_kind():
  """benchmarks/thunk_profile.py traces the same tiny step: the dots are there (YNNPACK fusions or
  dot thunks), the categories partition the busy time, and two threads cannot be busy for
  more than about twice the traced wall time."""
  r = _run(['benchmarks/thunk_profile.py', f'--config={TINY}', '--steps=2', '--json'])
  assert r.returncode == 0, r.stderr[-3000:]
  row = json.loads(r.stdout.strip().splitlines()[-1])
  kinds = row['kinds']
  assert any(k.startswith(('ynn_fusion', 'dot')) for k in kinds), sorted(kinds)
  assert not any(k.startswith(('PjitFunction', 'np.', 'while')) for k in kinds), sorted(kinds)
  assert abs(sum(row['categories'].values()) - 1.0) < 1e-6, row['categories']
  assert row['categories']['matmul'] > 0.1, row['categories']
  busy = sum(v['ms_per_unit'] for v in kinds.values())
  assert 0 < busy <= 2.5 * row['wall_ms_per_unit'], (busy, row['wall_ms_per_unit'])
