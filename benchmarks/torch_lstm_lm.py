"""The PyTorch eager peer of benchmarks/lstm_lm.py: Zaremba et al.'s PTB 'medium' LSTM LM.

Embedding(10000, 650) -> dropout 0.5 -> nn.LSTM(650, 650, 2 layers, dropout 0.5; oneDNN on CPU)
-> dropout 0.5 -> Linear(650, 10000); bptt 35, batch 20; uniform(±0.05) init; the NLL summed over
the window's time steps and averaged over the batch (lmjax's loss_normalization='sequences');
SGD lr 1, clip_grad_norm 5; the hidden state carried between windows and detached (truncated
BPTT). fp32. --cell gru swaps nn.LSTM for nn.GRU (the peer of ptb_lstm.py:gru_medium; the
reset gate applied after the recurrent matmul, as lmjax's GRU does).

Needs torch (an optional benchmark dependency, not in setup.cfg):
  pip install torch==2.13.0+cpu   # or torch==2.13.0 where it has no CUDA dependencies

  python benchmarks/torch_lstm_lm.py [--json]
  python benchmarks/torch_lstm_lm.py --tiny --json   # ptb_lstm.py:tiny's sizes, vocabulary 512
  python benchmarks/torch_lstm_lm.py --cell gru      # nn.GRU at the same sizes

--json prints one JSON line (tokens_per_s, first_step_s, peak_rss_mb: ru_maxrss; compile_s is
null, nothing compiles in eager mode) on stdout and nothing else: benchmarks/compare.py runs it
that way beside lmjax's benchmarks/lstm_lm.py, each in its own process.
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # do not spin while JAX runs (--peer)

import torch
import torch.nn as nn
import torch.nn.functional as F

LR, CLIP = 1.0, 5.0


@dataclasses.dataclass(frozen=True)
class Dims:
  """Model and batch sizes (defaults: experiments/ptb_lstm.py:medium, PTB's vocabulary)."""
  vocab: int = 10000
  units: int = 650
  layers: int = 2
  bptt: int = 35
  batch: int = 20
  dropout: float = 0.5
  init_scale: float = 0.05
  cell: str = 'lstm'  # or 'gru'


MEDIUM = Dims()
TINY = Dims(vocab=512, units=16, bptt=8, batch=4, dropout=0.0, init_scale=0.1)  # ptb_lstm tiny


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class LSTMLM(nn.Module):

  def __init__(self, dims: Dims = MEDIUM):
    super().__init__()
    self.emb = nn.Embedding(dims.vocab, dims.units)
    self.drop = nn.Dropout(dims.dropout)
    rnn = {'lstm': nn.LSTM, 'gru': nn.GRU}[dims.cell]
    self.rnn = rnn(dims.units, dims.units, dims.layers, dropout=dims.dropout, batch_first=True)
    self.out = nn.Linear(dims.units, dims.vocab)
    for p in self.parameters():
      nn.init.uniform_(p, -dims.init_scale, dims.init_scale)

  def forward(self, tokens, hidden):
    x = self.drop(self.emb(tokens))  # [B, T, D]
    x, hidden = self.rnn(x, hidden)  # [B, T, H]
    return self.out(self.drop(x)), hidden  # [B, T, V]


class Trainer:
  """One SGD step per window on a fixed random batch, hidden state carried and detached."""

  def __init__(self, dims: Dims = MEDIUM):
    torch.manual_seed(0)
    self.model = LSTMLM(dims).train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
    batch, seq, self.vocab = dims.batch, dims.bptt, dims.vocab
    data = torch.randint(0, self.vocab, (batch, seq + 1))
    self.inputs, self.targets = data[:, :-1], data[:, 1:]
    zeros = lambda: torch.zeros(dims.layers, batch, dims.units)
    self.hidden = (zeros(), zeros()) if dims.cell == 'lstm' else zeros()
    self.batch = batch
    self.tokens_per_step = batch * seq
    t0 = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - t0
    self.run(1)  # warm-up: two steps in all

  def run(self, steps):
    loss = None
    for _ in range(steps):
      # truncated BPTT boundary
      hidden = (tuple(h.detach() for h in self.hidden) if isinstance(self.hidden, tuple)
                else self.hidden.detach())
      logits, self.hidden = self.model(self.inputs, hidden)
      loss = F.cross_entropy(logits.view(-1, self.vocab), self.targets.reshape(-1),
                             reduction='sum') / self.batch
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
      self.opt.step()
    return float(loss.detach())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--tiny', action='store_true',
                  help='ptb_lstm.py:tiny\'s sizes, vocabulary 512 (seconds; compare.py --dry-run)')
  ap.add_argument('--cell', choices=('lstm', 'gru'), default='lstm')
  ap.add_argument('--json', action='store_true',
                  help='one JSON line on stdout with the standard keys, nothing else')
  args = ap.parse_args(argv)
  dims = dataclasses.replace(TINY if args.tiny else MEDIUM, cell=args.cell)
  tr = Trainer(dims)
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    tr.run(args.steps)
    times.append((time.perf_counter() - t0) / args.steps)
  step = statistics.median(times)
  row = {'impl': 'torch', 'cell': args.cell, 'dtype': 'float32', 'torch': torch.__version__,
         'threads': torch.get_num_threads(), 'step_s': round(step, 4),
         'tokens_per_s': round(tr.tokens_per_step / step, 1),
         'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times]}
  if args.json:
    row.update(dims=dataclasses.asdict(dims), compile_s=None,
               first_step_s=round(tr.first_step_s, 3), peak_rss_mb=round(peak_rss_mb(), 1),
               loadavg=[round(x, 2) for x in os.getloadavg()])
  print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
