"""Attention RNN encoder-decoder on Multi30k en->de (Bahdanau et al. 2015; Luong et al. 2015).

A bidirectional LSTM encoder (256 units per direction) and an LSTM decoder (512) with Luong
"general" attention and input feeding; 256-wide embeddings shared by source, target and the
output projection over the joint 8k SentencePiece vocabulary of the Transformer configs.
Batches of 64 pairs sorted by length and padded to a multiple of 4 tokens (RNNs take one pair
per row, so no packing).

  python -m lmjax.main --config=experiments/multi30k_rnn_attention.py --workdir=DIR \
      --config.data.train=../shared/data/multi30k/raw/train \
      --config.data.eval=../shared/data/multi30k/raw/val \
      --config.data.test=../shared/data/multi30k/raw/test_2016_flickr

Variants: '' (LSTM, luong_general), bahdanau, gru, de_en, tiny (tests).
Measured here ('' variant, en->de; 2 CPU cores shared with other jobs; the command above with
--config.decode.beam_size=0, i.e. no BLEU inside the loop, then lmjax.translate, beam 4,
alpha 0.6, on the step-5000 checkpoint):
  test_2016_flickr: sacreBLEU 35.37, chrF 59.43; target perplexity 7.585 over 15,991 tokens
    (BLEU nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0)
  val: sacreBLEU 34.54, chrF 58.16; perplexity 7.909 over 17,177 tokens (9.446 at step 2500)
  6.26M parameters, 5,000 steps (11 epochs of 64 pairs), 2,584 s of training (43 min wall;
  ~2,100 target tokens/s); 9.4% source / 13.0% target padding.
  Beam-4 decoding of the 1,000 test sentences: 13.7 s with compilation, batch 100.
For comparison, the Transformer small (multi30k_transformer.py) reached 37.28 test BLEU in
69 min.
"""

import ml_collections

from lmjax import config_base

VARIANTS = ('', 'bahdanau', 'gru', 'de_en', 'tiny')


def get_config(arg: str = ''):
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} ({", ".join(v for v in VARIANTS if v)})')
  c = config_base.translation_config()
  c.data.update(source='text', vocab_size=8000, max_source_len=64, max_target_len=64,
                packing=False, pad_multiple=4)
  if arg == 'de_en':
    c.data.update(source_lang='de', target_lang='en')
  c.seq_len = 64
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_train_steps = 5000  # ~11 epochs of 453 steps
  c.log_every = 100
  c.eval_every = 2500
  c.checkpoint.every = 500
  c.label_smoothing = 0.1
  c.model = ml_collections.ConfigDict({
      'name': 'rnn_seq2seq', 'cell': 'lstm', 'embed_dim': 256, 'hidden_size': 512,
      'num_encoder_layers': 1, 'num_decoder_layers': 1, 'attention': 'luong_general',
      'input_feeding': True, 'dropout_rate': 0.3, 'tie_embeddings': True,
      'init': 'uniform', 'init_scale': 0.1, 'max_len': 64, 'dtype': 'float32'})
  c.optimizer.update(name='adam', learning_rate=1e-3, warmup_steps=200, schedule='cosine',
                     weight_decay=0.0, grad_clip_norm=5.0)
  c.decode.update(beam_size=4, alpha=0.6, batch_size=100, max_len_ratio=1.5,
                  max_len_offset=10)
  if arg == 'bahdanau':
    c.model.attention = 'bahdanau'
  elif arg == 'gru':
    c.model.cell = 'gru'
  elif arg == 'tiny':
    c.data.update(source='synthetic', synthetic_lines=300, synthetic_eval_lines=8,
                  vocab_size=100, max_source_len=32, max_target_len=32)
    c.seq_len = 32
    c.batch_size = c.eval_batch_size = 8
    c.num_train_steps = 4
    c.log_every = c.eval_every = c.checkpoint.every = 2
    c.model.update(embed_dim=16, hidden_size=32, max_len=32)
    c.optimizer.warmup_steps = 2
    c.decode.update(beam_size=2, batch_size=8)
  return c
