"""Train and evaluate a model from an experiment config.

  python -m lmjax.main --config=experiments/synthetic_lm.py[:variant] --workdir=DIR \
      [--config.model.num_layers=4 ...]

Restarting the same command with the same workdir resumes from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from lmjax import cli

config_flags.DEFINE_config_file('config', None, 'Experiment config file (Python), '
                                '[:variant].', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the tokenizer.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None:
    raise cli.UserError('--config is required (e.g. --config=experiments/synthetic_lm.py)')
  cli.check_workdir(FLAGS.workdir)
  from lmjax import train  # imported after flag parsing: jax start-up is not needed for --help
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
