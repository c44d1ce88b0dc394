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
from typing import Any, Optional

from lmjax import paths
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


class _ObjectEventFile:
  """A TensorBoard event file on an object store, through lmjax.paths: the whole file is
  uploaded on every flush (event files stay small: scalars only)."""

  def __init__(self, path: str):
    self.path = path
    self._data = bytearray()
    self._flushed = 0

  def write(self, data: bytes) -> None:
    self._data += data

  def flush(self) -> None:
    if len(self._data) != self._flushed:
      paths.write_bytes(self.path, bytes(self._data))
      self._flushed = len(self._data)

  def close(self) -> None:
    self.flush()


class _ObjectEventFiles:
  """tensorboardX's writer factory protocol (open a file, check a directory)."""

  def open(self, path: str) -> _ObjectEventFile:
    return _ObjectEventFile(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores need no directories


def _register_remote_event_writers() -> None:
  """TensorBoard events under gs:// (s3://, az://) go through lmjax.paths, like every other
  workdir file, instead of tensorboardX's own cloud clients."""
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  for scheme in paths.REMOTE_SCHEMES:
    record_writer.register_writer_factory(scheme.split(':')[0], _ObjectEventFiles())


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
      paths.makedirs(workdir)
      self._jsonl = paths.TextAppender(paths.join(workdir, 'metrics.jsonl'))
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      _register_remote_event_writers()
      self._tb = SummaryWriter(paths.join(workdir, 'tensorboard'))

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


_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_compile_total = None  # seconds spent tracing, lowering and compiling, once listening


def compile_seconds() -> float:
  """Seconds this process has spent tracing, lowering and compiling jitted functions since the
  first call (jax.monitoring's compile events; one listener for the process)."""
  global _compile_total
  if _compile_total is None:
    import jax  # pylint: disable=g-import-not-at-top

    def listen(event: str, seconds: float, **_) -> None:
      global _compile_total
      if event in _COMPILE_EVENTS:
        _compile_total += seconds

    _compile_total = 0.0
    jax.monitoring.register_event_duration_secs_listener(listen)
  return _compile_total


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


# ----------------------------------------------------------------------------- classification


def classification_report(confusion: Any) -> dict:
  """Accuracy, macro-F1 and Matthews correlation of a confusion matrix [true, predicted].

  Macro-F1 averages the per-class F1 = 2TP / (2TP + FP + FN) over the classes that occur as a
  label or a prediction (scikit-learn's default). MCC is Gorodkin's multiclass form
  (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), c correct, s total,
  p_k / t_k predicted / true counts; 0 when either factor is 0. Binary tasks also get 'f1',
  the F1 of class 1 (GLUE's MRPC/QQP convention).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  cm = np.asarray(confusion, np.float64)
  s = cm.sum()
  c = np.trace(cm)
  t, p = cm.sum(axis=1), cm.sum(axis=0)
  tp = np.diag(cm)
  denom = t + p  # = 2TP + FP + FN
  present = denom > 0
  f1 = np.where(present, 2 * tp / np.maximum(denom, 1e-300), 0.0)
  mcc_den = math.sqrt(max(s * s - (p * p).sum(), 0.0) * max(s * s - (t * t).sum(), 0.0))
  out = {'accuracy': float(c / s) if s else 0.0,
         'macro_f1': float(f1[present].mean()) if present.any() else 0.0,
         'mcc': float((c * s - (p * t).sum()) / mcc_den) if mcc_den else 0.0,
         'majority': float(t.max() / s) if s else 0.0, 'examples': int(s)}
  if cm.shape[0] == 2:
    out['f1'] = float(f1[1])
  return out


def ranks(x: Any) -> Any:
  """1-based ranks with ties given their average rank (as scipy.stats.rankdata)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
  out = np.empty(len(x))
  out[order] = np.repeat(avg, ends - starts)
  return out


def pearson(x: Any, y: Any) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  dx, dy = x - x.mean(), y - y.mean()
  den = math.sqrt((dx * dx).sum() * (dy * dy).sum())
  return float((dx * dy).sum() / den) if den else 0.0


def spearman(x: Any, y: Any) -> float:
  """Pearson correlation of the ranks."""
  return pearson(ranks(x), ranks(y))


def regression_report(sums: dict) -> dict:
  """MSE and Pearson r from summed moments {'weight', 'loss' (squared error), 'sum_p',
  'sum_y', 'sum_pp', 'sum_yy', 'sum_py'} (exact over any number of batches and devices)."""
  n = sums['weight']
  mp, my = sums['sum_p'] / n, sums['sum_y'] / n
  cov = sums['sum_py'] / n - mp * my
  vp, vy = sums['sum_pp'] / n - mp * mp, sums['sum_yy'] / n - my * my
  den = math.sqrt(max(vp, 0.0) * max(vy, 0.0))
  return {'mse': sums['loss'] / n, 'pearson': cov / den if den > 0 else 0.0,
          'examples': int(n)}
