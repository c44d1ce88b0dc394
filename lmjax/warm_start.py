"""Warm start (config.init_from): initialise a run's parameters from another run's checkpoint.

config.init_from is a workdir (its newest checkpoint that restores), one step directory,
WORKDIR/checkpoints/STEP, or hf:DIR, a Hugging Face BERT-family directory (config.json +
model.safetensors, read by lmjax.hf). Parameters are matched by their path in the tree:

  loaded   same path and shape in both: restored straight onto this run's mesh and shardings
           (the source may have been trained on another mesh or device count);
  new      only in this model (an extra head): they keep this run's initialisation;
  dropped  only in the source (a head this model does not have): not read at all.

A parameter with the same path and another shape is an error naming every such parameter. The optimizer state,
step, rng and data position are this run's own (a warm start is a new run, not a resume). What
was loaded, new and dropped is printed in one line each.
"""

import os
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from lmjax import checkpoint, paths
from lmjax.errors import UserError


def resolve(source: str) -> tuple[str, int | None]:
  """(workdir, step or None for the newest) of config.init_from."""
  p = paths.Path(source)
  if (p / 'checkpoints').is_dir():
    return os.fspath(p), None
  if p.name.isdigit() and p.parent.name == 'checkpoints' and p.is_dir():
    return os.fspath(p.parent.parent), int(p.name)
  raise UserError(f'config.init_from={source}: neither a workdir with checkpoints/ nor a '
                  'step directory WORKDIR/checkpoints/STEP')


def _path(keys: tuple) -> str:
  return '/'.join(str(k) for k in keys)


def _saved_params(step_dir: str) -> dict:
  """The saved state tree's metadata (shapes, dtypes), without reading any array."""
  meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(step_dir) / 'state')
  tree = getattr(meta, 'tree', meta)
  if not isinstance(tree, dict) or 'params' not in tree:
    raise UserError(f'config.init_from: {step_dir} holds no parameter tree')
  return tree


def _restore_params(step_dir: str, wanted: dict) -> dict:
  """Reads only the `wanted` {param path: ShapeDtypeStruct with sharding} arrays."""
  item = {'params': traverse_util.unflatten_dict(wanted)}
  restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
      item)
  ckptr = ocp.PyTreeCheckpointer()
  try:  # partial: only the wanted parameters are read, nothing of the optimizer state
    out = ckptr.restore(epath.Path(step_dir) / 'state', args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  finally:
    ckptr.close()
  return traverse_util.flatten_dict(out['params'])


def _match(source: str, where: str, src: dict, cur: dict) -> tuple[list, list, list]:
  """(loaded, new, dropped) parameter paths; a shape mismatch is one line naming them all."""
  loaded = sorted(k for k in cur if k in src)
  new = sorted(k for k in cur if k not in src)
  dropped = sorted(k for k in src if k not in cur)
  mismatched = [k for k in loaded if tuple(src[k].shape) != tuple(cur[k].shape)]
  if mismatched:
    raise UserError(f'config.init_from={source}: shapes differ between {where} and this model '
                    'for ' + ', '.join(f'{_path(k)} {tuple(src[k].shape)} vs '
                                       f'{tuple(cur[k].shape)}' for k in mismatched))
  if not loaded:
    raise UserError(f'config.init_from={source}: no parameter of this model is in {where}: '
                    'is it the right run?')
  return loaded, new, dropped


def _report(where: str, loaded: list, new: list, dropped: list, cur: dict, say) -> None:
  say(f'init_from {where}: loaded {len(loaded)} parameter arrays '
      f'({sum(int(cur[k].size) for k in loaded):,} values)')
  if new:
    say(f'init_from: new (kept their init): {", ".join(_path(k) for k in new)}')
  if dropped:
    say(f'init_from: dropped (not in this model): {", ".join(_path(k) for k in dropped)}')


def _check_tokenizer(run: Any, source: str, theirs: str | None, fix: str) -> None:
  """Refuse a source whose vocabulary is not this run's: its embedding rows would be read as
  other tokens (same vocabulary size, other ids) without any shape error."""
  tok = getattr(run.task, 'tokenizer', None)
  if tok is None or theirs is None or tok.fingerprint() == theirs:
    return
  raise UserError(f'config.init_from={source}: its tokenizer differs from this run\'s '
                  f'(config.data.tokenizer={run.task.config.data.tokenizer!r}), so its '
                  f'embeddings belong to other tokens; {fix}')


def _from_hf(run: Any, state: dict, source: str, say) -> dict:
  from lmjax import hf  # pylint: disable=g-import-not-at-top
  model_dir = source[len('hf:'):]
  if getattr(run.task, 'tokenizer', None) is not None:
    from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top
    try:
      theirs = tokenizers.WordPieceTokenizer.from_pretrained(model_dir).fingerprint()
    except UserError:
      theirs = None  # a directory without tokenizer files: nothing to compare
    _check_tokenizer(run, source, theirs,
                     f'set config.data.wordpiece_vocab={model_dir} to use its vocabulary')
  # The layer layout (stacked for a scan, or layer_i) is this model's, whatever config says.
  _, tree = hf.load(model_dir, scan_layers=bool(getattr(run.task.model.config, 'scan_layers',
                                                        False)))
  src = traverse_util.flatten_dict(tree)
  cur = traverse_util.flatten_dict(state['params'])
  loaded, new, dropped = _match(source, model_dir, src, cur)
  placed = {k: jax.device_put(src[k].astype(cur[k].dtype), cur[k].sharding) for k in loaded}
  _report(model_dir, loaded, new, dropped, cur, say)
  return dict(state, params=traverse_util.unflatten_dict({k: placed.get(k, v)
                                                          for k, v in cur.items()}))


def init_from(run: Any, state: dict, source: str, say: Callable[[str], None]) -> dict:
  """`state` (freshly initialised) with its parameters taken from `source` where they match."""
  if source.startswith('hf:'):
    return _from_hf(run, state, source, say)
  workdir, step = resolve(source)
  mngr = checkpoint.manager(workdir, create=False, async_save=False)
  steps = sorted(mngr.all_steps(), reverse=True)
  mngr_dir = lambda s: checkpoint.step_dir(mngr, s)
  if step is None and not steps:
    raise UserError(f'config.init_from={source}: no checkpoint in {workdir}/checkpoints')
  candidates = [step] if step is not None else steps
  errors = []
  for s in candidates:
    try:
      saved = _saved_params(mngr_dir(s))
      break
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (unreadable step: try the next)
      errors.append(f'step {s}: {type(e).__name__}')
  else:
    raise UserError(f'config.init_from={source}: no readable checkpoint ({"; ".join(errors)})')
  step_dir = mngr_dir(s)
  try:
    theirs = (checkpoint.read_meta(mngr, s) or {}).get('tokenizer_fingerprint')
  except Exception:  # pylint: disable=broad-except  (no readable meta: nothing to compare)
    theirs = None
  mngr.close()
  _check_tokenizer(run, source, theirs, f'set config.data.wordpiece_vocab={workdir} (or '
                   'the data fields of that run) to use its vocabulary')

  src = traverse_util.flatten_dict(saved['params'])
  cur = traverse_util.flatten_dict(state['params'])
  loaded, new, dropped = _match(source, f'step {s} ({step_dir})', src, cur)
  wanted = {k: jax.ShapeDtypeStruct(cur[k].shape, cur[k].dtype, sharding=cur[k].sharding)
            for k in loaded}
  restored = _restore_params(step_dir, wanted)
  params = traverse_util.unflatten_dict({k: restored.get(k, v) for k, v in cur.items()})
  _report(step_dir, loaded, new, dropped, cur, say)
  return dict(state, params=params)


def warm_start(run: Any, state: dict, config: Any, say: Callable[[str], None]) -> dict:
  """A fresh state warm-started by config.init_from, then config.model.init_embeddings."""
  if config.init_from:
    state = init_from(run, state, config.init_from, say)
  if config.model.get('init_embeddings'):
    state = init_embeddings(run, state, config.model.init_embeddings, say)
  return state


# --- config.model.init_embeddings: a word-vector file into the token embedding tables ---

EMBEDDING_AXES = ('vocab', 'embed')  # a token embedding table, in every family


def token_strings(tok: Any) -> list[str]:
  """The tokenizer's entries as words, by id (SentencePiece's word-start mark dropped)."""
  if hasattr(tok, 'tokens'):
    return list(tok.tokens)
  if hasattr(tok, 'id_to_token'):
    return [tok.id_to_token(i) or '' for i in range(tok.vocab_size)]
  if hasattr(tok, 'id_to_piece'):
    return [tok.id_to_piece(i).lstrip('\u2581') for i in range(tok.vocab_size)]
  raise UserError(f'config.model.init_embeddings: the {type(tok).__name__} vocabulary has no '
                  'word list to align vectors to')


def embedding_tables(task: Any) -> list[tuple]:
  """Parameter paths of the model's token embedding tables (logical axes ('vocab', 'embed'),
  whatever the family calls them)."""
  return param_axes(task)[1]


def param_axes(task: Any) -> tuple[list[tuple], list[tuple]]:
  """(every parameter path, the token embedding tables' paths) of the task's model."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from lmjax.tasks import base  # pylint: disable=g-import-not-at-top
  spec = task.batch_spec()
  boxed = jax.eval_shape(lambda r: task.init_params(r, base.dummy_batch(spec)),
                         jax.random.PRNGKey(0))
  flat = traverse_util.flatten_dict(boxed, is_leaf=lambda _, x: isinstance(x, nn.Partitioned))
  tables = sorted(k for k, v in flat.items()
                  if isinstance(v, nn.Partitioned) and tuple(v.names) == EMBEDDING_AXES)
  return sorted(flat), tables


def init_embeddings(run: Any, state: dict, path: str, say: Callable[[str], None]) -> dict:
  """`state` with its token embedding rows taken from the vectors file at `path`.

  Row i of each table becomes the vector of token i (or of its lower-cased form); tokens the
  file lacks, and rows past the vocabulary, keep the model's own initialisation.
  """
  from lmjax import vectors  # pylint: disable=g-import-not-at-top
  field = f'config.model.init_embeddings={path}'
  if getattr(run.task, 'tokenizer', None) is None:
    raise UserError(f'{field}: this task has no vocabulary to align vectors to')
  v = vectors.read_vectors(path)
  tokens = token_strings(run.task.tokenizer)
  table, found, missing = vectors.align(v, tokens, init='zeros')
  missing_set = set(missing)
  tables = embedding_tables(run.task)
  if not tables:
    raise UserError(f'{field}: model {run.task.config.model.name!r} has no token embedding '
                    'table')
  cur = traverse_util.flatten_dict(state['params'])
  new = dict(cur)
  for key in tables:
    rows, dim = cur[key].shape
    if dim != v.dim:
      raise UserError(f'{field}: the file has vectors of dimension {v.dim}; the model\'s '
                      f'embedding table {_path(key)} has {dim} (set the model width to {v.dim})')
    n = min(rows, len(tokens))
    have = np.zeros(rows, bool)  # [rows]: the file gives this row
    have[:n] = [t not in missing_set for t in tokens[:n]]
    old = cur[key]
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      old = multihost_utils.process_allgather(old, tiled=True)
    old = np.asarray(jax.device_get(old))
    merged = np.where(have[:, None], np.pad(table[:n], ((0, rows - n), (0, 0))), old)
    new[key] = jax.device_put(merged.astype(old.dtype), cur[key].sharding)
  say(f'init_embeddings {path}: {found:,} of {len(tokens):,} vocabulary entries from the file '
      f'({len(missing):,} not in it keep their initialisation) into '
      f'{", ".join(_path(k) for k in tables)}')
  return dict(state, params=traverse_util.unflatten_dict(new))
