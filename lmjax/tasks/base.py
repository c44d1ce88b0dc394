"""What a task is: the protocol the one train loop calls, and the pieces tasks share.

A task is one objective over one kind of data (language modelling, translation, a fitted
n-gram model, ...). The loop (lmjax/train.py) and the step builder (lmjax/steps.py) call only
the members below and never ask which task or model family they have. A task is a plain
object built by `lmjax.tasks.build(config, workdir)`; nothing inherits from `Task`, it only
documents the members.

Sums, not means. `loss` returns per-batch *sums* ({'loss': summed objective, 'weight': summed
weight of the predictions, ...}), so microbatches, devices and eval batches add up exactly;
the step divides by the weight (or by the rows, config.loss_normalization='sequences') and the
host adds eval sums in float64 before `evaluate` turns them into a report.
"""

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np



@dataclasses.dataclass(frozen=True)
class Spec:
  """One batch entry: its global shape, dtype and logical axis names (one per dimension).

  The batch spec ({key: Spec}) is the one source for dummy inputs (init, eval_shape), input
  shardings (logical axes through config.logical_axis_rules), the host-to-device transfer and
  lmjax.plan's abstract batch. Batches may be shorter along 'length' than the spec (bucketed
  translation batches); keys, ranks and dtypes must match.
  """
  shape: tuple
  dtype: Any
  axes: tuple

  def __post_init__(self):
    if len(self.shape) != len(self.axes):
      raise ValueError(f'Spec: shape {self.shape} and axes {self.axes} differ in rank')


def dummy_batch(spec: dict) -> dict:
  """Zeros shaped like a batch (init, eval_shape)."""
  return {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}


SumBatches = Callable[[Iterable[dict], Any], dict]
"""sum_batches(batches, carry) -> {key: float sum over all batches}: the loop runs the jitted
eval step (task.loss with train=False) over host batches and adds the sums in float64."""


class Task(Protocol):
  """The members the loop and the tools use (see lmjax/tasks/lm.py for a full example)."""
  name: str
  config: Any
  tokenizer: Any          # vocab_size, fingerprint(), save(dir); saved with every checkpoint
  model: Any              # models.LMFamily (None for fitted tasks): init/apply, decoding
  steps_per_epoch: int
  num_steps: int          # gradient steps to train (0 for a fitted model)
  metrics: dict           # report key -> 'min' | 'max': what config.checkpoint.best_metric
                          # may name, and which direction is better
  eval_splits: tuple      # the splits `evaluate` accepts: 'eval', and 'test' when configured

  @staticmethod
  def check_config(config: Any) -> None: ...  # the task's config errors, before any data

  def batch_spec(self) -> dict: ...
  def init_params(self, rng: jax.Array, batch: dict) -> Any: ...  # boxed (logical axes)
  def init_carry(self, batch_size: int) -> Any: ...  # state carried across batches, or None
  def loss(self, params: Any, batch: dict, carry: Any, rng: Optional[jax.Array],
           train: bool) -> tuple[dict, Any]: ...
  def train_iterator(self) -> Iterator[dict]: ...  # deterministic; get_state()/set_state()
  def evaluate(self, split: str, sum_batches: SumBatches, params: Any) -> dict: ...
  def describe(self) -> str: ...  # one line about the data, printed at start-up
  def format_report(self, split: str, step: int, report: dict) -> list: ...
  def summary(self, report: dict) -> str: ...  # the end of the 'done:' line
  def finish(self, params: Any, workdir: str) -> list: ...  # end-of-run demo lines


def num_steps(config: Any, steps_per_epoch: int) -> int:
  """config.num_train_steps, or num_epochs x steps per epoch when num_epochs > 0."""
  if config.num_epochs > 0:
    return int(config.num_epochs * steps_per_epoch)
  return int(config.num_train_steps)


def token_metrics(extra: Optional[dict] = None) -> dict:
  """Best-checkpoint metrics of a task that reports perplexity."""
  return {'ppl': 'min', 'nll': 'min', 'word_ppl': 'min', 'bpb': 'min', **(extra or {})}


def ppl_line(split: str, step: int, report: dict) -> str:
  extra = ''.join(f'  {k} {report[k]:.3f}' for k in ('word_ppl', 'bpb') if k in report)
  if 'oov' in report:
    extra += f'  ({report["oov"]:,} words mapped to <unk>)'
  return f'{split} step {step}: ppl {report["ppl"]:.3f} over {report["tokens"]:,} tokens{extra}'


def host_sums(values: dict) -> dict:
  """Device scalars -> Python floats."""
  return {k: float(np.asarray(v)) for k, v in values.items()}
