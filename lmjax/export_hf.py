"""Export an lmjax BERT workdir as a Hugging Face model directory.

  python -m lmjax.export_hf --workdir=DIR --out=HFDIR [--step=N] [--tokenizer_dir=TOKDIR]

Writes HFDIR/config.json (BertForMaskedLM with an MLM head, else BertModel), model.safetensors
('bert.'-prefixed with cls.predictions.* when there is an MLM head, which BertModel loads as
well) and the tokenizer's Hugging Face files (WordPieceTokenizer.save_hf of the workdir's
tokenizer, or the files of --tokenizer_dir). The
parameters come from the newest checkpoint (or --step), checked against the checksum saved
with it. Only the encoder and the MLM head are exported: a task's own head (a classifier) is
named in one line and left out. HFDIR must not exist or be empty.
"""

import os

from absl import flags

from lmjax import cli, paths
from lmjax.errors import UserError


def define_flags() -> None:
  """The command line flags (defined only when run as a program, so that the functions
  here can be imported beside other tools' flags)."""
  flags.DEFINE_string('workdir', None, 'An lmjax workdir holding a BERT checkpoint.')
  flags.DEFINE_string('out', None, 'The Hugging Face directory to create (must not exist or be '
                      'empty).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest that restores).')
  flags.DEFINE_string('tokenizer_dir', None, 'Copy the tokenizer files from here instead of '
                      'DIR/tokenizer.')


FLAGS = flags.FLAGS


def _restore_params(workdir: str, step):
  """(config.model as a dict, params, tokenizer, step, verified) of a workdir.

  Through checkpoint.load_trained (every leaf checked against the saved checksum) when the
  workdir's task can be built here; otherwise its parameters alone, read by path from the
  newest step (verified False).
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  from lmjax import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    config, _, params, tok, step = checkpoint.load_trained(workdir, step)
    return config.model.to_dict(), params, tok, step, True
  except UserError as e:
    if 'config.task' not in str(e):
      raise
  mngr = checkpoint.manager(workdir, create=False, async_save=False)
  step = mngr.latest_step() if step is None else step
  meta = checkpoint.read_meta(mngr, step)
  directory = epath.Path(checkpoint.step_dir(mngr, step)) / 'state'
  tree = ocp.PyTreeCheckpointHandler().metadata(directory)
  tree = getattr(tree, 'tree', tree)
  item = {'params': tree['params']}
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  ckptr = ocp.PyTreeCheckpointer()
  try:
    out = ckptr.restore(directory, args=ocp.args.PyTreeRestore(
        item=item, restore_args=args, partial_restore=True))
  finally:
    ckptr.close()
    mngr.close()
  from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.load_tokenizer(paths.join(workdir, 'tokenizer'))
  checkpoint.check_meta(meta, tok.vocab_size, tok.fingerprint(), f'--workdir {workdir}')
  return meta['config']['model'], nn.meta.unbox(out['params']), tok, step, False


def export_dir(workdir: str, out: str, step=None, tokenizer_dir=None, say=print) -> list:
  """Exports a BERT workdir's checkpoint to the Hugging Face directory out; the files written."""
  cli.existing_workdir(workdir)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise UserError(f'--out {out}: exists and is not an empty directory (nothing was written)')
  if tokenizer_dir and not os.path.isdir(tokenizer_dir):
    raise UserError(f'--tokenizer_dir {tokenizer_dir}: no such directory')
  from lmjax import hf  # pylint: disable=g-import-not-at-top
  model, params, tok, step, verified = _restore_params(workdir, step)
  if model.get('name') != 'bert':
    raise UserError(f'--workdir {workdir}: model {model.get("name")!r} is not a BERT '
                    "(config.model.name='bert')")
  if tokenizer_dir:
    written = hf.save(params, model, out, tokenizer_dir=tokenizer_dir)
  else:
    written = hf.save(params, model, out, tokenizer=tok)
  left = hf.not_exported(params)
  say(f'exported step {step} of {workdir} to {out}: {", ".join(written)}'
      + ('' if verified else ' (parameters read by path; checksum not verified)'))
  if left:
    say(f'not exported (no Hugging Face BERT name): {", ".join(left)}')
  return written


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.out:
    raise UserError('--out is required')
  export_dir(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.tokenizer_dir)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
