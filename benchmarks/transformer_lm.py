"""Training and greedy-decoding throughput of the decoder-only Transformer (lmjax), with MFU.

The model, optimizer and train step are the trainer's own: experiments/decoder_lm.py:bench
(d_model 512, 6 layers, 8 heads, MLP 2048, vocab 8192, tied embeddings, learned positions,
pre-LayerNorm, tanh-GELU, no dropout, scanned layers; sequence 256, batch 8; AdamW) through
lmjax.steps.prepare (the LM task's loss, the jitted train step with the state donated), on a
fixed random token batch. Decoding is lmjax.decoding.generate_from_family (the trainer's
sampling path, one jitted loop) on the same config's model, greedy.

  PYTHONPATH=. python benchmarks/transformer_lm.py                     # float32, scanned layers
  PYTHONPATH=. python benchmarks/transformer_lm.py --dtype bfloat16    # config.model.dtype
  PYTHONPATH=. python benchmarks/transformer_lm.py --no-scan           # config.model.scan_layers
  PYTHONPATH=. python benchmarks/transformer_lm.py --remat dots        # config.model.remat
  PYTHONPATH=. python benchmarks/transformer_lm.py --generate [--batch 1,8]
  PYTHONPATH=. python benchmarks/transformer_lm.py --config=experiments/decoder_lm.py:tiny --json

--dtype, --scan/--no-scan and --remat override the config's fields only when given. --json
prints one JSON line per measurement on stdout (tokens_per_s, compile_s, peak_rss_mb, ...) and
nothing else; benchmarks/compare.py runs it that way beside the PyTorch peer, each in its own
process.

FLOPs per step come from the compiled executable's cost analysis (XLA's count of the
matmuls and elementwise work actually compiled; it counts a loop body once, so with scanned
layers it holds one layer of the stack, and --no-scan gives the whole step's count) and, for
comparison with the literature, from the analytic 6·N·tokens + 12·L·T·D·tokens (N = the
layers' weights + the logits matmul). MFU is the analytic count over the measured matmul ceiling of
this machine in the same dtype (a large f32 matmul, or bf16 inputs with f32 accumulation).

Compile time: train, the step's lower + compile (the executable is then the one timed);
generate, the first call (compile and one run) less the median timed run. Peak RSS is the
process's ru_maxrss. Timings on shared CPUs are noisy: every tokens/s is the median over
--repeats runs of --steps steps each.
"""

import argparse
import json
import os
import resource
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax import config_base, decoding, models
from lmjax import steps as lmjax_steps
from lmjax.models import transformer

CONFIG = 'experiments/decoder_lm.py:bench'
PROMPT, NEW = 16, 128
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def experiment_config(config: str = CONFIG, dtype: str | None = None, scan: bool | None = None,
                      remat: str | None = None):
  """PATH:VARIANT's config on one device, with the given model fields overridden."""
  path, _, variant = config.partition(':')
  c = config_base.load_experiment(path, variant)
  if dtype is not None:
    c.model.dtype = dtype
  if scan is not None:
    c.model.scan_layers = scan
  if remat is not None:
    c.model.remat = remat
  c.mesh.update(data=1, fsdp=1, tensor=1)
  return c


def analytic_flops_per_token(model_cfg, vocab_size: int, seq: int) -> float:
  """6·N (forward + backward of every weight matmul) + 12·L·T·D (attention scores and mix)."""
  d, f, layers = model_cfg.d_model, model_cfg.d_ff, model_cfg.num_layers
  n = layers * (4 * d * d + 2 * d * f) + d * vocab_size  # layer weights + the logits matmul
  return 6.0 * n + 12.0 * layers * seq * d


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_runs(fn, repeats: int) -> list:
  """Wall seconds of `repeats` calls of fn (the callers take the median)."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def matmul_ceiling(dtype: str = 'float32', n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of one n×n×n matmul (bf16: bf16 inputs, f32 accumulation and output)."""
  dt = DTYPES[dtype]
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dt)
  b = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), dt)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  times = time_runs(lambda: f(a, b).block_until_ready(), repeats)
  return 2.0 * n ** 3 / min(times) / 1e9  # the ceiling: best of the repeats


def xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else 0.0


def random_batch(spec: dict, vocab_size: int, seed: int = 0) -> dict:
  """A fixed random host batch with every key of a task's batch spec, all positions real.

  Language models: inputs and targets are one random token stream shifted by one. Translation
  (a 'decoder_inputs' key): a random source row and a random target row per batch row, the
  decoder input being the target shifted right; packed keys say one pair per row
  (segmentation 1 everywhere, positions 0..L-1). Weights are 1 everywhere (every target
  counts) and 'reset' (truncated BPTT) is 0.
  """
  b, t = spec['inputs'].shape
  rng = np.random.default_rng(seed)
  data = rng.integers(0, vocab_size, size=(b, t + 1)).astype(np.int32)
  fill = {'inputs': data[:, :-1], 'targets': data[:, 1:]}
  if 'decoder_inputs' in spec:
    fill = {'inputs': rng.integers(0, vocab_size, size=(b, t)).astype(np.int32),
            'decoder_inputs': data[:, :-1], 'targets': data[:, 1:]}
  batch = {}
  for k, s in spec.items():
    if k in fill:
      batch[k] = fill[k]
    elif k in ('weights', 'reset'):
      batch[k] = (np.ones if k == 'weights' else np.zeros)(s.shape, s.dtype)
    elif k.endswith('_segmentation'):  # one segment (sentence pair) per row
      batch[k] = np.ones(s.shape, s.dtype)
    elif k.endswith('_position'):  # positions 0..L-1 of that one segment
      batch[k] = np.broadcast_to(np.arange(s.shape[-1], dtype=s.dtype), s.shape).copy()
    else:
      raise ValueError(f'batch key {k!r}: no random fill for it')
  return batch


class TrainStep:
  """The trainer's own jitted train step (lmjax.steps.prepare, donated state) on a fixed random
  batch made from the task's batch spec (`random_batch`), compiled ahead of time and warmed up
  by two steps. tokens_per_step is the batch's summed weights (the trainer's 'tokens')."""

  def __init__(self, config, vocab_size: int):
    config.mesh.update(data=1, fsdp=1, tensor=1)
    # The step count only sets the lr schedule's values; the shapes need no data.
    run = lmjax_steps.prepare(config, None, devices=jax.devices()[:1], vocab_size=vocab_size)
    try:
      batch = random_batch(run.batch_spec, vocab_size)
    except ValueError as e:
      raise ValueError(f'task {config.task!r}: {e}') from None
    self.batch_shape = tuple(run.batch_spec['inputs'].shape)
    self.tokens_per_step = int(batch['weights'].sum()) if 'weights' in batch else int(
        np.prod(self.batch_shape))
    self.batch = run.put(batch)
    self.state = run.init(config.seed)
    # Distinct buffers (init_carry shares one zeros array between layers): the state is donated.
    self.state = jax.tree.map(lambda x: jnp.array(x, copy=True), self.state)
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state['params']))
    t0 = time.perf_counter()
    with run.context():
      self.step = run.p_train.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.xla_flops = xla_flops(self.step)
    t0 = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - t0
    self.loss = self.run(1)  # warm-up: two steps in all

  def run(self, steps: int) -> float:
    out = None
    for _ in range(steps):
      self.state, out = self.step(self.state, self.batch)
    return float(out['loss'])  # blocks


class Trainer(TrainStep):
  """TrainStep of a decoder-only config, with the analytic FLOPs of one step."""

  def __init__(self, config):
    super().__init__(config, int(config.data.vocab_size))
    self.flops = analytic_flops_per_token(config.model, int(config.data.vocab_size),
                                          config.seq_len) * self.tokens_per_step


class Generator:
  """Greedy decoding of `new` tokens after a `prompt`-token prompt, through the config's model
  and lmjax.decoding.generate_from_family."""

  def __init__(self, config, batch: int, prompt: int = PROMPT, new: int = NEW):
    vocab = int(config.data.vocab_size)
    self.family = models.build_lm(config.model, vocab)
    init = jax.jit(lambda r: nn.meta.unbox(
        self.family.init(r, jnp.zeros((1, prompt), jnp.int32))['params']))
    self.params = init(jax.random.PRNGKey(config.seed))
    self.prompt = np.random.default_rng(0).integers(0, vocab, size=(batch, prompt)).astype(
        np.int32)
    self.new = new
    self.tokens = batch * new
    t0 = time.perf_counter()
    self.run()  # compile + warm-up
    self.first_call_s = time.perf_counter() - t0

  def run(self):
    out = decoding.generate_from_family(self.family, self.params, self.prompt,
                                        jax.random.PRNGKey(0), num_new=self.new,
                                        temperature=0.0)
    return np.asarray(out)


def bench_train(args) -> dict:
  c = experiment_config(args.config, args.dtype, args.scan, args.remat)
  ceiling = matmul_ceiling(c.model.dtype) if args.mfu else 0.0
  tr = Trainer(c)
  times = [t / args.steps for t in time_runs(lambda: tr.run(args.steps), args.repeats)]
  step = statistics.median(times)
  row = {'impl': 'lmjax', 'mode': 'train', 'config': args.config, 'dtype': c.model.dtype,
         'scan': c.model.scan_layers, 'remat': c.model.remat, 'params': tr.num_params,
         'compile_s': round(tr.compile_s, 2), 'first_step_s': round(tr.first_step_s, 3),
         'step_s': round(step, 4), 'tokens_per_s': round(tr.tokens_per_step / step, 1),
         'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times],
         'loss_after_warmup': round(tr.loss, 3),
         'flops_per_step_analytic': tr.flops, 'flops_per_step_xla': tr.xla_flops,
         'gflops_per_s': round(tr.flops / step / 1e9, 1)}
  if args.mfu:
    row.update(matmul_ceiling_gflops=round(ceiling, 1),
               mfu=round(tr.flops / step / 1e9 / ceiling, 3))
  return row


def bench_generate(args) -> list:
  c = experiment_config(args.config, args.dtype, args.scan, args.remat)
  rows = []
  for b in args.batch:
    g = Generator(c, b, args.prompt, args.new)
    times = time_runs(g.run, args.repeats)
    run_s = statistics.median(times)
    rows.append({'impl': 'lmjax', 'mode': 'generate', 'config': args.config, 'batch': b,
                 'dtype': c.model.dtype, 'scan': c.model.scan_layers, 'prompt': args.prompt,
                 'new': args.new, 'compile_s': round(max(0.0, g.first_call_s - run_s), 2),
                 'first_call_s': round(g.first_call_s, 3),
                 'tokens_per_s': round(g.tokens / run_s, 1),
                 'tokens_per_s_all': [round(g.tokens / t, 1) for t in times],
                 'peak_rss_mb': round(peak_rss_mb(), 1),
                 'loadavg': [round(x, 2) for x in os.getloadavg()]})
  return rows


def describe(row: dict) -> str:
  """One readable line of a result row."""
  if row['mode'] == 'generate':
    return (f'lmjax generate {row["config"]} batch {row["batch"]} ({row["new"]} tokens after '
            f'{row["prompt"]}): {row["tokens_per_s"]:,.1f} tokens/s (samples '
            f'{row["tokens_per_s_all"]}), compile {row["compile_s"]} s, peak RSS '
            f'{row["peak_rss_mb"]:,.0f} MB')
  s = (f'lmjax train {row["config"]} {row["dtype"]} scan={row["scan"]} remat={row["remat"]}, '
       f'{row["params"]:,} params: {row["tokens_per_s"]:,.1f} tokens/s (step {row["step_s"]} s; '
       f'samples {row["tokens_per_s_all"]}), compile {row["compile_s"]} s, '
       f'{row["flops_per_step_analytic"] / 1e9:.1f} GFLOP/step analytic (XLA '
       f'{row["flops_per_step_xla"] / 1e9:.1f}{", scan body once" if row["scan"] else ""}), '
       f'{row["gflops_per_s"]} GFLOP/s')
  if 'mfu' in row:
    s += f', MFU {row["mfu"]} of a {row["matmul_ceiling_gflops"]} GFLOP/s matmul'
  return s + f', loss {row["loss_after_warmup"]}, peak RSS {row["peak_rss_mb"]:,.0f} MB'


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--config', default=CONFIG, help='experiment PATH:VARIANT (default %(default)s)')
  ap.add_argument('--dtype', choices=sorted(DTYPES), default=None,
                  help='config.model.dtype (default: the config\'s, float32 for bench)')
  ap.add_argument('--scan', action=argparse.BooleanOptionalAction, default=None,
                  help='config.model.scan_layers (default: the config\'s, scanned for bench)')
  ap.add_argument('--remat', choices=sorted(transformer.REMAT_POLICIES), default=None,
                  help='config.model.remat (default: the config\'s, none for bench)')
  ap.add_argument('--steps', type=int, default=5, help='train steps per timed repeat')
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--mfu', action=argparse.BooleanOptionalAction, default=True,
                  help='measure the matmul ceiling (five 2048^3 matmuls) and report MFU')
  ap.add_argument('--generate', action='store_true',
                  help='greedy decoding instead of training')
  ap.add_argument('--batch', default='1,8', help='with --generate: comma list of batch sizes')
  ap.add_argument('--prompt', type=int, default=PROMPT, help='with --generate: prompt tokens')
  ap.add_argument('--new', type=int, default=NEW, help='with --generate: new tokens')
  ap.add_argument('--json', action='store_true',
                  help='one JSON line per measurement on stdout, nothing else')
  args = ap.parse_args(argv)
  try:
    args.batch = [int(b) for b in args.batch.split(',') if b]
  except ValueError:
    ap.error(f'--batch: a comma list of integers, got {args.batch!r}')
  if args.generate:
    rows = bench_generate(args)
  else:
    row = bench_train(args)
    rows = [dict(row, peak_rss_mb=round(peak_rss_mb(), 1),
                 loadavg=[round(x, 2) for x in os.getloadavg()])]
  for row in rows:
    print(json.dumps(row) if args.json else describe(row), flush=True)


if __name__ == '__main__':
  main()
