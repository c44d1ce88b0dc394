"""The one loader of trained workdirs (checkpoint.load_trained): generate, translate and later
tools verify every leaf and fall back past a broken step, as training does."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lmjax import checkpoint, config_base, train
from lmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny LM workdir with checkpoints at steps 2 and 4."""
  wd = str(tmp_path_factory.mktemp('lm'))
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps, c.eval_every, c.checkpoint.every = 4, 4, 2
  c.sample.num_samples = 0
  c.mesh.data = 1
  train.train_and_evaluate(c, wd, devices=jax.devices()[:1])
  return wd


def copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def state_files(workdir, step):
  d = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
                if os.sep + 'd' + os.sep in os.path.join(r, f))


def flip_one_bit(workdir, step):
  """One bit in the middle of the largest array-data file."""
  f = max(state_files(workdir, step), key=os.path.getsize)
  data = bytearray(open(f, 'rb').read())
  data[len(data) // 2] ^= 0x10
  open(f, 'wb').write(bytes(data))


def generate(workdir, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'lmjax.generate', f'--workdir={workdir}',
                         '--prompt=the dog', '--max_new_tokens=4', '--temperature=0', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_a_flipped_bit_falls_back_to_the_newest_intact_step(trained, tmp_path):
  wd = copy(trained, tmp_path / 'wd')
  flip_one_bit(wd, 4)
  proc = generate(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  warn = [l for l in proc.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'step 4' in warn[0] and 'falling back to step 2' in warn[0], \
      proc.stderr
  assert '# checkpoint step 2' in proc.stderr
  assert proc.stdout == generate(trained, '--step=2').stdout  # step 2's own text
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4']  # a reader moves nothing
  # Asked for the broken step itself: one line, exit 2.
  asked = generate(wd, '--step=4')
  assert asked.returncode == 2, asked.stderr[-3000:]
  lines = asked.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'step 4' in lines[0], asked.stderr


def test_a_truncated_file_falls_back_in_process(trained, tmp_path, capsys):
  wd = copy(trained, tmp_path / 'wd')
  for f in state_files(wd, 4):
    data = open(f, 'rb').read()
    open(f, 'wb').write(data[:len(data) // 3])
  _, _, params, _, step = checkpoint.load_trained(wd)
  _, _, want, _, _ = checkpoint.load_trained(trained, 2)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(want))
  err = capsys.readouterr().err
  assert 'falling back to step 2' in err
  # TensorStore's reason without its pointer to the details (a bound-method repr, cut mid-word).
  assert 'TensorStore details' not in err and '<bound method' not in err, err


def test_a_garbled_tokenizer_is_replaced_by_the_checkpoint_copy(trained, tmp_path):
  wd = copy(trained, tmp_path / 'wd')
  path = os.path.join(wd, 'tokenizer', 'tokenizer.json')
  open(path, 'w').write('{"kind": "word", "vocab": [')
  proc = generate(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout == generate(trained).stdout
  warn = [l for l in proc.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'tokenizer' in warn[0] and 'copy saved in checkpoint' in warn[0]


def test_a_missing_tokenizer_is_read_from_the_checkpoint_with_one_warning(trained, tmp_path,
                                                                         capsys):
  wd = copy(trained, tmp_path / 'wd')
  shutil.rmtree(os.path.join(wd, 'tokenizer'))
  _, _, _, tok, step = checkpoint.load_trained(wd)
  _, _, _, want, _ = checkpoint.load_trained(trained)
  assert step == 4 and tok.fingerprint() == want.fingerprint()
  warn = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'tokenizer is missing' in warn[0] and 'checkpoint step 4' in warn[0]


def test_a_damaged_metrics_file_leaves_the_step_usable(trained, tmp_path, capsys):
  """orbax reads every step's metrics when a workdir is opened: a truncated or empty one costs
  that step its rank, with one warning naming the file, and opens nothing else."""
  wd = copy(trained, tmp_path / 'wd')
  for step, cut in ((2, lambda b: b[:len(b) // 2]), (4, lambda b: b'')):
    path = os.path.join(wd, 'checkpoints', str(step), 'metrics', 'metrics')
    open(path, 'wb').write(cut(open(path, 'rb').read()))
  _, _, params, _, step = checkpoint.load_trained(wd)
  _, _, want, _, _ = checkpoint.load_trained(trained)
  assert step == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(want))
  err = capsys.readouterr().err
  for step in (2, 4):
    named = [l for l in err.splitlines()
             if os.path.join(wd, 'checkpoints', str(step), 'metrics') in l]
    assert len(named) == 1 and named[0].startswith('warning: ') and 'unreadable' in named[0], err
  # Training opens the same workdir the same way (its manager ranks by eval ppl).
  mngr = checkpoint.manager(wd, best_metric='ppl')
  assert mngr.all_steps() == [2, 4]
  mngr.close()


def test_an_unreadable_tokenizer_copy_falls_back_to_an_older_steps(trained, tmp_path, capsys):
  wd = copy(trained, tmp_path / 'wd')
  open(os.path.join(wd, 'tokenizer', 'tokenizer.json'), 'w').write('{"kind": "word", "vocab": [')
  copy_dir = os.path.join(wd, 'checkpoints', '4', 'tokenizer')
  for name in os.listdir(copy_dir):
    open(os.path.join(copy_dir, name), 'wb').write(b'{')
  _, _, _, tok, step = checkpoint.load_trained(wd)
  _, _, _, want, _ = checkpoint.load_trained(trained)
  assert step == 4 and tok.fingerprint() == want.fingerprint()  # step 4's state, 2's tokenizer
  warn = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning: ')]
  assert len(warn) == 1 and 'unreadable' in warn[0] and 'checkpoint step 2' in warn[0], warn


def test_orbax_log_lines_stay_hidden(trained, tmp_path):
  """A truncated step metadata file makes orbax log an error line of its own (absl logging);
  the tool still reads the step, and the line is not shown without --verbose."""
  wd = copy(trained, tmp_path / 'wd')
  path = os.path.join(wd, 'checkpoints', '4', '_CHECKPOINT_METADATA')
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])
  quiet, loud = generate(wd), generate(wd, '--verbose')
  assert quiet.returncode == loud.returncode == 0, quiet.stderr[-3000:]
  assert quiet.stdout == loud.stdout and '# checkpoint step 4' in quiet.stderr
  assert 'Failed to json parse' in loud.stderr, loud.stderr[-3000:]  # orbax's line, shown
  assert 'Failed to json parse' not in quiet.stderr, quiet.stderr[-3000:]


def test_training_restores_a_garbled_tokenizer_from_the_checkpoint(trained, tmp_path, capsys):
  wd = copy(trained, tmp_path / 'wd')
  garbled = '{"kind": "word", "vocab": ['
  open(os.path.join(wd, 'tokenizer', 'tokenizer.json'), 'w').write(garbled)
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps, c.eval_every, c.checkpoint.every = 4, 4, 2
  c.sample.num_samples = 0
  c.mesh.data = 1
  train.train_and_evaluate(c, wd, devices=jax.devices()[:1])  # at its end: evaluates only
  out = capsys.readouterr().out
  assert 'restored' in out and 'it was unreadable' in out, out
  aside = [d for d in os.listdir(wd) if d.startswith('tokenizer_bad.')]
  assert len(aside) == 1  # moved, not deleted
  assert open(os.path.join(wd, aside[0], 'tokenizer.json')).read() == garbled
  read = lambda d: {f: open(os.path.join(d, 'tokenizer', f), 'rb').read()
                    for f in os.listdir(os.path.join(d, 'tokenizer'))}
  assert read(wd) == read(trained)  # the copy, and the record of the text it was built from


def test_no_intact_step_is_one_line(trained, tmp_path):
  wd = copy(trained, tmp_path / 'wd')
  for s in (2, 4):
    flip_one_bit(wd, s)
  with pytest.raises(UserError, match='no checkpoint in .* can be restored'):
    checkpoint.load_trained(wd)
