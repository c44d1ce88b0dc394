"""GloVe (Pennington et al. 2014): weighted least squares on log co-occurrence counts.

Co-occurrences within 10 words either side, weighted 1/distance, counted once on the host;
f(x) = min(1, (x / 100)^0.75); AdaGrad at lr 0.05 from a sum of squares of 1, as glove.c; 25
epochs over the shuffled non-zero entries; the vectors are word + context (glove.c's default
output). On WikiText-2's training text:

  python -m lmjax.main --config=experiments/glove.py --workdir=/tmp/glove \\
      --config.data.train=../shared/data/wikitext-2/train.txt

Measured here (2 shared CPU cores): 8,107,689 co-occurrence entries, 124 steps of 65,536
per epoch, 3,100 steps in 333 s; WordSim-353 0.158, SimLex-999 0.057, analogies 1.3% (0.080 /
0.044 / 0.8% after 2,000 steps: still rising, and far below word2vec's 0.34 on this 2M-word
corpus). Evaluated like experiments/word2vec.py (WordSim-353, SimLex-999, Google analogies). Published
for orientation: 300-d GloVe on 6B tokens, 65.8% on the analogies (Pennington et al. Table 2).

Variants: default (d 100), tiny (tests: the embedded synthetic corpus, d 16).
"""

from lmjax import config_base

VARIANTS = ('default', 'tiny')


def get_config(arg: str = 'default'):
  arg = arg or 'default'
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r}: one of {VARIANTS}')
  c = config_base.embeddings_config()
  c.model = c.model.__class__({'name': 'glove', 'embed_dim': 100})
  c.batch_size = 65536  # co-occurrence entries per step
  c.seq_len = 1  # unused: a batch is entries, not rows
  c.num_epochs = 25
  c.optimizer.update(name='adagrad', learning_rate=0.05, schedule='constant',
                     initial_accumulator=1.0)
  c.embeddings.update(window=10, x_max=100.0, alpha=0.75)
  if arg == 'tiny':
    c.data.update(source='synthetic', synthetic_lines=3000, min_count=1)
    c.model.embed_dim = 16
    c.embeddings.update(window=5, x_max=10.0, wordsim='off', simlex='off', analogy='off',
                        neighbours='cat,red,three')
    c.batch_size = 1024
    c.num_epochs = 0
    c.num_train_steps = 300
    c.eval_every = 300
    c.log_every = 100
    c.checkpoint.update(every=300, async_save=False)
  return c
