"""Translate text with the latest checkpoint of a training workdir (beam search or greedy).

  python -m lmjax.translate --workdir=DIR < source.txt > hypotheses.txt \
      [--beam_size=4 --alpha=0.6 --batch_size=64 --step=N]

  # with references: also prints sacreBLEU (signature) and chrF to stderr
  python -m lmjax.translate --workdir=DIR --reference=ref.de < source.en > hyp.de

One output line per input line, detokenized with the run's SentencePiece model. Decoding
settings default to the run's config.decode. The same `decoding.translate_lines` computes BLEU
inside the train loop.
"""

import sys
import time

from absl import flags

from lmjax import cli
from lmjax.errors import UserError

flags.DEFINE_string('workdir', None, 'A training workdir (checkpoints/ and tokenizer/).')
DEFAULT_BEAM = 4
flags.DEFINE_integer('beam_size', None, 'Beam size; 1 is greedy (default: config.decode, or '
                     f'{DEFAULT_BEAM} where that is 0: a run that decoded nothing in the loop).')
flags.DEFINE_float('alpha', None, 'Length penalty exponent (Wu et al. 2016).')
flags.DEFINE_integer('batch_size', None, 'Sentences per decoding batch.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('reference', None, 'Reference translations (one per line) to score.')
flags.DEFINE_string('input', None, 'Source file (default: standard input).')
FLAGS = flags.FLAGS

def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.existing_workdir(FLAGS.workdir)
  from lmjax import checkpoint, decoding, metrics  # pylint: disable=g-import-not-at-top
  from lmjax.data import text  # pylint: disable=g-import-not-at-top
  from lmjax import config_schema  # pylint: disable=g-import-not-at-top
  for name in ('alpha', 'batch_size'):  # config.decode's rules, before any load
    if getattr(FLAGS, name) is not None:
      config_schema.check_field(f'decode.{name}', getattr(FLAGS, name), name=f'--{name}')
  if FLAGS.beam_size is not None and FLAGS.beam_size < 1:  # (config.decode allows 0: no BLEU)
    raise UserError(f'--beam_size={FLAGS.beam_size}: must be at least 1 (1 is greedy)')
  if FLAGS.input:
    lines = text.read_lines(FLAGS.input, what='--input')
  else:
    lines = text.read_stdin_lines()
  refs = None
  if FLAGS.reference:
    refs = text.read_lines(FLAGS.reference, what='--reference')
    if len(refs) != len(lines):
      raise UserError(f'--reference {FLAGS.reference} has {len(refs)} lines, the source has '
                      f'{len(lines)}')
  config, family, params, tok, step = checkpoint.load_trained(FLAGS.workdir, FLAGS.step)
  if family is None or not family.seq2seq:
    raise UserError(f'--workdir {FLAGS.workdir} holds model {config.model.name!r} (task '
                    f'{config.task!r}); translation needs encoder_decoder or rnn_seq2seq')
  dec = config.decode
  for name in ('beam_size', 'alpha', 'batch_size'):
    if getattr(FLAGS, name) is not None:
      dec[name] = getattr(FLAGS, name)
  if dec.beam_size < 1:  # the run decoded nothing inside its loop (config.decode.beam_size=0)
    dec.beam_size = DEFAULT_BEAM
  t0 = time.time()
  hyps = decoding.translate_lines(family, params, tok, lines, dec)
  wall = time.time() - t0
  for h in hyps:
    print(h)
  sys.stdout.flush()
  print(f'# checkpoint step {step}; {len(lines)} sentences in {wall:.1f}s '
        f'({len(lines) / max(wall, 1e-9):.1f} sentences/s, beam {dec.beam_size})',
        file=sys.stderr)
  if refs is not None:
    r = metrics.bleu_report(hyps, refs)
    print(f'BLEU {r["bleu"]:.2f}  {r["bleu_signature"]}\nchrF {r["chrf"]:.2f}  '
          f'{r["chrf_signature"]}', file=sys.stderr)


if __name__ == '__main__':
  cli.run(main)
