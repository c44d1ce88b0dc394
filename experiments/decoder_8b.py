"""A ~8B-parameter decoder-only Transformer for pods: the planning and scale-out config.

Shape: d_model 4096, 32 layers, 32 heads (head dim 128), d_ff 21504 (a 2-matrix GELU MLP with
the parameter count of Llama-3-8B's 3-matrix SwiGLU MLP of width 14336), rotary positions,
untied 32k-vocab embedding and output: 8.05B parameters. bfloat16 matmuls with float32 params
and AdamW state (16 bytes per parameter: 129 GB in all, so FSDP is not optional), full
rematerialisation of each scanned layer, FSDP over every device (mesh data=1, fsdp=-1).
Global batch 512 x 2048 tokens (1M tokens per step).

Data: config.data reads TFDS lm1b with a 32k SentencePiece vocabulary, as a stand-in; point it
at a bigger corpus for a real 8B run (~160B tokens is Chinchilla-optimal: 160k steps).

  # plan on a CPU, 256 simulated devices (a v5p-512 / 256-chip slice):
  python -m lmjax.plan --config=experiments/decoder_8b.py --num_devices=256 --hbm_gib=95
  # run on a Cloud TPU pod:
  python launch/tpu_vm.py --name=lmjax-8b --zone=us-east5-a --project=PROJECT \
      --accelerator=v5p-512 --config=experiments/decoder_8b.py --workdir=gs://BUCKET/decoder_8b

Planned on 2 CPU cores, 256 simulated devices, mesh fsdp=256 (XLA CPU figures):
  8.048B parameters. Per device: params 122.5 MiB + AdamW state 245.1 MiB (total/256 = 119.9 +
  239.9 MiB). Compiled step (XLA CPU memory analysis): arguments 368 MiB, temps 7.50 GiB,
  args + temps 7.86 GiB. FLOPs per step 6.48e16 (2.53e14 per device; 6·P·tokens + attention
  without remat 5.32e16): >= 0.55 s/step at 459 bf16 TFLOP/s per chip. Compile 25-36 s
  (lowering 0.5-1 s), 1.1 GB RSS, 30-43 s wall: 256 devices compile without trouble on 2 cores.
  On 64 devices (v5p-128, --num_devices=64; batch 8 per device): params 482 MiB + state
  965 MiB, temps 27.2 GiB, args + temps 28.6 GiB (fits 95 GiB), 1.01e15 FLOPs per device,
  compile 12 s.

Variants: '' (the 8B model), 'tiny' (d 64, 2 layers, synthetic data; seconds; for the tests).
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  c = config_base.base_config()
  c.seq_len = 2048
  c.batch_size = 512
  c.eval_batch_size = 512
  c.num_train_steps = 160_000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint.every = 1000
  c.model.update(d_model=4096, num_heads=32, num_layers=32, d_ff=21504, max_len=2048,
                 dropout_rate=0.0, position='rotary', tie_embeddings=False, scan_layers=True,
                 remat='full', dtype='bfloat16')
  c.data.update(source='tfds', name='lm1b', train_split='train', eval_split='test',
                tokenizer='sentencepiece', vocab_size=32_000, spm_type='unigram')
  c.optimizer.update(learning_rate=2e-4, warmup_steps=2000, schedule='cosine', min_lr_ratio=0.1,
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
  elif arg:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  return c
