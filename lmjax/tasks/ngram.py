"""Fitted n-gram language models (interpolated Kneser-Ney, lmjax/models/ngram.py).

The count model has no gradient loop: it is fitted when the task loads its data and trains for
zero steps, and everything else is the loop's and the LM task's: the same config.data sources
and tokenizer, the same token streams (each line's tokens then <eos>), the same perplexity
report over every token of the eval/test split, so its row in a table compares directly with
the LSTM's. The fitted discounts go to WORKDIR/ngram_report.json.

  python -m lmjax.main --config=experiments/ptb_kneser_ney.py --workdir=DIR \
      --config.data.train=ptb.train.txt --config.data.eval=ptb.valid.txt \
      --config.data.test=ptb.test.txt
"""

import json
import time
from typing import Any

import jax
import numpy as np

from lmjax import paths
from lmjax.data import lm as lm_data
from lmjax.errors import UserError
from lmjax.models import ngram
from lmjax.tasks import base
from lmjax.tasks import lm as lm_task


def sentences(corpus: lm_data.Corpus, eos_id: int) -> list[np.ndarray]:
  """The stream (<eos>, line 1 ..., <eos>, ...) back into lines that end with <eos>."""
  ends = np.flatnonzero(corpus.stream == eos_id)
  return [corpus.stream[a + 1:b + 1] for a, b in zip(ends[:-1], ends[1:])]


class NgramTask:
  """config.task = 'ngram' (config.model: {'name': 'kneser_ney', 'order': n})."""
  name = 'ngram'
  metrics = base.token_metrics()
  model = None
  steps_per_epoch = 1
  num_steps = 0  # fitted, not trained

  @staticmethod
  def check_config(config: Any) -> None:
    """Config errors before any data is read (lmjax.config_schema calls it too)."""
    if config.model.name != 'kneser_ney':
      raise UserError(f'config.model.name={config.model.name!r}: config.task=\'ngram\' fits '
                      "'kneser_ney'")
    if not 1 <= int(config.model.order) <= 5:
      raise UserError(f'config.model.order={config.model.order}: Kneser-Ney orders 1 to 5 are '
                      'supported')

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    del source_vocab_size
    self.check_config(config)
    self.order = int(config.model.order)
    if vocab_size is not None:
      raise UserError('config.task=ngram: a count model has no train step to plan')
    self.config = config
    self.tokenizer, self.train, self.eval, self.test = lm_data.load_lm_data(config.data,
                                                                            workdir)
    self.eval_splits = ('eval',) + (('test',) if self.test is not None else ())
    t0 = time.time()
    self.lm = ngram.KneserNeyLM(self.order).fit(sentences(self.train, self.tokenizer.eos_id),
                                                self.tokenizer.vocab_size)
    self.fit_seconds = time.time() - t0

  def batch_spec(self) -> dict:
    return {}

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    del rng, batch
    return {}  # the counts live on the host, in self.lm

  def init_carry(self, batch_size: int) -> Any:
    del batch_size
    return None

  def loss(self, params, batch, carry, rng, train: bool):
    raise NotImplementedError('a fitted model has no loss to differentiate')

  def train_iterator(self):
    return _NoBatches()

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    del sum_batches, params  # scored on the host from the counts
    corpus = self.eval if split == 'eval' else self.test
    nll, n = self.lm.nll(sentences(corpus, self.tokenizer.eos_id))
    assert n == corpus.num_predictions, (n, corpus.num_predictions)
    report = lm_task.corpus_report(nll, n, corpus, 'word')
    self.reports = getattr(self, 'reports', {})
    self.reports[split] = report
    return report

  def describe(self, train_iter: Any) -> str:
    del train_iter
    return (f'kneser_ney order {self.order}: fit on {self.train.num_predictions:,} tokens in '
            f'{self.fit_seconds:.1f}s')

  def format_report(self, split: str, step: int, report: dict) -> list:
    return [base.ppl_line(split, step, report)]

  def summary(self, report: dict) -> str:
    return f'eval ppl {report["ppl"]:.3f} (uniform {self.tokenizer.vocab_size})'

  def finish(self, params: Any, workdir: str) -> list:
    del params
    path = paths.join(workdir, 'ngram_report.json')
    if jax.process_index() == 0:
      paths.write_text(path, json.dumps({
          'order': self.order, 'discounts': [list(d) for d in self.lm.discounts],
          **getattr(self, 'reports', {})}))
    return [f'wrote {path}']


class _NoBatches:
  """The train iterator of a model with no train step: resumable, and never read."""

  def get_state(self) -> dict:
    return {}

  def set_state(self, state: dict) -> None:
    del state

  def __next__(self):
    raise StopIteration
