"""Word-embedding training: word2vec (skip-gram, CBOW; negative sampling) and GloVe.

config.model.name: 'word2vec' (config.model.architecture 'skipgram' | 'cbow') or 'glove';
config.model.embed_dim. config.embeddings: window, negatives, noise_power, sample (word2vec),
x_max, alpha (GloVe), and the evaluation sets. The words are config.data's text split on
whitespace after config.data.clean, over a word vocabulary of config.data.min_count /
max_vocab (lmjax/data/embeddings.py builds the batches).

One step is one SGD (word2vec) or AdaGrad (GloVe) update with the batch's summed gradient
(config.loss_normalization='sum'), the reference tools' per-pair updates taken a batch at a
time; the word2vec learning rate decays linearly to lr x 1e-4 over the run, as theirs does
(config.optimizer.schedule='linear', min_lr_ratio).

Evaluation (lmjax/embeddings_eval.py): Spearman correlation on WordSim-353 and SimLex-999 and
3CosAdd accuracy on the Google analogies over the 30,000 most frequent words, with the pairs and
questions skipped as out of vocabulary. The files are gensim's test data when gensim is installed
(the `eval` extra), or config.embeddings.{wordsim,simlex,analogy} ('off' skips one). A finished
run writes WORKDIR/vectors.txt (word2vec text format) and prints nearest neighbours.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import paths
from lmjax.data import embeddings as emb_data
from lmjax.data import lm as lm_data
from lmjax.errors import UserError
from lmjax.models import embeddings as emb
from lmjax.tasks import base

METHODS = ('skipgram', 'cbow')
SETS = (('wordsim', 'wordsim353'), ('simlex', 'simlex999'), ('analogy', 'analogy'))


def method_of(model_cfg: Any) -> str:
  """'glove', 'skipgram' or 'cbow'."""
  return 'glove' if model_cfg.name == 'glove' else model_cfg.get('architecture', 'skipgram')


class EmbeddingsTask:
  """config.task = 'embeddings'."""
  name = 'embeddings'
  reads_eval = False  # evaluated on similarity and analogy sets, not an eval split
  metrics = {'wordsim353': 'max', 'simlex999': 'max', 'analogy': 'max'}

  @staticmethod
  def check_config(config: Any) -> None:
    m = config.model
    if m.name not in ('word2vec', 'glove'):
      raise UserError(f"config.model.name={m.name!r}: config.task='embeddings' trains "
                      "'word2vec' or 'glove'")
    if m.name == 'word2vec' and m.get('architecture', 'skipgram') not in METHODS:
      raise UserError(f'config.model.architecture={m.architecture!r}: one of {METHODS}')
    if config.data.tokenizer != 'word':
      raise UserError(f'config.data.tokenizer={config.data.tokenizer!r}: word embeddings are '
                      "trained over whitespace words (config.data.tokenizer='word')")
    if config.loss_normalization == 'sequences':
      raise UserError(f'config.loss_normalization={config.loss_normalization!r}: the '
                      "embedding objectives take the summed gradient ('sum', as the reference "
                      "tools update once per pair) or the mean over the batch's terms ('tokens')")
    for field, _ in SETS:
      path = config.embeddings[field]
      if path not in ('', 'off') and not os.path.isfile(path):
        raise UserError(f'config.embeddings.{field}: file not found: {path}')

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    del source_vocab_size
    self.check_config(config)
    self.config = config
    self.method = method_of(config.model)
    self.model = None
    e, d = config.embeddings, config.data
    if vocab_size is None:
      lines = lm_data.raw_lines(d, 'train')
      self.tokenizer = lm_data.build_tokenizer(d, lines, workdir)
      self.corpus = emb_data.encode(lines, self.tokenizer, 'config.data.train')
      vocab_size = self.tokenizer.vocab_size
      counts = self.corpus.counts
      if self.method == 'glove':
        rows, cols, vals = emb_data.cooccurrence(self.corpus, vocab_size, e.window)
        self._iter = lambda: emb_data.GloveIterator(rows, cols, vals, config.batch_size,
                                                    config.seed)
        self.num_entries = len(rows)
      else:
        self._iter = lambda: emb_data.Word2VecIterator(
            self.corpus, config.batch_size, config.seq_len, e.window, e.sample, config.seed)
      self.steps_per_epoch = self._iter().steps_per_epoch
    else:  # abstract (lmjax.plan, the tools): shapes only
      self.tokenizer = self.corpus = None
      counts = np.ones(vocab_size, np.int64)
      self.steps_per_epoch = 1
    self.vocab_size = vocab_size
    self.noise = emb_data.noise_cdf(counts, e.noise_power)
    self.num_steps = base.num_steps(config, self.steps_per_epoch)
    self.eval_splits = ('eval',)
    self._paths = None

  # --- batches ---

  def batch_spec(self) -> dict:
    b = self.config.batch_size
    if self.method == 'glove':
      return {'row': base.Spec((b,), jnp.int32, ('batch',)),
              'col': base.Spec((b,), jnp.int32, ('batch',)),
              'count': base.Spec((b,), jnp.float32, ('batch',))}
    shape, axes = (b, self.config.seq_len), ('batch', 'length')
    return {k: base.Spec(shape, jnp.int32, axes) for k in ('words', 'segment', 'window')}

  def train_iterator(self):
    return self._iter()

  # --- model and loss ---

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    del batch
    init = emb.init_glove if self.method == 'glove' else emb.init_word2vec
    return init(rng, self.vocab_size, self.config.model.embed_dim)

  def init_carry(self, batch_size: int) -> Any:
    del batch_size
    return None

  def loss(self, params, batch, carry, rng, train: bool):
    e = self.config.embeddings
    if self.method == 'glove':
      total, weight = emb.glove_loss(params, batch, e.x_max, e.alpha)
    else:
      if rng is None:
        rng = jax.random.PRNGKey(0)
      shape = batch['words'].shape + (e.negatives,)
      negatives = emb.draw_negatives(rng, jnp.asarray(self.noise), shape)  # [B, L, K]
      total, weight = emb.word2vec_loss(params, batch, negatives, e.window,
                                        cbow=self.method == 'cbow', row_cap=e.row_cap)
    del train
    return {'loss': total, 'weight': weight}, carry

  # --- evaluation and reports ---

  def eval_paths(self) -> dict:
    """{report name: file} of the evaluation sets in use."""
    if self._paths is None:
      from lmjax import embeddings_eval  # pylint: disable=g-import-not-at-top
      defaults = embeddings_eval.default_paths()
      self._paths = {}
      for field, name in SETS:
        path = self.config.embeddings[field]
        if path == 'off':
          continue
        path = path or defaults.get(name)
        if path:
          self._paths[name] = path
    return self._paths

  def vectors(self, params: Any):
    """The trained vectors of the vocabulary's words (specials left out), on the host."""
    from lmjax import vectors as vec  # pylint: disable=g-import-not-at-top
    table = emb.word_vectors(self.method, params)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      table = multihost_utils.process_allgather(table, tiled=True)
    table = np.asarray(jax.device_get(table), np.float32)
    words = list(self.tokenizer.tokens[emb_data.FIRST_WORD:])
    return vec.Vectors(words, table[emb_data.FIRST_WORD:len(self.tokenizer.tokens)])

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    """Similarity and analogy scores of the current vectors."""
    del split, sum_batches
    from lmjax import embeddings_eval  # pylint: disable=g-import-not-at-top
    report = embeddings_eval.evaluate(self.vectors(params), self.eval_paths(),
                                      restrict_vocab=self.config.embeddings.restrict_vocab)
    report['words'] = self.vocab_size - emb_data.FIRST_WORD
    return report

  def describe(self, train_iter: Any) -> str:
    del train_iter
    c, e = self.corpus, self.config.embeddings
    what = (f'{self.num_entries:,} co-occurrence entries (window {e.window})'
            if self.method == 'glove' else
            f'window {e.window}, {e.negatives} negatives, sample {e.sample:g}')
    return (f'{self.method}: {len(c.ids):,} training words in the vocabulary '
            f'({c.num_dropped:,} dropped: below config.data.min_count or past max_vocab), '
            f'{self.vocab_size - emb_data.FIRST_WORD:,} words; {what}')

  def format_report(self, split: str, step: int, report: dict) -> list:
    parts = []
    for name in ('wordsim353', 'simlex999'):
      if name in report:
        parts.append(f'{name} spearman {report[name]:.4f} ({report[name + "_skipped"]} '
                     'pairs skipped)')
    if 'analogy' in report:
      parts.append(f'analogy accuracy {report["analogy"]:.4f} '
                   f'({report["analogy_skipped"]} questions skipped)')
    return [f'{split} step {step}: ' + ('; '.join(parts) or 'no evaluation set (install '
                                        'gensim, the eval extra, or set config.embeddings.'
                                        'wordsim / simlex / analogy)')]

  def summary(self, report: dict) -> str:
    keys = [k for k in ('wordsim353', 'simlex999', 'analogy') if k in report]
    return ', '.join(f'{k} {report[k]:.4f}' for k in keys) or 'no evaluation set'

  def finish(self, params: Any, workdir: str) -> list:
    """Writes WORKDIR/vectors.txt; returns nearest-neighbour lines."""
    from lmjax import embeddings_eval  # pylint: disable=g-import-not-at-top
    from lmjax import vectors as vec  # pylint: disable=g-import-not-at-top
    v = self.vectors(params)
    path = paths.join(workdir, 'vectors.txt')
    if jax.process_index() == 0:
      vec.write_word2vec_text(path, v.words, v.matrix)
    lines = [f'wrote {path}: {len(v.words):,} vectors of dimension {v.matrix.shape[1]} '
             '(word2vec text format)']
    index = set(v.words)
    for word in [w for w in self.config.embeddings.neighbours.split(',') if w in index]:
      near = embeddings_eval.nearest(v, word, k=8)
      lines.append(f'nearest to {word}: ' + ', '.join(f'{w} {s:.3f}' for w, s in near))
    return lines
