"""Average the parameters of a run's last checkpoints into a new workdir (checkpoint averaging).

  python -m lmjax.average --workdir=DIR --last=N [--out=DIR2]

Vaswani et al. 2017 (section 6.1) report the Transformer with the last 5 (base) or 20 (big)
checkpoints averaged; this is fairseq's scripts/average_checkpoints.py --num-epoch-checkpoints
for an lmjax workdir. The parameters (state['params']) of the last N checkpoints by step in
DIR/checkpoints are averaged leaf by leaf in float64 on the host and cast back to each leaf's
dtype; integer leaves must be equal in all of them. Every step read is verified against the
checksum saved in its meta (checkpoint.restore_trained / restore_good, as the decoding tools
read a workdir), and must have the newest step's config and state layout: a step that fails
is named, and nothing is written.

DIR2 (default DIR/averaged_lastN; it must not exist or be empty) becomes a workdir like the
trainer's: a copy of DIR/tokenizer and one checkpoint, at the newest averaged step, holding
the averaged parameters and that step's optimizer state, step, rng and data iterator state,
with its meta (the same config, a fresh checksum, and `averaged_from`) and tokenizer copy. So
lmjax.translate, lmjax.generate, lmjax.main (resuming at the end of the schedule: the final
eval and test) and checkpoint.load_trained open it as any other workdir. It is written in a
temporary sibling and renamed when complete (on an object store, built locally and uploaded),
so a refused or failed run leaves nothing; DIR's own files are only read.
"""

import base64
import os

from absl import flags

from lmjax import cli, paths
from lmjax.errors import UserError, first_line


def define_flags() -> None:
  """The command line flags (defined only when run as a program, so that the functions
  here can be imported beside other tools' flags)."""
  flags.DEFINE_string('workdir', None, 'A training workdir (checkpoints/ and tokenizer/).')
  flags.DEFINE_integer('last', None, 'Average the parameters of the last N checkpoints by step.')
  flags.DEFINE_string('out', None, 'The workdir to write (must not exist or be empty; default '
                      'WORKDIR/averaged_lastN).')


FLAGS = flags.FLAGS


def _check_out(workdir: str, out: str, flag: str) -> None:
  """out must be new (or empty) and not inside DIR's checkpoints."""
  if paths.exists(out) and (not paths.isdir(out) or paths.listdir(out)):
    raise UserError(f'{flag}: {out} exists and is not an empty directory (nothing was written)')
  inside = os.fspath(paths.Path(out)).rstrip('/') + '/'
  if inside.startswith(os.fspath(paths.Path(workdir) / 'checkpoints').rstrip('/') + '/'):
    raise UserError(f'{flag}: {out} is inside {paths.join(workdir, "checkpoints")}')


def _copy_tokenizer(workdir: str, payload: dict, dest: str) -> None:
  """dest: a copy of DIR/tokenizer when it holds the checkpoint's tokenizer (its files as the
  checkpoint's copy has them), else the checkpoint's copy (checkpoint.restore_trained already
  warned when DIR/tokenizer was unreadable)."""
  src = paths.join(workdir, 'tokenizer')

  def same(name, b64):
    path = paths.join(src, name)
    return paths.isfile(path) and paths.Path(path).read_bytes() == base64.b64decode(b64)

  if not all(same(n, b) for n, b in payload['files'].items()):
    from lmjax import checkpoint  # pylint: disable=g-import-not-at-top
    checkpoint.write_tokenizer_files(payload, dest)
    return
  for name in paths.listdir(src):  # tokenizer.json, its files and training_text.json
    path = paths.join(src, name)
    if paths.isfile(path):
      paths.write_bytes(paths.join(dest, name), paths.Path(path).read_bytes())


def average_params(workdir: str, last: int):
  """(steps, restore_trained of the newest step, averaged params) of DIR's last N steps.

  Raises UserError naming the step that is missing, broken (not intact, or its meta
  unreadable), saved with another config or layout, or whose integer leaves differ.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lmjax import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  if not paths.isdir(paths.join(workdir, 'checkpoints')):
    raise UserError(f'--workdir {workdir}: no checkpoints/ directory')
  mngr = checkpoint.manager(workdir, create=False, async_save=False)
  try:
    all_steps = sorted(mngr.all_steps())
    if len(all_steps) < last:
      raise UserError(f'--last={last}: {paths.join(workdir, "checkpoints")} holds '
                      f'{len(all_steps)} checkpoint(s) (steps {all_steps or "none"})')
    chosen = all_steps[-last:]
    newest = chosen[-1]
    where = f'--workdir {workdir}'
    trained = checkpoint.restore_trained(workdir, newest)  # verified; config and tokenizer
    abstract = trained.run.abstract_state()
    checksum = checkpoint.checksum_fn(sharding.replicated(trained.run.mesh))
    flat, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(trained.state['params']))
    names = [jax.tree_util.keystr(p, simple=True, separator='/') for p, _ in flat]
    is_float = [jnp.issubdtype(x.dtype, jnp.floating) for _, x in flat]
    sums = [np.asarray(x, np.float64) if f else np.asarray(x) for (_, x), f in zip(flat, is_float)]
    for step in chosen[:-1]:
      try:
        meta = checkpoint.read_meta(mngr, step)
      except Exception as e:  # pylint: disable=broad-except
        raise UserError(f'{where}: checkpoint step {step} has no readable meta ({first_line(e)})'
                        '; nothing was averaged') from None
      changes = checkpoint.config_changes(meta.get('config') or {}, trained.meta['config'])
      if changes:  # 'config.f: 1 in the checkpoint, 2 now' -> '... at step S, 2 at step N'
        what = '; '.join(c.replace(' in the checkpoint, ', f' at step {step}, ', 1)[:-4]
                         + f' at step {newest}' for c in changes[:3])
        more = f'; and {len(changes) - 3} more' if len(changes) > 3 else ''
        raise UserError(f'--last={last}: checkpoint step {step} was saved with another config '
                        f'than step {newest} ({what}{more}); average the steps of one run')
      # Verified against its meta's checksum; another layout or vocabulary names the step.
      _, state, _ = checkpoint.restore_good(mngr, abstract, checksum, trained.tok.vocab_size,
                                            trained.tok.fingerprint(), where, steps=[step],
                                            move_bad=False)
      leaves = jax.tree.leaves(jax.device_get(state['params']))
      for i, x in enumerate(leaves):
        if is_float[i]:
          sums[i] += np.asarray(x, np.float64)
        elif not np.array_equal(sums[i], x):
          raise UserError(f'--last={last}: parameter {names[i]} ({x.dtype}) differs between '
                          f'checkpoint steps {step} and {newest}; only floating-point '
                          'parameters can be averaged')
  finally:
    mngr.close()
  avg = [(s / last).astype(x.dtype) if f else s for s, (_, x), f in zip(sums, flat, is_float)]
  params = jax.device_put(jax.tree_util.tree_unflatten(treedef, avg),
                          trained.run.state_sharding['params'])
  return chosen, trained, params


def average_dir(workdir: str, last: int, out: str | None = None, say=print) -> str:
  """Writes the average of DIR's last `last` checkpoints as the workdir `out`; returns it."""
  cli.existing_workdir(workdir)
  if last is None:
    raise UserError('--last is required')
  if last < 1:
    raise UserError(f'--last={last}: must be at least 1')
  flag = '--out' if out else f'--last={last} (default --out)'
  out = out or paths.join(workdir, f'averaged_last{last}')
  _check_out(workdir, out, flag)
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lmjax import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  chosen, trained, params = average_params(workdir, last)
  newest = trained.step
  state = dict(trained.state, params=params)  # opt_state, step, rng[, carry]: the newest's
  checksum = checkpoint.checksum_fn(sharding.replicated(trained.run.mesh))(state)
  meta = checkpoint.meta(ml_collections.ConfigDict(trained.meta['config']), trained.tok,
                         checksum)  # the config as saved, not the one-device one
  meta['averaged_from'] = {'workdir': os.fspath(paths.Path(workdir)), 'steps': chosen}
  tok_files = checkpoint.tokenizer_files(trained.tok)

  with paths.new_directory(out, flag) as tmp:
    _copy_tokenizer(workdir, tok_files, os.path.join(tmp, 'tokenizer'))
    mngr = checkpoint.manager(tmp, async_save=False)
    checkpoint.save(mngr, newest, state, trained.data, meta, tok_files)
    checkpoint.finish(mngr)
  n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  say(f'averaged checkpoint steps {", ".join(map(str, chosen))} of {workdir} into {out} '
      f'(checkpoint step {newest}): {n:,} parameters')
  return out


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  average_dir(FLAGS.workdir, FLAGS.last, FLAGS.out)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
