"""The embedded default: a small decoder-only Transformer on the synthetic grammar corpus.

No data file or network needed: lmjax.data.synthetic generates 20k training sentences
(~165k tokens, 70 word types) and 2k eval sentences from a seed.

  python -m lmjax.main --config=experiments/synthetic_lm.py --workdir=/tmp/lmjax_default

Variants: '' (default run, ~1-3 min on 2 CPU cores), 'tiny' (seconds; used by the tests).
Measured here (2 CPU cores): see README "Results".
"""

from lmjax import config_base

VARIANTS = ('', 'tiny')


def get_config(arg: str = ''):
  c = config_base.base_config()
  c.seq_len = 64
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 600
  c.log_every = 50
  c.eval_every = 300
  c.checkpoint.every = 300
  c.model.update(d_model=128, num_heads=4, num_layers=2, d_ff=512, max_len=256,
                 dropout_rate=0.0, position='rotary')
  c.optimizer.update(learning_rate=3e-3, warmup_steps=50)
  if arg == 'tiny':
    c.batch_size = 8
    c.eval_batch_size = 16
    c.seq_len = 32
    c.num_train_steps = 60
    c.log_every = 20
    c.eval_every = 60
    c.checkpoint.every = 30
    c.model.update(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_len=64)
    c.data.update(synthetic_lines=2000, synthetic_eval_lines=200)
    c.sample.update(num_samples=2, max_new_tokens=8)
  elif arg:
    raise ValueError(f'unknown variant {arg!r} (tiny)')
  return c
