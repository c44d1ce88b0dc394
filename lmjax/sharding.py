"""Device mesh, logical-axis rules and sharding helpers.

Models name only logical axes (batch, length, embed, heads, kv, mlp, vocab, layers). The config
holds the mesh shape over three physical axes and one rules table mapping logical -> mesh axes:

  config.mesh = {'data': -1, 'fsdp': 1, 'tensor': 1}     # -1: the remaining devices
  config.logical_axis_rules = [('batch', ('data', 'fsdp')), ('embed', 'fsdp'),
                               ('heads', 'tensor'), ('mlp', 'tensor'), ('vocab', 'tensor'), ...]

Batches are split over data x fsdp (FSDP is data parallel for activations); parameters and
optimizer state are split over fsdp on their 'embed' axis and over tensor on heads/mlp/vocab.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lmjax.errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

DEFAULT_RULES = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
    ('vocab', 'tensor'),
    ('layers', None),
)


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
  """Resolve {'data': d, 'fsdp': f, 'tensor': t} (one may be -1) against the device count."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  unknown = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(unknown) > 1:
    raise UserError(f'config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}')
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f'config.mesh: axis sizes must be positive or -1, got '
                    f'{dict(zip(MESH_AXES, sizes))}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if unknown:
    if num_devices % known:
      raise UserError(f'config.mesh {dict(zip(MESH_AXES, sizes))} does not divide the '
                      f'{num_devices} available devices')
    sizes[MESH_AXES.index(unknown[0])] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise UserError(f'config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} '
                    f'devices but {num_devices} are available')
  return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[Any] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def rules_from_config(rules: Any) -> tuple:
  """Config rules (lists, as ConfigDict stores them) -> hashable tuple of (name, axes)."""
  out = []
  for name, axes in rules:
    if isinstance(axes, (list, tuple)):
      axes = tuple(axes)
      for a in axes:
        if a not in MESH_AXES:
          raise UserError(f'config.logical_axis_rules: {name!r} maps to unknown mesh axis {a!r}')
    elif axes is not None and axes not in MESH_AXES:
      raise UserError(f'config.logical_axis_rules: {name!r} maps to unknown mesh axis {axes!r}')
    out.append((name, axes))
  return tuple(out)


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(batch_size: int, mesh: Mesh, field: str = 'config.batch_size') -> None:
  dp = data_parallel_size(mesh)
  if batch_size % dp:
    raise UserError(f'{field}={batch_size} is not divisible by the data-parallel size {dp} '
                    f'(mesh data={mesh.shape["data"]} x fsdp={mesh.shape["fsdp"]})')


def logical_to_sharding(boxed_tree: Any, mesh: Mesh, rules: tuple) -> Any:
  """NamedShardings for a tree of (abstract) nn.LogicallyPartitioned values."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)
