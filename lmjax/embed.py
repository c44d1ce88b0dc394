"""Sentence embeddings from any encoder workdir: one vector per input sentence.

  python -m lmjax.embed --workdir=DIR --input=FILE --output=OUT.npy [--pooling=mean|cls|pooler]
      [--normalize] [--batch_size=32] [--max_len=N] [--step=S]

DIR: a run of an encoder family (config.task 'mlm' or 'classify': BERT, a from-scratch
encoder, the bidirectional RNN) or an lmjax.import_hf workdir, opened by the one verified
loader (checkpoint.load_trained). FILE: UTF-8 text, one sentence per line; or, when it ends in
.json, a JSON list of strings (so empty strings and sentences holding newlines survive);
'-' reads standard input as lines. OUT.npy: float32 [N, D] in input order (numpy.load reads
it), written to a temporary file and renamed, so a failed run leaves an existing OUT as it was.

Pooling: 'mean' over the real tokens (sentence-transformers' mean pooling, all-MiniLM-L6-v2's
own), 'cls' the first token's hidden state, 'pooler' BERT's pooler (dense + tanh on [CLS]);
--normalize divides each vector by its L2 norm. Sentences are sorted by length and batched so
that padding stays low; each batch is padded to a power of two (16, 32, 64, ... tokens) and to
--batch_size rows, so a run compiles a handful of shapes; longer ones than
--max_len (default: the model's learned positions for BERT, else config.seq_len) are truncated
and counted on stderr.
"""

import json
import os
import sys
import time

from absl import flags

from lmjax import cli, paths
from lmjax.errors import UserError


def define_flags() -> None:
  """The command line flags (defined only when run as a program, so that the functions here
  can be imported beside other tools' flags)."""
  flags.DEFINE_string('workdir', None, 'An encoder run or lmjax.import_hf workdir.')
  flags.DEFINE_string('input', None, "Sentences: a text file (one per line), a .json list of "
                      "strings, or '-' for standard input.")
  flags.DEFINE_string('output', None, 'Where to write the [N, D] float32 .npy array.')
  flags.DEFINE_enum('pooling', 'mean', ['mean', 'cls', 'pooler'], 'How a sentence vector is '
                    'made from the hidden states.')
  flags.DEFINE_bool('normalize', False, 'L2-normalise each vector.')
  flags.DEFINE_integer('batch_size', 32, 'Sentences per batch.')
  flags.DEFINE_integer('max_len', 0, 'Tokens per sentence, specials included (0: the model\'s '
                       'maximum).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest intact one).')


FLAGS = flags.FLAGS

MIN_BUCKET = 16  # batches are padded to 16, 32, 64, ... tokens: few shapes, few compiles
POOLING = {'mean': 'mean', 'cls': 'first', 'pooler': 'pooler'}  # -> tasks.classify.pool


def read_sentences(path: str) -> list[str]:
  """The sentences of --input (see the module docstring)."""
  from lmjax.data import text  # pylint: disable=g-import-not-at-top
  if path == '-':
    return text.read_stdin_lines()
  if not path.endswith('.json'):
    return text.read_lines(path, what='--input')
  what = f'--input {path}'
  try:
    value = json.loads(text.decode_text(text.read_bytes(path, '--input'), what))
  except ValueError as e:
    raise UserError(f'{what} is not JSON: {e}') from None
  if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
    raise UserError(f'{what}: expected a JSON list of strings')
  if not value:
    raise UserError(f'{what} is an empty list: nothing to embed')
  return value


def embed_sentences(family, params, tok, sentences, max_len: int, pooling: str,
                    normalize: bool, batch_size: int):
  """(vectors float32 [N, D] in input order, number truncated)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lmjax.data import classification as cls_data  # pylint: disable=g-import-not-at-top
  ids, types, truncated = cls_data.encode_texts(tok, sentences, None, max_len)
  split = cls_data.Split(ids, types, np.zeros(len(ids), np.int32), truncated)
  vectors = _vector_fn(family, POOLING[pooling], normalize)
  order = np.argsort(split.lengths, kind='stable')
  out = None
  for s in range(0, len(order), batch_size):
    members = order[s:s + batch_size]
    longest = int(split.lengths[members].max())
    bucket = max(MIN_BUCKET, 1 << (longest - 1).bit_length())  # a power of two >= longest
    batch = cls_data.make_batch(split, members, batch_size, max_len, bucket)
    v = np.asarray(vectors(params, batch))[:len(members)]
    if out is None:
      out = np.zeros((len(ids), v.shape[1]), np.float32)
    out[members] = v
  return out, truncated


_VECTOR_FNS = {}


def _vector_fn(family, how: str, normalize: bool):
  """The jitted (params, batch) -> [B, D] vectors, one per (model, pooling, normalize), so
  calls after the first reuse its compiles."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from lmjax.tasks import classify  # pylint: disable=g-import-not-at-top
  key = (id(family), how, normalize)
  if key not in _VECTOR_FNS:
    @jax.jit
    def vectors(params, batch):
      inputs = {'inputs': batch['inputs'], 'token_types': batch['token_types'],
                'mask': batch['inputs'] != 0}
      hidden, pooled = family.encode({'params': params}, inputs, {}, True)
      v = classify.pool(hidden, pooled, inputs['mask'], how).astype(jnp.float32)  # [B, D]
      if normalize:
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
      return v
    _VECTOR_FNS[key] = (family, vectors)  # holds family: its id stays unique
  return _VECTOR_FNS[key][1]


def default_max_len(config) -> int:
  m = config.model
  if m.get('name') == 'bert' and m.get('position', 'learned') == 'learned':
    return int(m.get('max_len', config.seq_len))
  return int(config.seq_len)


def write_npy(path: str, array) -> None:
  """np.save to a temporary sibling, then rename: OUT is whole or as it was."""
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  directory = os.path.dirname(os.path.abspath(path))
  if not paths.is_remote(path) and not os.path.isdir(directory):
    raise UserError(f'--output {path}: directory {directory} does not exist')
  buf = io.BytesIO()
  np.save(buf, array)
  paths.write_atomically(path, [buf.getvalue()])


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  for name in ('workdir', 'input', 'output'):
    if not FLAGS[name].value:
      raise UserError(f'--{name} is required')
  cli.existing_workdir(FLAGS.workdir)
  if FLAGS.batch_size < 1:
    raise UserError('--batch_size must be at least 1')
  if FLAGS.max_len < 0:
    raise UserError('--max_len must be >= 0')
  if os.path.isdir(FLAGS.output):
    raise UserError(f'--output {FLAGS.output} is a directory')
  sentences = read_sentences(FLAGS.input)
  from lmjax import checkpoint  # pylint: disable=g-import-not-at-top
  config, family, params, tok, step = checkpoint.load_trained(FLAGS.workdir, FLAGS.step)
  if family is None or family.encode is None:
    raise UserError(f'--workdir {FLAGS.workdir} holds a {config.model.name!r} model '
                    f'(task {config.task!r}), not an encoder: lmjax.embed needs an encoder '
                    "family ('bert', 'rnn_encoder')")
  if FLAGS.pooling == 'pooler' and not config.model.get('pooler', config.model.name == 'bert'):
    raise UserError(f'--pooling=pooler: the model in {FLAGS.workdir} has no pooler; use mean '
                    'or cls')
  max_len = FLAGS.max_len or default_max_len(config)
  if config.model.name == 'bert' and max_len > default_max_len(config):
    raise UserError(f'--max_len={max_len}: the model has {default_max_len(config)} positions')
  t0 = time.time()
  vectors, truncated = embed_sentences(family, params, tok, sentences, max_len, FLAGS.pooling,
                                       FLAGS.normalize, FLAGS.batch_size)
  wall = time.time() - t0
  write_npy(FLAGS.output, vectors)
  note = f'; {truncated} truncated to {max_len} tokens' if truncated else ''
  print(f'wrote {FLAGS.output}: {vectors.shape[0]} x {vectors.shape[1]} float32 '
        f'({FLAGS.pooling} pooling{", normalized" if FLAGS.normalize else ""}) from checkpoint '
        f'step {step} in {wall:.1f}s ({len(sentences) / max(wall, 1e-9):,.0f} sentences/s)'
        f'{note}', file=sys.stderr)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
