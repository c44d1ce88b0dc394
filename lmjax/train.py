"""train_and_evaluate(config, workdir): the one train/eval loop for every language model.

Sections: config checks -> mesh -> input -> model -> sharded state -> jitted steps ->
checkpoint restore -> loop (log, eval, checkpoint) -> final eval and samples.

The train state is a plain dict {'step', 'params', 'opt_state', 'rng'[, 'carry']}. It is created
already sharded: its shapes come from jax.eval_shape, its shardings from the parameters' logical
axis names and the config's rules, and the init function is jitted with those out_shardings.
"""

import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax import checkpoint, metrics, models, optim, sharding
from lmjax.data import lm as lm_data
from lmjax.data import translation as mt_data
from lmjax.errors import UserError


def cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0):
  """Per-token NLL [B, T] in float32 (with optional label smoothing).

  With smoothing ls the loss is lse - (1 - ls) z_t - ls mean(z), i.e. (1 - ls) NLL plus ls times
  the cross-entropy to the uniform distribution. The backward is written by hand: the gradient
  softmax(z) - (1 - ls) onehot - ls / V is one fused pass over the logits, where autodiff of
  log_softmax + gather materialises the log-probabilities, a scattered one-hot and the
  log_softmax backward as separate passes over the [B, T, V] array (the largest elementwise
  tensors of an LM step).
  """
  return _cross_entropy(logits, targets, float(label_smoothing))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits, targets, label_smoothing):
  return _cross_entropy_fwd(logits, targets, label_smoothing)[0]


def _cross_entropy_fwd(logits, targets, label_smoothing):
  z = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, axis=-1)
  z_t = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  nll = lse - z_t
  if label_smoothing:
    nll = nll + label_smoothing * (z_t - z.mean(axis=-1))
  return nll, (logits, targets, lse)


def _cross_entropy_bwd(label_smoothing, res, g):
  logits, targets, lse = res
  vocab = logits.shape[-1]
  p = jnp.exp(logits.astype(jnp.float32) - lse[..., None])
  onehot = targets[..., None] == jnp.arange(vocab, dtype=targets.dtype)
  d = p - jnp.where(onehot, 1.0 - label_smoothing, 0.0) - label_smoothing / vocab
  return (g[..., None] * d).astype(logits.dtype), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def _say(*args) -> None:
  """Progress for the user, from process 0 only."""
  if jax.process_index() == 0:
    print(*args, flush=True)


def _reset_carry(carry: Any, reset: jax.Array) -> Any:
  return jax.tree.map(lambda c: jnp.where(reset > 0, jnp.zeros_like(c), c), carry)


def make_steps(family: models.LMFamily, tx, schedule, label_smoothing: float,
               loss_normalization: str = 'tokens', grad_accum_steps: int = 1,
               debug_nan_at_step: int = 0):
  """Pure train and eval steps over the state dict.

  A step whose loss or gradient norm is not finite applies no update: params and optimizer
  state stay as they were (the step counter, rng and data still advance) and out['finite'] is
  False; the loop then stops or skips by config.nan_policy.
  debug_nan_at_step: test hook; the loss and gradients of the update that makes step N are
  multiplied by NaN.

  loss_normalization: 'tokens' minimises the mean NLL per target token; 'sequences' the NLL
  summed over each window's time steps and averaged over the batch, as in Zaremba et al.'s
  PTB code (their lr 1.0 and clip 5 assume this scale: the gradient is bptt times larger).
  grad_accum_steps: the batch is split into this many microbatches whose gradient sums are
  accumulated in a scan before one update, which equals the update of the whole batch.
  """
  if loss_normalization not in ('tokens', 'sequences'):
    raise UserError(f'config.loss_normalization: {loss_normalization!r} is not tokens or '
                    'sequences')

  def nll_sums(params, inputs, targets, weights, carry, rng):
    """(summed NLL, (summed weights, new carry)): sums, so microbatches add up exactly.

    inputs: tokens [B, T] (language models) or the model-input dict (seq2seq).
    """
    logits, new_carry = family.apply({'params': params}, inputs, carry, {'dropout': rng}, False)
    nll = cross_entropy(logits, targets, label_smoothing) * weights
    return nll.sum(), (weights.sum(), new_carry)

  grad_fn = jax.value_and_grad(nll_sums, has_aux=True)

  def accumulated(params, batch, carry, rng):
    m = grad_accum_steps
    inputs = family.model_inputs(batch)
    if m == 1:
      return grad_fn(params, inputs, batch['targets'], batch['weights'], carry, rng)
    # Microbatch i takes rows i, i+m, ...: each device keeps contributing its own rows.
    split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)
    merge = lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])
    xs = (jax.tree.map(split, inputs), split(batch['targets']), split(batch['weights']),
          jax.tree.map(split, carry), jax.random.split(rng, m))

    def body(acc, x):
      (nll, (w, c)), g = grad_fn(params, *x)
      acc = jax.tree.map(jnp.add, acc, (nll, w, g))
      return acc, c

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    (nll, w, grads), new_carry = jax.lax.scan(body, zeros, xs)
    return (nll, (w, jax.tree.map(merge, new_carry))), grads

  def train_step(state, batch):
    rng, dropout_rng = jax.random.split(state['rng'])
    carry = state.get('carry')
    if family.stateful:
      carry = _reset_carry(carry, batch['reset'])
    (nll, (w, new_carry)), grads = accumulated(state['params'], batch, carry, dropout_rng)
    if debug_nan_at_step:
      poison = jnp.where(state['step'] + 1 == debug_nan_at_step, jnp.nan, 1.0)
      nll, grads = nll * poison, jax.tree.map(lambda g: g * poison, grads)
    norm = jnp.maximum(w, 1.0) if loss_normalization == 'tokens' else batch['targets'].shape[0]
    grads = jax.tree.map(lambda g: g / norm, grads)
    loss, grad_norm = nll / jnp.maximum(w, 1.0), optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(state, step=state['step'] + 1, rng=rng,
                     opt_state=keep_if_bad(opt_state, state['opt_state']),
                     params=keep_if_bad(optax.apply_updates(state['params'], updates),
                                        state['params']))
    if family.stateful:
      new_carry = jax.lax.stop_gradient(new_carry)  # truncated BPTT boundary
      new_state['carry'] = jax.tree.map(lambda c: jnp.where(finite, c, jnp.zeros_like(c)),
                                        new_carry)
    out = {'loss': loss, 'grad_norm': grad_norm, 'lr': schedule(state['step']), 'tokens': w,
           'finite': finite}
    return new_state, out

  def eval_step(params, batch, carry):
    if family.stateful:
      carry = _reset_carry(carry, batch['reset'])
    logits, carry = family.apply({'params': params}, family.model_inputs(batch), carry, {}, True)
    nll = cross_entropy(logits, batch['targets']) * batch['weights']
    return nll.sum(), batch['weights'].sum(), carry

  return train_step, eval_step


@dataclasses.dataclass
class Setup:
  """Everything the loop and the tools (generate, tests) need, built from a config."""
  config: Any
  mesh: Any
  rules: tuple
  family: models.LMFamily
  tokenizer: Any
  train: lm_data.Corpus
  eval: lm_data.Corpus
  test: lm_data.Corpus | None
  translation: dict | None  # seq2seq: {'train', 'eval', 'test'} ParallelSplits (else None)
  num_steps: int  # config.num_train_steps, or num_epochs x steps per epoch
  steps_per_epoch: int
  tx: Any
  schedule: Any
  state_shapes: Any
  state_sharding: Any
  batch_sharding: Any
  init_fn: Any


def check_config(config: Any) -> None:
  for field in ('batch_size', 'eval_batch_size', 'seq_len', 'num_train_steps'):
    if int(config[field]) <= 0:
      raise UserError(f'config.{field} must be positive, got {config[field]}')


def sharded_state(config: Any, family: models.LMFamily, tx, mesh, rules: tuple):
  """(init_fn, state shapes, state shardings) without allocating anything.

  Shapes come from jax.eval_shape; parameter shardings from their logical axis names and the
  rules; optimizer-state leaves that mirror parameters take the parameters' shardings.
  """
  dummy = family.dummy_inputs(config.batch_size, config.seq_len)

  def boxed_params(rng):
    return family.init(rng, dummy)['params']

  def init_fn(rng):
    params_rng, rng = jax.random.split(rng)
    params = nn.meta.unbox(boxed_params(params_rng))
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'opt_state': tx.init(params), 'rng': rng}
    if family.stateful:
      state['carry'] = family.init_carry(config.batch_size)
    return state

  rng0 = jax.random.PRNGKey(config.seed)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    param_sharding = sharding.logical_to_sharding(jax.eval_shape(boxed_params, rng0), mesh, rules)
    state_shapes = jax.eval_shape(init_fn, rng0)
  repl = sharding.replicated(mesh)
  state_sharding = {
      'step': repl, 'rng': repl, 'params': param_sharding,
      'opt_state': optax.tree_map_params(tx, lambda _, s: s, state_shapes['opt_state'],
                                         param_sharding, transform_non_params=lambda _: repl)}
  if family.stateful:
    state_sharding['carry'] = jax.tree.map(
        lambda c: sharding.batch_sharding(mesh, c.ndim), state_shapes['carry'])
  return init_fn, state_shapes, state_sharding


def _build_family(config: Any, vocab_size: int,
                  source_vocab_size: int = 0) -> models.LMFamily:
  family = models.build_lm(config.model, vocab_size, source_vocab_size)
  max_len = models.max_len(family)
  if max_len is not None and config.seq_len > max_len:
    raise UserError(f'config.seq_len={config.seq_len} exceeds config.model.max_len={max_len}')
  return family


def setup_model(config: Any, vocab_size: int, steps_per_epoch: int | None = None,
                devices: Any = None, source_vocab_size: int = 0) -> Setup:
  """Mesh, model, optimizer and the state's shapes/shardings: no data, nothing compiled.

  The data fields (tokenizer, train/eval/test) are None; `setup` fills them. lmjax.plan uses
  this directly to compile for a device count without a corpus.
  """
  check_config(config)
  # --- mesh ---
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  sharding.check_batch(config.batch_size, mesh)
  sharding.check_batch(config.eval_batch_size, mesh, 'config.eval_batch_size')
  # --- model ---
  family = _build_family(config, vocab_size, source_vocab_size)
  num_steps = config.num_train_steps
  if config.get('num_epochs', 0) and steps_per_epoch:
    num_steps = int(config.num_epochs * steps_per_epoch)
  tx, schedule = optim.make_optimizer(config.optimizer, num_steps, steps_per_epoch)
  # --- sharded state ---
  init_fn, state_shapes, state_sharding = sharded_state(config, family, tx, mesh, rules)
  return Setup(config=config, mesh=mesh, rules=rules, family=family, tokenizer=None,
               train=None, eval=None, test=None, translation=None, num_steps=num_steps,
               steps_per_epoch=steps_per_epoch, tx=tx, schedule=schedule,
               state_shapes=state_shapes, state_sharding=state_sharding,
               batch_sharding=sharding.batch_sharding(mesh), init_fn=init_fn)


def setup(config: Any, workdir: str | None, devices: Any = None) -> Setup:
  """Data (tokenizer, corpora) then `setup_model`; checks run before any data is read."""
  check_config(config)
  sharding.check_batch(config.batch_size, sharding.make_mesh(config.mesh, devices))
  # Model config errors surface before any data is read or written (the vocabulary size
  # is not known yet and does not matter to them).
  family = _build_family(config, 256)
  if family.seq2seq:
    packing = bool(config.data.get('packing', True))
    if packing and not family.packing:
      raise UserError(f'config.data.packing=True: model {config.model.name!r} takes one pair '
                      'per row; set config.data.packing=False')
    tok, splits = mt_data.load_translation_data(config.data, config.seq_len, workdir)
    steps_per_epoch = _translation_iterator(config, splits['train'], tok).steps_per_epoch
    s = setup_model(config, tok.vocab_size, steps_per_epoch, devices,
                    getattr(tok, 'source_vocab_size', 0))
    return dataclasses.replace(s, tokenizer=tok, translation=splits)
  tok, train_corpus, eval_corpus, test_corpus = lm_data.load_lm_data(config.data, workdir)
  it_cls = lm_data.BpttIterator if family.stateful else lm_data.WindowIterator
  steps_per_epoch = it_cls(train_corpus.stream, config.batch_size, config.seq_len,
                           0).steps_per_epoch
  s = setup_model(config, tok.vocab_size, steps_per_epoch, devices)
  return dataclasses.replace(s, tokenizer=tok, train=train_corpus, eval=eval_corpus,
                             test=test_corpus)


def _translation_iterator(c: Any, split: mt_data.ParallelSplit, tok: Any):
  return mt_data.TranslationIterator(split, c.batch_size, c.seq_len,
                                     bool(c.data.get('packing', True)), tok.bos_id, c.seed,
                                     int(c.data.get('pad_multiple', 8)))


def make_train_iterator(s: Setup):
  """The training batches: deterministic in config.seed, with get_state()/set_state()."""
  c = s.config
  if s.family.seq2seq:
    return _translation_iterator(c, s.translation['train'], s.tokenizer)
  it_cls = lm_data.BpttIterator if s.family.stateful else lm_data.WindowIterator
  return it_cls(s.train.stream, c.batch_size, c.seq_len, c.seed)


def _local_rows(sh, global_shape) -> slice:
  """The contiguous block of batch rows that this process's devices hold."""
  idx = sh.addressable_devices_indices_map(global_shape).values()
  starts = [i[0].start or 0 for i in idx]
  stops = [global_shape[0] if i[0].stop is None else i[0].stop for i in idx]
  return slice(min(starts), max(stops))


def _put(batch: dict, s: Setup) -> dict:
  """Global numpy batch -> global arrays sharded over the data axes.

  Every process computes the same global batch (the iterators are deterministic) and hands
  over only the rows its own devices hold, so a multi-process run sees the batches a
  single-process run would.
  """
  out = {}
  for k, v in batch.items():
    if v.ndim == 2:
      sh = s.batch_sharding
      v_local = v[_local_rows(sh, v.shape)] if jax.process_count() > 1 else v
    else:
      sh, v_local = sharding.replicated(s.mesh), v
    out[k] = jax.make_array_from_process_local_data(sh, v_local, v.shape)
  return out


def compile_steps(s: Setup):
  accum = int(s.config.get('grad_accum_steps', 1))
  if accum < 1 or s.config.batch_size % (accum * sharding.data_parallel_size(s.mesh)):
    raise UserError(f'config.grad_accum_steps={accum}: config.batch_size='
                    f'{s.config.batch_size} must split into {accum} microbatches that the '
                    f'data-parallel size {sharding.data_parallel_size(s.mesh)} divides')
  train_step, eval_step = make_steps(s.family, s.tx, s.schedule,
                                     s.config.get('label_smoothing', 0.0),
                                     s.config.get('loss_normalization', 'tokens'), accum,
                                     int(s.config.get('debug_nan_at_step', 0)))
  if s.family.seq2seq:
    batch_sh = s.batch_sharding  # every leaf of the batch dict is [B, L]
  else:
    batch_keys = ('inputs', 'targets', 'weights') + (('reset',) if s.family.stateful else ())
    batch_sh = {k: s.batch_sharding if k != 'reset' else sharding.replicated(s.mesh)
                for k in batch_keys}
  repl = sharding.replicated(s.mesh)
  carry_sh = s.state_sharding.get('carry')
  p_train = jax.jit(train_step, in_shardings=(s.state_sharding, batch_sh),
                    out_shardings=(s.state_sharding, repl), donate_argnums=0)
  p_eval = jax.jit(eval_step, in_shardings=(s.state_sharding['params'], batch_sh, carry_sh),
                   out_shardings=(repl, repl, carry_sh))
  p_init = jax.jit(s.init_fn, out_shardings=s.state_sharding)
  return p_init, p_train, p_eval


def _summed_nll(s: Setup, p_eval, params, batches, carry) -> tuple[float, float]:
  """(total NLL, total weight) over eval batches, summed on the host in float64."""
  total_nll, total_tokens = 0.0, 0.0
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    for batch in batches:
      nll, n, carry = p_eval(params, _put(batch, s), carry)
      total_nll += float(nll)
      total_tokens += float(n)
  return total_nll, total_tokens


def evaluate(s: Setup, p_eval, params, batch_size: int, split: str = 'eval') -> dict:
  """Perplexity over every token of the eval (or test) split; BLEU too for translation."""
  if s.family.seq2seq:
    return evaluate_translation(s, p_eval, params, batch_size, split)
  corpus = s.eval if split == 'eval' else s.test
  batches = lm_data.eval_batches(corpus.stream, batch_size, s.config.seq_len,
                                 stateful=s.family.stateful)
  total_nll, total_tokens = _summed_nll(s, p_eval, params, batches,
                                        s.family.init_carry(batch_size))
  assert int(total_tokens) == corpus.num_predictions, (total_tokens, corpus.num_predictions)
  report = metrics.lm_report(total_nll, total_tokens, corpus.num_words, corpus.num_bytes)
  if s.config.data.tokenizer == 'word':
    report['oov'] = corpus.num_oov  # eval words mapped to <unk>
  return report


def evaluate_translation(s: Setup, p_eval, params, batch_size: int, split: str) -> dict:
  """Target perplexity (teacher forcing, every target token incl. eos) and sacreBLEU/chrF of
  the decoded split against its raw references (config.decode; beam_size 0 skips BLEU)."""
  data = s.translation[split]
  c = s.config
  batches = mt_data.eval_batches(data, batch_size, c.seq_len,
                                 bool(c.data.get('packing', True)), s.tokenizer.bos_id,
                                 int(c.data.get('pad_multiple', 8)))
  total_nll, total_tokens = _summed_nll(s, p_eval, params, batches, None)
  assert int(total_tokens) == data.num_target_tokens, (total_tokens, data.num_target_tokens)
  report = metrics.lm_report(total_nll, total_tokens)
  dec = c.decode
  if dec.beam_size > 0 and jax.process_count() == 1:
    from lmjax import decoding  # pylint: disable=g-import-not-at-top
    t0 = time.time()
    hyps = decoding.translate_lines(s.family, jax.device_get(params), s.tokenizer,
                                     data.src_lines, dec, c.seq_len)
    wall = time.time() - t0
    report.update(metrics.bleu_report(hyps, data.tgt_lines))
    report['decode_sentences_per_sec'] = len(hyps) / max(wall, 1e-9)
    report['examples'] = list(zip(data.src_lines[:3], hyps[:3], data.tgt_lines[:3]))
  return report


def _print_report(split: str, step: int, report: dict) -> None:
  extra = ''.join(f'  {k} {report[k]:.3f}' for k in ('word_ppl', 'bpb') if k in report)
  if 'oov' in report:
    extra += f'  ({report["oov"]:,} words mapped to <unk>)'
  _say(f'{split} step {step}: ppl {report["ppl"]:.3f} over {report["tokens"]:,} tokens{extra}')
  if 'bleu' in report:
    _say(f'{split} step {step}: BLEU {report["bleu"]:.2f}  chrF {report["chrf"]:.2f}  '
         f'({report["decode_sentences_per_sec"]:.1f} sentences/s)  {report["bleu_signature"]}')
  for src, hyp, ref in report.get('examples', ()):
    _say(f'  {src}\n    -> {hyp}\n    ref {ref}')


def sample_text(s: Setup, params, num: int, prompt_tokens: int, num_new: int, seed: int,
                temperature: float, top_k: int, top_p: float) -> list[tuple[str, str]]:
  """Continuations of the first words of a few eval lines."""
  if s.family.stateful or s.family.seq2seq or jax.process_count() > 1:
    return []  # translation prints decoded examples with its eval instead  # RNN sampling is not implemented; multi-process params are not host-local
  from lmjax import decoding
  stream = s.eval.stream
  eos_positions = np.flatnonzero(stream == s.tokenizer.eos_id)[:-1]
  prompts = []
  for pos in eos_positions:
    ids = stream[pos + 1:pos + 1 + prompt_tokens]
    if len(ids) == prompt_tokens and s.tokenizer.eos_id not in ids:
      prompts.append(ids)
    if len(prompts) == num:
      break
  if not prompts:
    return []
  prompt = np.stack(prompts).astype(np.int32)
  host_params = jax.device_get(params)
  out = decoding.generate(host_params, jnp.asarray(prompt), jax.random.PRNGKey(seed),
                          config=s.family.config, num_new=num_new, temperature=temperature,
                          top_k=top_k, top_p=top_p)
  res = []
  for p, o in zip(prompt, np.asarray(out)):
    o = list(o)
    if s.tokenizer.eos_id in o:
      o = o[:o.index(s.tokenizer.eos_id)]
    res.append((s.tokenizer.decode(list(p)), s.tokenizer.decode(o)))
  return res


def _meta(s: Setup, state_checksum: list | None = None) -> dict:
  meta = {'config': json.loads(s.config.to_json_best_effort()),
          'vocab_size': int(s.tokenizer.vocab_size),
          'tokenizer_fingerprint': s.tokenizer.fingerprint()}
  if state_checksum is not None:
    meta['checksum'] = state_checksum
  return meta


# --- preemption: SIGTERM -> finish the step, checkpoint, exit 0 ---


def agree_to_stop(local: bool) -> bool:
  """True on every process if any process was asked to stop: all save at the same step."""
  if jax.process_count() == 1:
    return bool(local)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(bool(local))], np.int32))
  return bool(np.any(flags))


class StopWatch:
  """Catches SIGTERM (preemption notices, `kill`, SLURM/GKE shutdown) as a request to stop.

  The loop asks `should_stop(step)` after each step; with several processes the local flags
  are combined every `every` steps (a tiny all-gather), so all processes stop at one step.
  """

  def __init__(self, every: int = 1):
    self.requested, self.every, self._old = False, max(1, int(every)), None
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1 and step % self.every:
      return False
    return agree_to_stop(self.requested)

  def close(self) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None


def _restore_tokenizer_copy(workdir: str) -> None:
  """A workdir with checkpoints but no tokenizer/ gets it back from the newest checkpoint."""
  tok_dir = os.path.join(workdir, 'tokenizer')
  if (os.path.exists(os.path.join(tok_dir, 'tokenizer.json'))
      or not os.path.isdir(os.path.join(workdir, 'checkpoints'))):
    return
  if jax.process_index() == 0:
    mngr = checkpoint.manager(workdir, create=False, async_save=False)
    step = checkpoint.restore_tokenizer_dir(mngr, tok_dir)
    mngr.close()
    if step is not None:
      _say(f'restored {tok_dir} from checkpoint step {step}')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('lmjax_tokenizer_restored')


NAN_POLICIES = ('stop', 'skip')
BEST_METRICS = ('', 'ppl', 'nll', 'word_ppl', 'bpb', 'bleu', 'chrf')


def train_and_evaluate(config: Any, workdir: str, devices: Any = None) -> dict:
  """Trains config.num_train_steps steps (or num_epochs); returns the final eval report.

  Resumes from the newest intact checkpoint in workdir (falling back past broken ones). On
  SIGTERM it finishes the step, checkpoints and returns {'preempted_at_step': step}.
  """
  is_main = jax.process_index() == 0
  nan_policy = config.get('nan_policy', 'stop')
  if nan_policy not in NAN_POLICIES:
    raise UserError(f'config.nan_policy: {nan_policy!r} is not one of {NAN_POLICIES}')
  ck = config.checkpoint
  best_metric = ck.get('best_metric', '')
  if best_metric not in BEST_METRICS:
    raise UserError(f'config.checkpoint.best_metric: {best_metric!r} is not one of '
                    f'{BEST_METRICS[1:]} (or empty)')
  _restore_tokenizer_copy(workdir)
  s = setup(config, workdir, devices)
  p_init, p_train, p_eval = compile_steps(s)
  train_iter = make_train_iterator(s)
  eval_every = config.eval_every if config.eval_every > 0 else s.steps_per_epoch
  state_checksum = checkpoint.checksum_fn(sharding.replicated(s.mesh))

  # --- state: restore the newest intact checkpoint or initialise ---
  mngr = checkpoint.manager(workdir, ck.max_to_keep, ck.get('async_save', True),
                            best_metric=best_metric, best_mode=ck.get('best_mode', 'min'))
  if mngr.all_steps():
    abstract = checkpoint.abstract_with_sharding(s.state_shapes, s.state_sharding)
    step0, state, data_state = checkpoint.restore_good(
        mngr, abstract, state_checksum, s.tokenizer.vocab_size, s.tokenizer.fingerprint(),
        f'workdir {workdir}')
    train_iter.set_state(data_state)
    _say(f'resuming from step {step0}: {checkpoint.step_dir(mngr, step0)}')
  else:
    with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
      state = p_init(jax.random.PRNGKey(config.seed))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state['params']))
  if s.family.seq2seq:
    tr = s.translation['train']
    waste = mt_data.padding_waste(train_iter.peek(200))  # the current epoch's padding
    data_note = (f'train {len(tr):,} pairs ({tr.num_target_tokens:,} target tokens; dropped '
                 f'{tr.num_dropped_blank} blank, {tr.num_dropped_long} too long); padding '
                 f'{waste["source"]:.1%} source / {waste["target"]:.1%} target')
  else:
    data_note = f'train {s.train.num_predictions:,} tokens'
  _say(f'model {config.model.name}: {n_params:,} parameters; mesh {dict(s.mesh.shape)}; '
       f'vocab {s.tokenizer.vocab_size}; {data_note}, {s.steps_per_epoch:,} steps per epoch')

  tok_files = checkpoint.tokenizer_files(s.tokenizer)
  fail_save_at = int(config.get('debug_fail_save_at_step', 0))

  def save(step, state, metrics_=None):
    checkpoint.save(mngr, step, state, train_iter.get_state(),
                    _meta(s, state_checksum(state)), tok_files,
                    metrics=({best_metric: metrics_[best_metric]}
                             if metrics_ and best_metric in metrics_ else {})
                    if best_metric else None,
                    fail_with_enospc=step == fail_save_at)

  writer = metrics.MetricWriter(workdir, enabled=is_main)
  step = int(state['step'])
  total = s.num_steps
  pending, t_last, step_last, t_start = [], time.time(), step, time.time()
  report, preempted, skipped_total = None, False, 0
  watch = StopWatch(ck.get('stop_check_every', 1))
  try:
    with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
      while step < total:
        batch = _put(next(train_iter), s)
        state, out = p_train(state, batch)
        step += 1
        pending.append(out)
        log_now = step % config.log_every == 0 or step == total
        eval_now = step % eval_every == 0 or step == total
        ckpt_now = step % ck.every == 0 or step == total
        stop_now = watch.should_stop(step)
        if not (log_now or eval_now or ckpt_now or stop_now):
          continue
        # Every step is checked for a non-finite loss before anything is logged or saved.
        fetched = jax.device_get(pending)
        bad = [step - len(fetched) + 1 + i for i, o in enumerate(fetched) if not o['finite']]
        if bad and nan_policy == 'stop':
          checkpoint.finish(mngr, raising=False)
          last = mngr.latest_step()
          where = (f'step {last} ({checkpoint.step_dir(mngr, last)})' if last is not None
                   else 'none')
          raise UserError(f'loss or gradient norm is not finite at step {bad[0]} '
                          "(config.nan_policy='stop'): the update was not applied and the "
                          f'run stopped; last good checkpoint: {where}')
        if log_now:
          now = time.time()
          good = [o for o in fetched if o['finite']]
          loss = float(np.mean([o['loss'] for o in good])) if good else float('nan')
          tokens = float(np.sum([o['tokens'] for o in good]))
          tps = tokens / max(now - t_last, 1e-9)
          eta = (total - step) * (now - t_last) / max(step - step_last, 1)
          scal = {'loss': loss, 'lr': float(fetched[-1]['lr']),
                  'grad_norm': float(fetched[-1]['grad_norm']), 'tokens_per_sec': tps}
          if nan_policy == 'skip':
            scal['skipped'] = len(bad)
            skipped_total += len(bad)
          writer.write(step, 'train', scal)
          skip_note = f'  skipped {len(bad)} (non-finite)' if bad else ''
          _say(f'step {step}/{total}  loss {loss:.4f}  lr {scal["lr"]:.2e}  '
               f'tokens/s {tps:,.0f}  eta {eta:.0f}s{skip_note}')
          pending, t_last, step_last = [], now, step
        if eval_now:
          t_eval = time.time()
          report = evaluate(s, p_eval, state['params'], config.eval_batch_size)
          writer.write(step, 'eval', report)
          _print_report('eval', step, report)
          # Eval time is not training time. Shift the window rather than restart it: the
          # steps since the last log line stay in it (an epoch-end eval need not be a log step).
          t_last += time.time() - t_eval
        if ckpt_now or stop_now:
          save(step, state, report if eval_now else None)
        if stop_now:
          preempted = True
          break
  except BaseException:
    watch.close()
    checkpoint.finish(mngr, raising=False)
    writer.close()
    raise
  watch.close()
  checkpoint.finish(mngr)
  if preempted:
    _say(f'preempted: SIGTERM received; finished step {step} and saved checkpoint step '
         f'{step} in {checkpoint.step_dir(mngr, step)}; exiting (restart the same command to '
         'resume)')
    writer.close()
    return {'preempted_at_step': step}
  if report is None:
    report = evaluate(s, p_eval, state['params'], config.eval_batch_size)
  wall = time.time() - t_start
  skip_note = f'; skipped {skipped_total} non-finite steps' if skipped_total else ''
  bleu_note = f'; eval BLEU {report["bleu"]:.2f}' if 'bleu' in report else ''
  _say(f'done: {step} steps in {wall:.0f}s; eval ppl {report["ppl"]:.3f} '
       f'(uniform {s.tokenizer.vocab_size}){bleu_note}{skip_note}')
  if (s.translation['test'] if s.family.seq2seq else s.test) is not None:
    test_report = evaluate(s, p_eval, state['params'], config.eval_batch_size, 'test')
    writer.write(step, 'test', test_report)
    _print_report('test', step, test_report)
    report = dict(report, test=test_report)
  smp = config.sample
  if smp.num_samples:
    for prompt, cont in sample_text(s, state['params'], smp.num_samples, smp.prompt_tokens,
                                    smp.max_new_tokens, config.seed, smp.temperature,
                                    smp.top_k, smp.top_p):
      _say(f'sample: {prompt} -> {cont}')
  writer.close()
  return report
