"""Training and greedy-decoding throughput of the decoder-only Transformer (lmjax), with MFU.

Model (the benchmark's fixed shape): d_model 512, 6 layers, 8 heads, MLP 2048, vocab 8192, tied
embeddings, pre-LayerNorm, tanh-GELU, no dropout; sequence 256, batch 8; AdamW.

  PYTHONPATH=. python benchmarks/transformer_lm.py --dtype float32
  PYTHONPATH=. python benchmarks/transformer_lm.py --dtype bfloat16
  PYTHONPATH=. python benchmarks/transformer_lm.py --generate
  PYTHONPATH=. python benchmarks/transformer_lm.py --compare   # lmjax and the PyTorch peer,
                                                               # interleaved in one process

FLOPs per step come from the compiled executable's cost analysis (XLA's count of the
matmuls and elementwise work actually compiled) and, for comparison with the literature, from
the analytic 6·N·tokens + 12·L·T·D·tokens (N = non-embedding params + the tied logits matmul).
MFU is the analytic count over the measured matmul ceiling of this machine in the same
dtype (a large f32 matmul, or bf16 inputs with f32 accumulation).

Timings on shared CPUs are noisy: every number printed is the median over --repeats runs of
--steps steps each, and --compare alternates lmjax and PyTorch repeats so both see the same load.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax import decoding, optim
from lmjax.models import transformer
from lmjax.losses import cross_entropy

VOCAB, D, LAYERS, HEADS, FF, SEQ, BATCH = 8192, 512, 6, 8, 2048, 256, 8
PROMPT, NEW = 16, 128
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def model_config(dtype: str = 'float32', scan: bool = False, remat: str = 'none',
                 max_len: int = SEQ) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(
      vocab_size=VOCAB, d_model=D, num_heads=HEADS, num_layers=LAYERS, d_ff=FF,
      max_len=max_len, dropout_rate=0.0, attention_dropout_rate=0.0, position='learned',
      tie_embeddings=True, scan_layers=scan, remat=remat, compute_dtype=DTYPES[dtype])


def analytic_flops_per_token(seq: int = SEQ) -> float:
  """6·N (forward + backward of every weight matmul) + 12·L·T·D (attention scores and mix)."""
  n = LAYERS * (4 * D * D + 2 * D * FF) + D * VOCAB  # non-embedding weights + tied logits
  return 6.0 * n + 12.0 * LAYERS * seq * D


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


class Trainer:
  """A jitted AdamW train step equivalent to lmjax.train's (forward, cross-entropy, grad, update,
  donated state), on a fixed random batch."""

  def __init__(self, dtype='float32', scan=False, remat='none', batch=BATCH, seq=SEQ):
    self.cfg = model_config(dtype, scan, remat)
    self.tokens_per_step = batch * seq
    model = transformer.TransformerLM(self.cfg, deterministic=True)
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.integers(0, VOCAB, size=(batch, seq + 1)), jnp.int32)
    self.batch = {'inputs': data[:, :-1], 'targets': data[:, 1:]}
    import flax.linen as nn
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), self.batch['inputs'])['params'])
    tx = optax.adamw(3e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=optim.decay_mask)
    self.state = {'params': params, 'opt_state': tx.init(params),
                  'step': jnp.zeros((), jnp.int32)}
    self.num_params = sum(x.size for x in jax.tree.leaves(params))

    def train_step(state, batch):
      def loss_fn(p):
        logits = model.apply({'params': p}, batch['inputs'])  # [B, T, V]
        return cross_entropy(logits, batch['targets']).mean()

      loss, grads = jax.value_and_grad(loss_fn)(state['params'])
      updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
      return {'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
              'step': state['step'] + 1}, loss

    t0 = time.perf_counter()
    self.step = jax.jit(train_step, donate_argnums=0).lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    cost = self.step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.xla_flops = float(cost.get('flops', 0.0)) if cost else 0.0
    self.flops = analytic_flops_per_token(seq) * self.tokens_per_step
    self.run(2)  # warm-up

  def run(self, steps: int) -> float:
    loss = None
    for _ in range(steps):
      self.state, loss = self.step(self.state, self.batch)
    return float(loss)  # blocks


class Generator:
  """Greedy decoding of NEW tokens after a PROMPT-token prompt with lmjax.decoding.generate."""

  def __init__(self, batch: int, scan: bool = False, params=None):
    self.cfg = model_config('float32', scan=scan, max_len=PROMPT + NEW)
    if params is None:
      import flax.linen as nn
      model = transformer.TransformerLM(self.cfg)
      params = nn.meta.unbox(model.init(jax.random.PRNGKey(0),
                                        jnp.zeros((1, PROMPT), jnp.int32))['params'])
    self.params = params
    self.prompt = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, size=(batch, PROMPT)),
                              jnp.int32)
    self.tokens = batch * NEW
    self.run()  # compile + warm-up

  def run(self):
    out = decoding.generate(self.params, self.prompt, jax.random.PRNGKey(0), config=self.cfg,
                            num_new=NEW, temperature=0.0)
    return np.asarray(out)


def bench_train(args) -> dict:
  ceiling = matmul_ceiling(args.dtype)
  tr = Trainer(args.dtype, args.scan, args.remat)
  times = [t / args.steps for t in time_runs(lambda: tr.run(args.steps), args.repeats)]
  step = statistics.median(times)
  return {'impl': 'lmjax', 'dtype': args.dtype, 'scan': args.scan, 'remat': args.remat,
          'params': tr.num_params, 'compile_s': round(tr.compile_s, 1),
          'step_s': round(step, 4), 'tokens_per_s': round(tr.tokens_per_step / step, 1),
          'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times],
          'gflop_per_step_analytic': round(tr.flops / 1e9, 2),
          'gflop_per_step_xla': round(tr.xla_flops / 1e9, 2),
          'gflops_per_s': round(tr.flops / step / 1e9, 1),
          'matmul_ceiling_gflops': round(ceiling, 1),
          'mfu': round(tr.flops / step / 1e9 / ceiling, 3)}


def bench_generate(args) -> list:
  rows = []
  for b in (1, 8):
    g = Generator(b, args.scan)
    times = time_runs(g.run, args.repeats)
    rows.append({'impl': 'lmjax', 'mode': 'generate', 'batch': b,
                 'tokens_per_s': round(g.tokens / statistics.median(times), 1),
                 'tokens_per_s_all': [round(g.tokens / t, 1) for t in times]})
  return rows


def compare(args) -> list:
  """lmjax and the PyTorch peer in one process, repeats interleaved (same machine load)."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_transformer_lm as peer
  rows = []
  which = args.only.split(',') if args.only else ['float32', 'bfloat16', 'generate']
  for dtype in ('float32', 'bfloat16'):
    if dtype not in which:
      continue
    ceiling = matmul_ceiling(dtype)
    jx = Trainer(dtype, args.scan, args.remat)
    pt = peer.Trainer(dtype)
    tj, tp = [], []
    for _ in range(args.repeats):
      tj += time_runs(lambda: jx.run(args.steps), 1)
      tp += time_runs(lambda: pt.run(args.steps), 1)
    j = jx.tokens_per_step * args.steps / statistics.median(tj)
    p = pt.tokens_per_step * args.steps / statistics.median(tp)
    rows.append({'mode': 'train', 'dtype': dtype, 'scan': args.scan, 'lmjax_tok_s': round(j, 1),
                 'torch_tok_s': round(p, 1), 'ratio': round(j / p, 3),
                 'lmjax_mfu': round(j * analytic_flops_per_token() / 1e9 / ceiling, 3),
                 'torch_mfu': round(p * analytic_flops_per_token() / 1e9 / ceiling, 3),
                 'ceiling_gflops': round(ceiling, 1),
                 'lmjax_all': [round(jx.tokens_per_step * args.steps / t) for t in tj],
                 'torch_all': [round(pt.tokens_per_step * args.steps / t) for t in tp]})
    print(json.dumps(rows[-1]), flush=True)
    del jx, pt
  if 'generate' in which:
    for b in (1, 8):
      jg, pg = Generator(b, args.scan), peer.Generator(b)
      tj, tp = [], []
      for _ in range(args.repeats):
        tj += time_runs(jg.run, 1)
        tp += time_runs(pg.run, 1)
      j, p = jg.tokens / statistics.median(tj), pg.tokens / statistics.median(tp)
      rows.append({'mode': 'generate', 'batch': b, 'scan': args.scan, 'lmjax_tok_s': round(j, 1),
                   'torch_tok_s': round(p, 1), 'ratio': round(j / p, 3),
                   'lmjax_all': [round(jg.tokens / t) for t in tj],
                   'torch_all': [round(pg.tokens / t) for t in tp]})
      print(json.dumps(rows[-1]), flush=True)
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--dtype', choices=sorted(DTYPES), default='float32')
  ap.add_argument('--steps', type=int, default=5, help='train steps per timed repeat')
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--scan', action=argparse.BooleanOptionalAction, default=False,
                  help='scan over layers (lmjax\'s default layout) or, by default here, a Python '
                       'loop of layers: measured faster on CPU for training and decoding')
  ap.add_argument('--remat', choices=sorted(transformer.REMAT_POLICIES), default='none')
  ap.add_argument('--generate', action='store_true',
                  help=f'greedy decode {NEW} tokens after a {PROMPT}-token prompt, batch 1 and 8')
  ap.add_argument('--compare', action='store_true',
                  help='also run the PyTorch peer (benchmarks/torch_transformer_lm.py), '
                       'interleaved; needs torch')
  ap.add_argument('--only', default='', help='with --compare: comma list of float32, bfloat16, '
                                             'generate')
  args = ap.parse_args(argv)
  if args.compare:
    compare(args)
  elif args.generate:
    for row in bench_generate(args):
      print(json.dumps(row))
  else:
    print(json.dumps(bench_train(args)))


if __name__ == '__main__':
  main()
