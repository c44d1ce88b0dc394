"""A decoder-only Transformer on Penn Treebank at about the LSTM small's parameter count.

The Transformer row of the PTB families table (experiments/ablations/ptb_families.py): the
same word vocabulary (10k, <eos> per line) and the same evaluation as experiments/ptb_lstm.py
(perplexity over every token of the split), a decoder of 4 layers x 256 (d_ff 512) with tied
embeddings, sized so its parameter count is close to the LSTM small's (2 x 200, untied; both
counts are printed by the runs and listed in the table), trained on windows of 128 tokens
with AdamW and cosine decay; dropout 0.3, as PTB overfits quickly.

  python -m lmjax.main --config=experiments/ptb_transformer.py --workdir=/tmp/ptb_tf \
      --config.data.train=../shared/data/ptb/ptb.train.txt \
      --config.data.eval=../shared/data/ptb/ptb.valid.txt \
      --config.data.test=../shared/data/ptb/ptb.test.txt

Variants: '' (the row above), 'tiny' (tests).
Measured here: see the PTB families table in the README once the sweep has run.
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  c = config_base.base_config()
  c.data.update(source='text', tokenizer='word')
  c.model.update(d_model=256, num_heads=4, num_layers=4, d_ff=512, max_len=128,
                 dropout_rate=0.3, position='learned', tie_embeddings=True)
  c.seq_len = 128
  c.batch_size = 32  # 4,096 tokens per step: 227 steps per epoch
  c.eval_batch_size = 32
  c.num_epochs = 20
  c.eval_every = 0  # every epoch
  c.log_every = 100
  c.checkpoint.every = 500
  c.optimizer.update(name='adamw', learning_rate=1e-3, warmup_steps=200, schedule='cosine',
                     weight_decay=0.1, grad_clip_norm=1.0)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  c.sample.num_samples = 0
  if arg == 'tiny':
    c.data.update(source='synthetic', synthetic_lines=200, synthetic_eval_lines=20)
    c.model.update(d_model=32, num_heads=2, num_layers=1, d_ff=64, max_len=32)
    c.seq_len = 32
    c.batch_size = c.eval_batch_size = 4
    c.num_epochs = 0
    c.num_train_steps = 4
  return c
