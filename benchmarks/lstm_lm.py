"""Training throughput of the recurrent LM (lmjax) in Zaremba et al.'s PTB 'medium' configuration.

Model and optimizer are experiments/ptb_lstm.py:medium as the trainer builds them: 2-layer LSTM
650 units, embedding 650, vocab 10,000, untied, dropout 0.5 (non-recurrent connections), bptt 35,
batch 20, uniform(±0.05) init; SGD lr 1 with global-norm clip 5; loss summed over each window's
time steps and averaged over the batch (loss_normalization='sequences'); the carried state is
part of the train state (stateful truncated BPTT). The step is the trainer's own
(lmjax.steps.prepare: the LM task's loss, the jitted train step with the state donated), on a
fixed random token batch.

  PYTHONPATH=. python benchmarks/lstm_lm.py                      # f32 and bf16, fast backward
  PYTHONPATH=. python benchmarks/lstm_lm.py --dtype float32 --no-fast_backward
  PYTHONPATH=. python benchmarks/lstm_lm.py --dtype float32 --json   # one JSON line
  PYTHONPATH=. python benchmarks/lstm_lm.py --peer               # and the PyTorch peer
                                                                 # (benchmarks/torch_lstm_lm.py),
                                                                 # interleaved in one process
  PYTHONPATH=. python benchmarks/lstm_lm.py --variant gru_medium # the GRU at the same sizes
  PYTHONPATH=. python benchmarks/compare.py --cases=lstm_fp32,lstm_bf16,gru_fp32   # processes

--dtype bfloat16 is config.model.dtype='bfloat16': bf16 matmul operands with f32 accumulation
(input, recurrent and output projections); parameters, carries and the cell's elementwise work
stay f32. --dtype takes a comma list; each dtype is one variant. --no-keep_host_memory leaves
glibc's malloc at its defaults (each step then page-faults its temporaries afresh). --json
prints one JSON line (tokens_per_s, compile_s: the step's lower + compile, first_step_s,
peak_rss_mb: ru_maxrss) and nothing else, for one dtype and no --peer; --variant tiny --vocab 512
is the seconds-long size benchmarks/compare.py --dry-run uses.

Timings on shared CPUs are noisy: every number printed is the median over --repeats runs of
--steps steps each, and --peer alternates the lmjax variants and PyTorch within each repeat so
all see the same load.
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys

from lmjax import cli, config_base
from transformer_lm import TrainStep, peak_rss_mb, time_runs  # this script's directory is on sys.path

VOCAB = 10000
DTYPES = ('float32', 'bfloat16')


def experiment_config(dtype: str = 'float32', fast_backward: bool = True,
                      variant: str = 'medium'):
  c = config_base.load_experiment('ptb_lstm.py', variant)
  c.model.dtype = dtype
  c.model.custom_vjp = 'on' if fast_backward else 'off'
  return c


class Trainer(TrainStep):
  """TrainStep of the PTB LSTM config, [batch, bptt] tokens a step."""

  def __init__(self, dtype='float32', fast_backward=True, variant='medium', vocab=VOCAB):
    # The epoch length only sets the lr schedule's values; the shapes need no data.
    super().__init__(experiment_config(dtype, fast_backward, variant), vocab)
    self.name = f'lmjax {dtype}' + ('' if fast_backward else ' autodiff-backward')


def json_line(tr: Trainer, args, kept: bool) -> None:
  times = time_runs(lambda: tr.run(args.steps), args.repeats)
  step = statistics.median(times) / args.steps
  print(json.dumps({
      'impl': tr.name, 'variant': args.variant, 'params': tr.num_params,
      'keep_host_memory': kept, 'compile_s': round(tr.compile_s, 2),
      'first_step_s': round(tr.first_step_s, 3), 'step_s': round(step, 4),
      'tokens_per_s': round(tr.tokens_per_step / step, 1),
      'tokens_per_s_all': [round(tr.tokens_per_step * args.steps / t, 1) for t in times],
      'loss_after_warmup': round(tr.loss, 3), 'peak_rss_mb': round(peak_rss_mb(), 1),
      'loadavg': [round(x, 2) for x in os.getloadavg()]}), flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--dtype', default='float32,bfloat16',
                  help=f'comma list of {", ".join(DTYPES)}: one lmjax variant each')
  ap.add_argument('--fast_backward', action=argparse.BooleanOptionalAction, default=True,
                  help='the hand-written recurrent backward pass (the medium config\'s setting)')
  ap.add_argument('--steps', type=int, default=5, help='train steps per timed repeat')
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--keep_host_memory', action=argparse.BooleanOptionalAction, default=True,
                  help='glibc keeps freed memory, as lmjax.main does by default '
                       '(lmjax.cli.keep_freed_host_memory); process-wide, so the PyTorch peer '
                       'gets it too')
  ap.add_argument('--peer', action='store_true',
                  help='also run the PyTorch peer (benchmarks/torch_lstm_lm.py), interleaved; '
                       'needs torch')
  ap.add_argument('--variant', default='medium',
                  help='experiments/ptb_lstm.py variant (tiny: seconds, for compare.py --dry-run)')
  ap.add_argument('--vocab', type=int, default=VOCAB)
  ap.add_argument('--json', action='store_true',
                  help='one JSON line on stdout and nothing else (one --dtype, no --peer)')
  args = ap.parse_args(argv)
  dtypes = [d for d in args.dtype.split(',') if d]
  if not dtypes or any(d not in DTYPES for d in dtypes):
    ap.error(f'--dtype: a comma list of {", ".join(DTYPES)}, got {args.dtype!r}')
  if args.json and (len(dtypes) != 1 or args.peer):
    ap.error('--json: one --dtype and no --peer')

  kept = args.keep_host_memory and cli.keep_freed_host_memory()
  if args.json:
    json_line(Trainer(dtypes[0], args.fast_backward, args.variant, args.vocab), args, kept)
    return
  print(json.dumps({'keep_host_memory': kept}), flush=True)
  runners = [Trainer(d, args.fast_backward, args.variant, args.vocab) for d in dtypes]
  for r in runners:
    print(json.dumps({'impl': r.name, 'params': r.num_params, 'compile_s': round(r.compile_s, 1),
                      'loss_after_warmup': round(r.loss, 2)}), flush=True)
  if args.peer:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_lstm_lm as peer
    import torch
    cell, _, size = args.variant.rpartition('_')
    pt = peer.Trainer(dataclasses.replace(peer.TINY if size == 'tiny' else peer.MEDIUM,
                                          cell=cell or 'lstm'))
    pt.name = f'torch {torch.__version__} float32 (threads {torch.get_num_threads()})'
    runners.append(pt)

  times = {r.name: [] for r in runners}
  for _ in range(args.repeats):  # interleaved: every runner sees the same load
    for r in runners:
      times[r.name] += time_runs(lambda: r.run(args.steps), 1)

  tok_s = {}
  for r in runners:
    ts = times[r.name]
    tok_s[r.name] = r.tokens_per_step * args.steps / statistics.median(ts)
    print(json.dumps({'impl': r.name, 'step_s': round(statistics.median(ts) / args.steps, 4),
                      'tokens_per_s': round(tok_s[r.name], 1),
                      'tokens_per_s_all': [round(r.tokens_per_step * args.steps / t) for t in ts]}),
          flush=True)
  if args.peer:
    base = tok_s[runners[-1].name]
    summary = {r.name: round(tok_s[r.name] / base, 3) for r in runners[:-1]}
    print(json.dumps({'ratio_vs_torch': summary, 'torch_tokens_per_s': round(base, 1),
                      'loadavg': [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == '__main__':
  main()
