"""Tasks: what the one train loop trains and evaluates (see base.py for the protocol).

  task = tasks.build(config, workdir)        # config.task names it; reads data and tokenizer
  task = tasks.build(config, None, vocab_size=V)   # shapes only, no data (plan, decoding)
"""

from typing import Any

from lmjax.errors import UserError


def _lm():
  from lmjax.tasks import lm
  return lm.LMTask


def _translation():
  from lmjax.tasks import translation
  return translation.TranslationTask


def _ngram():
  from lmjax.tasks import ngram
  return ngram.NgramTask


def _classify():
  from lmjax.tasks import classify
  return classify.ClassifyTask


def _mlm():
  from lmjax.tasks import mlm
  return mlm.MLMTask


def _embeddings():
  from lmjax.tasks import embeddings
  return embeddings.EmbeddingsTask


TASKS = {'lm': _lm, 'translation': _translation, 'ngram': _ngram, 'classify': _classify,
         'mlm': _mlm, 'embeddings': _embeddings}


def build(config: Any, workdir: str | None, vocab_size: int | None = None,
          source_vocab_size: int = 0):
  """The task of config.task; with vocab_size (and source_vocab_size for separate translation
  vocabularies) it reads no data and builds shapes only."""
  if config.task not in TASKS:
    raise UserError(f'config.task: unknown task {config.task!r} (one of {sorted(TASKS)})')
  return TASKS[config.task]()(config, workdir, vocab_size, source_vocab_size)
