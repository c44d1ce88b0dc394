"""The PyTorch eager peer of benchmarks/transformer_lm.py: the same decoder-only Transformer.

d_model 512, 6 layers, 8 heads, MLP 2048, vocab 8192, learned positions, pre-LayerNorm, tanh-GELU,
tied embeddings, no dropout; sequence 256, batch 8; AdamW. fp32, or bf16 autocast (bf16 matmuls,
fp32 master weights). Greedy generation with a preallocated KV cache, one Python step per token.

Needs torch (an optional benchmark dependency, not in setup.cfg):
  pip install torch==2.13.0+cpu   # or torch==2.13.0 where it has no CUDA dependencies

  python benchmarks/torch_transformer_lm.py --dtype float32
  python benchmarks/torch_transformer_lm.py --generate [--batch 1,8]
  python benchmarks/torch_transformer_lm.py --tiny --json   # experiments/decoder_lm.py:tiny's sizes

--json prints one JSON line per measurement (tokens_per_s, first_step_s, peak_rss_mb: ru_maxrss;
compile_s is null, nothing compiles in eager mode) on stdout and nothing else: benchmarks/compare.py
runs it that way beside lmjax's benchmark, each in its own process.
"""

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # do not spin while JAX runs (--compare)

import torch
import torch.nn as nn
import torch.nn.functional as F

PROMPT, NEW = 16, 128


@dataclasses.dataclass(frozen=True)
class Dims:
  """The model and batch sizes (defaults: experiments/decoder_lm.py:bench)."""
  vocab: int = 8192
  d: int = 512
  layers: int = 6
  heads: int = 8
  ff: int = 2048
  seq: int = 256
  batch: int = 8


BENCH = Dims()
TINY = Dims(vocab=512, d=64, layers=2, heads=4, ff=256, seq=32, batch=8)  # decoder_lm.py:tiny


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Block(nn.Module):

  def __init__(self, dims: Dims):
    super().__init__()
    d, self.heads = dims.d, dims.heads
    self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
    self.qkv = nn.Linear(d, 3 * d, bias=False)
    self.proj = nn.Linear(d, d, bias=False)
    self.fc1, self.fc2 = nn.Linear(d, dims.ff), nn.Linear(dims.ff, d)

  def forward(self, x, cache=None, pos=0):
    b, t, d = x.shape
    q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(
        2, 0, 3, 1, 4)
    if cache is None:
      a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, K]
    else:
      ck, cv = cache  # [B, H, C, K], preallocated
      ck[:, :, pos:pos + t] = k
      cv[:, :, pos:pos + t] = v
      k, v = ck[:, :, :pos + t], cv[:, :, :pos + t]
      mask = None
      if t > 1:  # the prompt: causal within itself
        mask = torch.ones(t, pos + t, dtype=torch.bool).tril(diagonal=pos)
      a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
    return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate='tanh'))


class TransformerLM(nn.Module):

  def __init__(self, dims: Dims, max_len: int):
    super().__init__()
    d = self.d = dims.d
    self.emb = nn.Embedding(dims.vocab, d)
    self.pos = nn.Embedding(max_len, d)
    self.blocks = nn.ModuleList([Block(dims) for _ in range(dims.layers)])
    self.ln_f = nn.LayerNorm(d)
    nn.init.normal_(self.emb.weight, std=d ** -0.5)
    nn.init.normal_(self.pos.weight, std=0.02)

  def forward(self, tokens, caches=None, pos=0):
    t = tokens.shape[1]
    x = self.emb(tokens) * math.sqrt(self.d) + self.pos(torch.arange(pos, pos + t))
    for i, blk in enumerate(self.blocks):
      x = blk(x, None if caches is None else caches[i], pos)
    return self.ln_f(x) @ self.emb.weight.t()  # tied embeddings, [B, T, V]


class Trainer:

  def __init__(self, dtype='float32', dims: Dims = BENCH):
    torch.manual_seed(0)
    self.vocab, batch, seq = dims.vocab, dims.batch, dims.seq
    self.model = TransformerLM(dims, max_len=seq)
    decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
    self.opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1},
                                  {'params': no_decay, 'weight_decay': 0.0}],
                                 lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    self.bf16 = dtype == 'bfloat16'
    data = torch.randint(0, self.vocab, (batch, seq + 1))
    self.inputs, self.targets = data[:, :-1], data[:, 1:]
    self.tokens_per_step = batch * seq
    t0 = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - t0
    self.run(1)  # warm-up: two steps in all

  def run(self, steps):
    loss = None
    for _ in range(steps):
      with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
        logits = self.model(self.inputs)
      loss = F.cross_entropy(logits.float().view(-1, self.vocab), self.targets.reshape(-1))
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      self.opt.step()
    return float(loss.detach())


class Generator:

  def __init__(self, batch: int, dims: Dims = BENCH, prompt: int = PROMPT, new: int = NEW):
    torch.manual_seed(0)
    self.dims, self.num_prompt, self.new = dims, prompt, new
    self.model = TransformerLM(dims, max_len=prompt + new).eval()
    self.prompt = torch.randint(0, dims.vocab, (batch, prompt))
    self.tokens = batch * new
    t0 = time.perf_counter()
    self.run()
    self.first_call_s = time.perf_counter() - t0

  @torch.inference_mode()
  def run(self):
    b, (p, n), dm = self.prompt.shape[0], (self.num_prompt, self.new), self.dims
    k = dm.d // dm.heads
    caches = [(torch.zeros(b, dm.heads, p + n, k), torch.zeros(b, dm.heads, p + n, k))
              for _ in range(dm.layers)]
    logits = self.model(self.prompt, caches, 0)
    tok = logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
    out = [tok]
    for i in range(1, n):
      logits = self.model(tok, caches, p + i - 1)
      tok = logits[:, -1].argmax(-1, keepdim=True)
      out.append(tok)
    return torch.cat(out, 1)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--tiny', action='store_true',
                  help='experiments/decoder_lm.py:tiny\'s sizes (seconds; compare.py --dry-run)')
  ap.add_argument('--generate', action='store_true')
  ap.add_argument('--batch', default='1,8', help='with --generate: comma list of batch sizes')
  ap.add_argument('--prompt', type=int, default=PROMPT, help='with --generate: prompt tokens')
  ap.add_argument('--new', type=int, default=NEW, help='with --generate: new tokens')
  ap.add_argument('--json', action='store_true',
                  help='one JSON line per measurement on stdout, nothing else')
  args = ap.parse_args(argv)
  dims = TINY if args.tiny else BENCH
  impl = {'impl': 'torch', 'torch': torch.__version__, 'threads': torch.get_num_threads()}
  rows = []
  if args.generate:
    for b in [int(b) for b in args.batch.split(',') if b]:
      g = Generator(b, dims, args.prompt, args.new)
      times = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        g.run()
        times.append(time.perf_counter() - t0)
      rows.append({**impl, 'mode': 'generate', 'batch': b, 'dims': dataclasses.asdict(dims),
                   'prompt': args.prompt, 'new': args.new, 'compile_s': None,
                   'first_call_s': round(g.first_call_s, 3),
                   'tokens_per_s': round(g.tokens / statistics.median(times), 1),
                   'tokens_per_s_all': [round(g.tokens / t, 1) for t in times],
                   'peak_rss_mb': round(peak_rss_mb(), 1)})
  else:
    tr = Trainer(args.dtype, dims)
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      tr.run(args.steps)
      times.append((time.perf_counter() - t0) / args.steps)
    step = statistics.median(times)
    rows.append({**impl, 'mode': 'train', 'dtype': args.dtype, 'dims': dataclasses.asdict(dims),
                 'compile_s': None, 'first_step_s': round(tr.first_step_s, 3),
                 'step_s': round(step, 4), 'tokens_per_s': round(tr.tokens_per_step / step, 1),
                 'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times],
                 'peak_rss_mb': round(peak_rss_mb(), 1)})
  for row in rows:
    row['loadavg'] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(row) if args.json else describe(row), flush=True)


def describe(row: dict) -> str:
  """One readable line of a result row."""
  who = f'torch {row["torch"]} ({row["threads"]} threads)'
  if row['mode'] == 'generate':
    what = f'generate batch {row["batch"]} ({row["new"]} tokens after {row["prompt"]})'
    first = f'first call {row["first_call_s"]} s'
  else:
    what = f'train {row["dtype"]} (step {row["step_s"]} s)'
    first = f'first step {row["first_step_s"]} s'
  return (f'{who} {what}: {row["tokens_per_s"]:,.1f} tokens/s (samples '
          f'{row["tokens_per_s_all"]}), {first}, peak RSS {row["peak_rss_mb"]:,.0f} MB')


if __name__ == '__main__':
  main()
