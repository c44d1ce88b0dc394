"""Masked-LM pretraining of a BERT-family encoder (Devlin et al. 2019).

Batches come masked from the host (lmjax/data/mlm.py: 15% of the tokens chosen, 80/10/10
[MASK]/random/kept, optionally whole words): inputs [B, T] and, per row, the chosen positions,
their original tokens and weights [B, P]. The encoder runs on the inputs, its hidden states are
gathered at the P positions and only those go through the MLM head (dense, GELU, LayerNorm,
decoder tied to the word embeddings), so the [.., V] projection costs P/T of a full one and the
loss is over the masked positions only.

The report is over one fixed masking of the whole eval split (config.mlm.eval_seed):
masked-token perplexity exp(mean NLL), accuracy of the argmax, and the number of predictions.
Parameters are {'encoder', 'mlm_head'}, the layout of lmjax.import_hf workdirs, so a
classifier warm-starts its encoder from an MLM run (config.init_from) and an imported
Hugging Face model continues pretraining here.

Axis legend: B batch, T length (config.seq_len), P predictions per row, D width, V vocab.
"""

from typing import Any

import jax
import jax.numpy as jnp

from lmjax import losses, metrics, models
from lmjax.data import mlm as mlm_data
from lmjax.errors import UserError
from lmjax.models import attention, bert
from lmjax.tasks import base


class MLMTask:
  """config.task = 'mlm'."""
  name = 'mlm'
  metrics = {'ppl': 'min', 'nll': 'min', 'accuracy': 'max'}

  @staticmethod
  def check_config(config: Any) -> None:
    """Config errors before any data is read (lmjax.config_schema calls it too)."""
    models.check_model_config(config.model, config.seq_len)
    if config.model.name != 'bert':
      raise UserError(f"config.model.name={config.model.name!r}: config.task='mlm' trains the "
                      "BERT family's masked-LM head (config.model.name='bert')")
    if config.data.tokenizer != 'wordpiece':
      raise UserError(f'config.data.tokenizer={config.data.tokenizer!r}: masked-LM pretraining '
                      "needs the WordPiece tokenizer ([MASK]; config.data.tokenizer='wordpiece')")
    m = config.mlm
    if m.mask_token_rate + m.random_token_rate > 1.0:
      raise UserError(f'config.mlm.mask_token_rate + config.mlm.random_token_rate = '
                      f'{m.mask_token_rate + m.random_token_rate:g} exceeds 1')
    if config.seq_len < 3:
      raise UserError(f'config.seq_len={config.seq_len}: a masked-LM row needs at least 3 '
                      'tokens ([CLS] one token [SEP])')

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    del source_vocab_size
    self.check_config(config)
    self.config = config
    if vocab_size is None:  # read the data
      self.data = mlm_data.load_mlm_data(config.data, config.seq_len, workdir)
      self.tokenizer = self.data.tokenizer
      self.masker = mlm_data.make_masker(self.tokenizer, config.mlm, config.seq_len)
    else:  # abstract (lmjax.plan, the tools): shapes only
      self.data = self.tokenizer = self.masker = None
    self.model = models.build_lm(config.model, vocab_size or self.tokenizer.vocab_size)
    self.num_predictions = mlm_data.max_predictions(config.mlm, config.seq_len)
    self.eval_splits = ('eval',) + (('test',) if self.data and self.data.test else ())
    self.steps_per_epoch = self.train_iterator().steps_per_epoch if self.data else 1
    self.num_steps = base.num_steps(config, self.steps_per_epoch)
    self._eval = {}

  # --- batches ---

  def batch_spec(self) -> dict:
    b, t, p = self.config.batch_size, self.config.seq_len, self.num_predictions
    return {'inputs': base.Spec((b, t), jnp.int32, ('batch', 'length')),
            'positions': base.Spec((b, p), jnp.int32, ('batch', None)),
            'targets': base.Spec((b, p), jnp.int32, ('batch', None)),
            'weights': base.Spec((b, p), jnp.float32, ('batch', None))}

  def train_iterator(self):
    c = self.config
    return mlm_data.MaskedRowIterator(self.data.train, c.batch_size, c.seed, self.masker)

  # --- model and loss ---

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    return self.model.init(rng, {'inputs': batch['inputs']})['params']

  def init_carry(self, batch_size: int) -> Any:
    del batch_size
    return None

  def loss(self, params, batch, carry, rng, train: bool):
    inputs = batch['inputs']
    enc = {'inputs': inputs, 'token_types': jnp.zeros_like(inputs), 'mask': inputs != 0}
    hidden, _ = self.model.encode({'params': params}, enc,
                                  {'dropout': rng} if train else {}, not train)  # [B, T, D]
    at = jnp.take_along_axis(hidden, batch['positions'][..., None], axis=1)  # [B, P, D]
    logits = bert.mlm_logits(self.model.config, params, at)  # [B, P, V]
    smoothing = self.config.label_smoothing if train else 0.0
    fast = attention.use_custom_vjp(self.model.config.custom_vjp)
    w = batch['weights']
    nll = losses.cross_entropy(logits, batch['targets'], smoothing, fast) * w  # [B, P]
    sums = {'loss': nll.sum(), 'weight': w.sum()}
    if not train:
      sums['correct'] = ((jnp.argmax(logits, -1) == batch['targets']) * w).sum()
    return sums, carry

  # --- evaluation and reports ---

  def eval_batches(self, split: str) -> list:
    if split not in self._eval:
      rows = self.data.eval if split == 'eval' else self.data.test
      self._eval[split] = mlm_data.eval_batches(rows, self.config.eval_batch_size,
                                                self.masker, self.config.mlm.eval_seed)
    return self._eval[split]

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    """Masked-token perplexity and accuracy over the split's fixed masking."""
    del params
    batches = self.eval_batches(split)
    sums = sum_batches(batches, None)
    expected = sum(float(b['weights'].sum()) for b in batches)
    assert int(sums['weight']) == int(expected), (sums['weight'], expected)
    report = metrics.lm_report(sums['loss'], sums['weight'])
    report['accuracy'] = sums['correct'] / max(sums['weight'], 1.0)
    return report

  def describe(self, train_iter: Any) -> str:
    del train_iter
    d, m = self.data, self.masker
    how = 'whole words' if m.whole_word else 'tokens'
    return (f'train {len(d.train):,} rows ({d.train.num_tokens:,} tokens), eval '
            f'{len(d.eval):,} rows; masking {self.config.mlm.mask_rate:.0%} of the {how}, at '
            f'most {m.max_predictions} per row')

  def format_report(self, split: str, step: int, report: dict) -> list:
    return [f'{split} step {step}: masked-token ppl {report["ppl"]:.3f}  accuracy '
            f'{report["accuracy"]:.4f} over {report["tokens"]:,} masked tokens']

  def summary(self, report: dict) -> str:
    return (f'eval masked-token ppl {report["ppl"]:.3f}, accuracy {report["accuracy"]:.4f} '
            f'(uniform ppl {self.tokenizer.vocab_size})')

  def finish(self, params: Any, workdir: str) -> list:
    del params, workdir
    return []
