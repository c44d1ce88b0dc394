"""Fit and evaluate the Kneser-Ney n-gram baseline on the trainer's data and metrics.

The count model has no gradient loop, but everything around it is shared with the neural
families: the same config.data sources and tokenizer, the same token streams (each line's
tokens then <eos>), and the same perplexity report over every token of the eval/test split,
so its row in a table compares directly with the LSTM's.

  python -m lmjax.main --config=experiments/ptb_kneser_ney.py --workdir=DIR \
      --config.data.train=ptb.train.txt --config.data.eval=ptb.valid.txt \
      --config.data.test=ptb.test.txt
"""

import json
import os
import time
from typing import Any

import numpy as np

from lmjax import metrics
from lmjax.data import lm as lm_data
from lmjax.errors import UserError
from lmjax.models import ngram


def sentences(corpus: lm_data.Corpus, eos_id: int) -> list[np.ndarray]:
  """The stream (<eos>, line 1 ..., <eos>, ...) back into lines that end with <eos>."""
  ends = np.flatnonzero(corpus.stream == eos_id)
  return [corpus.stream[a + 1:b + 1] for a, b in zip(ends[:-1], ends[1:])]


def fit_and_evaluate(config: Any, workdir: str) -> dict:
  order = int(config.model.order)
  if not 1 <= order <= 5:
    raise UserError(f'config.model.order={order}: Kneser-Ney orders 1 to 5 are supported')
  tok, train, evl, test = lm_data.load_lm_data(config.data, workdir)
  t0 = time.time()
  model = ngram.KneserNeyLM(order).fit(sentences(train, tok.eos_id), tok.vocab_size)
  print(f'kneser_ney order {order}: fit on {train.num_predictions:,} tokens in '
        f'{time.time() - t0:.1f}s; vocab {tok.vocab_size}', flush=True)
  writer = metrics.MetricWriter(workdir)
  out = {}
  for split, corpus in (('eval', evl), ('test', test)):
    if corpus is None:
      continue
    nll, n = model.nll(sentences(corpus, tok.eos_id))
    assert n == corpus.num_predictions, (n, corpus.num_predictions)
    report = metrics.lm_report(nll, n, corpus.num_words, corpus.num_bytes)
    report['oov'] = corpus.num_oov
    writer.write(0, split, report)
    print(f'{split}: ppl {report["ppl"]:.2f} over {n:,} tokens  bpb {report["bpb"]:.3f}  '
          f'({corpus.num_oov:,} words mapped to <unk>)', flush=True)
    out[split] = report
  writer.close()
  with open(os.path.join(workdir, 'ngram_report.json'), 'w', encoding='utf-8') as f:
    json.dump({'order': order, 'discounts': [list(d) for d in model.discounts], **out}, f)
  return out
