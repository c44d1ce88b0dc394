"""Checkpoints: an orbax CheckpointManager over {state, data iterator, meta}.

A checkpoint step directory holds
  state: the train state pytree (params, opt_state, step, rng[, carry]), saved sharded;
  data:  the input iterator's state (JSON), so a resumed run reads exactly the next batch;
  meta:  JSON with the config, vocabulary size and tokenizer fingerprint.
The tokenizer itself is saved once in WORKDIR/tokenizer (see lmjax.data.lm.build_tokenizer).
Nothing is pickled: orbax stores arrays with tensorstore and the rest as JSON.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from lmjax.errors import UserError


def manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(directory, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=ocp.args.JsonSave(data_state),
                                          meta=ocp.args.JsonSave(meta)))


def read_meta(mngr: ocp.CheckpointManager, step: Optional[int] = None) -> Optional[dict]:
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: Optional[int] = None,
            items: tuple = ('state', 'data', 'meta')):
  """Restore onto the shardings carried by abstract_state (jax.ShapeDtypeStruct leaves)."""
  step = mngr.latest_step() if step is None else step
  args = {'state': ocp.args.StandardRestore(abstract_state), 'data': ocp.args.JsonRestore(),
          'meta': ocp.args.JsonRestore()}
  try:
    out = mngr.restore(step, args=ocp.args.Composite(**{k: args[k] for k in items}))
  except (ValueError, KeyError) as e:
    raise UserError(f'checkpoint {mngr.directory}/{step} does not match this model: '
                    f'{str(e).splitlines()[0][:300]}') from e
  return step, out


def abstract_with_sharding(shapes: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def check_meta(meta: dict, vocab_size: int, fingerprint: str, where: str) -> None:
  """The checkpoint's vocabulary must be the tokenizer's: same size and same fingerprint."""
  if meta.get('vocab_size') != vocab_size:
    raise UserError(f'{where}: checkpoint vocabulary size {meta.get("vocab_size")} does not '
                    f'match the tokenizer\'s {vocab_size}')
  if meta.get('tokenizer_fingerprint') not in (None, fingerprint):
    raise UserError(f'{where}: the tokenizer does not match the one the checkpoint was '
                    'trained with (fingerprints differ)')
