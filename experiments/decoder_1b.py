"""A ~1B-parameter decoder-only Transformer for pods: the planning and scale-out config.

Shape: d_model 2048, 16 layers, 16 heads (head dim 128), d_ff 8192 (GELU MLP), rotary positions,
untied 32k-vocab embedding and output: 0.94B parameters. bfloat16 matmuls with float32 params and
AdamW state, full rematerialisation of each scanned layer, and FSDP over every device
(mesh data=1, fsdp=-1: parameters, gradients and optimizer state split along 'embed').
Global batch 256 x 2048 tokens (0.5M tokens per step).

Data: config.data reads TFDS lm1b (prepared beforehand) with a 32k SentencePiece vocabulary,
the largest corpus the in-memory loader handles comfortably; point it at a bigger one for a real
1B run (Chinchilla-optimal is ~20B tokens: 40k steps at this batch).

  # plan on a CPU, 64 simulated devices (a v5p-128 / 64-chip slice):
  python -m lmjax.plan --config=experiments/decoder_1b.py --num_devices=64 --hbm_gib=95
  # run on a Cloud TPU pod:
  python launch/tpu_vm.py --name=lmjax-1b --zone=us-east5-a --project=PROJECT \
      --accelerator=v5p-128 --config=experiments/decoder_1b.py --workdir=gs://BUCKET/decoder_1b

Planned on 2 CPU cores, 64 simulated devices, mesh fsdp=64 (XLA CPU figures; a TPU compile differs):
  0.937B parameters. Per device: params 56.3 MiB + AdamW state 112.7 MiB (total/64 = 55.8 +
  111.7 MiB; the excess is the replicated MLP biases). Compiled step (XLA CPU memory analysis):
  arguments 169 MiB, temps 6.02 GiB, args + temps 6.18 GiB: far under a v5p chip's 95 GiB, so a
  v5p-128 has room for a larger per-device batch or remat='dots'. FLOPs per step 3.88e15
  (6.06e13 per device; 6·P·tokens + attention without remat 3.16e15): >= 0.13 s/step at
  459 bf16 TFLOP/s per chip. Compile 16-22 s (lowering 0.6 s), 0.7 GB RSS, 21-28 s wall.

Variants: '' (the 1B model), 'tiny' (d 64, 2 layers, synthetic data; seconds; for the tests).
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  c = config_base.base_config()
  c.seq_len = 2048
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_train_steps = 40_000
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint.every = 1000
  c.model.update(d_model=2048, num_heads=16, num_layers=16, d_ff=8192, max_len=2048,
                 dropout_rate=0.0, position='rotary', tie_embeddings=False, scan_layers=True,
                 remat='full', dtype='bfloat16')
  c.data.update(source='tfds', name='lm1b', train_split='train', eval_split='test',
                tokenizer='sentencepiece', vocab_size=32_000, spm_type='unigram')
  c.optimizer.update(learning_rate=3e-4, warmup_steps=2000, schedule='cosine', min_lr_ratio=0.1,
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
    # Synthetic data and a word vocabulary; data.vocab_size (divisible by 8) is what
    # lmjax.plan uses, since it reads no data.
    c.data.update(source='synthetic', name='', tokenizer='word', vocab_size=512,
                  eval_split='validation', synthetic_lines=2000, synthetic_eval_lines=200)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=2)
  elif arg:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  return c
