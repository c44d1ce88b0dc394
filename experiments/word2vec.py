"""word2vec (Mikolov et al. 2013): skip-gram or CBOW with negative sampling (config.task='embeddings').

The reference tool's defaults, which gensim's Word2Vec shares: dimension 100, window 5 (each
centre word draws a reduced window in [1, 5]), 5 negatives from unigram^0.75, frequent words
subsampled at 1e-3, words seen fewer than 5 times dropped, lr 0.025 decaying linearly to
2.5e-6, 5 epochs over WikiText-2's training text (2.05M words):

  python -m lmjax.main --config=experiments/word2vec.py:sgns --workdir=/tmp/w2v \\
      --config.data.train=../shared/data/wikitext-2/train.txt

Any text file works (--config.data.train=FILE; one sentence or paragraph per line; add e.g.
--config.data.clean.lowercase=true to clean it). Evaluation at each epoch: WordSim-353 and
SimLex-999 Spearman, Google analogies (3CosAdd over the 30,000 most frequent words), from
gensim's test data (pip install '.[eval]'). The run ends by writing WORKDIR/vectors.txt.

Measured here (benchmarks/word2vec.py, seeds 0 and 1, idle 2-core CPU): sgns WordSim-353
0.338, SimLex-999 0.185, analogies 3.39%, 172k words/s (57 s for the 5 epochs); gensim 4.4
with the same settings: 0.317, 0.194, 5.10%, 287k words/s. config.embeddings.row_cap, the
per-batch cap on a word's pair-updates, swept on seed 0 with the earlier per-centre negatives:
16: 0.216 / 0.152 / 1.6%; 32: 0.327 / 0.180 / 3.0%; 64: 0.356 / 0.189 / 3.9%; 128: 0.336 /
0.192 / 4.2%; 256: 0.101 / 0.068 / 0.3% (WordSim / SimLex / analogies).

Published, for orientation (much larger corpora, so not comparable in level): skip-gram on
Google News (6B words, d 300) reaches ~0.70 WordSim-353 and ~61% on the analogies (Mikolov
et al. 2013b); on a 2M-word corpus all three scores are far lower for any method.

Variants: sgns (skip-gram, the default), cbow (CBOW with the mean of the context vectors, as
gensim's cbow_mean=1; lr 0.05 as the C tool's CBOW), tiny (tests: the embedded synthetic corpus, d 16).
"""

from lmjax import config_base

VARIANTS = ('sgns', 'cbow', 'tiny')


def get_config(arg: str = 'sgns'):
  arg = arg or 'sgns'
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r}: one of {VARIANTS}')
  c = config_base.embeddings_config()
  if arg == 'cbow':
    c.model.architecture = 'cbow'
    # The C tool's CBOW rate. Measured (seed 0): lr 0.05 gives WordSim-353 0.215, SimLex 0.130,
    # analogies 2.4%; 0.025 gives 0.136 / 0.058 / 1.0%; gensim CBOW at 0.025: 0.232 / 0.151 /
    # 3.6%.
    c.optimizer.learning_rate = 0.05
  elif arg == 'tiny':
    c.data.update(source='synthetic', synthetic_lines=3000, min_count=1)
    c.model.embed_dim = 16
    c.seq_len = 64
    c.batch_size = 16
    c.num_epochs = 0
    c.num_train_steps = 200
    c.eval_every = 200
    c.log_every = 50
    c.checkpoint.update(every=200, async_save=False)
    c.embeddings.update(wordsim='off', simlex='off', analogy='off', sample=0.0,
                        neighbours='cat,red,three')
  return c
