"""Penn Treebank, one table across model families: Kneser-Ney 5-gram, Elman, GRU, LSTM (small,
Zaremba et al. 2014) and a decoder-only Transformer of about the LSTM small's size.

  python -m lmjax.ablate --sweep=experiments/ablations/ptb_families.py --root=/tmp/ptb_families \
      --set data.train=../shared/data/ptb/ptb.train.txt \
      --set data.eval=../shared/data/ptb/ptb.valid.txt \
      --set data.test=../shared/data/ptb/ptb.test.txt

Each row is its own experiment file (Row.config): experiments/ptb_kneser_ney.py:5,
experiments/ptb_lstm.py:{elman_small,gru_small,small}, experiments/ptb_transformer.py. The
perplexities cover every token of the split (<eos> included), as in the experiments' own
docstrings, which also give the published numbers (Zaremba et al. 2014 small: valid 120.7,
test 114.5; Mikolov's KN5 baseline: test 141.2 in Mikolov et al. 2011).
"""

from lmjax.sweeps import Metric, Row, Sweep


def get_sweep():
  return Sweep(
      title='PTB: one table across model families',
      config='experiments/ptb_lstm.py:small',
      rows=[Row('kn5', {}, 'n-gram', config='experiments/ptb_kneser_ney.py:5'),
            Row('elman', {}, 'RNN', config='experiments/ptb_lstm.py:elman_small'),
            Row('gru', {}, 'RNN', config='experiments/ptb_lstm.py:gru_small'),
            Row('lstm', {}, 'RNN', config='experiments/ptb_lstm.py:small'),
            Row('transformer', {}, 'Transformer', config='experiments/ptb_transformer.py')],
      seeds=(0,),
      metrics=[Metric('ppl', 'min', 'eval', 'valid ppl'), Metric('ppl', 'min', 'test',
                                                                  'test ppl')])
