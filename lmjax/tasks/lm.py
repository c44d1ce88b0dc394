"""Language modelling: next-token prediction over token streams (lmjax/data/lm.py).

Two modes, chosen by the model: independent shuffled windows (Transformers), or stateful
truncated BPTT (RNNs: consecutive windows of batch_size contiguous streams, the recurrent
state carried between them and reset at each epoch's first window). The report is perplexity
over every token of the split, plus per-word perplexity and bits per byte.

Axis legend: B batch, T length (config.seq_len).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import losses, models
from lmjax.data import lm as lm_data
from lmjax.models import attention
from lmjax.tasks import base


def _reset_carry(carry: Any, reset: jax.Array) -> Any:
  return jax.tree.map(lambda c: jnp.where(reset > 0, jnp.zeros_like(c), c), carry)


class LMTask:
  """config.task = 'lm'."""
  name = 'lm'
  metrics = base.token_metrics()

  @staticmethod
  def check_config(config: Any) -> None:
    """Config errors before any data is read (lmjax.config_schema calls it; ranges of the
    common fields are the schema's)."""
    models.check_model_config(config.model, config.seq_len)

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    del source_vocab_size  # one vocabulary
    self.check_config(config)
    self.config = config
    if vocab_size is None:  # read the data
      tok, self.train, self.eval, self.test = lm_data.load_lm_data(config.data, workdir)
    else:  # abstract (lmjax.plan): shapes only
      tok, self.train, self.eval, self.test = None, None, None, None
    self.tokenizer = tok
    self.model = models.build_lm(config.model, vocab_size or tok.vocab_size)
    self.stateful = self.model.stateful
    self.eval_splits = ('eval',) + (('test',) if self.test is not None else ())
    self.steps_per_epoch = self.train_iterator().steps_per_epoch if self.train else 1
    self.num_steps = base.num_steps(config, self.steps_per_epoch)

  # --- batches ---

  def batch_spec(self) -> dict:
    b, t = self.config.batch_size, self.config.seq_len
    spec = {'inputs': base.Spec((b, t), jnp.int32, ('batch', 'length')),
            'targets': base.Spec((b, t), jnp.int32, ('batch', 'length')),
            'weights': base.Spec((b, t), jnp.float32, ('batch', 'length'))}
    if self.stateful:
      spec['reset'] = base.Spec((), jnp.int32, ())  # 1 on an epoch's first window
    return spec

  def train_iterator(self):
    c = self.config
    cls = lm_data.BpttIterator if self.stateful else lm_data.WindowIterator
    return cls(self.train.stream, c.batch_size, c.seq_len, c.seed)

  # --- model and loss ---

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    return self.model.init(rng, batch['inputs'])['params']

  def init_carry(self, batch_size: int) -> Any:
    return self.model.init_carry(batch_size)

  def loss(self, params, batch, carry, rng, train: bool):
    if self.stateful:
      carry = _reset_carry(carry, batch['reset'])
    rngs = {'dropout': rng} if train else {}
    logits, carry = self.model.apply({'params': params}, batch['inputs'], carry, rngs,
                                     not train)
    smoothing = self.config.label_smoothing if train else 0.0
    fast = attention.use_custom_vjp(self.model.config.custom_vjp)  # at trace time
    nll = losses.cross_entropy(logits, batch['targets'], smoothing, fast) * batch['weights']
    return {'loss': nll.sum(), 'weight': batch['weights'].sum()}, carry

  # --- evaluation and reports ---

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    """Perplexity over every token of the split (eval batches pad with weight 0)."""
    corpus = self.eval if split == 'eval' else self.test
    bs = self.config.eval_batch_size
    batches = lm_data.eval_batches(corpus.stream, bs, self.config.seq_len,
                                   stateful=self.stateful)
    sums = sum_batches(batches, self.init_carry(bs))
    assert int(sums['weight']) == corpus.num_predictions, (sums['weight'],
                                                           corpus.num_predictions)
    return corpus_report(sums['loss'], sums['weight'], corpus, self.config.data.tokenizer)

  def describe(self, train_iter: Any) -> str:
    del train_iter
    return f'train {self.train.num_predictions:,} tokens'

  def format_report(self, split: str, step: int, report: dict) -> list:
    return [base.ppl_line(split, step, report)]

  def summary(self, report: dict) -> str:
    return f'eval ppl {report["ppl"]:.3f} (uniform {self.tokenizer.vocab_size})'

  def finish(self, params: Any, workdir: str) -> list:
    """Samples: continuations of the first tokens of a few eval lines (config.sample)."""
    del workdir
    smp = self.config.sample
    if not smp.num_samples or jax.process_count() > 1:
      return []  # multi-process params are not host-local
    prompts = eval_prompts(self.eval.stream, self.tokenizer.eos_id, smp.num_samples,
                           smp.prompt_tokens)
    if prompts is None:
      return []
    from lmjax import decoding  # pylint: disable=g-import-not-at-top
    out = decoding.generate_from_family(
        self.model, jax.device_get(params), prompts, jax.random.PRNGKey(self.config.seed),
        num_new=smp.max_new_tokens, temperature=smp.temperature, top_k=smp.top_k,
        top_p=smp.top_p)
    tok = self.tokenizer
    return [f'sample: {tok.decode(list(p))} -> {tok.decode(cut_at(list(o), tok.eos_id))}'
            for p, o in zip(prompts, np.asarray(out))]


def corpus_report(total_nll: float, total_tokens: float, corpus: lm_data.Corpus,
                  tokenizer_kind: str) -> dict:
  from lmjax import metrics  # pylint: disable=g-import-not-at-top
  report = metrics.lm_report(total_nll, total_tokens, corpus.num_words, corpus.num_bytes)
  if tokenizer_kind == 'word':
    report['oov'] = corpus.num_oov  # eval words mapped to <unk>
  return report


def eval_prompts(stream: np.ndarray, eos_id: int, num: int, length: int):
  """The first `length` tokens of up to `num` eval lines ([N, length] int32), or None."""
  prompts = []
  for pos in np.flatnonzero(stream == eos_id)[:-1]:
    ids = stream[pos + 1:pos + 1 + length]
    if len(ids) == length and eos_id not in ids:
      prompts.append(ids)
    if len(prompts) == num:
      break
  return np.stack(prompts).astype(np.int32) if prompts else None


def cut_at(ids: list, eos_id: int) -> list:
  return ids[:ids.index(eos_id)] if eos_id in ids else ids

