"""Character-level Transformer LM on tiny-shakespeare (Karpathy's char-rnn input.txt).

The file is split by lines: the last 10% for evaluation, as char-rnn and nanoGPT do (nanoGPT
splits by characters, so its numbers are close but not identical). Characters come from a
SentencePiece 'char' model trained at the start of the run and saved in the workdir; each line
ends with <eos>, which plays the newline.

  python -m lmjax.main --config=experiments/tinyshakespeare.py \
      --config.data.train=../shared/data/tinyshakespeare/input.txt --workdir=/tmp/shakespeare

Published for orientation: nanoGPT's shakespeare_char (6 layers, d 384, context 256, 5000 steps
on a GPU) reports validation loss 1.47 nats/char (ppl 4.35).
Measured here (2 CPU cores, the command above, 1,000 steps of 32 x 128 characters): eval ppl
5.652 per character (1.732 nats/char, 2.50 bits per byte) over 99,152 eval tokens; ppl 6.075 at
step 500. 3,059 s wall, but the run was niced behind a PTB run most of the time: 12 min user
CPU; 7,800 tokens/s in the stretch it had the machine (about 9 min for the run at that rate).
Variants: '' (CPU, ~10 min on an idle 2-core machine), 'tiny' (tests).
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  c = config_base.base_config()
  c.data.update(source='text', tokenizer='char', eval_fraction=0.1)
  c.seq_len = 128
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint.every = 500
  c.model.update(d_model=192, num_heads=4, num_layers=3, d_ff=768, max_len=256,
                 dropout_rate=0.1, position='rotary', scan_layers=False)
  c.optimizer.update(learning_rate=1e-3, warmup_steps=100, b2=0.99, weight_decay=0.1)
  c.sample.update(prompt_tokens=12, max_new_tokens=80)
  if arg == 'tiny':
    c.seq_len = 32
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 4
    c.model.update(d_model=32, num_heads=2, num_layers=1, d_ff=64, max_len=64)
  elif arg:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  return c
