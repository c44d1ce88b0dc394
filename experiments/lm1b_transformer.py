"""The Flax lm1b example's decoder-only Transformer on the One Billion Word Benchmark.

Sizes from flax/examples/lm1b/configs/default.py: 6 layers, d_model 512, d_ff 2048, 8 heads,
sequences of 128 tokens, batch 256 (32 per device on a v3-8 in the example), sinusoidal
positions, untied output layer, dropout 0.1 (attention 0.1), bfloat16, AdamW (b2 0.98,
eps 1e-9, weight decay 0.1) with 1000 warmup steps into an inverse-square-root decay from a
peak of 0.0016 (the example's 0.05 * 1000^-0.5), 500k steps. Differences: a 32k SentencePiece
vocabulary (the example: 30k), trained by lmjax on the training split; windows of the
concatenated token stream instead of packed sentences; weight decay masked off biases and
LayerNorm; perplexity over every token of the test split, <eos> included.

Data: TFDS lm1b, prepared beforehand (tfds build lm1b, or TFDS_DATA_DIR / config.data.data_dir);
lm1b is stored as tfrecord, so the `tf` extra is needed (pip install -e .[tf]).

  python -m lmjax.main --config=experiments/lm1b_transformer.py --workdir=gs://BUCKET/lm1b
  # on a TPU VM slice (data parallel over all devices):
  python launch/tpu_vm.py --name=lmjax-lm1b --zone=ZONE --project=PROJECT --accelerator=v5p-8 \
      --config=experiments/lm1b_transformer.py --workdir=gs://BUCKET/lm1b
  # plan (no data needed):
  python -m lmjax.plan --config=experiments/lm1b_transformer.py --num_devices=8

Planned on 2 CPU cores, 8 simulated devices (mesh data=8):
  51.7M parameters (replicated: pure data parallelism). Per device: params 197 MiB + AdamW
  state 394 MiB; compiled step: arguments 591 MiB, temps 3.85 GiB, args + temps 4.43 GiB.
  FLOPs per step 7.16e12 (8.95e11 per device; 6·P·tokens + attention 7.09e12). Compile 12 s.

Variants: '' (the example), 'tiny' (synthetic data, d 32; seconds; for the tests).
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  c = config_base.base_config()
  c.seq_len = 128
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_train_steps = 500_000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint.every = 10_000
  c.model.update(d_model=512, num_heads=8, num_layers=6, d_ff=2048, max_len=512,
                 dropout_rate=0.1, attention_dropout_rate=0.1, position='sinusoidal',
                 tie_embeddings=False, scan_layers=True, remat='none', dtype='bfloat16')
  c.data.update(source='tfds', name='lm1b', train_split='train', eval_split='test',
                tokenizer='sentencepiece', vocab_size=32_000, spm_type='unigram',
                spm_input_sentence_size=1_000_000)  # a sample, as the Flax example does
  c.optimizer.update(name='adamw', learning_rate=0.05 * 1000 ** -0.5, warmup_steps=1000,
                     schedule='rsqrt', b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.1,
                     grad_clip_norm=0.0)
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  c.sample.update(num_samples=4, prompt_tokens=3, max_new_tokens=50, temperature=0.6, top_k=20,
                  top_p=1.0)
  if arg == 'tiny':
    c.seq_len = 32
    c.batch_size = 8
    c.eval_batch_size = 16
    c.num_train_steps = 4
    c.log_every = 2
    c.eval_every = 4
    c.checkpoint.every = 4
    c.model.update(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_len=64)
    c.data.update(source='synthetic', name='', tokenizer='word', vocab_size=512,
                  eval_split='validation', synthetic_lines=2000, synthetic_eval_lines=200)
    c.optimizer.update(warmup_steps=2)
    c.sample.update(num_samples=1, max_new_tokens=4)
  elif arg:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  return c
