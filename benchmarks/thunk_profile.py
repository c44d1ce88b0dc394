"""Where a benchmarked step's time goes: XLA's own per-thunk trace, summed by operation kind.

Runs the step a benchmark times (the trainer's train step on a random batch, or greedy
decoding) under `jax.profiler` with XLA CPU's per-thunk trace events on
(`--xla_cpu_enable_xprof_traceme`), then sums the events' durations by kind: a fusion's or
op's name without its numeric suffix (`ynn_fusion` for the YNNPACK dot fusions, `loop_fusion`,
`input_reduce_fusion`, `copy`, `transpose`, `dynamic-update-slice`, ...), each as a share of the
traced wall time per step, with how many events of that kind run per step (per generated token
for decoding).

  PYTHONPATH=. python benchmarks/thunk_profile.py --config=experiments/decoder_lm.py:bench
  PYTHONPATH=. python benchmarks/thunk_profile.py --config=experiments/decoder_lm.py:bench --dtype bfloat16
  PYTHONPATH=. python benchmarks/thunk_profile.py --config=experiments/ptb_lstm.py:medium --vocab 10000
  PYTHONPATH=. python benchmarks/thunk_profile.py --config=experiments/multi30k_transformer.py:small
  PYTHONPATH=. python benchmarks/thunk_profile.py --generate --batch 1      # decoder_lm.py:bench
  PYTHONPATH=. python benchmarks/thunk_profile.py --config=experiments/decoder_lm.py:tiny --json

Shares are robust to a shared machine's load where absolute times are not. The events are the
thunks XLA runs on the calling thread and its pool; a thunk split over both cores counts once
per thread, so the "busy" column (the sum) can exceed the step's wall time.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

FLAG = '--xla_cpu_enable_xprof_traceme=true'
if FLAG not in os.environ.get('XLA_FLAGS', ''):  # before jax is imported
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + FLAG).strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Runtime bookkeeping around the thunks, not work of the program.
# Runtime bookkeeping around the thunks and Python-side events are not the program's work;
# a while/conditional/call thunk contains the thunks of its body, which are counted instead.
_RUNTIME = re.compile(r'^(\$|PjitFunction|CommonPjRt|PjRt|Slinky|Allocate|Handle inputs|'
                      r'ParseArguments|PythonRefManager|end: |ThunkExecutor|Execute|'
                      r'TfrtCpu|XlaModule|Thunk::|Compile|Await|np\.|jax\.|Wait for|'
                      r'ThreadpoolListener|Handle input|'
                      r'(while|conditional|call)([._]\d+)?$)')


def kind(name: str) -> str:
  """'loop_fusion.12' -> 'loop_fusion'; 'dot.3' -> 'dot'."""
  return re.sub(r'[._]\d+$', '', name)


def read_trace(directory: str) -> list:
  files = sorted(glob.glob(os.path.join(directory, '**', '*.trace.json.gz'), recursive=True))
  if not files:
    raise SystemExit(f'{directory}: the profiler wrote no trace')
  with gzip.open(files[-1]) as f:
    return [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']


def profile(fn, calls: int, per: float) -> dict:
  """Runs fn() `calls` times under the profiler; {kind: [busy microseconds, events]} per
  `per` units (steps or tokens), and the wall time per unit."""
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    t0 = time.perf_counter()
    for _ in range(calls):
      fn()
    wall = time.perf_counter() - t0
    jax.profiler.stop_trace()
    events = read_trace(d)
  by = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    if _RUNTIME.match(e['name']):
      continue
    k = by[kind(e['name'])]
    k[0] += e.get('dur', 0.0)
    k[1] += 1
  units = calls * per
  return {'wall_ms_per_unit': 1e3 * wall / units,
          'kinds': {k: {'ms_per_unit': v[0] / 1e3 / units, 'events_per_unit': v[1] / units}
                    for k, v in by.items()}}


def category(k: str) -> str:
  """matmul (YNNPACK dot fusions, dots), data movement (copies, transposes, slices, updates,
  concatenation, broadcasts) or elementwise / reduction work (every other fusion)."""
  if k.startswith('ynn_fusion') or k.startswith('dot'):
    return 'matmul'
  if re.search(r'copy|transpose|slice|concatenate|broadcast|pad|gather|scatter', k) and not \
      re.search(r'multiply|add|divide|subtract|exp|tanh|rsqrt|select|convert|reduce', k):
    return 'data movement'
  return 'elementwise / reduce'


def report(result: dict, unit: str, top: int) -> str:
  kinds = sorted(result['kinds'].items(), key=lambda kv: -kv[1]['ms_per_unit'])
  busy = sum(v['ms_per_unit'] for _, v in kinds)
  wall = result['wall_ms_per_unit']
  cats = collections.Counter()
  for k, v in kinds:
    cats[category(k)] += v['ms_per_unit']
  out = [f'wall {wall:.2f} ms per {unit}; thunks busy {busy:.2f} ms per {unit} '
         f'({sum(v["events_per_unit"] for _, v in kinds):.0f} thunk events per {unit})',
         'busy by category: ' + ', '.join(f'{c} {100 * t / busy:.0f}%'
                                          for c, t in cats.most_common()),
         f'| kind | ms per {unit} | share of wall | events per {unit} |', '|---|---:|---:|---:|']
  for k, v in kinds[:top]:
    out.append(f'| {k} | {v["ms_per_unit"]:.2f} | {100 * v["ms_per_unit"] / wall:.1f}% | '
               f'{v["events_per_unit"]:.1f} |')
  rest = kinds[top:]
  if rest:
    out.append(f'| (other {len(rest)} kinds) | {sum(v["ms_per_unit"] for _, v in rest):.2f} | '
               f'{100 * sum(v["ms_per_unit"] for _, v in rest) / wall:.1f}% | '
               f'{sum(v["events_per_unit"] for _, v in rest):.1f} |')
  return '\n'.join(out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--config', default='experiments/decoder_lm.py:bench')
  ap.add_argument('--dtype', default=None, help="config.model.dtype, e.g. 'bfloat16'")
  ap.add_argument('--vocab', type=int, default=0,
                  help='vocabulary size (default config.data.vocab_size)')
  ap.add_argument('--steps', type=int, default=3, help='train steps (or decode calls) traced')
  ap.add_argument('--generate', action='store_true', help='greedy decoding instead of training')
  ap.add_argument('--batch', type=int, default=1, help='with --generate')
  ap.add_argument('--top', type=int, default=15, help='kinds listed')
  ap.add_argument('--json', action='store_true', help='one JSON line instead of the table')
  args = ap.parse_args(argv)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import transformer_lm  # pylint: disable=g-import-not-at-top  (this directory)
  c = transformer_lm.experiment_config(args.config, dtype=args.dtype)
  vocab = args.vocab or int(c.data.vocab_size)
  if args.generate:
    g = transformer_lm.Generator(c, args.batch)
    result, unit = profile(g.run, args.steps, g.new), 'token'
  else:
    tr = transformer_lm.TrainStep(c, vocab)
    result, unit = profile(lambda: tr.run(1), args.steps, 1), 'step'
  busy = sum(v['ms_per_unit'] for v in result['kinds'].values()) or 1.0
  cats = collections.Counter()
  for k, v in result['kinds'].items():
    cats[category(k)] += v['ms_per_unit'] / busy
  result.update(categories=dict(cats), config=args.config, dtype=c.model.get('dtype'), unit=unit,
                batch=args.batch if args.generate else None, jax=jax.__version__)
  print(json.dumps(result) if args.json else report(result, unit, args.top), flush=True)


if __name__ == '__main__':
  main()
