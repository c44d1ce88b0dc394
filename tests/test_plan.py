"""lmjax.plan compiles the train step for N simulated devices without allocating the state.

Each plan runs in its own process (it sets the device count before importing jax). The tiny
1B-family config has every sharded dimension divisible by 8, so with mesh fsdp=N the
parameters and optimizer state per device fall as 1/N (up to the few replicated vectors).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/decoder_lm.py:tiny'


def plan(tmp_path, *args):
  out = tmp_path / 'plan.json'
  env = dict(os.environ, PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, '-m', 'lmjax.plan', *args, f'--json_out={out}'],
                     capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  return r, (json.loads(out.read_text()) if r.returncode == 0 else None)


def test_fsdp_state_memory_falls_as_one_over_n(tmp_path):
  r1, one = plan(tmp_path, f'--config={TINY}', '--num_devices=1', '--mesh=1,1,1')
  assert r1.returncode == 0, r1.stderr
  r8, eight = plan(tmp_path, f'--config={TINY}', '--num_devices=8', '--mesh=1,8,1',
                   '--hbm_gib=0.0001')
  assert r8.returncode == 0, r8.stderr
  assert one['num_devices'] == 1 and eight['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}
  assert one['num_params'] == eight['num_params'] > 0
  state = lambda r: r['params_bytes_per_device'] + r['opt_state_bytes_per_device']
  total = one['params_bytes_total'] + one['opt_state_bytes_total']
  assert state(one) == total  # one device holds everything
  assert eight['params_bytes_total'] + eight['opt_state_bytes_total'] == total
  assert abs(state(eight) - total / 8) <= 0.15 * total / 8, (state(eight), total / 8)
  # The compiled step's arguments (state + batch) shrink with it.
  assert eight['argument_bytes'] < 0.3 * one['argument_bytes']
  # FLOPs per step are the model's, not the mesh's.
  assert eight['flops_per_step_xla'] == pytest.approx(one['flops_per_step_xla'], rel=0.05)
  assert eight['flops_per_step_xla'] > 0 and eight['compile_s'] > 0
  for key in ('temp_bytes', 'output_bytes', 'generated_code_bytes'):
    assert key in eight
  # The printed report, with the over-budget warning.
  assert 'params' in r8.stdout and 'FLOPs per step' in r8.stdout
  assert 'WARNING: arguments + temps' in r8.stdout and '--hbm_gib=0.0001' in r8.stdout


def _load(path):
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_scanned_layers_counted_in_flops():
  """XLA counts a scan body once; plan extrapolates over the layers (scanned == unrolled).

  In-process on the 8 test devices: this only lowers, it compiles nothing."""
  from lmjax import plan as plan_lib
  c = _load('experiments/decoder_lm.py').get_config('tiny')
  c.model.num_layers = 3
  scanned = plan_lib.hlo_flops_per_step(c, 512)
  c.model.scan_layers = False
  unrolled = plan_lib.hlo_flops_per_step(c, 512)
  assert scanned == pytest.approx(unrolled, rel=0.01)
  c.model.num_layers = 1
  assert scanned > 2 * plan_lib.hlo_flops_per_step(c, 512)


@pytest.mark.parametrize('args,message', [
    (('--num_devices=8', '--mesh=1,3,1'), 'config.mesh'),
    (('--num_devices=8', '--mesh=1,8'), '--mesh=1,8'),
    (('--num_devices=0',), '--num_devices'),
])
def test_bad_plan_flags_fail_in_one_line(tmp_path, args, message):
  r, _ = plan(tmp_path, f'--config={TINY}', *args)
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], r.stderr


def transformer_lm_num_params(m, vocab_size: int) -> int:
  """Parameters of the decoder-only Transformer (lmjax/models/transformer.py) from its config.

  Embedding V·D; learned positions max_len·D; per layer: attention query/key/value/out
  4·D·(H·K) = 4·D² (H divides D, config checks) without biases, two LayerNorms (scale and
  bias) 2·2D, MLP D·F + F + F·D + D (with biases); a final LayerNorm 2D; an untied output D·V.
  """
  d, f, v = m.d_model, m.d_ff, vocab_size
  per_layer = 4 * d * d + 2 * 2 * d + (d * f + f) + (f * d + d)
  return (v * d + (m.max_len * d if m.position == 'learned' else 0) + m.num_layers * per_layer
          + 2 * d + (0 if m.tie_embeddings else d * v))


@pytest.mark.parametrize('path,variant,overrides', [
    ('experiments/lm1b_transformer.py', '', {}),  # sinusoidal, untied
    ('experiments/decoder_lm.py', '1b', {}),  # rotary, untied
    ('experiments/decoder_lm.py', '8b', {}),
    ('experiments/decoder_lm.py', 'tiny', {'position': 'learned', 'tie_embeddings': True}),
    ('experiments/lm1b_transformer.py', 'tiny', {'position': 'learned'}),
])
def test_pod_configs_build_abstractly(path, variant, overrides):
  """The full-size configs build (shapes and shardings only) on the 8 test devices, with the
  parameter count the architecture implies (the tiny variants cover learned positions and a
  tied output)."""
  import jax
  import numpy as np
  from lmjax import plan as plan_lib
  config = _load(path)
  c = config.get_config(variant)
  c.model.update(overrides)
  s = plan_lib.abstract_run(c, c.data.vocab_size)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(s.state_shapes['params']))
  assert num_params == transformer_lm_num_params(c.model, c.data.vocab_size)
  per_dev, total = plan_lib.per_device_bytes(s.state_shapes['params'], s.state_sharding['params'])
  if c.mesh.fsdp == -1:  # FSDP over all 8 devices
    assert per_dev < 0.13 * total
  assert config.get_config('tiny').model.d_model <= 64
