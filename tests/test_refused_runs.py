"""A refused run writes nothing: real `python -m lmjax.main` processes with bad configs.

Each case must exit 2 with exactly one stderr line 'error: ...' naming the field, flag or file,
and leave no workdir behind (a new one is not created; an existing one is unchanged). Most fail
in the schema check before jax starts a backend (~2 s each); they run concurrently. The full
range of bad values is checked in process by tests/test_config_schema.py.
"""

import os
import subprocess
import sys

from cli_checks import listing, one_line_error, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '--config=experiments/synthetic_lm.py:tiny'


def env():
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
              XLA_FLAGS=xla_flags(8))


def run_all(cases: dict, workdir_of) -> dict:
  procs = {name: subprocess.Popen([sys.executable, '-m', 'lmjax.main', *args,
                                   f'--workdir={workdir_of(name)}'], cwd=REPO, env=env(),
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for name, (args, _) in cases.items()}
  out = {}
  for name, p in procs.items():
    stdout, stderr = p.communicate(timeout=180)
    out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
  return out


def test_refused_runs_print_one_line_and_create_no_workdir(tmp_path):
  latin1 = tmp_path / 'latin1.txt'
  latin1.write_bytes(b'caf\xe9 au lait\n')
  short = tmp_path / 'short.txt'
  short.write_text('the dog .\n')
  text = ['--config.data.source=text', '--config.data.tokenizer=word']
  cases = {
      'no config file': (['--config=experiments/nope.py'], ['--config=experiments/nope.py',
                                                            'no such file']),
      'config is a dir': (['--config=experiments'], ['--config=experiments', 'directory']),
      'unknown variant': (['--config=experiments/synthetic_lm.py:bogus'],
                          ['synthetic_lm.py:bogus', "unknown variant 'bogus'"]),
      'typo field': ([TINY, '--config.modle.d_model=3'], ['modle', 'model']),
      'log_every=0': ([TINY, '--config.log_every=0'], ['config.log_every=0', 'positive']),
      'checkpoint.every=0': ([TINY, '--config.checkpoint.every=0'],
                             ['config.checkpoint.every=0']),
      'negative lr': ([TINY, '--config.optimizer.learning_rate=-1'],
                      ['config.optimizer.learning_rate=-1', 'must be >= 0']),
      'dropout 1.5': ([TINY, '--config.model.dropout_rate=1.5'],
                      ['config.model.dropout_rate=1.5', '[0, 1)']),
      'eval_fraction 1.5': ([TINY, '--config.data.eval_fraction=1.5'],
                            ['config.data.eval_fraction=1.5']),
      'tensor 8, 2 heads': ([TINY, '--config.mesh.data=1', '--config.mesh.tensor=8'],
                            ['config.model.num_heads=2', 'config.mesh.tensor=8']),
      'mesh too big': ([TINY, '--config.mesh.data=16'], ['needs 16 devices but 8']),
      'tiny ignores data.train': ([TINY, f'--config.data.train={latin1}'],
                                  ['config.data.train=', 'ignored', 'data.source=text']),
      'missing data file': ([TINY, *text, f'--config.data.train={tmp_path}/nope.txt',
                             f'--config.data.eval={latin1}'], ['config.data.train', 'nope.txt']),
      # passes every check, then the reader refuses the file: the workdir made for it goes again
      'non-UTF-8 data': ([TINY, *text, f'--config.data.train={latin1}',
                          f'--config.data.eval={latin1}'], ['latin1.txt', 'UTF-8']),
      # refused after the vocabulary was built and saved: the tokenizer files go again
      'too little data': ([TINY, *text, f'--config.data.train={short}',
                           f'--config.data.eval={short}'], ['4 tokens', 'config.batch_size']),
  }
  # The two cases refused while loading data each remove the directories they made; under
  # one new parent, two concurrent ones could each leave it to the other: separate parents.
  late = ('too little data',)
  workdir = lambda name: tmp_path / ('wd2' if name in late else 'wd') / name.replace(' ', '_')
  for name, proc in run_all(cases, workdir).items():
    one_line_error(proc, *cases[name][1])
    assert not os.path.exists(workdir(name)), name
  assert not os.path.exists(tmp_path / 'wd') and not os.path.exists(tmp_path / 'wd2')


def test_a_refused_run_leaves_an_existing_workdir_unchanged(tmp_path):
  wd = tmp_path / 'wd'
  (wd / 'checkpoints').mkdir(parents=True)
  (wd / 'metrics.jsonl').write_text('{"step": 1}\n')
  before = listing(str(wd))
  cases = {'nan_policy': ([TINY, '--config.nan_policy=ignore'], ['config.nan_policy']),
           'best_metric': ([TINY, '--config.checkpoint.best_metric=bleu'],
                           ['config.checkpoint.best_metric']),
           'max_to_keep': ([TINY, '--config.checkpoint.max_to_keep=0'],
                           ['config.checkpoint.max_to_keep=0'])}
  for name, proc in run_all(cases, lambda _: wd).items():
    one_line_error(proc, *cases[name][1])
  # Refused after loading: the vocabulary it saved for the refused data goes again.
  short = tmp_path / 'short.txt'
  short.write_text('the dog .\n')
  late = run_all({'too little data': ([TINY, '--config.data.source=text',
                                       '--config.data.tokenizer=word',
                                       f'--config.data.train={short}',
                                       f'--config.data.eval={short}'], None)}, lambda _: wd)
  one_line_error(late['too little data'], '4 tokens')
  assert listing(str(wd)) == before
  assert os.path.isdir(wd / 'checkpoints')  # empty directories of an existing workdir stay
  assert not os.path.exists(wd / 'tokenizer')


def test_make_train_passes_args(tmp_path):
  """`make train ARGS=...` reaches lmjax.main: a bad override is refused by name."""
  wd = tmp_path / 'wd'
  proc = subprocess.run(
      ['make', '-s', '-o', '.venv/.installed', 'train', f'PY={sys.executable}',
       'CONFIG=experiments/synthetic_lm.py:tiny', f'WORKDIR={wd}',
       "ARGS=--config.log_every=0 --config.num_train_steps=3"],
      cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert lines == ['error: config.log_every=0: must be positive'], proc.stderr[-2000:]
  assert not wd.exists()
