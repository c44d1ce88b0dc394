"""The PyTorch eager peer of benchmarks/lstm_lm.py: Zaremba et al.'s PTB 'medium' LSTM LM.

Embedding(10000, 650) -> dropout 0.5 -> nn.LSTM(650, 650, 2 layers, dropout 0.5; oneDNN on CPU)
-> dropout 0.5 -> Linear(650, 10000); bptt 35, batch 20; uniform(±0.05) init; the NLL summed over
the window's time steps and averaged over the batch (lmjax's loss_normalization='sequences');
SGD lr 1, clip_grad_norm 5; the hidden state carried between windows and detached (truncated
BPTT). fp32.

Needs torch (an optional benchmark dependency, not in setup.cfg):
  pip install torch==2.13.0+cpu   # or torch==2.13.0 where it has no CUDA dependencies

  python benchmarks/torch_lstm_lm.py
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # do not spin while JAX runs (--peer)

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, UNITS, LAYERS, BPTT, BATCH = 10000, 650, 2, 35, 20
DROPOUT, INIT_SCALE, LR, CLIP = 0.5, 0.05, 1.0, 5.0


class LSTMLM(nn.Module):

  def __init__(self):
    super().__init__()
    self.emb = nn.Embedding(VOCAB, UNITS)
    self.drop = nn.Dropout(DROPOUT)
    self.rnn = nn.LSTM(UNITS, UNITS, LAYERS, dropout=DROPOUT, batch_first=True)
    self.out = nn.Linear(UNITS, VOCAB)
    for p in self.parameters():
      nn.init.uniform_(p, -INIT_SCALE, INIT_SCALE)

  def forward(self, tokens, hidden):
    x = self.drop(self.emb(tokens))  # [B, T, D]
    x, hidden = self.rnn(x, hidden)  # [B, T, H]
    return self.out(self.drop(x)), hidden  # [B, T, V]


class Trainer:
  """One SGD step per window on a fixed random batch, hidden state carried and detached."""

  def __init__(self, batch=BATCH, seq=BPTT):
    torch.manual_seed(0)
    self.model = LSTMLM().train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
    data = torch.randint(0, VOCAB, (batch, seq + 1))
    self.inputs, self.targets = data[:, :-1], data[:, 1:]
    self.hidden = (torch.zeros(LAYERS, batch, UNITS), torch.zeros(LAYERS, batch, UNITS))
    self.batch = batch
    self.tokens_per_step = batch * seq
    self.run(2)  # warm-up

  def run(self, steps):
    loss = None
    for _ in range(steps):
      hidden = tuple(h.detach() for h in self.hidden)  # truncated BPTT boundary
      logits, self.hidden = self.model(self.inputs, hidden)
      loss = F.cross_entropy(logits.view(-1, VOCAB), self.targets.reshape(-1),
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
  args = ap.parse_args(argv)
  tr = Trainer()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    tr.run(args.steps)
    times.append((time.perf_counter() - t0) / args.steps)
  step = statistics.median(times)
  print(json.dumps({'impl': 'torch', 'dtype': 'float32', 'torch': torch.__version__,
                    'threads': torch.get_num_threads(), 'step_s': round(step, 4),
                    'tokens_per_s': round(tr.tokens_per_step / step, 1),
                    'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times]}))


if __name__ == '__main__':
  main()
