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
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0 for a multi-process run (jax.distributed). Cloud '
                    'TPU VMs and SLURM are detected without it.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
FLAGS = flags.FLAGS


def init_distributed() -> None:
  """jax.distributed from flags, or from the environment on TPU VMs / SLURM."""
  import os
  import jax
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise cli.UserError('--coordinator_address, --num_processes and --process_id go '
                          'together')
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise cli.UserError(f'--process_id={FLAGS.process_id} is not in [0, '
                          f'--num_processes={FLAGS.num_processes})')
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  elif 'SLURM_JOB_ID' in os.environ and int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize()  # cluster auto-detection: SLURM
  elif os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') > 0:
    jax.distributed.initialize()  # multi-host Cloud TPU slice


def main(argv):
  """Check everything a refused run can be refused for, then create and lock the workdir."""
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None:
    raise cli.UserError('--config is required (e.g. --config=experiments/synthetic_lm.py)')
  config, workdir = FLAGS.config, FLAGS.workdir
  cli.check_workdir(workdir)
  from lmjax import config_schema  # pylint: disable=g-import-not-at-top
  config_schema.check(config)  # fields, model, data files: before jax starts a backend
  init_distributed()
  import jax
  config_schema.check_mesh(config, jax.device_count())
  before = cli.tokenizer_files(workdir)
  created = cli.make_workdir(workdir)
  try:
    if jax.process_index() == 0:
      cli.lock_workdir(workdir)
    from lmjax import train  # imported after flag parsing: jax start-up is not needed for --help
    train.train_and_evaluate(config, workdir)
  except cli.UserError:
    if jax.process_index() == 0:  # a run refused later (bad data) leaves the workdir as it was
      cli.undo_refused_run(workdir, before, created)
    raise
  except BaseException:
    if created and jax.process_index() == 0:
      cli.remove_empty_dirs(created)
    raise


if __name__ == '__main__':
  cli.run(main)
