"""Interpolated modified Kneser-Ney n-gram LM on Penn Treebank: the count-based baseline row.

Same word stream, vocabulary (10k incl. <unk> and <eos>) and perplexity code as
experiments/ptb_lstm.py, so the numbers share a table with the LSTMs.

  python -m lmjax.main --config=experiments/ptb_kneser_ney.py:5 --workdir=/tmp/ptb_kn5 \
      --config.data.train=../shared/data/ptb/ptb.train.txt \
      --config.data.eval=../shared/data/ptb/ptb.valid.txt \
      --config.data.test=../shared/data/ptb/ptb.test.txt

Published: KN5 on PTB test 141.2 (Mikolov et al. 2011, "Empirical evaluation and combination
of advanced language modeling techniques"). Measured here: see README "Results".
Variants: the order, '1' to '5' (default '5').
"""

import ml_collections

from lmjax import config_base

VARIANTS = ('5', '3')  # the tests' set; any order '1' to '5' works


def get_config(arg: str = '5'):
  arg = arg or '5'
  if arg not in ('1', '2', '3', '4', '5'):
    raise ValueError(f'unknown variant {arg!r}: the n-gram order, 1 to 5')
  c = config_base.base_config()
  c.data.update(source='text', tokenizer='word')
  c.task = 'ngram'  # fitted, not trained
  c.model = ml_collections.ConfigDict({'name': 'kneser_ney', 'order': int(arg)})
  return c
