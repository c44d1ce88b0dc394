"""A tiny sweep for the tests: 2 rows x 2 seeds of the synthetic LM (seconds per run).

  python -m lmjax.ablate --sweep=experiments/ablations/tiny.py --root=/tmp/tiny_sweep

`tiny_translation` (get_sweep('translation')) is the same on the synthetic translation task,
with BLEU and its significance against the base row (on the eval split: the synthetic corpus
has no test split).
"""

from lmjax.sweeps import Metric, Row, Sweep


def get_sweep(arg: str = ''):
  if arg == 'translation':
    return Sweep(
        title='Tiny translation sweep',
        config='experiments/synthetic_translation.py:tiny',
        rows=[Row('base', {}, '(base)'), Row('ff128', {'model.d_ff': 128}, '(C)'),
              Row('avg', {}, '(avg)', average_last=2)],
        seeds=(0,),
        metrics=[Metric('bleu', 'max', 'eval', 'eval BLEU'), Metric('ppl', 'min', 'eval')],
        base_row='base', significance='bleu', significance_split='eval',
        overrides={'mesh.data': 1, 'checkpoint.max_to_keep': 3})
  if arg:
    raise ValueError(f'unknown sweep variant {arg!r} (translation)')
  return Sweep(
      title='Tiny sweep (tests)',
      config='experiments/synthetic_lm.py:tiny',
      rows=[Row('base', {}, '(base)'), Row('ff128', {'model.d_ff': 128}, '(C)')],
      seeds=(0, 1),
      metrics=[Metric('ppl', 'min', 'eval'), Metric('bpb', 'min', 'eval')],
      overrides={'num_train_steps': 80, 'eval_every': 20, 'log_every': 10,
                 'checkpoint.every': 10, 'mesh.data': 1, 'sample.num_samples': 0})
