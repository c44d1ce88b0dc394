"""Checkpoint averaging (lmjax.average): the mean of the last N steps' parameters, written as a
workdir every tool opens, checked against the saved arrays read directly with orbax."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cli_checks import listing, one_line_error, user_error, xla_flags
from lmjax import average, checkpoint, config_base, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny LM workdir with checkpoints at steps 2, 4 and 6."""
  wd = str(tmp_path_factory.mktemp('lm'))
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps, c.eval_every, c.checkpoint.every, c.checkpoint.max_to_keep = 6, 6, 2, 3
  c.sample.num_samples = 0
  c.mesh.data = 1
  train.train_and_evaluate(c, wd, devices=jax.devices()[:1])
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4', '6']
  return wd


def saved_state(workdir, step):
  """A step's state as orbax reads it back on its own (numpy on the host, no lmjax code)."""
  ckptr = ocp.StandardCheckpointer()
  try:
    return jax.device_get(ckptr.restore(os.path.join(workdir, 'checkpoints', str(step), 'state')))
  finally:
    ckptr.close()


def saved_meta(workdir, step):
  return json.load(open(os.path.join(workdir, 'checkpoints', str(step), 'meta', 'metadata')))


def cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'lmjax.average', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240)


def test_the_average_is_the_mean_of_the_last_steps_and_loads_as_a_workdir(trained):
  before = listing(trained)
  said = []
  out = average.average_dir(trained, 2, say=said.append)  # the default: WORKDIR/averaged_last2
  assert out == os.path.join(trained, 'averaged_last2')
  # DIR's own files are as they were; the new workdir is the only addition.
  assert {k: v for k, v in listing(trained).items() if not k.startswith(out + os.sep)} == before
  assert sorted(os.listdir(out)) == ['checkpoints', 'tokenizer']
  assert os.listdir(os.path.join(out, 'checkpoints')) == ['6']

  # Independently: the float64 mean of steps 4 and 6 (not 2), cast back, leaf by leaf.
  src = {s: saved_state(trained, s) for s in (2, 4, 6)}
  want = jax.tree.map(lambda a, b: ((a.astype(np.float64) + b.astype(np.float64)) / 2)
                      .astype(a.dtype), src[4]['params'], src[6]['params'])
  got = saved_state(out, 6)
  assert jax.tree.structure(got['params']) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got['params']),
                          jax.tree.leaves(want)):
    assert g.dtype == w.dtype, path
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8, err_msg=str(path))
  assert not np.allclose(got['params']['embedding'], src[6]['params']['embedding'])
  # The rest of the state is the newest step's, bit for bit.
  for key in ('opt_state', 'step', 'rng'):
    jax.tree.map(np.testing.assert_array_equal, got[key], src[6][key])

  # The loader every tool uses opens it: checksum verified, the same parameters.
  _, _, params, tok, step = checkpoint.load_trained(out)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), got['params'])
  meta, meta6 = saved_meta(out, 6), saved_meta(trained, 6)
  assert meta['config'] == meta6['config'] and meta['checksum'] != meta6['checksum']
  assert meta['tokenizer_fingerprint'] == tok.fingerprint() == meta6['tokenizer_fingerprint']
  assert meta['averaged_from'] == {'workdir': trained, 'steps': [4, 6]}
  for name in os.listdir(os.path.join(trained, 'tokenizer')):  # a copy of DIR/tokenizer
    assert (open(os.path.join(out, 'tokenizer', name), 'rb').read()
            == open(os.path.join(trained, 'tokenizer', name), 'rb').read())
  n = sum(x.size for x in jax.tree.leaves(want))
  assert said == [f'averaged checkpoint steps 4, 6 of {trained} into {out} (checkpoint step 6): '
                  f'{n:,} parameters']
  # Asked again, the default output exists: refused, and left as it is.
  written = listing(out)
  user_error(average.average_dir, trained, 2, needles=(out, 'not an empty directory'))
  assert listing(out) == written


def test_a_step_with_another_config_is_named(trained, tmp_path):
  wd = str(tmp_path / 'wd')
  shutil.copytree(trained, wd)
  path = os.path.join(wd, 'checkpoints', '4', 'meta', 'metadata')
  meta = json.load(open(path))
  meta['config']['num_train_steps'] = 4
  json.dump(meta, open(path, 'w'))
  user_error(average.average_dir, wd, 3, str(tmp_path / 'out'),
             needles=('--last=3', 'checkpoint step 4', 'config.num_train_steps: 4 at step 4, 6 '
                      'at step 6'))
  assert not os.path.exists(tmp_path / 'out')


def test_bad_arguments_are_one_line_errors(trained, tmp_path):
  before = listing(trained)
  one_line_error(cli(f'--workdir={trained}', '--last=4'), '--last=4', '(steps [2, 4, 6])')
  one_line_error(cli(f'--workdir={trained}', '--last=0'), '--last=0', 'at least 1')
  full = tmp_path / 'full'
  full.mkdir()
  (full / 'notes.txt').write_text('mine')
  kept = listing(str(full))
  one_line_error(cli(f'--workdir={trained}', '--last=2', f'--out={full}'), '--out', str(full),
                 'not an empty directory')
  assert listing(str(full)) == kept
  assert listing(trained) == before


def test_a_corrupted_middle_step_is_named_and_nothing_is_written(trained, tmp_path):
  wd = str(tmp_path / 'wd')
  shutil.copytree(trained, wd)
  state = os.path.join(wd, 'checkpoints', '4', 'state')
  arrays = [os.path.join(r, f) for r, _, fs in os.walk(state) for f in fs
            if os.sep + 'd' + os.sep in os.path.join(r, f)]
  f = max(arrays, key=os.path.getsize)
  data = bytearray(open(f, 'rb').read())
  data[len(data) // 2] ^= 0x10  # one bit of the largest array-data file
  open(f, 'wb').write(bytes(data))
  before = listing(wd)
  out = tmp_path / 'out'
  # 'step 4: state checksum does not match ...' (or orbax's read error, had it caught it)
  one_line_error(cli(f'--workdir={wd}', '--last=3', f'--out={out}'), 'step 4:',
                 'nothing was moved or deleted')
  assert sorted(os.listdir(tmp_path)) == ['wd']  # no output, no temporary left behind
  assert listing(wd) == before  # nothing moved aside: a reading tool
