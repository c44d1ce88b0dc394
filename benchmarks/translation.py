"""Translation throughput: training tokens/s and beam-search decoding sentences/s.

Real data and a trained model:
  --train   the real jitted train step of lmjax.train (packed Multi30k batches for the
            Transformer, length-bucketed ones for the RNN), timed over --steps steps after a
            warm-up; tokens are target tokens (weights), as the train log counts them.
  --decode  `decoding.translate_lines` (sorted, batched, jitted beam search) over a whole test
            set with a trained workdir's checkpoint, timed after one warm-up pass that compiles
            every batch shape.

Against the PyTorch peer (benchmarks/torch_translation.py; benchmarks/compare.py's mt_train_fp32
and mt_beam4 cases run both sides in separate processes):
  --step    the trainer's own train step (lmjax.steps.prepare on --config, benchmarks/
            transformer_lm.py's TrainStep) on a fixed random batch of the task's batch spec:
            [batch_size, seq_len] = [32, 64] for :small, one sentence pair per row (source and
            target 64 random tokens each, segmentation 1, positions 0..63, weights 1), so
            2,048 target tokens per step, all counted. Label smoothing, dropout and AdamW
            (warmup + cosine, clipping, the non-finite guard) are the config's.
  --beam    beam search (lmjax.decoding.decode_ids, what translate_lines runs after
            tokenizing: sorted by length, batches of --batch_size, jitted beam search with the
            config's alpha, max_len_ratio and max_len_offset) with RANDOM-INIT parameters of
            --config's model, over the source ids of benchmarks/mt_sources.py: the lengths of
            --source's lines under the trainer's SentencePiece (estimated) or, without
            --source, --sentences random lengths drawn from their histogram. Random weights
            never end early, so each batch decodes min(max_len, ceil(1.5 x longest) + 10)
            tokens, as the peer's max_new_tokens. Timed after one warm-up pass (every shape
            compiled); compile_s is that pass less a timed one.
  --json    one JSON line per measurement on stdout, nothing else; alone it means --step.

  PYTHONPATH=. python benchmarks/translation.py --train \
      --config=experiments/multi30k_transformer.py:small
  PYTHONPATH=. python benchmarks/translation.py --decode --workdir=DIR \
      --source=../shared/data/multi30k/raw/test_2016_flickr.en --beam_size=4
  PYTHONPATH=. python benchmarks/translation.py --step --json [--steps 2 --repeats 5]
  PYTHONPATH=. python benchmarks/translation.py --beam --json \
      --source=../shared/data/multi30k/raw/test_2016_flickr.en [--repeats 2]
  PYTHONPATH=. python benchmarks/translation.py --step --beam \
      --config=experiments/multi30k_transformer.py:tiny --sentences=16 --batch_size=8

Every number printed is the median over --repeats runs (shared CPUs are noisy).
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(1, HERE)  # transformer_lm, mt_sources (also there when run as a script)
MULTI30K = os.path.join(REPO, '..', 'shared', 'data', 'multi30k', 'raw')
CONFIG = 'experiments/multi30k_transformer.py:small'


def load_config(config_arg: str):
  """PATH:VARIANT's config on one device."""
  from lmjax import config_base
  path, _, variant = config_arg.partition(':')
  c = config_base.load_experiment(os.path.join(REPO, path), variant)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  return c


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


def bench_step(config_arg: str, steps: int, repeats: int) -> dict:
  """The trainer's step on a fixed random batch (no data read): target tokens/s."""
  from transformer_lm import TrainStep, time_runs
  c = load_config(config_arg)
  tr = TrainStep(c, int(c.data.vocab_size))
  times = [t / steps for t in time_runs(lambda: tr.run(steps), repeats)]
  step = statistics.median(times)
  m = c.model
  return {'impl': 'lmjax', 'mode': 'train', 'config': config_arg, 'dtype': m.dtype,
          'scan': m.scan_layers, 'params': tr.num_params, 'batch': list(tr.batch_shape),
          'tokens_per_step': tr.tokens_per_step, 'label_smoothing': c.label_smoothing,
          'dropout': m.dropout_rate, 'compile_s': round(tr.compile_s, 2),
          'first_step_s': round(tr.first_step_s, 3), 'step_s': round(step, 4),
          'tokens_per_s': round(tr.tokens_per_step / step, 1),
          'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times],
          'loss_after_warmup': round(tr.loss, 3)}


def bench_beam(config_arg: str, source: str, sentences: int, beam_size: int, batch_size: int,
               repeats: int) -> dict:
  """Random-init beam search over benchmarks/mt_sources.py's source ids: sentences/s."""
  import flax.linen as nn
  import jax
  import mt_sources
  from lmjax import decoding, models, tasks
  from lmjax.tasks import base
  from transformer_lm import time_runs
  c = load_config(config_arg)
  vocab = int(c.data.vocab_size)
  task = tasks.build(c, None, vocab_size=vocab)  # shapes only: no data, no tokenizer
  family = task.model
  init = jax.jit(lambda r: nn.meta.unbox(task.init_params(r, base.dummy_batch(task.batch_spec()))))
  params = init(jax.random.PRNGKey(c.seed))
  num_params = sum(x.size for x in jax.tree.leaves(params))
  max_len = models.max_len(family)
  srcs = mt_sources.sources(vocab, max_len, path=source, n=sentences)
  dec = c.decode
  steps = [mt_sources.decode_steps(max(len(srcs[i]) for i in b), max_len,
                                   float(dec.max_len_ratio), int(dec.max_len_offset))
           for b in mt_sources.batches(srcs, batch_size)]

  def run():
    return decoding.decode_ids(
        family, params, srcs, bos=mt_sources.BOS, eos=mt_sources.EOS, batch_size=batch_size,
        beam_size=beam_size, alpha=float(dec.alpha), max_len_ratio=float(dec.max_len_ratio),
        max_len_offset=int(dec.max_len_offset), max_len=max_len)

  t0 = time.perf_counter()
  out = run()  # compiles every batch shape
  first = time.perf_counter() - t0
  times = time_runs(run, repeats)
  median = statistics.median(times)
  return {'impl': 'lmjax', 'mode': 'beam', 'config': config_arg, 'params': num_params,
          'source': source or f'{sentences} random lengths', 'sentences': len(srcs),
          'source_tokens_mean': round(statistics.mean(len(x) for x in srcs), 2),
          'batch': batch_size, 'beam_size': beam_size, 'alpha': float(dec.alpha),
          'max_len': max_len, 'decode_steps': steps,
          'output_tokens_mean': round(statistics.mean(len(o) + 1 for o in out), 2),  # + eos
          'compile_s': round(max(0.0, first - median), 2), 'first_call_s': round(first, 3),
          'sentences_per_s': round(len(srcs) / median, 2),
          'sentences_per_s_all': [round(len(srcs) / t, 2) for t in times]}


def describe(row: dict) -> str:
  """One readable line of a --step or --beam row."""
  if row['mode'] == 'beam':
    return (f'lmjax beam {row["beam_size"]} {row["config"]}, {row["params"]:,} params, random '
            f'init, {row["sentences"]} sources ({row["source"]}), batch {row["batch"]}: '
            f'{row["sentences_per_s"]:,.2f} sentences/s (samples {row["sentences_per_s_all"]}), '
            f'{row["output_tokens_mean"]} output tokens per sentence, compile '
            f'{row["compile_s"]} s, peak RSS {row["peak_rss_mb"]:,.0f} MB')
  return (f'lmjax train {row["config"]} {row["dtype"]}, {row["params"]:,} params, batch '
          f'{row["batch"]}: {row["tokens_per_s"]:,.1f} target tokens/s (step {row["step_s"]} s; '
          f'samples {row["tokens_per_s_all"]}), compile {row["compile_s"]} s, loss '
          f'{row["loss_after_warmup"]}, peak RSS {row["peak_rss_mb"]:,.0f} MB')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--train', action='store_true', help='the real train step on real batches')
  ap.add_argument('--decode', action='store_true', help='beam search with a trained --workdir')
  ap.add_argument('--step', action='store_true',
                  help='the trainer\'s step on a fixed random batch (compare.py\'s form)')
  ap.add_argument('--beam', action='store_true',
                  help='beam search with random-init parameters (compare.py\'s form)')
  ap.add_argument('--json', action='store_true',
                  help='one JSON line per measurement on stdout, nothing else (alone: --step)')
  ap.add_argument('--config', default=CONFIG)
  ap.add_argument('--workdir')
  ap.add_argument('--source', default=None,
                  help='source text (--decode default: test_2016_flickr.en; --beam default: '
                       'none, random lengths)')
  ap.add_argument('--sentences', type=int, default=1000,
                  help='with --beam: random sources without --source, else its first N '
                       '(0: all)')
  ap.add_argument('--beam_size', type=int, default=4)
  ap.add_argument('--batch_size', type=int, default=100)
  ap.add_argument('--steps', type=int, default=10)
  ap.add_argument('--repeats', type=int, default=3)
  args = ap.parse_args(argv)
  if args.json and not (args.train or args.decode or args.beam):
    args.step = True
  if not (args.train or args.decode or args.step or args.beam):
    ap.error('give --train, --decode, --step and/or --beam')
  if args.source and not os.path.isfile(args.source):
    ap.error(f'--source: no such file {args.source}')
  if args.step or args.beam:
    from lmjax import cli
    if cli.cpu_backend_expected():
      cli.keep_freed_host_memory()  # as lmjax.main does on CPU
  if args.train:
    print(json.dumps(bench_train(args.config, args.steps, args.repeats)), flush=True)
  if args.decode:
    if not args.workdir:
      ap.error('--decode needs --workdir (a trained translation run)')
    source = args.source or os.path.join(MULTI30K, 'test_2016_flickr.en')
    print(json.dumps(bench_decode(args.workdir, source, args.beam_size, args.batch_size,
                                  args.repeats)), flush=True)
  rows = []
  if args.step:
    rows.append(bench_step(args.config, args.steps, args.repeats))
  if args.beam:
    rows.append(bench_beam(args.config, args.source or '', args.sentences, args.beam_size,
                           args.batch_size, args.repeats))
  from transformer_lm import peak_rss_mb
  for row in rows:
    row.update(peak_rss_mb=round(peak_rss_mb(), 1), loadavg=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(row) if args.json else describe(row), flush=True)


if __name__ == '__main__':
  main()
