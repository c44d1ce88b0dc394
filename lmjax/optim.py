"""Optimizers and learning-rate schedules from config.optimizer.

config.optimizer fields:
  name: adamw | adam | sgd | adagrad
  learning_rate, warmup_steps, schedule: constant | cosine | linear | rsqrt | epoch_decay
    (cosine and linear decay to learning_rate x min_lr_ratio at the last step)
  b1, b2, eps, weight_decay (AdamW; masked off biases, LayerNorm and 1-d params), momentum (SGD)
  grad_clip_norm (0 disables), decay_after_epochs/decay_factor (epoch_decay, Zaremba et al.)
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from lmjax.errors import UserError


def make_schedule(opt: Any, total_steps: int, steps_per_epoch: int | None = None):
  """Linear warmup into constant / cosine / inverse-sqrt decay, or per-epoch step decay."""
  peak, warmup = float(opt.learning_rate), int(opt.warmup_steps)
  name = opt.schedule
  if name == 'constant':
    decay = optax.constant_schedule(peak)
  elif name == 'cosine':
    decay = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup),
                                        alpha=float(opt.get('min_lr_ratio', 0.0)))
  elif name == 'linear':
    # word2vec's schedule: lr falls linearly from the peak to peak x min_lr_ratio.
    decay = optax.linear_schedule(peak, peak * float(opt.get('min_lr_ratio', 0.0)),
                                  max(1, total_steps - warmup))
  elif name == 'rsqrt':
    w = max(1, warmup)
    decay = lambda step: peak * jnp.sqrt(w / (step + w))
  elif name == 'epoch_decay':
    # lr constant for `decay_after_epochs` epochs, then multiplied by decay_factor per epoch.
    if not steps_per_epoch:
      raise UserError('config.optimizer.schedule=epoch_decay needs a known epoch length')
    after, factor = int(opt.decay_after_epochs), float(opt.decay_factor)

    def decay(step):
      epoch = step // steps_per_epoch
      return peak * factor ** jnp.maximum(0, epoch - after + 1)
  else:
    raise UserError(f'config.optimizer.schedule: unknown schedule {name!r} '
                    '(constant, cosine, linear, rsqrt, epoch_decay)')
  if warmup <= 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


BIAS_NAMES = ('bias', 'scale', 'bi', 'bo', 'b')


def decay_mask(params: Any) -> Any:
  """True for weight matrices; False for biases and norm parameters.

  Decided by name, not by rank: a scanned layer stack turns biases into [L, F] arrays.
  """
  flat = flax.traverse_util.flatten_dict(params)
  mask = {k: not (k[-1] in BIAS_NAMES or k[-1].startswith('bias')
                  or any(p.startswith('ln') or 'norm' in p for p in k[:-1]))
          for k in flat}
  return flax.traverse_util.unflatten_dict(mask)


def make_optimizer(opt: Any, total_steps: int, steps_per_epoch: int | None = None):
  """Returns (optax transformation, schedule)."""
  schedule = make_schedule(opt, total_steps, steps_per_epoch)
  name = opt.name
  if name == 'adamw':
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay, mask=decay_mask)
  elif name == 'adam':
    core = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif name == 'sgd':
    core = optax.sgd(schedule, momentum=opt.momentum or None)
  elif name == 'adagrad':
    core = optax.adagrad(schedule, initial_accumulator_value=float(
        opt.get('initial_accumulator', 0.1)), eps=1e-8)
  else:
    raise UserError(f'config.optimizer.name: unknown optimizer {name!r} '
                    '(adamw, adam, sgd, adagrad)')
  chain = [core]
  if opt.grad_clip_norm and opt.grad_clip_norm > 0:
    chain.insert(0, optax.clip_by_global_norm(opt.grad_clip_norm))
  return optax.chain(*chain), schedule


def freeze(tx, paths: list, frozen: list) -> Any:
  """`tx` for every parameter (`paths`: tuples of keys) but the `frozen` ones, whose updates
  are zeroed after it (weight decay included), so they never change."""
  frozen = set(frozen)
  keep = flax.traverse_util.unflatten_dict({k: k not in frozen for k in paths})

  def zero_frozen(updates, params=None):
    del params
    return jax.tree.map(lambda u, k: u if k else jnp.zeros_like(u), updates, keep)

  return optax.chain(tx, optax.stateless(zero_frozen))
