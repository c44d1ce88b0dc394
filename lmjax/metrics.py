"""Metrics: perplexity from summed NLL, and writers (JSON lines + TensorBoard).

Perplexity is exp(total NLL / number of predicted tokens) over a whole split, accumulated in
float64 on the host from per-batch sums, never averaged over batch means. When the raw text is
known, the same total NLL also gives per-word perplexity (words = whitespace words + one <eos>
per line) and bits per byte (UTF-8 bytes incl. newlines), which compare across tokenizers.

Translation quality is corpus BLEU and chrF from sacrebleu on detokenized text, reported with
sacrebleu's signature strings so that scores can be compared across papers.
"""

import json
import math
import os
from typing import Any, Optional

from lmjax.errors import UserError


def lm_report(total_nll: float, num_tokens: float, num_words: Optional[int] = None,
              num_bytes: Optional[int] = None) -> dict:
  out = {'nll': total_nll / num_tokens, 'ppl': math.exp(min(total_nll / num_tokens, 700.0)),
         'tokens': int(num_tokens)}
  if num_words:
    out['word_ppl'] = math.exp(min(total_nll / num_words, 700.0))
  if num_bytes:
    out['bpb'] = total_nll / math.log(2) / num_bytes
  return out


class MetricWriter:
  """Appends {'step': s, 'split': name, **scalars} to metrics.jsonl and TensorBoard events.

  TensorBoard files are written with tensorboardX, which does not need TensorFlow. Only
  process 0 writes.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: v if isinstance(v, str) else float(v) for k, v in scalars.items()
             if not isinstance(v, (list, tuple, dict))}  # scalars and strings only
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, **clean}) + '\n')
    self._jsonl.flush()
    for k, v in clean.items():
      if not isinstance(v, str):
        self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def bleu_report(hypotheses: list[str], references: list[str], tokenize: str = '13a') -> dict:
  """Corpus BLEU and chrF of detokenized hypotheses against one raw reference each.

  Scores come from sacrebleu (imported here, so that LM-only runs do not need it) with its
  defaults apart from `tokenize`, so the numbers match `sacrebleu -tok <tokenize>` on the same
  files.

  Args:
    hypotheses: one detokenized system output per sentence.
    references: the matching raw reference sentences, same order and length.
    tokenize: sacrebleu's BLEU tokenizer ('13a', 'intl', 'zh', 'none', ...).

  Returns:
    {'bleu', 'bleu_signature', 'chrf', 'chrf_signature', 'bp', 'sys_len', 'ref_len',
    'precisions'}: scores in [0, 100], `precisions` the four n-gram precisions in percent,
    `bp` the brevity penalty in [0, 1], lengths in tokens after BLEU tokenization.

  Raises:
    UserError: the two lists differ in length.
  """
  if len(hypotheses) != len(references):
    raise UserError(f'BLEU needs one reference per hypothesis: got {len(hypotheses)} '
                    f'hypotheses and {len(references)} references')
  from sacrebleu.metrics import BLEU, CHRF  # pylint: disable=g-import-not-at-top
  bleu, chrf = BLEU(tokenize=tokenize), CHRF()
  refs = [list(references)]  # sacrebleu takes a list of reference streams
  b = bleu.corpus_score(list(hypotheses), refs)
  c = chrf.corpus_score(list(hypotheses), refs)
  return {'bleu': float(b.score), 'bleu_signature': str(bleu.get_signature()),
          'chrf': float(c.score), 'chrf_signature': str(chrf.get_signature()),
          'bp': float(b.bp), 'sys_len': int(b.sys_len), 'ref_len': int(b.ref_len),
          'precisions': [float(p) for p in b.precisions]}
