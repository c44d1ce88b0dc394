"""Sentence (pair) classification and regression over any encoder family.

The encoder (`LMFamily.encode`: BERT, a from-scratch encoder, the bidirectional RNN of
models/rnn_encoder.py) gives hidden states [B, T, D] and, for BERT, a pooled vector [B, D].
config.classifier.pooling picks the sentence vector:
  'pooler'  the encoder's pooler (BERT: dense + tanh on the first token)
  'first'   the first token's hidden state ([CLS])
  'mean'    the mean of the hidden states over real (non-padding) tokens
then dropout (config.classifier.dropout_rate) and one dense layer to C class logits, or to one
value for regression (config.data.regression). Parameters: {'encoder': the family's,
'classifier': {'kernel' [D, C], 'bias' [C]}}, so an MLM or Hugging Face checkpoint warm-starts
the encoder and the head starts fresh.

Loss: cross-entropy (config.label_smoothing) or squared error, summed over the rows with their
weights (eval batches pad with weight-0 rows), so microbatches and devices add up. The eval
sums are the confusion matrix (classes) or the moments of predictions and targets
(regression), so accuracy, macro-F1, Matthews correlation and Pearson r are exact over the
whole split on any mesh; Spearman's rank correlation needs every prediction and is computed
from a prediction pass (single-process runs).

Axis legend: B batch, T length, D encoder width, C classes (1 for regression).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax import metrics as metrics_lib
from lmjax import models
from lmjax.data import classification as cls_data
from lmjax.errors import UserError
from lmjax.tasks import base

POOLINGS = ('pooler', 'first', 'mean')
CLASS_METRICS = ('accuracy', 'macro_f1', 'mcc', 'f1')
REGRESSION_METRICS = ('pearson', 'spearman', 'mse')


class ClassifierHead(nn.Module):
  """dropout -> dense: pooled [B, D] -> logits [B, C] float32."""
  num_outputs: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, pooled: jax.Array, deterministic: bool = True) -> jax.Array:
    x = nn.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
    return nn.Dense(self.num_outputs, dtype=jnp.float32, name='dense',
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.normal(0.02), ('embed', None)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(x)


def pool(hidden: jax.Array, pooled: Any, mask: jax.Array, how: str) -> jax.Array:
  """The sentence vector [B, D] of hidden [B, T, D] by config.classifier.pooling."""
  if how == 'pooler':
    if pooled is None:
      raise UserError("config.classifier.pooling='pooler': this encoder has no pooler; use "
                      "'first' or 'mean'")
    return pooled.astype(jnp.float32)
  if how == 'first':
    return hidden[:, 0]  # [B, D]
  m = mask.astype(hidden.dtype)[..., None]  # [B, T, 1]
  return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)  # [B, D]


class ClassifyTask:
  """config.task = 'classify'."""
  name = 'classify'
  metrics = {'accuracy': 'max', 'macro_f1': 'max', 'mcc': 'max', 'f1': 'max', 'loss': 'min',
             'pearson': 'max', 'spearman': 'max', 'mse': 'min'}

  @staticmethod
  def check_config(config: Any) -> None:
    """Config errors before any data is read (lmjax.config_schema calls it too)."""
    models.check_model_config(config.model, config.seq_len)
    if config.classifier.pooling not in POOLINGS:
      raise UserError(f'config.classifier.pooling: {config.classifier.pooling!r} is not one '
                      f'of {POOLINGS}')
    regression = bool(config.data.regression)
    best = config.checkpoint.best_metric
    if best in (CLASS_METRICS if regression else REGRESSION_METRICS):
      raise UserError(f'config.checkpoint.best_metric={best!r} is not reported for '
                      f'{"regression" if regression else "classification"} '
                      f'(config.data.regression={regression})')
    if config.seq_len < 4:
      raise UserError(f'config.seq_len={config.seq_len}: a classification example needs at '
                      'least 4 tokens ([CLS] a [SEP] and one more)')

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    del source_vocab_size
    self.check_config(config)
    c, d = config.classifier, config.data
    self.config, self.regression = config, bool(d.regression)
    if vocab_size is None:  # read the data
      self.data = cls_data.load_classification_data(d, config.seq_len, workdir)
      tok, classes = self.data.tokenizer, self.data.classes
      if classes is not None:
        d.classes = list(classes)  # saved with the config: the tools need the class names
    else:  # abstract (lmjax.plan, lmjax.classify): shapes only
      self.data, tok = None, None
      classes = None if self.regression else tuple(str(x) for x in d.classes) or ('0', '1')
    self.tokenizer, self.classes = tok, classes
    self.num_outputs = 1 if self.regression else len(classes)
    self.model = models.build_lm(config.model, vocab_size or tok.vocab_size)
    if self.model.encode is None:
      raise UserError(f'config.model.name={config.model.name!r} is not an encoder family; '
                      "config.task='classify' needs one (e.g. 'bert', 'rnn_encoder')")
    self.head = ClassifierHead(self.num_outputs, c.dropout_rate)
    self.eval_splits = ('eval',) + (('test',) if self.data and self.data.test else ())
    self.steps_per_epoch = self.train_iterator().steps_per_epoch if self.data else 1
    self.num_steps = base.num_steps(config, self.steps_per_epoch)

  # --- batches ---

  def batch_spec(self) -> dict:
    b, t = self.config.batch_size, self.config.seq_len
    label = jnp.float32 if self.regression else jnp.int32
    return {'inputs': base.Spec((b, t), jnp.int32, ('batch', 'length')),
            'token_types': base.Spec((b, t), jnp.int32, ('batch', 'length')),
            'labels': base.Spec((b,), label, ('batch',)),
            'weights': base.Spec((b,), jnp.float32, ('batch',))}

  def train_iterator(self):
    c = self.config
    return cls_data.BucketIterator(self.data.train, c.batch_size, c.seq_len, c.seed,
                                   c.data.pad_multiple, c.data.bucket)

  # --- model and loss ---

  def _encode(self, params, batch, rng, train: bool):
    inputs = {'inputs': batch['inputs'], 'token_types': batch['token_types'],
              'mask': batch['inputs'] != 0}
    rngs = {'dropout': rng} if train else {}
    return self.model.encode({'params': params}, inputs, rngs, not train)

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    enc_rng, head_rng = jax.random.split(rng)
    encoder = self.model.init(enc_rng, batch['inputs'])['params']['encoder']
    params = {'encoder': encoder}
    hidden, pooled = self._encode(params, batch, None, False)
    vec = pool(hidden, pooled, batch['inputs'] != 0, self.config.classifier.pooling)
    params['classifier'] = self.head.init(head_rng, vec)['params']
    return params

  def init_carry(self, batch_size: int) -> Any:
    del batch_size
    return None

  def logits(self, params, batch, rng=None, train: bool = False) -> jax.Array:
    """[B, C] float32 (C = 1 for regression)."""
    enc_rng, head_rng = jax.random.split(rng) if train else (None, None)
    hidden, pooled = self._encode(params, batch, enc_rng, train)
    vec = pool(hidden, pooled, batch['inputs'] != 0, self.config.classifier.pooling)
    return self.head.apply({'params': params['classifier']}, vec, deterministic=not train,
                           rngs={'dropout': head_rng} if train else {})

  def predict(self, params, batch) -> jax.Array:
    """Class probabilities [B, C], or predicted values [B] for regression."""
    z = self.logits(params, batch)
    return z[:, 0] if self.regression else jax.nn.softmax(z, axis=-1)

  def loss(self, params, batch, carry, rng, train: bool):
    z = self.logits(params, batch, rng, train)  # [B, C]
    w = batch['weights']  # [B]
    if self.regression:
      p, y = z[:, 0], batch['labels']
      sums = {'loss': (w * (p - y) ** 2).sum(), 'weight': w.sum()}
      if not train:
        sums.update(sum_p=(w * p).sum(), sum_y=(w * y).sum(), sum_pp=(w * p * p).sum(),
                    sum_yy=(w * y * y).sum(), sum_py=(w * p * y).sum())
      return sums, carry
    c = self.num_outputs
    logp = jax.nn.log_softmax(z, axis=-1)  # [B, C]
    onehot = jax.nn.one_hot(batch['labels'], c, dtype=jnp.float32)  # [B, C]
    ls = self.config.label_smoothing if train else 0.0
    target = onehot * (1.0 - ls) + ls / c
    nll = -(target * logp).sum(-1)  # [B]
    sums = {'loss': (w * nll).sum(), 'weight': w.sum()}
    if not train:  # the confusion matrix [true, predicted], weighted
      pred = jax.nn.one_hot(jnp.argmax(z, -1), c, dtype=jnp.float32)  # [B, C]
      cm = jnp.einsum('bi,bj->ij', onehot * w[:, None], pred)  # [C, C]
      sums.update({f'cm_{i}_{j}': cm[i, j] for i in range(c) for j in range(c)})
    return sums, carry

  # --- evaluation and reports ---

  def _split(self, split: str):
    return self.data.eval if split == 'eval' else self.data.test

  def eval_batches(self, split: str) -> list:
    c = self.config
    return cls_data.eval_batches(self._split(split), c.eval_batch_size, c.seq_len,
                                 c.data.pad_multiple)

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    """Metrics over every example of the split."""
    data, batches = self._split(split), self.eval_batches(split)
    sums = sum_batches(batches, None)
    assert int(sums['weight']) == len(data), (sums['weight'], len(data))
    if self.regression:
      report = metrics_lib.regression_report(sums)
      report['loss'] = report['mse']
      if jax.process_count() == 1:  # ranks need every prediction on one host
        if not hasattr(self, '_predict'):
          self._predict = jax.jit(self.predict)
        predict = self._predict
        preds = np.concatenate([np.asarray(predict(params, b))[b['weights'] > 0]
                                for b in batches])
        labels = np.concatenate([b['labels'][b['weights'] > 0] for b in batches])
        report['spearman'] = metrics_lib.spearman(preds, labels)
      return report
    c = self.num_outputs
    cm = np.asarray([[sums[f'cm_{i}_{j}'] for j in range(c)] for i in range(c)])
    report = metrics_lib.classification_report(cm)
    report['loss'] = sums['loss'] / sums['weight']
    return report

  def describe(self, train_iter: Any) -> str:
    d = self.data
    kind = ('regression' if self.regression else
            f'{len(self.classes)} classes ({", ".join(self.classes[:10])}'
            f'{", ..." if len(self.classes) > 10 else ""})')
    waste = cls_data.padding_fraction(train_iter.peek(200))
    eval_waste = cls_data.padding_fraction(self.eval_batches('eval'))
    return (f'train {len(d.train):,} examples, {kind}; {d.train.num_truncated:,} truncated to '
            f'config.seq_len={self.config.seq_len}; eval {len(d.eval):,}; padding '
            f'{waste:.1%} train / {eval_waste:.1%} eval')

  def format_report(self, split: str, step: int, report: dict) -> list:
    if self.regression:
      sp = f'  spearman {report["spearman"]:.4f}' if 'spearman' in report else ''
      return [f'{split} step {step}: pearson {report["pearson"]:.4f}{sp}  mse '
              f'{report["mse"]:.4f} over {report["examples"]:,} examples']
    f1 = f'  F1 {report["f1"]:.4f}' if 'f1' in report else ''
    return [f'{split} step {step}: accuracy {report["accuracy"]:.4f}  macro-F1 '
            f'{report["macro_f1"]:.4f}{f1}  MCC {report["mcc"]:.4f}  loss {report["loss"]:.4f} '
            f'over {report["examples"]:,} examples']

  def summary(self, report: dict) -> str:
    if self.regression:
      return f'eval pearson {report["pearson"]:.4f}, mse {report["mse"]:.4f}'
    return (f'eval accuracy {report["accuracy"]:.4f} (majority class '
            f'{report["majority"]:.4f})')

  def finish(self, params: Any, workdir: str) -> list:
    del params, workdir
    return []
