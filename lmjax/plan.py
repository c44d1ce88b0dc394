"""Plan a run before paying for it: compile the train step for N devices ahead of time, on a CPU.

  python -m lmjax.plan --config=experiments/decoder_lm.py:1b --num_devices=64 [--mesh=1,64,1] \
      [--hbm_gib=95] [--vocab_size=32000] [--json_out=plan.json] [--config.batch_size=128 ...]

The process simulates `--num_devices` CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count,
JAX_PLATFORMS=cpu; both must be set before jax is imported, so this module reads --num_devices
from argv before its other imports). Nothing is allocated and no data is read: the train state and
the batch are abstract (jax.ShapeDtypeStruct), the vocabulary size comes from
config.data.vocab_size (or --vocab_size), and the train step is the trainer's own
(lmjax.steps), lowered and compiled with the state and batch shardings.

It prints, per device: parameter and optimizer-state bytes computed from the shardings (with
total/N for comparison), XLA's memory analysis of the compiled step (arguments, outputs, temps,
generated code), FLOPs per step from XLA's cost analysis and from the 6·P·tokens rule, the compile
time, and a warning when arguments + temps exceed --hbm_gib. Figures are for the CPU compiler:
a TPU/GPU compile of the same step fuses and schedules differently, so treat temps as an estimate.
"""

import os
import re
import sys


def _num_devices_from_argv(argv: list[str]) -> int | None:
  """--num_devices=N or --num_devices N, read before absl parses the flags (and before jax)."""
  for i, arg in enumerate(argv):
    if arg.startswith('--num_devices='):
      value = arg.split('=', 1)[1]
    elif arg == '--num_devices' and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    try:
      return int(value)
    except ValueError:
      return None  # absl reports the bad value in one line
  return None


def simulate_devices(n: int) -> None:
  """Make jax (not yet imported) see n CPU devices."""
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '',
                 os.environ.get('XLA_FLAGS', ''))
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={n}'.strip()
  os.environ['JAX_PLATFORMS'] = 'cpu'


if __name__ == '__main__':
  _n = _num_devices_from_argv(sys.argv)
  if _n and _n > 0:
    simulate_devices(_n)

# pylint: disable=wrong-import-position
import json
import math
import time
from typing import Any

from absl import flags
from ml_collections import config_flags

from lmjax import cli
from lmjax.errors import UserError


def define_flags() -> None:
  """Only when run as a program: importing lmjax.plan (tests, tools) defines no absl flags."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (Python), '
                                  '[:variant].', lock_config=True)
  flags.DEFINE_integer('num_devices', None, 'Number of (simulated CPU) devices to plan for.')
  flags.DEFINE_string('mesh', None, 'Mesh shape data,fsdp,tensor (e.g. 1,64,1; one may be -1); '
                      'default: config.mesh.')
  flags.DEFINE_float('hbm_gib', None, 'Device memory in GiB: warn when arguments + temps '
                     'exceed it.')
  flags.DEFINE_integer('vocab_size', None, 'Vocabulary size; default config.data.vocab_size.')
  flags.DEFINE_string('json_out', None, 'Also write the figures to this JSON file.')


FLAGS = flags.FLAGS

GIB = 2.0 ** 30


def parse_mesh(text: str) -> dict:
  parts = text.split(',')
  try:
    sizes = [int(p) for p in parts]
  except ValueError:
    sizes = []
  if len(sizes) != 3:
    raise UserError(f'--mesh={text}: expected three integers data,fsdp,tensor (e.g. 1,64,1)')
  return dict(zip(('data', 'fsdp', 'tensor'), sizes))


def abstract_run(config: Any, vocab_size: int):
  """A steps.Run with abstract state and no data (the task's tokenizer and splits are None).

  The epoch length only shapes the schedule's values (epoch_decay, num_epochs), not the
  compiled step, and it needs the data: plan with config.num_train_steps.
  """
  from lmjax import steps
  return steps.prepare(config, None, vocab_size=vocab_size)


def per_device_bytes(shapes: Any, shardings: Any) -> tuple[int, int]:
  """(bytes on the most loaded device, total bytes) of a tree of abstract arrays."""
  import jax
  import numpy as np
  per_dev, total = 0, 0
  for x, sh in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
    itemsize = np.dtype(x.dtype).itemsize
    total += int(np.prod(x.shape, dtype=np.int64)) * itemsize
    per_dev += int(np.prod(sh.shard_shape(x.shape), dtype=np.int64)) * itemsize
  return per_dev, total


def analytic_flops(family_config: Any, num_params: int, batch: int, seq_len: int) -> float:
  """Training FLOPs per step without remat: 6·P·tokens, P without the embedding tables that are
  only gathered (untied input embedding, learned positions), plus the attention scores and
  mixing, 3 x 4·L·T·D per token (full T x T, as XLA counts a masked causal attention)."""
  tokens = batch * seq_len
  cfg = family_config
  # A model config may say how many attention blocks a token passes (the encoder-decoder's
  # encoder self, decoder self and cross attention); otherwise one per layer.
  layers = getattr(cfg, 'attention_layers', getattr(cfg, 'num_layers', 0))
  d = getattr(cfg, 'd_model', 0)
  gathered = 0
  if d and not getattr(cfg, 'tie_embeddings', True):
    gathered += getattr(cfg, 'vocab_size', 0) * d
  if d and getattr(cfg, 'position', None) == 'learned':
    gathered += getattr(cfg, 'max_len', 0) * d
  return 6.0 * (num_params - gathered) * tokens + 12.0 * layers * seq_len * d * tokens


def _lowered_flops(config: Any, vocab_size: int) -> float:
  """Global FLOPs of one train step from the unpartitioned HLO (lowering only, no compile)."""
  run = abstract_run(config, vocab_size)
  with run.context():
    cost = run.p_train.lower(run.abstract_state(), run.abstract_batch()).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def layer_fields(model_cfg: Any) -> list[str]:
  """The layer counts of config.model: num_layers, num_encoder_layers, ..."""
  return [k for k in model_cfg if k == 'num_layers' or (k.startswith('num_') and
                                                        k.endswith('_layers'))]


def hlo_flops_per_step(config: Any, vocab_size: int) -> float:
  """Global train-step FLOPs counted by XLA, every layer included.

  XLA's cost analysis counts a while loop's body once, so a scanned layer stack is counted as
  one layer. This lowers the same model unscanned with every stack at 1 layer, and with each
  stack in turn at 2 (cheap: no compile), and extrapolates linearly to the configured counts.
  Remat recomputation is included.
  """
  fields = layer_fields(config.model)
  if not config.model.get('scan_layers', False) or not fields:
    return _lowered_flops(config, vocab_size)

  def lowered(**counts) -> float:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.model.update(scan_layers=False, **counts)
    return _lowered_flops(c, vocab_size)

  ones = {k: 1 for k in fields}
  base = lowered(**ones)
  per_layer = {k: lowered(**dict(ones, **{k: 2})) - base for k in fields}
  return base + sum((int(config.model[k]) - 1) * per_layer[k] for k in fields)


def plan(config: Any, vocab_size: int, hbm_gib: float | None = None) -> dict:
  """Compile the train step for the current devices; return the figures (bytes per device)."""
  import jax
  import numpy as np

  s = abstract_run(config, vocab_size)
  n = s.mesh.size
  t0 = time.time()
  with s.context():
    lowered = s.p_train.lower(s.abstract_state(), s.abstract_batch())
    t1 = time.time()
    compiled = lowered.compile()
  t2 = time.time()

  params_dev, params_total = per_device_bytes(s.state_shapes['params'],
                                              s.state_sharding['params'])
  opt_dev, opt_total = per_device_bytes(s.state_shapes['opt_state'],
                                        s.state_sharding['opt_state'])
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(s.state_shapes['params']))
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {
      'num_devices': n, 'mesh': {k: int(v) for k, v in s.mesh.shape.items()},
      'vocab_size': vocab_size, 'num_params': num_params,
      'batch_size': int(config.batch_size), 'seq_len': int(config.seq_len),
      'params_bytes_per_device': params_dev, 'params_bytes_total': params_total,
      'opt_state_bytes_per_device': opt_dev, 'opt_state_bytes_total': opt_total,
      'lower_s': t1 - t0, 'compile_s': t2 - t1,
      'flops_per_device_compiled': float(cost.get('flops', float('nan'))),
      'flops_per_step_xla': hlo_flops_per_step(config, vocab_size),
      # 6·P·tokens describes a network; a task without one (word embeddings) has no such figure.
      'flops_per_step_analytic': (analytic_flops(s.task.model.config, num_params,
                                                 int(config.batch_size), int(config.seq_len))
                                  if s.task.model is not None else float('nan')),
  }
  if mem is not None:
    out.update(argument_bytes=int(mem.argument_size_in_bytes),
               output_bytes=int(mem.output_size_in_bytes),
               alias_bytes=int(mem.alias_size_in_bytes),
               temp_bytes=int(mem.temp_size_in_bytes),
               generated_code_bytes=int(mem.generated_code_size_in_bytes))
    out['peak_bytes_estimate'] = out['argument_bytes'] + out['temp_bytes']
  if hbm_gib:
    out['hbm_gib'] = hbm_gib
    out['fits'] = out.get('peak_bytes_estimate', 0) <= hbm_gib * GIB
  return out


def _gib(b: float) -> str:
  for unit, size in (('GiB', GIB), ('MiB', 2.0 ** 20), ('KiB', 2.0 ** 10)):
    if b >= size:
      return f'{b / size:8.2f} {unit}'
  return f'{b:8.0f} B'


def report(r: dict) -> str:
  n = r['num_devices']
  lines = [
      f'plan: {r["num_params"]:,} parameters; vocab {r["vocab_size"]}; mesh {r["mesh"]} '
      f'({n} devices); batch {r["batch_size"]} x seq {r["seq_len"]}',
      f'compile: lower {r["lower_s"]:.1f}s, compile {r["compile_s"]:.1f}s',
      'per device (from the state shardings):',
      f'  params         {_gib(r["params_bytes_per_device"])}   '
      f'(total/N {_gib(r["params_bytes_total"] / n)}, total {_gib(r["params_bytes_total"])})',
      f'  opt state      {_gib(r["opt_state_bytes_per_device"])}   '
      f'(total/N {_gib(r["opt_state_bytes_total"] / n)}, total {_gib(r["opt_state_bytes_total"])})',
  ]
  if 'argument_bytes' in r:
    lines += [
        'per device (XLA memory analysis of the compiled train step):',
        f'  arguments      {_gib(r["argument_bytes"])}',
        f'  outputs        {_gib(r["output_bytes"])}   (aliased with arguments: '
        f'{_gib(r["alias_bytes"]).strip()})',
        f'  temps          {_gib(r["temp_bytes"])}',
        f'  generated code {_gib(r["generated_code_bytes"])}',
        f'  args + temps   {_gib(r["peak_bytes_estimate"])}',
    ]
  lines += [
      f'FLOPs per step: {r["flops_per_step_xla"]:.3e} total, '
      f'{r["flops_per_step_xla"] / n:.3e} per device (XLA, unpartitioned HLO, remat included)',
      f'  6·P·tokens + attention (no remat): {r["flops_per_step_analytic"]:.3e} total; '
      f'compiled per-device '
      f'program: {r["flops_per_device_compiled"]:.3e} (a scanned layer stack counts once)']
  lines.append('  (XLA counts a loop body once: for a model that loops over time, as RNNs '
               'do, the XLA figures undercount; use 6·P·tokens)')
  if 'hbm_gib' in r and not r['fits']:
    lines.append(f'WARNING: arguments + temps {_gib(r["peak_bytes_estimate"]).strip()} exceed '
                 f'--hbm_gib={r["hbm_gib"]:g} per device')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None:
    raise UserError('--config is required (e.g. --config=experiments/decoder_lm.py:1b)')
  if FLAGS.num_devices is None or FLAGS.num_devices <= 0:
    raise UserError('--num_devices must be a positive integer')
  config = FLAGS.config
  if FLAGS.mesh:
    with config.unlocked():
      config.mesh.update(parse_mesh(FLAGS.mesh))
  if FLAGS.vocab_size is not None and FLAGS.vocab_size <= 0:
    raise UserError(f'--vocab_size={FLAGS.vocab_size}: must be positive')
  if FLAGS.hbm_gib is not None and not FLAGS.hbm_gib > 0:
    raise UserError(f'--hbm_gib={FLAGS.hbm_gib}: must be positive')
  from lmjax import config_schema
  config_schema.check(config, FLAGS.num_devices, data=False)  # no data is read
  import jax
  if jax.device_count() != FLAGS.num_devices:
    raise UserError(f'jax sees {jax.device_count()} devices, not --num_devices='
                    f'{FLAGS.num_devices}: run plan as its own process (python -m lmjax.plan)')
  vocab_size = FLAGS.vocab_size or int(config.data.get('vocab_size') or 0)
  if vocab_size <= 0:
    raise UserError('no vocabulary size: set config.data.vocab_size or --vocab_size')
  if config.data.get('tokenizer') == 'word' and not FLAGS.vocab_size:
    print(f'note: config.data.tokenizer=word builds its vocabulary from the data; planning with '
          f'config.data.vocab_size={vocab_size} (--vocab_size to change)', flush=True)
  r = plan(config, vocab_size, FLAGS.hbm_gib)
  print(report(r), flush=True)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump({k: (None if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()}, f, indent=1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
