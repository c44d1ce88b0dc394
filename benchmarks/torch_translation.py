"""The PyTorch peer of benchmarks/translation.py: the Multi30k small Transformer's training step
(PyTorch eager) and Hugging Face beam search (MarianMTModel.generate) at the same sizes.

Training (`Trainer`): experiments/multi30k_transformer.py:small in PyTorch: joint vocabulary
8,000, d_model 256, 4 heads, 3 encoder + 3 decoder layers, MLP 1024 (tanh-GELU), pre-LayerNorm
blocks with a final LayerNorm on each side, sinusoidal positions, √D-scaled embeddings shared by
source, target and the output projection, no attention biases, dropout 0.1 (embeddings, every
residual branch, inside the MLP; none on attention weights); label smoothing 0.1; AdamW (lr 1e-3,
400 warmup steps into a cosine over 3,000, b1 0.9, b2 0.98, eps 1e-9, weight decay 0.01 off
biases and LayerNorm) after global-norm clipping at 1.0. The batch is lmjax's: 32 rows, one
sentence pair of 64 random source and 64 target tokens per row, every target token counted
(2,048 per step); no padding, so no padding masks (causal self-attention in the decoder).
7,569,408 parameters, as lmjax's.

Beam search (`Beamer`): transformers' MarianMTModel with RANDOM weights at the same sizes
(MarianConfig: d_model 256, 4 heads, 3+3 layers, FFN 1024, gelu_new = tanh-GELU, vocabulary 8,000
tied, sinusoidal positions, max_position_embeddings 64 = lmjax's max_len, scaled embeddings),
`generate(num_beams=4, length_penalty=0.6, max_new_tokens=...)` per batch of 100 over the same
source ids as lmjax (benchmarks/mt_sources.py: same lengths, ids, order and batches; each batch
padded to its longest source), max_new_tokens the batch's lmjax decode length
min(64, ceil(1.5 x longest) + 10). Marian is post-LN and has attention biases: +9,216
parameters (q, k, v, out biases of 9 attention blocks) and -1,024 (no final LayerNorms)
against lmjax's layout, 7,577,600 trainable (`params_extra` names the difference; its
sinusoid tables are frozen and not counted). Warm-up: one batch (nothing compiles in eager mode).

Needs torch (and transformers for --beam), optional benchmark dependencies not in setup.cfg:
  pip install torch==2.13.0+cpu transformers

  python benchmarks/torch_translation.py [--steps 5 --repeats 5]            # training
  python benchmarks/torch_translation.py --beam \
      --source=../shared/data/multi30k/raw/test_2016_flickr.en [--repeats 2]
  python benchmarks/torch_translation.py --tiny --json   # multi30k_transformer.py:tiny's sizes

--json prints one JSON line per measurement (tokens_per_s or sentences_per_s, first_step_s or
first_call_s, peak_rss_mb: ru_maxrss; compile_s is null, nothing compiles in eager mode) on
stdout and nothing else: benchmarks/compare.py runs it that way beside lmjax's benchmark, each
in its own process. torch runs with its default thread count (the machine's cores, 2 here).
"""

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as the other peers

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mt_sources  # pylint: disable=g-import-not-at-top  (the same source ids as lmjax's)


@dataclasses.dataclass(frozen=True)
class Dims:
  """The model, batch, optimizer and decoding settings (defaults: multi30k_transformer.py:small)."""
  vocab: int = 8000
  d: int = 256
  heads: int = 4
  enc_layers: int = 3
  dec_layers: int = 3
  ff: int = 1024
  max_len: int = 64
  dropout: float = 0.1
  seq: int = 64
  batch: int = 32
  label_smoothing: float = 0.1
  lr: float = 1e-3
  warmup: int = 400
  total_steps: int = 3000
  betas: tuple = (0.9, 0.98)
  eps: float = 1e-9
  weight_decay: float = 0.01
  clip: float = 1.0
  alpha: float = 0.6  # config.decode
  max_len_ratio: float = 1.5
  max_len_offset: int = 10


SMALL = Dims()
TINY = Dims(vocab=100, d=32, heads=2, enc_layers=1, dec_layers=1, ff=64, max_len=32, seq=32,
            batch=8, total_steps=4)  # multi30k_transformer.py:tiny


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sinusoids(length: int, d: int) -> torch.Tensor:
  """lmjax.models.layers.sinusoidal_positions: [sin | cos] halves, [T, D]."""
  half = d // 2
  inv = torch.exp(-math.log(10000.0) * torch.arange(half) / half)  # [D/2]
  angles = torch.arange(length)[:, None].float() * inv  # [T, D/2]
  return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


class Attention(nn.Module):
  """Multi-head attention without biases (lmjax's MultiHeadAttention); self or cross."""

  def __init__(self, d: int, heads: int, cross: bool):
    super().__init__()
    self.heads, self.cross = heads, cross
    if cross:
      self.q, self.kv = nn.Linear(d, d, bias=False), nn.Linear(d, 2 * d, bias=False)
    else:
      self.qkv = nn.Linear(d, 3 * d, bias=False)
    self.out = nn.Linear(d, d, bias=False)

  def forward(self, x, memory=None, causal=False):
    b, t, d = x.shape
    split = lambda y, n: y.view(b, -1, n, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    if self.cross:
      (q,), (k, v) = split(self.q(x), 1), split(self.kv(memory), 2)  # [B, H, T|S, K]
    else:
      q, k, v = split(self.qkv(x), 3)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, H, T, K]
    return self.out(a.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):

  def __init__(self, dims: Dims):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dims.d, dims.ff), nn.Linear(dims.ff, dims.d)
    self.drop = nn.Dropout(dims.dropout)

  def forward(self, x):
    return self.fc2(self.drop(F.gelu(self.fc1(x), approximate='tanh')))


class EncoderBlock(nn.Module):
  """x + Attn(LN(x)), x + MLP(LN(x)), dropout on each branch (lmjax.models.layers.Block)."""

  def __init__(self, dims: Dims):
    super().__init__()
    self.ln1, self.ln2 = nn.LayerNorm(dims.d), nn.LayerNorm(dims.d)
    self.attn, self.mlp = Attention(dims.d, dims.heads, cross=False), Mlp(dims)
    self.drop = nn.Dropout(dims.dropout)

  def forward(self, x):
    x = x + self.drop(self.attn(self.ln1(x)))
    return x + self.drop(self.mlp(self.ln2(x)))


class DecoderBlock(nn.Module):
  """Self-attention (causal), cross-attention, MLP; pre-LN (lmjax's CrossAttentionBlock)."""

  def __init__(self, dims: Dims):
    super().__init__()
    self.ln_self, self.ln_cross, self.ln_mlp = (nn.LayerNorm(dims.d) for _ in range(3))
    self.self_attn = Attention(dims.d, dims.heads, cross=False)
    self.cross_attn = Attention(dims.d, dims.heads, cross=True)
    self.mlp = Mlp(dims)
    self.drop = nn.Dropout(dims.dropout)

  def forward(self, x, memory):
    x = x + self.drop(self.self_attn(self.ln_self(x), causal=True))
    x = x + self.drop(self.cross_attn(self.ln_cross(x), memory))
    return x + self.drop(self.mlp(self.ln_mlp(x)))


class EncoderDecoder(nn.Module):
  """(source [B, S], decoder inputs [B, T]) -> logits [B, T, V]; one tied embedding."""

  def __init__(self, dims: Dims):
    super().__init__()
    self.d = dims.d
    self.emb = nn.Embedding(dims.vocab, dims.d)
    nn.init.normal_(self.emb.weight, std=dims.d ** -0.5)
    self.register_buffer('pos', sinusoids(dims.max_len, dims.d), persistent=False)
    self.encoder = nn.ModuleList([EncoderBlock(dims) for _ in range(dims.enc_layers)])
    self.decoder = nn.ModuleList([DecoderBlock(dims) for _ in range(dims.dec_layers)])
    self.enc_ln, self.dec_ln = nn.LayerNorm(dims.d), nn.LayerNorm(dims.d)
    self.drop = nn.Dropout(dims.dropout)

  def embed(self, tokens):
    return self.drop(self.emb(tokens) * math.sqrt(self.d) + self.pos[:tokens.shape[1]])

  def forward(self, source, decoder_inputs):
    x = self.embed(source)
    for blk in self.encoder:
      x = blk(x)
    memory = self.enc_ln(x)  # [B, S, D]
    y = self.embed(decoder_inputs)
    for blk in self.decoder:
      y = blk(y, memory)
    return self.dec_ln(y) @ self.emb.weight.t()  # [B, T, V]


def lr_lambda(dims: Dims):
  """lmjax.optim.make_schedule('cosine'): linear warmup from 0, then cosine to 0."""
  def f(step):
    if step < dims.warmup:
      return step / dims.warmup
    span = max(1, dims.total_steps - dims.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(step - dims.warmup, span) / span))
  return f


class Trainer:

  def __init__(self, dims: Dims = SMALL):
    torch.manual_seed(0)
    self.dims = dims
    self.model = EncoderDecoder(dims).train()
    self.num_params = sum(p.numel() for p in self.model.parameters())
    params = list(self.model.parameters())
    decay = [p for p in params if p.ndim > 1]  # weight matrices and the embedding
    no_decay = [p for p in params if p.ndim <= 1]  # biases and LayerNorm
    self.opt = torch.optim.AdamW([{'params': decay, 'weight_decay': dims.weight_decay},
                                  {'params': no_decay, 'weight_decay': 0.0}],
                                 lr=dims.lr, betas=dims.betas, eps=dims.eps)
    self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(dims))
    b, t = dims.batch, dims.seq
    self.source = torch.randint(0, dims.vocab, (b, t))
    target = torch.randint(0, dims.vocab, (b, t + 1))
    self.decoder_inputs, self.targets = target[:, :-1], target[:, 1:]
    self.tokens_per_step = b * t
    t0 = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - t0
    self.loss = self.run(1)  # warm-up: two steps in all

  def run(self, steps):
    loss = None
    for _ in range(steps):
      logits = self.model(self.source, self.decoder_inputs)
      loss = F.cross_entropy(logits.view(-1, self.dims.vocab), self.targets.reshape(-1),
                             label_smoothing=self.dims.label_smoothing)
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.dims.clip)
      self.opt.step()
      self.sched.step()
    return float(loss.detach())


def lmjax_layout_params(dims: Dims) -> int:
  """Parameters of lmjax's encoder-decoder at these sizes (= EncoderDecoder's here)."""
  d, f = dims.d, dims.ff
  mlp = 2 * d * f + f + d
  enc = 4 * d * d + mlp + 2 * 2 * d
  dec = 8 * d * d + mlp + 3 * 2 * d
  return dims.vocab * d + dims.enc_layers * enc + dims.dec_layers * dec + 2 * 2 * d


class Beamer:
  """MarianMTModel (random init) beam search over mt_sources' ids, lmjax's batches."""

  def __init__(self, dims: Dims, source: str, sentences: int, batch_size: int,
               beam_size: int):
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    self.dims, self.beam_size, self.version = dims, beam_size, transformers.__version__
    config = transformers.MarianConfig(
        vocab_size=dims.vocab, decoder_vocab_size=dims.vocab, d_model=dims.d,
        encoder_layers=dims.enc_layers, decoder_layers=dims.dec_layers,
        encoder_attention_heads=dims.heads, decoder_attention_heads=dims.heads,
        encoder_ffn_dim=dims.ff, decoder_ffn_dim=dims.ff, max_position_embeddings=dims.max_len,
        activation_function='gelu_new', dropout=dims.dropout, attention_dropout=0.0,
        activation_dropout=0.0, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, pad_token_id=mt_sources.PAD, eos_token_id=mt_sources.EOS,
        bos_token_id=mt_sources.BOS, decoder_start_token_id=mt_sources.BOS,
        forced_eos_token_id=mt_sources.EOS)
    self.model = transformers.MarianMTModel(config).eval()
    self.num_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
    d, attn_blocks = dims.d, dims.enc_layers + 2 * dims.dec_layers
    self.params_extra = {f'q, k, v, out biases of {attn_blocks} attention blocks':
                             attn_blocks * 4 * d,
                         'no final encoder and decoder LayerNorm (post-LN)': -2 * 2 * d}
    assert self.num_params == lmjax_layout_params(dims) + sum(self.params_extra.values()), (
        self.num_params, lmjax_layout_params(dims))
    self.srcs = mt_sources.sources(dims.vocab, dims.max_len, path=source, n=sentences)
    self.batches = []  # (input ids [B, S] padded to the batch's longest, max_new_tokens)
    for idx in mt_sources.batches(self.srcs, batch_size):
      longest = max(len(self.srcs[i]) for i in idx)
      ids = torch.full((len(idx), longest), mt_sources.PAD, dtype=torch.long)
      for r, i in enumerate(idx):
        ids[r, :len(self.srcs[i])] = torch.tensor(self.srcs[i])
      self.batches.append((ids, mt_sources.decode_steps(longest, dims.max_len,
                                                        dims.max_len_ratio,
                                                        dims.max_len_offset)))
    t0 = time.perf_counter()
    self.generate(*self.batches[0])  # warm-up: one batch
    self.first_call_s = time.perf_counter() - t0
    self.output_tokens_mean = None

  @torch.inference_mode()
  def generate(self, ids, max_new):
    return self.model.generate(input_ids=ids, attention_mask=(ids != mt_sources.PAD).long(),
                               num_beams=self.beam_size, max_new_tokens=max_new,
                               length_penalty=self.dims.alpha, do_sample=False,
                               early_stopping=False)

  def run(self):
    lengths = []
    for ids, max_new in self.batches:
      out = self.generate(ids, max_new)[:, 1:]  # past the decoder start token
      ended = out == mt_sources.EOS
      first_eos = torch.where(ended.any(1), ended.int().argmax(1) + 1,
                              (out != mt_sources.PAD).sum(1))
      lengths += first_eos.tolist()  # eos included, like lmjax's count
    self.output_tokens_mean = round(statistics.mean(lengths), 2)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--steps', type=int, default=5, help='train steps per timed repeat')
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--tiny', action='store_true',
                  help='experiments/multi30k_transformer.py:tiny\'s sizes (compare.py --dry-run)')
  ap.add_argument('--beam', action='store_true', help='Marian generate() instead of training')
  ap.add_argument('--source', default=None, help='with --beam: source text (lengths only)')
  ap.add_argument('--sentences', type=int, default=1000,
                  help='with --beam: random sources without --source, else its first N (0: all)')
  ap.add_argument('--beam_size', type=int, default=4)
  ap.add_argument('--batch_size', type=int, default=100)
  ap.add_argument('--json', action='store_true',
                  help='one JSON line per measurement on stdout, nothing else')
  args = ap.parse_args(argv)
  if args.source and not os.path.isfile(args.source):
    ap.error(f'--source: no such file {args.source}')
  dims = TINY if args.tiny else SMALL
  impl = {'impl': 'torch', 'torch': torch.__version__, 'threads': torch.get_num_threads(),
          'dims': dataclasses.asdict(dims)}
  if args.beam:
    bm = Beamer(dims, args.source or '', args.sentences, args.batch_size, args.beam_size)
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      bm.run()
      times.append(time.perf_counter() - t0)
    n = len(bm.srcs)
    row = {**impl, 'mode': 'beam', 'model': 'MarianMTModel, random init',
           'transformers': bm.version, 'params': bm.num_params, 'params_extra': bm.params_extra,
           'source': args.source or f'{args.sentences} random lengths', 'sentences': n,
           'source_tokens_mean': round(statistics.mean(len(x) for x in bm.srcs), 2),
           'batch': args.batch_size, 'beam_size': args.beam_size, 'alpha': dims.alpha,
           'max_len': dims.max_len, 'decode_steps': [m for _, m in bm.batches],
           'output_tokens_mean': bm.output_tokens_mean, 'compile_s': None,
           'first_call_s': round(bm.first_call_s, 3),
           'sentences_per_s': round(n / statistics.median(times), 2),
           'sentences_per_s_all': [round(n / t, 2) for t in times]}
  else:
    tr = Trainer(dims)
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      tr.run(args.steps)
      times.append((time.perf_counter() - t0) / args.steps)
    step = statistics.median(times)
    assert tr.num_params == lmjax_layout_params(dims), (tr.num_params, lmjax_layout_params(dims))
    row = {**impl, 'mode': 'train', 'dtype': 'float32', 'params': tr.num_params,
           'params_extra': {}, 'batch': [dims.batch, dims.seq],
           'tokens_per_step': tr.tokens_per_step, 'compile_s': None,
           'first_step_s': round(tr.first_step_s, 3), 'step_s': round(step, 4),
           'tokens_per_s': round(tr.tokens_per_step / step, 1),
           'tokens_per_s_all': [round(tr.tokens_per_step / t, 1) for t in times],
           'loss_after_warmup': round(tr.loss, 3)}
  row.update(peak_rss_mb=round(peak_rss_mb(), 1), loadavg=[round(x, 2) for x in os.getloadavg()])
  print(json.dumps(row) if args.json else describe(row), flush=True)


def describe(row: dict) -> str:
  """One readable line of a result row."""
  who = f'torch {row["torch"]} ({row["threads"]} threads)'
  if row['mode'] == 'beam':
    return (f'{who} transformers {row["transformers"]} {row["model"]}, {row["params"]:,} '
            f'params, beam {row["beam_size"]}, {row["sentences"]} sources ({row["source"]}), '
            f'batch {row["batch"]}: {row["sentences_per_s"]:,.2f} sentences/s (samples '
            f'{row["sentences_per_s_all"]}), {row["output_tokens_mean"]} output tokens per '
            f'sentence, first batch {row["first_call_s"]} s, peak RSS '
            f'{row["peak_rss_mb"]:,.0f} MB')
  return (f'{who} train float32, {row["params"]:,} params, batch {row["batch"]}: '
          f'{row["tokens_per_s"]:,.1f} target tokens/s (step {row["step_s"]} s; samples '
          f'{row["tokens_per_s_all"]}), first step {row["first_step_s"]} s, loss '
          f'{row["loss_after_warmup"]}, peak RSS {row["peak_rss_mb"]:,.0f} MB')


if __name__ == '__main__':
  main()
