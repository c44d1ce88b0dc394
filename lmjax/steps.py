"""The pieces of a run below the loop: sharded state, jitted train/eval steps, batch transfer.

  run = steps.prepare(config, workdir)            # task (data), mesh, optimizer, steps
  state = run.init()                              # sharded, from config.seed
  state, out = run.train_step(state, batch)       # a host batch (numpy) or a placed one
  report = run.evaluate(state['params'], 'eval')

The train state is a plain dict {'step', 'params', 'opt_state', 'rng'[, 'carry']} ('carry'
when the task carries state across batches, as truncated BPTT does). It is created already
sharded: its shapes come from jax.eval_shape, its shardings from the parameters' logical axis
names and the config's rules, and the init function is jitted with those out_shardings.
Batches are placed by the task's batch spec: each entry's logical axes map through the same
rules onto the mesh, so a [B] label vector and a scalar flag place as correctly as [B, T].
"""

import dataclasses
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmjax import config_schema, optim, sharding, tasks

def make_steps(task: Any, tx, schedule, config: Any, batch_axes: dict):
  """Pure train and eval steps over the state dict, from task.loss.

  A step whose loss or gradient norm is not finite applies no update: params and optimizer
  state stay as they were (the step counter, rng and data still advance) and out['finite'] is
  False; the loop then stops or skips by config.nan_policy.
  config.debug_nan_at_step: test hook; the loss and gradients of the update that makes step N
  are multiplied by NaN.

  config.loss_normalization: 'tokens' minimises the loss per unit of weight (per target
  token); 'sequences' the loss summed over each row and averaged over the rows, as in Zaremba
  et al.'s PTB code (their lr 1.0 and clip 5 assume this scale); 'sum' the batch's summed
  gradient (word embeddings: the reference tools' learning rate is per pair).
  config.grad_accum_steps: the batch is split into this many microbatches (rows i, i+m, ...,
  so each device keeps its own rows) whose sums are accumulated in a scan before one update;
  it equals the update of the whole batch. batch_axes: {key: logical axes} of the batch spec;
  entries without a leading 'batch' axis go to every microbatch whole.
  """
  m, norm_kind = int(config.grad_accum_steps), config.loss_normalization  # checked: schema
  debug_nan_at_step = int(config.debug_nan_at_step)
  batched = {k for k, axes in batch_axes.items() if axes[:1] == ('batch',)}

  def objective(params, batch, carry, rng):
    sums, new_carry = task.loss(params, batch, carry, rng, True)
    return sums['loss'], (sums, new_carry)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def accumulated(params, batch, carry, rng):
    if m == 1:
      return grad_fn(params, batch, carry, rng)
    split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)
    merge = lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])
    micro = {k: split(v) for k, v in batch.items() if k in batched}
    whole = {k: v for k, v in batch.items() if k not in batched}

    def body(acc, x):
      mb, c, r = x
      (loss, (sums, c)), g = grad_fn(params, {**mb, **whole}, c, r)
      acc = jax.tree.map(jnp.add, acc, (loss, sums, g))
      return acc, c

    _, (sums0, _) = jax.eval_shape(objective, params, jax.tree.map(lambda x: x[0], micro) |
                                   whole, jax.tree.map(lambda c: split(c)[0], carry), rng)
    zeros = (jnp.zeros(()), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums0),
             jax.tree.map(jnp.zeros_like, params))
    xs = (micro, jax.tree.map(split, carry), jax.random.split(rng, m))
    (loss, sums, grads), new_carry = jax.lax.scan(body, zeros, xs)
    return (loss, (sums, jax.tree.map(merge, new_carry))), grads

  def train_step(state, batch):
    rng, dropout_rng = jax.random.split(state['rng'])
    (loss_sum, (sums, new_carry)), grads = accumulated(state['params'], batch,
                                                       state.get('carry'), dropout_rng)
    if debug_nan_at_step:
      poison = jnp.where(state['step'] + 1 == debug_nan_at_step, jnp.nan, 1.0)
      loss_sum, grads = loss_sum * poison, jax.tree.map(lambda g: g * poison, grads)
    w = sums['weight']
    rows = next(batch[k].shape[0] for k in sorted(batched))
    norm = {'tokens': jnp.maximum(w, 1.0), 'sequences': rows, 'sum': 1.0}[norm_kind]
    grads = jax.tree.map(lambda g: g / norm, grads)
    loss, grad_norm = loss_sum / jnp.maximum(w, 1.0), optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(state, step=state['step'] + 1, rng=rng,
                     opt_state=keep_if_bad(opt_state, state['opt_state']),
                     params=keep_if_bad(optax.apply_updates(state['params'], updates),
                                        state['params']))
    if 'carry' in state:  # truncated BPTT boundary; a bad step restarts from zeros
      new_carry = jax.lax.stop_gradient(new_carry)
      new_state['carry'] = jax.tree.map(lambda c: jnp.where(finite, c, jnp.zeros_like(c)),
                                        new_carry)
    out = {'loss': loss, 'grad_norm': grad_norm, 'lr': schedule(state['step']), 'tokens': w,
           'finite': finite}
    return new_state, out

  def eval_step(params, batch, carry):
    return task.loss(params, batch, carry, None, False)

  return train_step, eval_step


def sharded_state(task: Any, tx, mesh, rules: tuple, seed: int):
  """(init_fn, state shapes, state shardings) without allocating anything.

  Shapes come from jax.eval_shape; parameter shardings from their logical axis names and the
  rules; optimizer-state leaves that mirror parameters take the parameters' shardings; a
  carried state is sharded over its leading (batch) axis.
  """
  from lmjax.tasks import base  # pylint: disable=g-import-not-at-top
  spec = task.batch_spec()
  batch_size = task.config.batch_size

  def boxed_params(rng):
    return task.init_params(rng, base.dummy_batch(spec))

  def init_fn(rng):
    params_rng, rng = jax.random.split(rng)
    params = nn.meta.unbox(boxed_params(params_rng))
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'opt_state': tx.init(params), 'rng': rng}
    carry = task.init_carry(batch_size)
    if carry is not None:
      state['carry'] = carry
    return state

  rng0 = jax.random.PRNGKey(seed)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(boxed_params, rng0)
    config_schema.check_param_shardings(boxed, mesh, rules)  # one line, not IndivisibleError
    param_sharding = sharding.logical_to_sharding(boxed, mesh, rules)
    state_shapes = jax.eval_shape(init_fn, rng0)
  repl = sharding.replicated(mesh)
  state_sharding = {
      'step': repl, 'rng': repl, 'params': param_sharding,
      'opt_state': optax.tree_map_params(tx, lambda _, s: s, state_shapes['opt_state'],
                                         param_sharding, transform_non_params=lambda _: repl)}
  if 'carry' in state_shapes:
    state_sharding['carry'] = jax.tree.map(
        lambda c: sharding.batch_sharding(mesh, c.ndim), state_shapes['carry'])
  return init_fn, state_shapes, state_sharding


@dataclasses.dataclass
class Run:
  """A task with its mesh, optimizer, sharded state layout and jitted steps."""
  config: Any
  task: Any
  mesh: Any
  rules: tuple
  tx: Any
  schedule: Any
  batch_spec: dict
  batch_sharding: dict  # key -> NamedSharding, from the spec's logical axes
  state_shapes: Any
  state_sharding: Any
  p_init: Any
  p_train: Any
  p_eval: Any

  def context(self):
    """The mesh and logical axis rules the steps run under."""
    return _Context(self.mesh, self.rules)

  def init(self, seed: int | None = None) -> dict:
    with self.context():
      return self.p_init(jax.random.PRNGKey(self.config.seed if seed is None else seed))

  def put(self, batch: dict) -> dict:
    """Global numpy batch -> global arrays placed by the batch spec's logical axes.

    Every process computes the same global batch (the iterators are deterministic) and each
    device takes its own block, so a multi-process run sees the batches a single-process run
    would.
    """
    if set(batch) != set(self.batch_spec):
      raise ValueError(f'batch keys {sorted(batch)} differ from the task\'s batch spec '
                       f'{sorted(self.batch_spec)}')
    out = {}
    for k, v in batch.items():
      if isinstance(v, jax.Array):
        out[k] = v
        continue
      v = np.asarray(v)
      want = self.batch_spec[k]
      if v.ndim != len(want.shape) or v.dtype != np.dtype(want.dtype):
        raise ValueError(f'batch[{k!r}]: {v.dtype}{list(v.shape)} does not match the spec '
                         f'{np.dtype(want.dtype)}{list(want.shape)}')
      out[k] = jax.make_array_from_callback(v.shape, self.batch_sharding[k],
                                            lambda idx, v=v: v[idx])
    return out

  def train_step(self, state: dict, batch: dict):
    with self.context():
      return self.p_train(state, self.put(batch))

  def abstract_state(self) -> Any:
    return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                        self.state_shapes, self.state_sharding)

  def abstract_batch(self) -> dict:
    return {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_sharding[k])
            for k, s in self.batch_spec.items()}

  def sum_batches(self, params: Any, batches: Iterable[dict], carry: Any) -> dict:
    """Eval sums over host batches, added on the host in float64."""
    totals = {}
    with self.context():
      for batch in batches:
        sums, carry = self.p_eval(params, self.put(batch), carry)
        for k, v in jax.device_get(sums).items():
          totals[k] = totals.get(k, 0.0) + float(v)
    return totals

  def evaluate(self, params: Any, split: str = 'eval') -> dict:
    return self.task.evaluate(split, lambda b, c: self.sum_batches(params, b, c), params)


class _Context:

  def __init__(self, mesh, rules):
    self.mesh, self.rules, self._stack = mesh, rules, []

  def __enter__(self):
    m, r = jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules)
    m.__enter__()
    r.__enter__()
    self._stack.append((m, r))
    return self

  def __exit__(self, *exc):
    m, r = self._stack.pop()
    r.__exit__(*exc)
    m.__exit__(*exc)
    return False


def prepare(config: Any, workdir: str | None, devices: Any = None,
            vocab_size: int | None = None, source_vocab_size: int = 0) -> Run:
  """Config checks, mesh, task (its data unless vocab_size is given: shapes only, as
  lmjax.plan needs), optimizer, sharded state layout and jitted steps; nothing compiled yet."""
  config_schema.check(config, len(devices) if devices is not None else jax.device_count(),
                      data=vocab_size is None)
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  task = tasks.build(config, workdir, vocab_size, source_vocab_size)
  tx, schedule = optim.make_optimizer(config.optimizer, task.num_steps, task.steps_per_epoch)
  if config.model.get('freeze_embeddings'):
    from lmjax import warm_start  # pylint: disable=g-import-not-at-top
    tx = optim.freeze(tx, *warm_start.param_axes(task))
  spec = task.batch_spec()
  batch_sharding = {k: _logical_sharding(s.axes, mesh, rules) for k, s in spec.items()}
  init_fn, state_shapes, state_sharding = sharded_state(task, tx, mesh, rules, config.seed)
  train_step, eval_step = make_steps(task, tx, schedule, config,
                                     {k: s.axes for k, s in spec.items()})
  repl = sharding.replicated(mesh)
  carry_sh = state_sharding.get('carry')
  p_train = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding),
                    out_shardings=(state_sharding, repl), donate_argnums=0)
  p_eval = jax.jit(eval_step, in_shardings=(state_sharding['params'], batch_sharding, carry_sh),
                   out_shardings=(repl, carry_sh))
  p_init = jax.jit(init_fn, out_shardings=state_sharding)
  return Run(config=config, task=task, mesh=mesh, rules=rules, tx=tx, schedule=schedule,
             batch_spec=spec, batch_sharding=batch_sharding, state_shapes=state_shapes,
             state_sharding=state_sharding, p_init=p_init, p_train=p_train, p_eval=p_eval)


def _logical_sharding(axes: tuple, mesh, rules: tuple):
  return nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec(*axes), mesh, rules)
