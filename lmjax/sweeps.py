"""Sweep definitions for lmjax.ablate: a base experiment, rows, seeds and the metrics to report.

A sweep file, experiments/ablations/<name>.py, defines `get_sweep()` returning a `Sweep`:

  from lmjax.sweeps import Metric, Row, Sweep, grid

  def get_sweep():
    return Sweep(
        config='experiments/multi30k_transformer.py:small',
        rows=[Row('base', {}), Row('heads=1', {'model.num_heads': 1}, group='(A)'),
              *grid({'optimizer.learning_rate': [3e-4, 1e-3]}, group='lr')],
        seeds=(0, 1, 2),
        metrics=[Metric('bleu', 'max', split='test'), Metric('ppl', 'min', split='test')],
        base_row='base')

Every row x seed is an ordinary `lmjax.main` run of `config` with the row's overrides
(`--config.FIELD=VALUE`), `--config.seed=SEED` and the runner's --set overrides, in
ROOT/<row>/seed<seed>. Rows come from a list, from `grid` (every combination of a few
values) or from `random_search` (log-uniform / uniform / choice draws, seeded).

`check` validates a sweep before anything runs: rows present, names unique and usable as
directory names, every override naming an existing config field, every row's config passing
the schema (config_schema.check), the base row and the metrics' splits known.
"""

import dataclasses
import itertools
import json
import math
import os
import random
import re
from typing import Any, Mapping, Sequence

from lmjax import paths
from lmjax.errors import UserError

_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.=+,-]*$')


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table: its name (a directory name), the overrides that make it (dotted
  config fields -> values) and the group label it is printed under, e.g. '(A)'."""
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  group: str = ''
  average_last: int = 0  # > 0: also evaluate the average of the last N checkpoints
  config: str = ''  # another experiment than the sweep's (a table of model families)


@dataclasses.dataclass(frozen=True)
class Metric:
  """A column: `key` of the final `split` report in metrics.jsonl ('eval' or 'test'), and
  whether higher or lower is better."""
  key: str
  mode: str = 'min'  # 'min' or 'max'
  split: str = 'eval'
  label: str = ''

  @property
  def column(self) -> str:
    return self.label or f'{self.split} {self.key}'


@dataclasses.dataclass(frozen=True)
class Sweep:
  config: str  # experiments/<file>.py[:variant]
  rows: Sequence[Row]
  seeds: Sequence[int] = (0,)
  metrics: Sequence[Metric] = (Metric('ppl', 'min', 'eval'),)
  base_row: str = ''  # the row the others are compared with (BLEU significance)
  significance: str = ''  # 'bleu': paired bootstrap of each row's BLEU against base_row's
  significance_split: str = 'test'  # whose decode (WORKDIR/hypotheses.SPLIT.txt) is compared
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # every row
  title: str = ''


@dataclasses.dataclass(frozen=True)
class Run:
  row: Row
  seed: int
  workdir: str
  command: tuple  # the argv after `python -m lmjax.main`

  @property
  def name(self) -> str:
    return f'{self.row.name}/seed{self.seed}'

  def record(self) -> dict:
    return read_record(self.workdir)

  def write_record(self, record: dict) -> None:
    paths.write_text(os.path.join(self.workdir, RECORD), json.dumps(record, indent=1))


RECORD = 'ablate.json'  # in each run's workdir: its command, status, wall time, segments


def read_record(workdir: str) -> dict:
  """WORKDIR/ablate.json, what lmjax.ablate keeps about a run ({} if none or unreadable)."""
  try:
    with open(os.path.join(workdir, RECORD), encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


# --------------------------------------------------------------------------- producing rows


@dataclasses.dataclass(frozen=True)
class LogUniform:
  low: float
  high: float

  def draw(self, rng: random.Random) -> float:
    return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


@dataclasses.dataclass(frozen=True)
class Uniform:
  low: float
  high: float

  def draw(self, rng: random.Random) -> float:
    return rng.uniform(self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Choice:
  values: Sequence[Any]

  def draw(self, rng: random.Random) -> Any:
    return self.values[rng.randrange(len(self.values))]


def _short(field: str) -> str:
  return field.rsplit('.', 1)[-1]


def _fmt(value: Any) -> str:
  return f'{value:.3g}' if isinstance(value, float) else str(value)


def grid(space: Mapping[str, Sequence[Any]], group: str = 'grid') -> list[Row]:
  """A row for every combination of the values, named 'field=value,...'."""
  fields = list(space)
  rows = []
  for values in itertools.product(*(space[f] for f in fields)):
    name = ','.join(f'{_short(f)}={_fmt(v)}' for f, v in zip(fields, values))
    rows.append(Row(name, dict(zip(fields, values)), group))
  return rows


def random_search(space: Mapping[str, Any], n: int, seed: int = 0,
                  group: str = 'random') -> list[Row]:
  """n rows with each field drawn from its distribution (LogUniform, Uniform, Choice or a
  fixed value), reproducibly from `seed`."""
  rng = random.Random(seed)
  rows = []
  for i in range(n):
    values = {f: d.draw(rng) if hasattr(d, 'draw') else d for f, d in space.items()}
    rows.append(Row(f'r{i:02d}', values, group))
  return rows


# --------------------------------------------------------------------------- loading and checks


def load(path: str, arg: str = '') -> Sweep:
  """get_sweep([arg]) of a sweep file; one-line errors naming --sweep."""
  import importlib.machinery  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  flag = f'--sweep={path}'
  if not os.path.isfile(path):
    raise UserError(f'{flag}: no such file')
  try:
    loader = importlib.machinery.SourceFileLoader('lmjax_sweep', path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    sweep = module.get_sweep(arg) if arg else module.get_sweep()
  except AttributeError as e:
    raise UserError(f'{flag}: {e}') from None
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'{flag}: {type(e).__name__}: {str(e).strip().splitlines()[0]}') from None
  if not isinstance(sweep, Sweep):
    raise UserError(f'{flag}: get_sweep() returned {type(sweep).__name__}, not a Sweep')
  # Experiment files as given (relative to the current directory), else in the lmjax
  # repository the sweep file belongs to: sweeps run from anywhere.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))

  def resolve(spec: str) -> str:
    file, colon, variant = spec.partition(':')
    if spec and not os.path.exists(file) and os.path.exists(os.path.join(repo, file)):
      return os.path.join(repo, file) + colon + variant
    return spec

  rows = [dataclasses.replace(r, config=resolve(r.config)) for r in sweep.rows]
  return dataclasses.replace(sweep, config=resolve(sweep.config), rows=rows)


def value_text(value: Any) -> str:
  """A value as --config.FIELD=TEXT spells it (what ml_collections' config flags parse)."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(value_text(v) for v in value) + (',)' if len(value) == 1 else ')')
  if isinstance(value, float):
    return repr(value)
  return str(value)


def parse_sets(sets: Sequence[str]) -> dict:
  """--set FIELD=VALUE flags -> {FIELD: 'VALUE'} (text, parsed by the field's type later)."""
  out = {}
  for s in sets:
    field, eq, value = s.partition('=')
    if not eq or not field:
      raise UserError(f'--set {s}: expected FIELD=VALUE, e.g. --set data.train=PATH')
    out[field.removeprefix('config.')] = value
  return out


def runs(sweep: Sweep, root: str, sets: Mapping[str, str] = ()) -> list[Run]:
  out = []
  for row in sweep.rows:
    for seed in sweep.seeds:
      workdir = os.path.join(root, row.name, f'seed{seed}')
      merged = {**sweep.overrides, **row.overrides, **dict(sets)}
      command = (f'--config={row.config or sweep.config}', f'--workdir={workdir}',
                 f'--config.seed={seed}',
                 *(f'--config.{k}={value_text(v)}' for k, v in merged.items()))
      out.append(Run(row, int(seed), workdir, command))
  return out


def _apply(config: Any, field: str, value: Any, where: str) -> None:
  """config.FIELD = value, parsed from text by the field's type as the config flags do."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  node, parts = config, field.split('.')
  for p in parts[:-1]:
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      raise UserError(f'{where}: unknown config field {field}')
    node = node[p]
  if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
    raise UserError(f'{where}: unknown config field {field}')
  old = node[parts[-1]]
  if isinstance(value, str) and not isinstance(old, str) and old is not None:
    import ast  # pylint: disable=g-import-not-at-top
    try:
      value = (value in ('True', 'true', '1') if isinstance(old, bool)
               else ast.literal_eval(value))
    except (ValueError, SyntaxError):
      raise UserError(f'{where}: config.{field}={value!r} is not a {type(old).__name__}') from None
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise UserError(f'{where}: config.{field}={value!r}: {e}') from None


def row_config(sweep: Sweep, row: Row, sets: Mapping[str, str], flag: str,
               seed: int | None = None) -> Any:
  """The config a run of the row gets (its experiment file, the sweep's and the row's
  overrides, the --set fields and, given one, the seed), as lmjax.main will build it."""
  from lmjax import cli  # pylint: disable=g-import-not-at-top
  try:
    config = cli.load_config_file(row.config or sweep.config)
  except UserError as e:
    raise UserError(f'{flag}: {e}') from None
  for field, value in {**sweep.overrides, **row.overrides}.items():
    _apply(config, field, value, f'{flag}: row {row.name!r}')
  for field, value in dict(sets).items():
    _apply(config, field, value, f'--set {field}')
  if seed is not None:
    config.seed = seed
  return config


def check(sweep: Sweep, path: str, sets: Mapping[str, str] = (), data: bool = True) -> None:
  """Everything a sweep can be refused for, before any run starts (one line each); `data`:
  also the data files each run names (config_schema.check)."""
  from lmjax import config_schema  # pylint: disable=g-import-not-at-top
  flag = f'--sweep={path}'
  if not sweep.rows:
    raise UserError(f'{flag}: the sweep defines no rows')
  if not sweep.seeds:
    raise UserError(f'{flag}: the sweep defines no seeds')
  if len(set(sweep.seeds)) != len(sweep.seeds):
    raise UserError(f'{flag}: seeds {list(sweep.seeds)} repeat a seed')
  seen = set()
  for row in sweep.rows:
    if not _NAME.match(row.name):
      raise UserError(f'{flag}: row name {row.name!r} is not usable as a directory name '
                      '(letters, digits and _.=+,- only)')
    if row.name in seen:
      raise UserError(f'{flag}: two rows are named {row.name!r}')
    seen.add(row.name)
  if sweep.base_row and sweep.base_row not in seen:
    raise UserError(f'{flag}: base_row {sweep.base_row!r} is not one of the rows')
  if sweep.significance not in ('', 'bleu'):
    raise UserError(f'{flag}: significance {sweep.significance!r}: only "bleu" is supported')
  if sweep.significance_split not in ('eval', 'test'):
    raise UserError(f'{flag}: significance_split must be eval or test')
  if sweep.significance and not sweep.base_row:
    raise UserError(f'{flag}: significance needs a base_row to compare with')
  for m in sweep.metrics:
    if m.mode not in ('min', 'max') or m.split not in ('eval', 'test'):
      raise UserError(f'{flag}: metric {m.key!r}: mode must be min or max and split eval or '
                      f'test (got {m.mode!r}, {m.split!r})')
  for row in sweep.rows:
    where = f'{flag}: row {row.name!r}'
    config = row_config(sweep, row, sets, flag)
    try:
      config_schema.check(config, data=data)
    except UserError as e:
      raise UserError(f'{where}: {e}') from None
