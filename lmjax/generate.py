"""Sample continuations from the latest checkpoint in a workdir.

  python -m lmjax.generate --workdir=DIR --prompt="the old king" \
      [--max_new_tokens=64 --temperature=0.8 --top_k=40 --top_p=0.95 --num_samples=4]

Reads the config and tokenizer saved with the run (no data files needed) and decodes
incrementally (lmjax.decoding.generate_from_family): a Transformer LM over a preallocated
key/value cache, an RNN LM from its carried recurrent state. Each output is the prompt and its
continuation decoded together by the run's tokenizer (so character and subword models are not
split by spaces); it ends at the model's end of line unless --nostop_at_eos. Prompt words the
vocabulary does not know are named in a warning (they read as <unk>).
"""

import sys

from absl import flags

from lmjax import cli
from lmjax.errors import UserError

flags.DEFINE_string('workdir', None, 'A training workdir (checkpoints/ and tokenizer/).')
flags.DEFINE_string('prompt', '', 'Text to continue (empty: start of a line).')
flags.DEFINE_integer('max_new_tokens', 64, 'Tokens to sample.')
flags.DEFINE_float('temperature', 1.0, 'Softmax temperature; 0 is greedy decoding.')
flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens (0: all).')
flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling: the smallest set with this mass.')
flags.DEFINE_integer('num_samples', 1, 'Continuations to sample (one batch).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_bool('stop_at_eos', True, 'End each sample at the end of its line (the <eos> the '
                  'model was trained to emit after every line); --nostop_at_eos prints all '
                  '--max_new_tokens, one output line per generated line.')
FLAGS = flags.FLAGS


def load_for_generation(workdir: str, step: int | None = None):
  """(model family, params, tokenizer, step) from a workdir, checked against each other."""
  from lmjax import checkpoint, decoding
  config, family, params, tok, step = checkpoint.load_trained(workdir, step)
  if decoding.lm_decoder_of(family) is None:
    raise UserError(f'generation needs a language-model checkpoint (transformer or rnn); '
                    f'{workdir} holds model {config.model.name!r}')
  return family, params, tok, step


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.existing_workdir(FLAGS.workdir)
  from lmjax import config_schema  # the same rules as config.sample's fields
  for flag in ('max_new_tokens', 'temperature', 'top_k', 'top_p'):
    config_schema.check_field(f'sample.{flag}', getattr(FLAGS, flag), name=f'--{flag}')
  if FLAGS.num_samples < 1:
    raise UserError(f'--num_samples={FLAGS.num_samples}: must be at least 1')
  import jax
  import numpy as np

  from lmjax import decoding
  family, params, tok, step = load_for_generation(FLAGS.workdir, FLAGS.step)
  cfg = family.config
  prompt_ids = [tok.eos_id] + tok.encode(FLAGS.prompt)  # lines follow <eos> in training
  unk = getattr(tok, 'unk_id', None)
  if unk is not None and unk in prompt_ids[1:]:
    words = [w for w in FLAGS.prompt.split() if unk in tok.encode(w)]
    print(f'warning: --prompt: {len(words)} word(s) are not in the vocabulary and read as '
          f'<unk>: {", ".join(words)}', file=sys.stderr)
  total = len(prompt_ids) + FLAGS.max_new_tokens
  if getattr(cfg, 'position', None) == 'learned' and total > cfg.max_len:
    raise UserError(f'prompt ({len(prompt_ids)} tokens) + --max_new_tokens exceeds the '
                    f"model's max_len {cfg.max_len}")
  prompt = np.tile(np.asarray(prompt_ids, np.int32), (FLAGS.num_samples, 1))
  out = decoding.generate_from_family(
      family, params, prompt, jax.random.PRNGKey(FLAGS.seed), FLAGS.max_new_tokens,
      temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p)
  print(f'# checkpoint step {step}', file=sys.stderr)
  for row in np.asarray(out).tolist():
    lines = [prompt_ids[1:]]  # the prompt and its continuation are joined by the tokenizer
    for t in row:
      if t == tok.eos_id:
        if FLAGS.stop_at_eos:
          break
        lines.append([])
      else:
        lines[-1].append(t)
    print('\n'.join(tok.decode(ids) for ids in lines))


if __name__ == '__main__':
  cli.run(main)
