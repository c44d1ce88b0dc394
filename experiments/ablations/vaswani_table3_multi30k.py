"""Vaswani et al. 2017, Table 3 (variations on the Transformer) in miniature on Multi30k en-de.

The base row is experiments/multi30k_transformer.py:small (d_model 256, 4 heads of 64, 3+3
layers, d_ff 1024, dropout 0.1, label smoothing 0.1, sinusoidal positions) cut to 1,000 steps
(warm-up 200) so that one run takes about 15-20 minutes on 2 CPU cores; the rows change one
thing each, scaled from the paper's base (d_model 512, 8 heads, 6 layers, d_ff 2048) to ours:

  (A) heads 1 / 2 / 8 / 16 at constant compute (key and value size d_model / heads)
  (C) layers 1 / 2 / 6 (per side); d_model 128 / 512; d_ff 512 / 2048
  (D) dropout 0.0 / 0.2; label smoothing 0.0 / 0.2
  (E) learned instead of sinusoidal positions
  avg: the base run evaluated with its last 4 checkpoints averaged (every 250 steps, so the
       average spans steps 250-1000), and a second base run that checkpoints every 50 steps
       (its own line checks that the cadence leaves training unchanged) whose last 4
       checkpoints, steps 850-1000, are averaged as Vaswani et al. average late checkpoints

Row (B) of the paper (a smaller attention key size with the value size kept) is not here:
lmjax's attention ties the key and value sizes to d_model / heads.

Published trends (newstest2013, base PPL 4.92 / BLEU 25.8): one head is 0.9 BLEU worse than 8
and too many heads also hurt; fewer layers and a smaller d_model hurt, bigger models help;
dropout 0 hurts, and label smoothing hurts perplexity but helps BLEU; learned positions are
about as good as sinusoidal ones.

  python -m lmjax.ablate --sweep=experiments/ablations/vaswani_table3_multi30k.py \
      --root=/tmp/table3 \
      --set data.train=../shared/data/multi30k/raw/train \
      --set data.eval=../shared/data/multi30k/raw/val \
      --set data.test=../shared/data/multi30k/raw/test_2016_flickr

One seed here (the sweep resumes where it stopped when rerun); seeds (0, 1, 2) on a GPU
(get_sweep('3seeds')). BLEU of every row against the base row is tested on the test-set
hypotheses by sacreBLEU's paired bootstrap resampling.
"""

from lmjax.sweeps import Metric, Row, Sweep


def get_sweep(arg: str = ''):
  if arg not in ('', '3seeds'):
    raise ValueError(f'unknown sweep variant {arg!r} (3seeds)')
  rows = [Row('base', {}, 'base', average_last=4),
          Row('ckpt_every50', {'checkpoint.every': 50}, 'base', average_last=4)]
  rows += [Row(f'heads={h}', {'model.num_heads': h}, '(A)') for h in (1, 2, 8, 16)]
  rows += [Row(f'layers={n}', {'model.num_encoder_layers': n, 'model.num_decoder_layers': n},
               '(C)') for n in (1, 2, 6)]
  rows += [Row(f'd_model={d}', {'model.d_model': d}, '(C)') for d in (128, 512)]
  rows += [Row(f'd_ff={f}', {'model.d_ff': f}, '(C)') for f in (512, 2048)]
  rows += [Row(f'dropout={p}', {'model.dropout_rate': p}, '(D)') for p in (0.0, 0.2)]
  rows += [Row(f'ls={e}', {'label_smoothing': e}, '(D)') for e in (0.0, 0.2)]
  rows += [Row('learned_pos', {'model.position': 'learned'}, '(E)')]
  return Sweep(
      title='Vaswani et al. 2017 Table 3 in miniature (Multi30k en-de)',
      config='experiments/multi30k_transformer.py:small',
      rows=rows,
      seeds=(0, 1, 2) if arg else (0,),
      metrics=[Metric('ppl', 'min', 'eval', 'val PPL'), Metric('bleu', 'max', 'eval', 'val BLEU'),
               Metric('bleu', 'max', 'test', 'test BLEU')],
      base_row='base', significance='bleu', significance_split='test',
      overrides={'num_train_steps': 1000, 'optimizer.warmup_steps': 200, 'eval_every': 1000,
                 'checkpoint.every': 250, 'checkpoint.max_to_keep': 4, 'log_every': 50})
