"""Decoder-only Transformers at 1B and 8B parameters for pods: the planning and scale-out configs.

Both: rotary positions, untied 32k-vocab embedding and output, bfloat16 matmuls with float32
params and AdamW state, full rematerialisation of each scanned layer, FSDP over every device
(mesh data=1, fsdp=-1: parameters, gradients and optimizer state split along 'embed').

| variant | d_model | layers | heads | d_ff | params | batch x seq | lr |
|---|---|---|---|---|---|---|---|
| 1b | 2048 | 16 | 16 | 8192 | 0.937B | 256 x 2048 | 3e-4 |
| 8b | 4096 | 32 | 32 | 21504 | 8.048B | 512 x 2048 | 2e-4 |

The 8B d_ff of a 2-matrix GELU MLP has the parameter count of Llama-3-8B's 3-matrix SwiGLU MLP
of width 14336. Data: config.data reads TFDS lm1b (prepared beforehand) with a 32k SentencePiece
vocabulary as a stand-in; point it at a bigger corpus for a real run (Chinchilla-optimal is
~20B tokens for 1B, ~160B for 8B).

  # plan on a CPU with simulated devices (64: a v5p-128 slice; 256: a v5p-512 slice):
  python -m lmjax.plan --config=experiments/decoder_lm.py:1b --num_devices=64 --hbm_gib=95
  python -m lmjax.plan --config=experiments/decoder_lm.py:8b --num_devices=256 --hbm_gib=95
  # run on a Cloud TPU pod:
  python launch/tpu_vm.py --name=lmjax-1b --zone=us-east5-a --project=PROJECT \
      --accelerator=v5p-128 --config=experiments/decoder_lm.py:1b --workdir=gs://BUCKET/1b

Planned here (2 CPU cores, XLA CPU memory analysis; a TPU compile schedules memory differently):

1b on 64 devices, mesh fsdp=64: per device params 56.3 MiB + AdamW state 112.7 MiB (total/64 =
  55.8 + 111.7 MiB; the excess is the replicated MLP biases). Compiled step: arguments 169 MiB,
  temps 6.02 GiB, args + temps 6.18 GiB. FLOPs per step 3.88e15 (6.06e13 per device; 6·P·tokens
  + attention without remat 3.16e15): >= 0.13 s/step at 459 bf16 TFLOP/s per chip. Compile
  16-22 s, 0.7 GB RSS.
8b on 256 devices, mesh fsdp=256: per device params 122.5 MiB + AdamW state 245.1 MiB
  (total/256 = 119.9 + 239.9 MiB). Compiled step: arguments 368 MiB, temps 7.50 GiB, args +
  temps 7.86 GiB. FLOPs per step 6.48e16 (2.53e14 per device; 6·P·tokens + attention without
  remat 5.32e16). Compile 25-36 s, 1.1 GB RSS. On 64 devices: params 482 MiB + state 965 MiB,
  temps 27.2 GiB, args + temps 28.6 GiB, 1.01e15 FLOPs per device, compile 12 s.

Variants: '1b' (default), '8b', 'tiny' (d 64, 2 layers, synthetic data; seconds; for the tests),
'bench': the CPU benchmark model of benchmarks/transformer_lm.py and its PyTorch peer
benchmarks/torch_transformer_lm.py (benchmarks/README.md, "Decoder-only Transformer"): d_model
512, 6 layers, 8 heads, d_ff 2048, vocabulary 8192, learned positions, tied embeddings,
pre-LayerNorm, tanh-GELU, no dropout, float32 (--config.model.dtype=bfloat16: bf16 matmuls with
f32 accumulation), scanned layers, no remat; sequence 256, batch 8; AdamW lr 3e-4 constant, b2
0.95, eps 1e-8, weight decay 0.1 off biases and LayerNorm, no gradient clipping (as the peer).
The benchmark passes config.data.vocab_size (8192) to lmjax.steps.prepare, so no data is read
(lmjax.main would train it on the synthetic source, whose word vocabulary sets the size).

  PYTHONPATH=. python benchmarks/transformer_lm.py                  # times this config's step
"""

from lmjax import config_base

VARIANTS = ('1b', '8b', 'tiny', 'bench')

#         d_model, layers, heads, d_ff, batch, steps, lr, warmup
SIZES = {'1b': (2048, 16, 16, 8192, 256, 40_000, 3e-4, 2000),
         '8b': (4096, 32, 32, 21504, 512, 160_000, 2e-4, 2000)}


def get_config(arg: str = '1b'):
  arg = arg or '1b'
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} {VARIANTS}')
  if arg == 'bench':
    return bench_config()
  d, layers, heads, d_ff, batch, steps, lr, warmup = SIZES['1b' if arg == 'tiny' else arg]
  c = config_base.base_config()
  c.seq_len = 2048
  c.batch_size = batch
  c.eval_batch_size = batch
  c.num_train_steps = steps
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint.every = 1000
  c.model.update(d_model=d, num_heads=heads, num_layers=layers, d_ff=d_ff, max_len=2048,
                 dropout_rate=0.0, position='rotary', tie_embeddings=False, scan_layers=True,
                 remat='full', dtype='bfloat16')
  c.data.update(source='tfds', name='lm1b', train_split='train', eval_split='test',
                tokenizer='sentencepiece', vocab_size=32_000, spm_type='unigram',
                spm_input_sentence_size=1_000_000)
  c.optimizer.update(learning_rate=lr, warmup_steps=warmup, schedule='cosine', min_lr_ratio=0.1,
                     b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0)
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  c.sample.num_samples = 0  # sampling gathers the parameters onto one host
  if arg == 'tiny':
    c.seq_len = 32
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 4
    c.log_every = 2
    c.eval_every = 4
    c.checkpoint.every = 4
    c.model.update(d_model=64, num_heads=4, num_layers=2, d_ff=256, max_len=64)
    c.data.update(source='synthetic', name='', tokenizer='word', vocab_size=512,
                  eval_split='validation', synthetic_lines=2000, synthetic_eval_lines=200)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=2)
  return c


def bench_config():
  """The benchmark model (benchmarks/README.md): the PyTorch peer's shapes and optimizer."""
  c = config_base.base_config()
  c.seq_len = 256
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 1000
  c.model.update(d_model=512, num_heads=8, num_layers=6, d_ff=2048, max_len=256,
                 dropout_rate=0.0, attention_dropout_rate=0.0, position='learned',
                 tie_embeddings=True, scan_layers=True, remat='none', dtype='float32')
  c.data.update(source='synthetic', tokenizer='word', vocab_size=8192)
  c.optimizer.update(name='adamw', learning_rate=3e-4, warmup_steps=0, schedule='constant',
                     b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=0.0)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  c.sample.num_samples = 0
  return c
