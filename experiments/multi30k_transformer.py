"""Transformer encoder-decoder on Multi30k (Elliott et al. 2016), en->de and de->en.

Data: the raw Multi30k files (train / val / test_2016_flickr .en .de, 29,000 / 1,014 / 1,000
pairs), tokenized with a joint 8k SentencePiece model trained on the training pairs at the
start of the run. BLEU is sacreBLEU (13a) on detokenized output against the raw references.

  python -m lmjax.main --config=experiments/multi30k_transformer.py:small --workdir=DIR \
      --config.data.train=../shared/data/multi30k/raw/train \
      --config.data.eval=../shared/data/multi30k/raw/val \
      --config.data.test=../shared/data/multi30k/raw/test_2016_flickr

  python -m lmjax.translate --workdir=DIR \
      --input=../shared/data/multi30k/raw/test_2016_flickr.en \
      --reference=../shared/data/multi30k/raw/test_2016_flickr.de > hyp.de

Variants: small (CPU: d256, 3+3 layers), base (Vaswani et al. 2017 base: d512, 6+6 layers),
small_de_en, base_de_en (the other direction), tiny (tests).

Published (for orientation): dmlc/dgl's Transformer example states BLEU 35.82 on Multi30k
(direction and test set not stated); small Transformers on test_2016_flickr en->de are usually
quoted at about 35-38 BLEU. Tokenization and BLEU variants differ between reports.
Measured here (small, en->de; 2 CPU cores shared with other jobs; the command above with
--config.decode.beam_size=0, i.e. no BLEU inside the loop, then lmjax.translate, beam 4,
alpha 0.6, on the step-3000 checkpoint):
  test_2016_flickr: sacreBLEU 37.28, chrF 61.39
    (BLEU nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0)
  val: sacreBLEU 37.37, chrF 60.38; target perplexity 5.751 over 17,177 tokens
  7.57M parameters, 3,000 steps (12.8 epochs, ~1,550 target tokens per step), 4,159 s of
  training (69 min wall); packing leaves 5.8% source / 2.4% target padding. Val perplexity at
  steps 1000 / 2000 / 3000: 8.22 / 5.93 / 5.75.
  Beam-4 decoding of the 1,000 test sentences: 43.1 s with compilation, batch 100, while
  another training run shared the CPU.
"""

from lmjax import config_base

VARIANTS = ('small', 'base', 'small_de_en', 'base_de_en', 'tiny')


def get_config(arg: str = 'small'):
  arg = arg or 'small'
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} ({", ".join(VARIANTS)})')
  c = config_base.translation_config()
  c.data.update(source='text', vocab_size=8000, max_source_len=64, max_target_len=64)
  if arg.endswith('_de_en'):
    c.data.update(source_lang='de', target_lang='en')
  c.seq_len = 64
  c.batch_size = 32  # packed rows of 64 tokens: ~110 pairs, ~1,700 target tokens per step
  c.eval_batch_size = 32
  c.num_train_steps = 3000  # ~13 epochs
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint.every = 500
  c.label_smoothing = 0.1
  c.model.update(d_model=256, num_heads=4, num_encoder_layers=3, num_decoder_layers=3,
                 d_ff=1024, max_len=64, dropout_rate=0.1)
  c.optimizer.update(name='adamw', learning_rate=1e-3, warmup_steps=400, schedule='cosine',
                     b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.01, grad_clip_norm=1.0)
  c.decode.update(beam_size=4, alpha=0.6, batch_size=100, max_len_ratio=1.5,
                  max_len_offset=10)
  if arg.startswith('base'):
    c.model.update(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6,
                   d_ff=2048, dropout_rate=0.3)
    c.batch_size = 64
    c.num_train_steps = 20000
    c.optimizer.update(learning_rate=7e-4, warmup_steps=4000)
  elif arg == 'tiny':
    c.data.update(source='synthetic', synthetic_lines=500, synthetic_eval_lines=16,
                  vocab_size=100, max_source_len=32, max_target_len=32)
    c.seq_len = 32
    c.batch_size = c.eval_batch_size = 8
    c.num_train_steps = 4
    c.log_every = c.eval_every = c.checkpoint.every = 2
    c.model.update(d_model=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                   d_ff=64, max_len=32)
    c.decode.update(beam_size=2, batch_size=8)
  return c
