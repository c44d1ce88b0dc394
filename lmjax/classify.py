"""Classify sentences with the latest checkpoint of a classification workdir.

  python -m lmjax.classify --workdir=DIR < sentences.txt > labels.tsv
  python -m lmjax.classify --workdir=DIR --input=sentences.txt [--batch_size=64 --step=N]

Input: UTF-8 text (a leading byte-order mark is dropped), one example per line; a sentence pair
is `first<TAB>second` (for models trained with config.data.text_pair_column). Standard input and
--input are read the same way.
Output: one line per input line, `label<TAB>class=probability ...` in the order of the classes
(or the predicted value, for regression). Lines longer than the run's config.seq_len tokens are
truncated as in training (counted on stderr). Bad input (an empty line, a pair where the model
takes single sentences, or the reverse) is one error line naming the line; nothing is printed.
"""

import sys
import time

from absl import flags

from lmjax import cli
from lmjax.errors import UserError

flags.DEFINE_string('workdir', None, 'A classification workdir (checkpoints/ and tokenizer/).')
flags.DEFINE_string('input', None, 'Sentences, one per line (default: standard input).')
flags.DEFINE_integer('batch_size', 64, 'Sentences per batch.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
FLAGS = flags.FLAGS

PAD_MULTIPLE = 8


def read_input(path: str | None) -> list[str]:
  """Lines of --input or standard input: UTF-8, BOM dropped, '\\r\\n' read as '\\n'."""
  from lmjax.data import text  # pylint: disable=g-import-not-at-top
  # The same reader and one-line errors as translate and embed (empty, blank-only, not UTF-8).
  return text.read_lines(path, what='--input') if path else text.read_stdin_lines()


def split_examples(lines: list[str], pairs: bool, what: str):
  """(first texts, second texts or None); each line checked."""
  first, second = [], [] if pairs else None
  for n, line in enumerate(lines, 1):
    parts = line.split('\t')
    if pairs and len(parts) != 2:
      raise UserError(f'{what} line {n}: the model classifies sentence pairs; expected '
                      f'first<TAB>second, got {len(parts)} field(s)')
    if not pairs and len(parts) != 1:
      raise UserError(f'{what} line {n}: a tab, but the model classifies single sentences')
    if any(not p.strip() for p in parts):
      raise UserError(f'{what} line {n}: empty sentence')
    first.append(parts[0])
    if pairs:
      second.append(parts[1])
  return first, second


def classify_lines(task, params, tok, first, second, batch_size: int):
  """(predictions per line: probabilities [C] or a value, number truncated)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lmjax.data import classification as cls_data  # pylint: disable=g-import-not-at-top
  seq_len = task.config.seq_len
  ids, types, truncated = cls_data.encode_texts(tok, first, second, seq_len)
  dummy = np.zeros(len(ids), np.float32 if task.regression else np.int32)
  split = cls_data.Split(ids, types, dummy, truncated)
  order = np.argsort(split.lengths, kind='stable')
  predict = jax.jit(task.predict)
  out = [None] * len(ids)
  for s in range(0, len(order), batch_size):
    members = order[s:s + batch_size]
    batch = cls_data.make_batch(split, members, len(members), seq_len, PAD_MULTIPLE)
    pred = np.asarray(predict(params, batch))
    for r, i in enumerate(members):
      out[i] = pred[r]
  return out, truncated


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.existing_workdir(FLAGS.workdir)
  if FLAGS.batch_size < 1:
    raise UserError('--batch_size must be at least 1')
  what = f'--input {FLAGS.input}' if FLAGS.input else 'standard input'
  lines = read_input(FLAGS.input)
  from lmjax import checkpoint, tasks  # pylint: disable=g-import-not-at-top
  config, _, params, tok, step = checkpoint.load_trained(FLAGS.workdir, FLAGS.step)
  if config.task != 'classify':
    raise UserError(f'--workdir {FLAGS.workdir} holds a {config.task!r} model '
                    f'({config.model.name!r}); lmjax.classify needs config.task=\'classify\'')
  task = tasks.build(config, None, vocab_size=tok.vocab_size)
  first, second = split_examples(lines, bool(config.data.text_pair_column), what)
  t0 = time.time()
  preds, truncated = classify_lines(task, params, tok, first, second, FLAGS.batch_size)
  wall = time.time() - t0
  for p in preds:
    if task.regression:
      print(f'{float(p):.6g}')
    else:
      probs = ' '.join(f'{c}={float(x):.4f}' for c, x in zip(task.classes, p))
      print(f'{task.classes[int(p.argmax())]}\t{probs}')
  sys.stdout.flush()
  note = f'; {truncated} truncated to {config.seq_len} tokens' if truncated else ''
  print(f'# checkpoint step {step}; {len(lines)} lines in {wall:.1f}s{note}', file=sys.stderr)


if __name__ == '__main__':
  cli.run(main)
