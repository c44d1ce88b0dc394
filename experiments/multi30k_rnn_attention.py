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
Measured here: see the end of this docstring once a run has finished.
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
