"""Metrics: perplexity from summed NLL, and writers (JSON lines + TensorBoard).

Perplexity is exp(total NLL / number of predicted tokens) over a whole split, accumulated in
float64 on the host from per-batch sums, never averaged over batch means. When the raw text is
known, the same total NLL also gives per-word perplexity (words = whitespace words + one <eos>
per line) and bits per byte (UTF-8 bytes incl. newlines), which compare across tokenizers.
"""

import json
import math
import os
from typing import Any, Optional


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
    clean = {k: float(v) if not isinstance(v, str) else v for k, v in scalars.items()}
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
