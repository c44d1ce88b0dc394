"""Transformer base and big on WMT'14 English-German (Vaswani et al. 2017, Table 3).

Sizes from the paper: base d_model 512, d_ff 2048, 8 heads, 6+6 layers, dropout 0.1, 65M
parameters; big d_model 1024, d_ff 4096, 16 heads, dropout 0.3, 213M parameters. Adam
(b1 0.9, b2 0.98, eps 1e-9), label smoothing 0.1, warmup 4000 steps into an inverse square root
decay (lr = d_model^-0.5 * min(step^-0.5, step * 4000^-1.5): peak 7e-4 base, 4.9e-4 big),
~25k source + 25k target tokens per step (here: 512 packed rows of 64 tokens, ~27k per side),
100k (base) / 300k (big) steps, beam 4 with length penalty alpha 0.6, maximum output length
source + 50. Published newstest2014 en->de BLEU: 27.3 (base), 28.4 (big) — tokenized BLEU with
compound splitting; sacreBLEU on detokenized text is typically ~0.5-1 lower.

Differences: a joint 32k SentencePiece unigram model trained by lmjax on a 10M-sentence sample
(the paper: 37k shared BPE); pre-LayerNorm blocks (the paper: post-LN); packed rows with
segment masks; weight decay 0 (the paper's Adam); BLEU is sacreBLEU 13a, the comparable
figure today.

Data: TFDS wmt14_translate/de-en, prepared beforehand (`tfds build wmt14_translate/de-en`); it
is stored as tfrecord, so the `tf` extra is needed (pip install -e .[tf]). Direction: en->de
(source_lang en, target_lang de).

  # a v5p-32 slice: data parallel over all devices, params and optimizer state FSDP-sharded
  python launch/tpu_vm.py --name=lmjax-wmt14 --zone=ZONE --project=PROJECT \
      --accelerator=v5p-32 --config=experiments/wmt14_transformer.py:big \
      --workdir=gs://BUCKET/wmt14_big
  # plan the step for a device count (no data needed):
  python -m lmjax.plan --config=experiments/wmt14_transformer.py:base --num_devices=8

Nothing here trains on the 2-core CPU machine; the variants are checked by building and
compiling their train step with lmjax.plan on 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m lmjax.plan
--config=experiments/wmt14_transformer.py:VARIANT --num_devices=8), measured here:
  base: 60.5M parameters (the paper's 65M has a 37k vocabulary), mesh data=8; per device
    params 231 MiB + Adam 461 MiB, args + temps 7.51 GiB; 1.22e13 FLOPs per step;
    lower 16 s, compile 90 s.
  big: 209.1M parameters (paper 213M), mesh data=2 x fsdp=4; per device params 200 MiB +
    Adam 399 MiB, args + temps 11.75 GiB; 4.18e13 FLOPs per step; lower 21 s, compile 158 s.

Variants: base, big, tiny (synthetic data; seconds; tests).
"""

from lmjax import config_base

VARIANTS = ('base', 'big', 'tiny')


def get_config(arg: str = 'base'):
  arg = arg or 'base'
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} ({", ".join(VARIANTS)})')
  c = config_base.translation_config()
  c.data.update(source='tfds', name='wmt14_translate/de-en', train_split='train',
                eval_split='validation', test_split='test', source_lang='en',
                target_lang='de', vocab_size=32_000, spm_type='unigram',
                spm_input_sentence_size=10_000_000, max_source_len=64, max_target_len=64)
  c.seq_len = 64
  c.batch_size = 512
  c.eval_batch_size = 512
  c.num_train_steps = 100_000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint.every = 5000
  c.label_smoothing = 0.1
  c.model.update(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6,
                 d_ff=2048, max_len=256, dropout_rate=0.1, dtype='bfloat16')
  c.optimizer.update(name='adam', learning_rate=512 ** -0.5 * 4000 ** -0.5, warmup_steps=4000,
                     schedule='rsqrt', b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0,
                     grad_clip_norm=0.0)
  c.decode.update(beam_size=4, alpha=0.6, batch_size=256, max_len_ratio=1.0,
                  max_len_offset=50)
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  if arg == 'big':
    c.model.update(d_model=1024, num_heads=16, d_ff=4096, dropout_rate=0.3)
    c.num_train_steps = 300_000
    c.optimizer.learning_rate = 1024 ** -0.5 * 4000 ** -0.5
    c.mesh.update(data=-1, fsdp=4, tensor=1)  # 213M params: shard params/Adam over 4 devices
  elif arg == 'tiny':
    c.data.update(source='synthetic', name='', vocab_size=100, max_source_len=32,
                  max_target_len=32, synthetic_lines=500, synthetic_eval_lines=16)
    c.seq_len = 32
    c.batch_size = c.eval_batch_size = 8
    c.num_train_steps = 4
    c.log_every = c.eval_every = c.checkpoint.every = 2
    c.model.update(d_model=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                   d_ff=64, max_len=32, dtype='float32')
    c.optimizer.update(warmup_steps=2)
    c.decode.update(batch_size=8, max_len_offset=5)
  return c
