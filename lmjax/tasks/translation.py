"""Translation: teacher-forced target NLL for training; perplexity plus sacreBLEU/chrF of the
decoded split for evaluation (lmjax/data/translation.py reads, tokenizes and batches pairs).

Batches are packed rows of several pairs (segment ids and positions; Transformer) or one pair
per row in length-sorted buckets (config.data.packing=False; any seq2seq model).

Axis legend: B batch (rows), L row length (config.seq_len; shorter for bucketed batches).
"""

import time
from typing import Any

import jax
import jax.numpy as jnp

from lmjax import losses, metrics, models, paths
from lmjax.data import translation as mt_data
from lmjax.errors import UserError
from lmjax.models import attention
from lmjax.tasks import base

PACKED_KEYS = ('inputs_segmentation', 'targets_segmentation', 'inputs_position',
               'targets_position')


class TranslationTask:
  """config.task = 'translation'."""
  name = 'translation'
  metrics = base.token_metrics({'bleu': 'max', 'chrf': 'max'})

  @staticmethod
  def check_config(config: Any) -> None:
    """Config errors before any data is read (lmjax.config_schema calls it; ranges of the
    common fields are the schema's)."""
    models.check_model_config(config.model, config.seq_len)
    d = config.data
    if d.source_lang == d.target_lang:
      raise UserError(f'config.data.source_lang and target_lang are both {d.source_lang!r}')
    for field in ('max_source_len', 'max_target_len'):
      if not 2 <= d[field] <= config.seq_len:
        raise UserError(f'config.data.{field}={d[field]} must be in [2, '
                        f'config.seq_len={config.seq_len}]')
    if d.packing and not models.accepts_packing(config.model):
      raise UserError(f'config.data.packing=True: model {config.model.name!r} takes one pair '
                      'per row; set config.data.packing=False')

  def __init__(self, config: Any, workdir: str | None, vocab_size: int | None = None,
               source_vocab_size: int = 0):
    self.check_config(config)
    self.config = config
    self._decoded = {}  # split -> the last decoded hypotheses (written by finish)
    if vocab_size is None:
      tok, self.splits = mt_data.load_translation_data(config.data, config.seq_len, workdir)
      vocab_size, source_vocab_size = tok.vocab_size, getattr(tok, 'source_vocab_size', 0)
    else:  # abstract (lmjax.plan, decoding a trained workdir)
      tok, self.splits = None, None
    self.tokenizer = tok
    self.model = models.build_lm(config.model, vocab_size, source_vocab_size)
    self.eval_splits = ('eval',) + (('test',) if self.splits and self.splits['test'] is not None else ())
    self.steps_per_epoch = self.train_iterator().steps_per_epoch if self.splits else 1
    self.num_steps = base.num_steps(config, self.steps_per_epoch)

  # --- batches ---

  def batch_spec(self) -> dict:
    shape, row = (self.config.batch_size, self.config.seq_len), ('batch', 'length')
    keys = ('inputs', 'decoder_inputs', 'targets')
    if self.config.data.packing:
      keys += PACKED_KEYS
    spec = {k: base.Spec(shape, jnp.int32, row) for k in keys}
    spec['weights'] = base.Spec(shape, jnp.float32, row)
    return spec

  def train_iterator(self):
    c = self.config
    return mt_data.TranslationIterator(self.splits['train'], c.batch_size, c.seq_len,
                                       c.data.packing, self.tokenizer.bos_id, c.seed,
                                       c.data.pad_multiple)

  # --- model and loss ---

  def init_params(self, rng: jax.Array, batch: dict) -> Any:
    return self.model.init(rng, self.model.model_inputs(batch))['params']

  def init_carry(self, batch_size: int) -> Any:
    del batch_size
    return None

  def loss(self, params, batch, carry, rng, train: bool):
    rngs = {'dropout': rng} if train else {}
    logits, carry = self.model.apply({'params': params}, self.model.model_inputs(batch),
                                     carry, rngs, not train)
    smoothing = self.config.label_smoothing if train else 0.0
    fast = attention.use_custom_vjp(self.model.config.custom_vjp)  # at trace time
    nll = losses.cross_entropy(logits, batch['targets'], smoothing, fast) * batch['weights']
    return {'loss': nll.sum(), 'weight': batch['weights'].sum()}, carry

  # --- evaluation and reports ---

  def evaluate(self, split: str, sum_batches: base.SumBatches, params: Any) -> dict:
    """Target perplexity (teacher forcing, every target token incl. eos) and sacreBLEU/chrF of
    the decoded split against its raw references (config.decode; beam_size 0 skips BLEU)."""
    data, c = self.splits[split], self.config
    batches = mt_data.eval_batches(data, c.eval_batch_size, c.seq_len, c.data.packing,
                                   self.tokenizer.bos_id, c.data.pad_multiple)
    sums = sum_batches(batches, None)
    assert int(sums['weight']) == data.num_target_tokens, (sums['weight'],
                                                           data.num_target_tokens)
    report = metrics.lm_report(sums['loss'], sums['weight'])
    dec = c.decode
    if dec.beam_size > 0 and jax.process_count() == 1:
      from lmjax import decoding  # pylint: disable=g-import-not-at-top
      t0 = time.time()
      hyps = decoding.translate_lines(self.model, jax.device_get(params), self.tokenizer,
                                      data.src_lines, dec)
      wall = time.time() - t0
      report.update(metrics.bleu_report(hyps, data.tgt_lines))
      self._decoded[split] = hyps  # the last decode of each split: finish writes them
      report['decode_sentences_per_sec'] = len(hyps) / max(wall, 1e-9)
      report['examples'] = list(zip(data.src_lines[:3], hyps[:3], data.tgt_lines[:3]))
    return report

  def describe(self, train_iter: Any) -> str:
    tr = self.splits['train']
    waste = mt_data.padding_waste(train_iter.peek(200))  # the current epoch's padding
    return (f'train {len(tr):,} pairs ({tr.num_target_tokens:,} target tokens; dropped '
            f'{tr.num_dropped_blank} blank, {tr.num_dropped_long} too long); padding '
            f'{waste["source"]:.1%} source / {waste["target"]:.1%} target')

  def format_report(self, split: str, step: int, report: dict) -> list:
    lines = [base.ppl_line(split, step, report)]
    if 'bleu' in report:
      lines.append(f'{split} step {step}: BLEU {report["bleu"]:.2f}  chrF {report["chrf"]:.2f}'
                   f'  ({report["decode_sentences_per_sec"]:.1f} sentences/s)  '
                   f'{report["bleu_signature"]}')
    lines += [f'  {src}\n    -> {hyp}\n    ref {ref}' for src, hyp, ref in
              report.get('examples', ())]
    return lines

  def summary(self, report: dict) -> str:
    bleu = f'; eval BLEU {report["bleu"]:.2f}' if 'bleu' in report else ''
    return f'eval ppl {report["ppl"]:.3f} (uniform {self.tokenizer.vocab_size}){bleu}'

  def finish(self, params: Any, workdir: str) -> list:
    """Writes the final decode of each split and its references, one sentence per line
    (WORKDIR/hypotheses.SPLIT.txt, references.SPLIT.txt), e.g. for sacrebleu or
    lmjax.ablate's significance tests."""
    del params
    lines = []
    for split, hyps in sorted(self._decoded.items()):
      if jax.process_index() == 0:
        for kind, text in (('hypotheses', hyps), ('references', self.splits[split].tgt_lines)):
          paths.write_text(paths.join(workdir, f'{kind}.{split}.txt'),
                           ''.join(t + '\n' for t in text))
      lines.append(f'wrote {paths.join(workdir, f"hypotheses.{split}.txt")} '
                   f'({len(hyps):,} {split} translations) and its references')
    return lines
