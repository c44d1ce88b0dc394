"""Translation throughput: training tokens/s and beam-search decoding sentences/s.

Training: the real jitted train step of lmjax.train (packed Multi30k batches for the
Transformer, length-bucketed ones for the RNN), timed over --steps steps after a warm-up;
tokens are target tokens (weights), as the train log counts them.
Decoding: `decoding.translate_lines` (sorted, batched, jitted beam search) over a whole test
set with a trained workdir's checkpoint, timed after one warm-up pass that compiles every
batch shape.

  PYTHONPATH=. python benchmarks/translation.py --train \
      --config=experiments/multi30k_transformer.py:small
  PYTHONPATH=. python benchmarks/translation.py --decode --workdir=DIR \
      --source=../shared/data/multi30k/raw/test_2016_flickr.en --beam_size=4

Every number printed is the median over --repeats runs (shared CPUs are noisy).
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
MULTI30K = os.path.join(REPO, '..', 'shared', 'data', 'multi30k', 'raw')


def bench_train(config_arg: str, steps: int, repeats: int) -> dict:
  import jax
  from lmjax import config_base, steps as lmjax_steps
  path, _, variant = config_arg.partition(':')
  c = config_base.load_experiment(os.path.join(REPO, path), variant)
  if c.data.source == 'text' and not c.data.train:
    c.data.update(train=os.path.join(MULTI30K, 'train'), eval=os.path.join(MULTI30K, 'val'),
                  test='')
  run = lmjax_steps.prepare(c, None)
  p_train = run.p_train
  it = run.task.train_iterator()
  batches = [run.put(next(it)) for _ in range(steps + 2)]
  state = run.init(0)
  with run.context():
    for b in batches[:2]:  # compile (and the first shapes of a bucketed iterator)
      state, out = p_train(state, b)
    jax.block_until_ready(state)
    rates = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      tokens = 0.0
      for b in batches[2:]:
        state, out = p_train(state, b)
        tokens += float(out['tokens'])
      jax.block_until_ready(state)
      rates.append(tokens / (time.perf_counter() - t0))
  return {'config': config_arg, 'steps': steps, 'target_tokens_per_sec': statistics.median(rates),
          'runs': rates}


def bench_decode(workdir: str, source: str, beam_size: int, batch_size: int,
                 repeats: int) -> dict:
  from lmjax import checkpoint, decoding
  from lmjax.data import text
  config, family, params, tok, step = checkpoint.load_trained(workdir)
  lines = text.read_lines(source, what='--source')
  dec = config.decode
  dec.update(beam_size=beam_size, batch_size=batch_size)
  decoding.translate_lines(family, params, tok, lines, dec)  # compile
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    decoding.translate_lines(family, params, tok, lines, dec)
    rates.append(len(lines) / (time.perf_counter() - t0))
  return {'workdir': workdir, 'step': step, 'sentences': len(lines), 'beam_size': beam_size,
          'batch_size': batch_size, 'sentences_per_sec': statistics.median(rates), 'runs': rates}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--train', action='store_true')
  ap.add_argument('--decode', action='store_true')
  ap.add_argument('--config', default='experiments/multi30k_transformer.py:small')
  ap.add_argument('--workdir')
  ap.add_argument('--source', default=os.path.join(MULTI30K, 'test_2016_flickr.en'))
  ap.add_argument('--beam_size', type=int, default=4)
  ap.add_argument('--batch_size', type=int, default=100)
  ap.add_argument('--steps', type=int, default=10)
  ap.add_argument('--repeats', type=int, default=3)
  args = ap.parse_args()
  if not (args.train or args.decode):
    ap.error('give --train and/or --decode')
  if args.train:
    print(json.dumps(bench_train(args.config, args.steps, args.repeats)), flush=True)
  if args.decode:
    if not args.workdir:
      ap.error('--decode needs --workdir (a trained translation run)')
    print(json.dumps(bench_decode(args.workdir, args.source, args.beam_size, args.batch_size,
                                  args.repeats)), flush=True)


if __name__ == '__main__':
  main()
