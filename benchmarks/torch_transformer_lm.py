"""The PyTorch eager peer of benchmarks/transformer_lm.py: the same decoder-only Transformer.

d_model 512, 6 layers, 8 heads, MLP 2048, vocab 8192, learned positions, pre-LayerNorm, tanh-GELU,
tied embeddings, no dropout; sequence 256, batch 8; AdamW. fp32, or bf16 autocast (bf16 matmuls,
fp32 master weights). Greedy generation with a preallocated KV cache, one Python step per token.

Needs torch (an optional benchmark dependency, not in setup.cfg):
  pip install torch==2.13.0+cpu   # or torch==2.13.0 where it has no CUDA dependencies

  python benchmarks/torch_transformer_lm.py --dtype float32
  python benchmarks/torch_transformer_lm.py --generate
"""

import argparse
import json
import math
import os
import statistics
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # do not spin while JAX runs (--compare)

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, D, LAYERS, HEADS, FF, SEQ, BATCH = 8192, 512, 6, 8, 2048, 256, 8
PROMPT, NEW = 16, 128


class Block(nn.Module):

  def __init__(self):
    super().__init__()
    self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
    self.qkv = nn.Linear(D, 3 * D, bias=False)
    self.proj = nn.Linear(D, D, bias=False)
    self.fc1, self.fc2 = nn.Linear(D, FF), nn.Linear(FF, D)

  def forward(self, x, cache=None, pos=0):
    b, t, _ = x.shape
    q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
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
    x = x + self.proj(a.transpose(1, 2).reshape(b, t, D))
    return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate='tanh'))


class TransformerLM(nn.Module):

  def __init__(self, max_len=SEQ):
    super().__init__()
    self.emb = nn.Embedding(VOCAB, D)
    self.pos = nn.Embedding(max_len, D)
    self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
    self.ln_f = nn.LayerNorm(D)
    nn.init.normal_(self.emb.weight, std=D ** -0.5)
    nn.init.normal_(self.pos.weight, std=0.02)

  def forward(self, tokens, caches=None, pos=0):
    t = tokens.shape[1]
    x = self.emb(tokens) * math.sqrt(D) + self.pos(torch.arange(pos, pos + t))
    for i, blk in enumerate(self.blocks):
      x = blk(x, None if caches is None else caches[i], pos)
    return self.ln_f(x) @ self.emb.weight.t()  # tied embeddings, [B, T, V]


class Trainer:

  def __init__(self, dtype='float32', batch=BATCH, seq=SEQ):
    torch.manual_seed(0)
    self.model = TransformerLM()
    decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
    self.opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1},
                                  {'params': no_decay, 'weight_decay': 0.0}],
                                 lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    self.bf16 = dtype == 'bfloat16'
    data = torch.randint(0, VOCAB, (batch, seq + 1))
    self.inputs, self.targets = data[:, :-1], data[:, 1:]
    self.tokens_per_step = batch * seq
    self.run(2)  # warm-up

  def run(self, steps):
    loss = None
    for _ in range(steps):
      with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
        logits = self.model(self.inputs)
      loss = F.cross_entropy(logits.float().view(-1, VOCAB), self.targets.reshape(-1))
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      self.opt.step()
    return float(loss.detach())


class Generator:

  def __init__(self, batch):
    torch.manual_seed(0)
    self.model = TransformerLM(max_len=PROMPT + NEW).eval()
    self.prompt = torch.randint(0, VOCAB, (batch, PROMPT))
    self.tokens = batch * NEW
    self.run()

  @torch.inference_mode()
  def run(self):
    b = self.prompt.shape[0]
    caches = [(torch.zeros(b, HEADS, PROMPT + NEW, D // HEADS),
               torch.zeros(b, HEADS, PROMPT + NEW, D // HEADS)) for _ in range(LAYERS)]
    logits = self.model(self.prompt, caches, 0)
    tok = logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
    out = [tok]
    for i in range(1, NEW):
      logits = self.model(tok, caches, PROMPT + i - 1)
      tok = logits[:, -1].argmax(-1, keepdim=True)
      out.append(tok)
    return torch.cat(out, 1)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--generate', action='store_true')
  args = ap.parse_args(argv)
  if args.generate:
    for b in (1, 8):
      g = Generator(b)
      times = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        g.run()
        times.append(time.perf_counter() - t0)
      print(json.dumps({'impl': 'torch', 'mode': 'generate', 'batch': b,
                        'tokens_per_s': round(g.tokens / statistics.median(times), 1)}))
    return
  tr = Trainer(args.dtype)
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    tr.run(args.steps)
    times.append((time.perf_counter() - t0) / args.steps)
  step = statistics.median(times)
  print(json.dumps({'impl': 'torch', 'dtype': args.dtype, 'torch': torch.__version__,
                    'threads': torch.get_num_threads(), 'step_s': round(step, 4),
                    'tokens_per_s': round(tr.tokens_per_step / step, 1)}))


if __name__ == '__main__':
  main()
