"""Import a Hugging Face BERT directory as an lmjax workdir.

  python -m lmjax.import_hf --model_dir=HFDIR --workdir=OUT [--scan_layers=false]

HFDIR: config.json + model.safetensors (+ the tokenizer files), e.g. all-MiniLM-L6-v2's
package directory; read without torch (lmjax.hf). OUT gets what lmjax.train writes: a step-0
checkpoint (state {'step', 'params', 'opt_state', 'rng'} with the config's optimizer state
freshly initialised, meta with the config and a checksum of every leaf, the tokenizer copy),
OUT/tokenizer and the config (task 'mlm', config.model from config.json). Start a fine-tuning
or pretraining run from it with --config.init_from=OUT (a warm start matches parameters by
path: 'encoder/...' loads into any encoder task). A directory without the MLM head (BertModel)
gets a freshly initialised one (said in one line). OUT must not exist or be empty; it is
written in a temporary sibling and renamed when complete, so a refused or failed import
leaves nothing.
"""

import os

from absl import flags

from lmjax import cli, paths
from lmjax.errors import UserError


def define_flags() -> None:
  """The command line flags (defined only when run as a program, so that the functions
  here can be imported beside other tools' flags)."""
  flags.DEFINE_string('model_dir', None, 'A Hugging Face BERT directory (config.json, '
                      'model.safetensors, tokenizer files).')
  flags.DEFINE_string('workdir', None, 'The lmjax workdir to create (must not exist or be empty).')
  flags.DEFINE_bool('scan_layers', True, 'config.model.scan_layers of the imported model.')
  flags.DEFINE_integer('seed', 0, 'config.seed (the MLM head of a model that has none).')


FLAGS = flags.FLAGS

TOKENIZER_KIND = 'wordpiece'  # config.data.tokenizer


def import_config(fields: dict, seed: int = 0):
  """The lmjax config of an imported BERT: mlm_config() with the model's fields and the
  WordPiece tokenizer."""
  from lmjax import config_base  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = config_base.mlm_config()
  config.seed = seed
  config.seq_len = min(128, int(fields['max_len']))
  config.model = ml_collections.ConfigDict(dict(fields, dtype='float32'))
  config.data.tokenizer = TOKENIZER_KIND
  return config


def write_tokenizer(model_dir: str, tok_dir: str):
  """OUT/tokenizer: the directory's WordPiece tokenizer (tokenizer.json, else vocab.txt with
  tokenizer_config.json), saved as lmjax saves it; returns the tokenizer."""
  from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.WordPieceTokenizer.from_pretrained(model_dir)
  tok.save(tok_dir)
  return tok


def import_dir(model_dir: str, workdir: str, scan_layers: bool = True, seed: int = 0,
               say=print) -> dict:
  """Imports model_dir into a new workdir; returns the config.model fields."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  from lmjax import checkpoint, hf, models, optim  # pylint: disable=g-import-not-at-top
  if paths.exists(workdir) and (not paths.isdir(workdir) or paths.listdir(workdir)):
    raise UserError(f'--workdir {workdir}: exists and is not empty (nothing was written)')
  cli.check_workdir(workdir)
  fields, params = hf.load(model_dir, scan_layers)
  config = import_config(fields, seed)
  vocab_size = int(fields['vocab_size'])
  family = models.build_lm(config.model, vocab_size)

  with paths.new_directory(workdir, '--workdir') as tmp:
    tok = write_tokenizer(model_dir, os.path.join(tmp, 'tokenizer'))
    if tok.vocab_size > vocab_size:
      raise UserError(f'--model_dir {model_dir}: the tokenizer has {tok.vocab_size} tokens, '
                      f'the model only {vocab_size} embeddings (config.json vocab_size)')
    # A model without cls.predictions gets the family's own init of the MLM head.
    rng_params, rng = jax.random.split(jax.random.PRNGKey(seed))
    batch = {'inputs': jnp.zeros((1, 2), jnp.int32), 'token_types': jnp.zeros((1, 2), jnp.int32),
             'mask': jnp.ones((1, 2), bool)}
    init = nn.meta.unbox(jax.jit(family.init)(rng_params, batch))['params']
    if 'mlm_head' not in params:
      params['mlm_head'] = init['mlm_head']
      say(f'{model_dir} has no masked-LM head (cls.predictions): initialised one (seed {seed})')
    params = jax.tree.map(jnp.asarray, params)
    if jax.tree.structure(params) != jax.tree.structure(init):
      raise UserError(f'--model_dir {model_dir}: imported parameters do not match the model')
    tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
    state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
             'rng': rng}
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    meta = checkpoint.meta(config, tok, checkpoint.checksum_fn(one)(state))  # as lmjax.train
    mngr = checkpoint.manager(tmp, async_save=False)
    checkpoint.save(mngr, 0, state, {}, meta, checkpoint.tokenizer_files(tok))
    checkpoint.finish(mngr)
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2) + '\n')
  n = hf.num_params(params)
  say(f'imported {model_dir} into {workdir}: BERT {fields["num_layers"]} layers x '
      f'{fields["d_model"]}, {n:,} parameters, vocabulary {vocab_size}'
      + f'; tokenizer WordPiece, {tok.vocab_size} tokens')
  return fields


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.model_dir:
    raise UserError('--model_dir is required')
  if not FLAGS.workdir:
    raise UserError('--workdir is required')
  import_dir(FLAGS.model_dir, FLAGS.workdir, FLAGS.scan_layers, FLAGS.seed)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
