"""A gs:// workdir, end to end, against a Cloud Storage emulator on 127.0.0.1 (no network;
tests/gcs_emulator.py).

Real processes: train on --workdir=gs://BUCKET/run, resume there in a second process, sample
from it with lmjax.generate. Every workdir file (checkpoints through TensorStore's GCS driver,
the tokenizer, metrics.jsonl, TensorBoard events) must land in the bucket, nothing in a local
`gs:` directory; a refused run must leave the bucket untouched.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from lmjax import cli, paths
from cli_checks import free_port, one_line_error, user_error, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'lmjax-test'
ARGS = [f'--config={REPO}/experiments/synthetic_lm.py:tiny', '--config.log_every=1',
        '--config.checkpoint.every=2', '--config.eval_every=2',
        '--config.sample.num_samples=0', '--config.mesh.data=2']


@pytest.fixture(scope='module')
def emulator_env():
  """Environment variables that point gcsfs and TensorStore at a fresh in-memory emulator."""
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'tests', 'gcs_emulator.py'), str(port), BUCKET],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(('127.0.0.1', port), timeout=1).close()
      break
    except OSError:
      assert proc.poll() is None and time.time() < deadline, 'the GCS emulator did not start'
      time.sleep(0.2)
  url = f'http://127.0.0.1:{port}'
  # (gcsfs's bucket-type lookup speaks gRPC, which the emulator does not: switched off.)
  yield {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}
  proc.kill()
  proc.wait(timeout=30)


def _env(extra):
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
              XLA_FLAGS=xla_flags(2), **extra)


def _run(module, args, emulator_env, cwd):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, env=_env(emulator_env),
                        capture_output=True, text=True, timeout=300)


def _objects(emulator_env, prefix):
  """{object name below gs://BUCKET/prefix/: bytes}, read from the emulator's JSON API (not
  through the code under test)."""
  base = emulator_env['STORAGE_EMULATOR_HOST']
  query = urllib.parse.urlencode({'prefix': prefix + '/'})
  with urllib.request.urlopen(f'{base}/storage/v1/b/{BUCKET}/o?{query}', timeout=30) as r:
    items = json.load(r).get('items', [])
  out = {}
  for item in items:
    name = urllib.parse.quote(item['name'], safe='')
    with urllib.request.urlopen(f'{base}/download/storage/v1/b/{BUCKET}/o/{name}?alt=media',
                                timeout=30) as r:
      out[item['name'][len(prefix) + 1:]] = r.read()
  return out


def test_train_resume_and_generate_on_a_gs_workdir(emulator_env, tmp_path):
  workdir = f'gs://{BUCKET}/run'
  first = _run('lmjax.main', [*ARGS, f'--workdir={workdir}', '--config.num_train_steps=4'],
               emulator_env, tmp_path)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
  assert not os.listdir(tmp_path), 'a local directory was created for the gs:// workdir'
  objects = _objects(emulator_env, 'run')
  names = set(objects)
  assert {'tokenizer/tokenizer.json', 'metrics.jsonl'} <= names, sorted(names)
  assert any(n.startswith('checkpoints/4/state/') for n in names), sorted(names)
  assert any(n.startswith('checkpoints/2/') for n in names), sorted(names)
  assert any(n.startswith('tensorboard/events.out.tfevents') for n in names), sorted(names)
  train_steps = [json.loads(l)['step'] for l in objects['metrics.jsonl'].decode().splitlines()
                 if json.loads(l)['split'] == 'train']
  assert train_steps == [1, 2, 3, 4]

  second = _run('lmjax.main', [*ARGS, f'--workdir={workdir}', '--config.num_train_steps=6'],
                emulator_env, tmp_path)
  assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
  assert f'resuming from step 4: {workdir}/checkpoints/4' in second.stdout, second.stdout
  objects = _objects(emulator_env, 'run')
  train_steps = [json.loads(l)['step'] for l in objects['metrics.jsonl'].decode().splitlines()
                 if json.loads(l)['split'] == 'train']
  assert train_steps == [1, 2, 3, 4, 5, 6]  # appended to, not rewritten from step 5
  assert any(n.startswith('checkpoints/6/state/') for n in objects)

  sample = _run('lmjax.generate', [f'--workdir={workdir}', '--prompt=the', '--max_new_tokens=5',
                                   '--num_samples=1'], emulator_env, tmp_path)
  assert sample.returncode == 0, sample.stderr[-3000:]
  assert '# checkpoint step 6' in sample.stderr and sample.stdout.strip(), sample.stderr
  assert not os.listdir(tmp_path)


def test_a_refused_run_writes_nothing_to_the_bucket(emulator_env, tmp_path):
  proc = _run('lmjax.main', [*ARGS, f'--workdir=gs://{BUCKET}/refused',
                             '--config.optimizer.learning_rate=-1'], emulator_env, tmp_path)
  one_line_error(proc, 'learning_rate')
  assert _objects(emulator_env, 'refused') == {}
  missing = _run('lmjax.generate', [f'--workdir=gs://{BUCKET}/nothing-here'], emulator_env,
                 tmp_path)
  one_line_error(missing, f'gs://{BUCKET}/nothing-here', 'no such directory')


def test_a_gs_workdir_without_its_filesystem_library_is_one_line(monkeypatch):
  def no_gcsfs(path):
    raise ImportError('Install gcsfs to access Google Storage')
  monkeypatch.setattr(paths, 'isdir', no_gcsfs)
  message = user_error(cli.check_workdir, 'gs://bucket/run')
  assert message.startswith('--workdir gs://bucket/run: Install gcsfs') and '.[gcs]' in message
  assert paths.join('gs://bucket/run', 'checkpoints', '4') == 'gs://bucket/run/checkpoints/4'
