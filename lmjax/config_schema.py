"""The config schema: one check of every field before a run writes or compiles anything.

  config_schema.check(config)                   # ranges, choices, cross-field rules, data files
  config_schema.check(config, num_devices=8)    # and the mesh against the devices
  config_schema.check(config, data=False)       # no data files (lmjax.plan: shapes only)
  config_schema.check_field('sample.top_p', 1.5, name='--top_p')   # one value, for tool flags

The rules themselves (type, range, choices per field) are declared beside the defaults, in
config_base.SCHEMA; fields a config lacks are skipped (model families have different fields),
and model fields are also checked by the family's own config dataclass (lmjax.models). A failed
check raises UserError with one line naming the field and the rule:

  config.optimizer.learning_rate=-1: must be >= 0

Unknown fields need no check here: experiment configs are locked, so an override of a field
that does not exist (--config.modle.d_model=3) is refused while the flags are parsed.

Importing this module imports nothing else of lmjax (config_base imports the rule classes).
"""

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from lmjax.errors import UserError


def _fmt(v: Any) -> str:
  return repr(v) if isinstance(v, str) else str(v)


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer (not a bool) >= lo (and <= hi); `or_minus_one`: -1 is also allowed."""
  lo: Optional[int] = None
  hi: Optional[int] = None
  or_minus_one: bool = False

  def problem(self, v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, int):
      return f'must be an integer, got {type(v).__name__}'
    if self.or_minus_one and v == -1:
      return None
    tail = ' or -1' if self.or_minus_one else ''
    if self.lo is not None and self.hi is not None and not self.lo <= v <= self.hi:
      return f'must be in [{self.lo}, {self.hi}]{tail}'
    if self.lo is not None and v < self.lo:
      return (f'must be positive{tail}' if self.lo == 1 else f'must be >= {self.lo}{tail}')
    if self.hi is not None and v > self.hi:
      return f'must be <= {self.hi}{tail}'
    return None


@dataclasses.dataclass(frozen=True)
class Float:
  """A finite number in the interval [lo, hi] (lo_open / hi_open make that end open)."""
  lo: Optional[float] = None
  hi: Optional[float] = None
  lo_open: bool = False
  hi_open: bool = False

  def problem(self, v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      return f'must be a number, got {type(v).__name__}'
    if not math.isfinite(v):
      return 'must be finite'
    lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
    hi_ok = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
    if lo_ok and hi_ok:
      return None
    if self.lo is not None and self.hi is not None:
      return (f'must be in {"(" if self.lo_open else "["}{self.lo:g}, {self.hi:g}'
              f'{")" if self.hi_open else "]"}')
    if self.lo is not None:
      return f'must be {">" if self.lo_open else ">="} {self.lo:g}'
    return f'must be {"<" if self.hi_open else "<="} {self.hi:g}'


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of the listed values."""
  values: tuple

  def problem(self, v: Any) -> Optional[str]:
    if any(type(v) is type(x) and v == x for x in self.values):
      return None
    return 'must be one of ' + ', '.join(_fmt(x) for x in self.values)


@dataclasses.dataclass(frozen=True)
class Bool:

  def problem(self, v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f'must be True or False, got {_fmt(v)}'


@dataclasses.dataclass(frozen=True)
class Str:

  def problem(self, v: Any) -> Optional[str]:
    return None if isinstance(v, str) else f'must be a string, got {type(v).__name__}'


PROBABILITY = Float(0.0, 1.0, hi_open=True)  # dropout, label smoothing, a held-out fraction


def _get(config: Any, path: str) -> tuple[bool, Any]:
  node = config
  for part in path.split('.'):
    try:
      if part not in node:
        return False, None
      node = node[part]
    except TypeError:  # a leaf where a section was expected
      return False, None
  return True, node


def check_field(path: str, value: Any, name: Optional[str] = None) -> None:
  """One value against config_base.SCHEMA[path]; name: how to call it (e.g. '--top_p')."""
  from lmjax import config_base  # pylint: disable=g-import-not-at-top
  problem = config_base.SCHEMA[path].problem(value)
  if problem:
    raise UserError(f'{name or "config." + path}={_fmt(value)}: {problem}')


def check(config: Any, num_devices: Optional[int] = None, data: bool = True) -> None:
  """Every rule, in the order a user would fix them; raises UserError on the first failure.

  num_devices: also check the mesh against that many devices (and every size it divides);
  data: also check that the data files the config names exist and are read (data.source=text).
  """
  from lmjax import config_base  # pylint: disable=g-import-not-at-top
  for path, rule in config_base.SCHEMA.items():
    present, value = _get(config, path)
    if present:
      check_field(path, value)
  _check_mesh_fields(config)
  _check_rules(config)
  _check_batch(config)
  _check_task(config)
  if num_devices is None:
    _check_divisibility(config, mesh_sizes(config))  # the axes that are not -1
  else:
    check_mesh(config, num_devices)
  if data:
    check_data(config)


# --- the mesh and the logical axis rules ---

MESH_AXES = ('data', 'fsdp', 'tensor')  # as lmjax.sharding.MESH_AXES (jax-free here)


def _check_mesh_fields(config: Any) -> None:
  sizes = {a: config.mesh[a] for a in MESH_AXES}
  if list(sizes.values()).count(-1) > 1:
    raise UserError(f'config.mesh: at most one axis may be -1, got {sizes}')


def _check_rules(config: Any) -> None:
  for rule in config.logical_axis_rules:
    if not isinstance(rule, (list, tuple)) or len(rule) != 2:
      raise UserError(f'config.logical_axis_rules: {rule!r} is not a pair '
                      '(logical axis, mesh axis or axes or None)')
    name, axes = rule
    for a in (axes if isinstance(axes, (list, tuple)) else [axes]):
      if a is not None and a not in MESH_AXES:
        raise UserError(f'config.logical_axis_rules: {name!r} maps to unknown mesh axis '
                        f'{a!r} (one of {", ".join(MESH_AXES)})')


def mesh_sizes(config: Any, num_devices: Optional[int] = None) -> dict:
  """{axis: size}; -1 resolved when num_devices is given, else left as -1 (unknown)."""
  sizes = {a: int(config.mesh[a]) for a in MESH_AXES}
  if num_devices is not None and -1 in sizes.values():
    known = math.prod(s for s in sizes.values() if s != -1)
    if known and num_devices % known == 0:
      sizes = {a: num_devices // known if s == -1 else s for a, s in sizes.items()}
  return sizes


def check_mesh(config: Any, num_devices: int) -> None:
  """The mesh fits num_devices; the batches and the model dimensions divide its axes."""
  sizes = {a: int(config.mesh[a]) for a in MESH_AXES}
  known = math.prod(s for s in sizes.values() if s != -1)
  if -1 in sizes.values():
    if num_devices % known:
      raise UserError(f'config.mesh {sizes} does not divide the {num_devices} available '
                      'devices')
  elif known != num_devices:
    raise UserError(f'config.mesh {sizes} needs {known} devices but {num_devices} are '
                    'available')
  resolved = mesh_sizes(config, num_devices)
  dp = resolved['data'] * resolved['fsdp']
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % dp:
      raise UserError(f'config.{field}={config[field]} is not divisible by the data-parallel '
                      f'size {dp} (mesh data={resolved["data"]} x fsdp={resolved["fsdp"]})')
  accum = config.grad_accum_steps
  if config.batch_size % (accum * dp):
    raise UserError(f'config.grad_accum_steps={accum}: config.batch_size={config.batch_size} '
                    f'must split into {accum} microbatches that the data-parallel size {dp} '
                    'divides')
  _check_divisibility(config, resolved)


def _rule_axes(config: Any) -> dict:
  """{logical axis: tuple of mesh axes} from config.logical_axis_rules (first rule wins)."""
  out = {}
  for name, axes in config.logical_axis_rules:
    if name in out:
      continue
    out[name] = tuple(axes) if isinstance(axes, (list, tuple)) else (() if axes is None
                                                                    else (axes,))
  return out


def _model_dims(model: Any) -> dict:
  """{logical axis: [(config field, size)]} of the parameters whose size a config field sets.

  Declared for the Transformer families (embed/heads/mlp, scanned layer stacks); the exact
  check over every parameter, the vocabulary included, is check_param_shardings.
  """
  if model.get('name') not in ('transformer', 'encoder_decoder'):
    return {}
  dims = {'embed': [('model.d_model', model.d_model)],
          'heads': [('model.num_heads', model.num_heads)],
          'mlp': [('model.d_ff', model.d_ff)]}
  if model.get('scan_layers'):
    dims['layers'] = [(f'model.{k}', model[k]) for k in
                      ('num_layers', 'num_encoder_layers', 'num_decoder_layers') if k in model]
  return dims


def _check_divisibility(config: Any, sizes: dict) -> None:
  rules = _rule_axes(config)
  for logical, fields in _model_dims(config.model).items():
    axes = [a for a in rules.get(logical, ()) if sizes.get(a, -1) not in (-1, 1)]
    n = math.prod(sizes[a] for a in axes)
    for field, size in fields:
      if axes and isinstance(size, int) and size > 0 and size % n:
        over = ' x '.join(f'config.mesh.{a}={sizes[a]}' for a in axes)
        raise UserError(f'config.{field}={size} is not divisible by {over} '
                        f'(config.logical_axis_rules shard {logical!r} over '
                        f'{", ".join(axes)}): change one of them')


def check_param_shardings(boxed_params: Any, mesh: Any, rules: Sequence) -> None:
  """Every parameter dimension divides by the mesh axes its logical axis maps to.

  boxed_params: the abstract parameters with their logical axis names (jax.eval_shape of a
  task's init_params, before unboxing). Without this check jax fails while compiling the
  init with an IndivisibleError traceback; here the line names the parameter, its logical
  axis and the mesh axes (the vocabulary size, known only once the tokenizer exists, is
  checked this way).
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  table = {}
  for name, axes in rules:
    table.setdefault(name, tuple(axes) if isinstance(axes, (list, tuple)) else
                     (() if axes is None else (axes,)))
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  for path, leaf in jax.tree_util.tree_leaves_with_path(boxed_params, is_leaf=is_box):
    if not is_box(leaf):
      continue
    shape = leaf.value.shape
    for dim, (size, logical) in enumerate(zip(shape, leaf.names)):
      axes = [a for a in table.get(logical, ()) if mesh.shape.get(a, 1) > 1]
      n = math.prod(mesh.shape[a] for a in axes)
      if axes and size % n:
        where = '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
        over = ' x '.join(f'config.mesh.{a}={mesh.shape[a]}' for a in axes)
        what = ('the vocabulary size' if logical == 'vocab' else f'logical axis {logical!r}')
        raise UserError(f'parameter {where} {list(shape)}: dimension {dim} ({what}, size '
                        f'{size}) is not divisible by {over}; change the mesh or '
                        'config.logical_axis_rules')


# --- batches, the task and its model ---


def _check_batch(config: Any) -> None:
  accum = config.grad_accum_steps
  if config.batch_size % accum:
    raise UserError(f'config.grad_accum_steps={accum} does not divide '
                    f'config.batch_size={config.batch_size}')


def _check_task(config: Any) -> None:
  from lmjax import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.TASKS[config.task]()
  best, mode = config.checkpoint.best_metric, config.checkpoint.best_mode
  if best and best not in task.metrics:
    raise UserError(f'config.checkpoint.best_metric={best!r}: must be one of '
                    f'{", ".join(repr(m) for m in sorted(task.metrics))} (task '
                    f'{config.task!r}) or empty')
  if best and mode != task.metrics[best]:
    raise UserError(f'config.checkpoint.best_mode={mode!r}: {best} is better when '
                    f'{"lower" if task.metrics[best] == "min" else "higher"} '
                    f'(best_mode={task.metrics[best]!r})')
  task.check_config(config)  # the task's own rules (its model, its data fields)


# --- data files ---

# Fields each data source ignores: naming one of them is a mistake worth a line (a ':tiny'
# variant reads synthetic data whatever --config.data.train says).
IGNORED = {('lm', 'synthetic'): ('train', 'eval'), ('lm', 'tfds'): ('train', 'eval'),
           ('translation', 'synthetic'): ('train', 'eval', 'test'),
           ('translation', 'tfds'): ('train', 'eval', 'test')}
IGNORED[('classify', 'synthetic')] = IGNORED[('translation', 'synthetic')]
IGNORED[('classify', 'tfds')] = IGNORED[('translation', 'tfds')]
IGNORED[('ngram', 'synthetic')] = IGNORED[('lm', 'synthetic')]
IGNORED[('mlm', 'synthetic')] = IGNORED[('lm', 'synthetic')]
IGNORED[('mlm', 'tfds')] = IGNORED[('lm', 'tfds')]
IGNORED[('ngram', 'tfds')] = IGNORED[('lm', 'tfds')]
IGNORED[('embeddings', 'synthetic')] = IGNORED[('lm', 'synthetic')]
IGNORED[('embeddings', 'tfds')] = IGNORED[('lm', 'tfds')]


def _check_file(path: str, field: str) -> None:
  if os.path.isdir(path):
    raise UserError(f'config.data.{field} {path} is a directory, expected a file')
  try:
    with open(path, 'rb'):
      pass
  except FileNotFoundError:
    raise UserError(f'config.data.{field} not found: {path}') from None
  except OSError as e:
    raise UserError(f'cannot read config.data.{field} {path}: {e.strerror or e}') from None


def check_data(config: Any) -> None:
  """The data files the config names exist and can be opened; no field is silently ignored.

  Their content (UTF-8, non-blank, parallel line counts) is checked by the readers
  (lmjax/data/text.py) when the task loads them.
  """
  d = config.data
  for field in IGNORED.get((config.task, d.source), ()):
    if d.get(field):
      hint = ("the variant's" if d.source == 'synthetic' else f'data.source={d.source!r}')
      raise UserError(f'config.data.{field}={d[field]!r} is ignored: config.data.source='
                      f'{d.source!r} reads {hint} data; add --config.data.source=text to '
                      f'read the file')
  if d.get('spm_model'):
    if d.tokenizer in ('word', 'wordpiece'):
      raise UserError(f'config.data.spm_model={d.spm_model!r} is a SentencePiece model, '
                      f'ignored by config.data.tokenizer={d.tokenizer!r}; set '
                      'config.data.tokenizer=sentencepiece to use it')
    _check_file(d.spm_model, 'spm_model')
  if d.source != 'text':
    if config.task != 'translation' and d.get('test'):
      _check_file(d.test, 'test')
    return
  splits = ['train', 'eval', 'test']
  if config.task == 'translation':
    for split in splits:
      prefix = d.get(split, '')
      if not prefix:
        if split == 'test':
          continue
        raise UserError(f'config.data.{split} must be set for data.source=text (a file '
                        f'prefix: PREFIX.{d.source_lang} and PREFIX.{d.target_lang})')
      for lang in (d.source_lang, d.target_lang):
        _check_file(f'{prefix}.{lang}', split)
    return
  from lmjax import tasks  # pylint: disable=g-import-not-at-top
  reads_eval = getattr(tasks.TASKS[config.task](), 'reads_eval', True)
  for split in splits:
    path = d.get(split, '')
    if path:
      _check_file(path, split)
    elif split == 'train' or (split == 'eval' and reads_eval and not d.get('eval_fraction')):
      raise UserError(f'config.data.{split} must be set for data.source=text'
                      + ('' if split == 'train' else
                         ' (or config.data.eval_fraction to split the training file)'))
