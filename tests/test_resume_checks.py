"""Resuming a workdir with another model or other data says what changed (real processes)."""

import os
import subprocess
import sys

from lmjax.data import synthetic
from cli_checks import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(workdir, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS=xla_flags(1))
  return subprocess.run([sys.executable, '-m', 'lmjax.main',
                         '--config=experiments/synthetic_lm.py:tiny', f'--workdir={workdir}',
                         '--config.data.source=text', '--config.mesh.data=1',
                         '--config.num_train_steps=2', '--config.eval_every=2',
                         '--config.checkpoint.every=2', '--config.sample.num_samples=0', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def listing(path):
  return sorted(os.path.relpath(os.path.join(r, f), path)
                for r, _, fs in os.walk(path) for f in fs)


def test_changed_model_is_one_line_listing_the_fields_and_changed_data_warns(tmp_path):
  for name, seed in (('a', 0), ('b', 5), ('valid', 1)):
    (tmp_path / f'{name}.txt').write_text('\n'.join(synthetic.generate_lines(300, seed)) + '\n')
  data = [f'--config.data.eval={tmp_path / "valid.txt"}']
  wd = str(tmp_path / 'wd')
  first = main(wd, f'--config.data.train={tmp_path / "a.txt"}', *data)
  assert first.returncode == 0, first.stderr[-3000:]
  before = listing(wd)

  # Another model in the same workdir: one line naming the fields, nothing written.
  other = main(wd, f'--config.data.train={tmp_path / "a.txt"}', *data,
               '--config.model.num_layers=3', '--config.model.d_ff=48')
  assert other.returncode == 2, other.stderr[-3000:]
  lines = other.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), other.stderr[-3000:]
  assert 'config.model.num_layers: 2 in the checkpoint, 3 now' in lines[0]
  assert 'config.model.d_ff: 64 in the checkpoint, 48 now' in lines[0]
  assert listing(wd) == before

  # Other training text: the run resumes with its vocabulary and says which file changed;
  # a longer schedule is a change it accepts and reports.
  more = main(wd, f'--config.data.train={tmp_path / "b.txt"}', *data,
              '--config.num_train_steps=3')
  assert more.returncode == 0, more.stderr[-3000:]
  warn = [l for l in more.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and f'config.data.train={tmp_path / "b.txt"}' in warn[0], more.stderr
  assert 'training text differs' in warn[0] and str(tmp_path / 'a.txt') in warn[0]
  assert 'resuming from step 2' in more.stdout
  assert 'config.num_train_steps: 2 in the checkpoint, 3 now' in more.stdout

  # Other training text that is refused (too short for one batch): its error line alone, not
  # the changed-text warning before it; nothing written.
  (tmp_path / 'short.txt').write_text('a b\nc d\n')
  before = listing(wd)
  short = main(wd, f'--config.data.train={tmp_path / "short.txt"}', *data,
               '--config.num_train_steps=4')
  assert short.returncode == 2, short.stderr[-3000:]
  lines = short.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'too few' in lines[0], \
      short.stderr[-3000:]
  assert listing(wd) == before
