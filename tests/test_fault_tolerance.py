"""Fault tolerance as a user meets it: real `python -m lmjax.main` processes, killed by signals.

Guarantees tested: a run SIGKILLed at some step and restarted ends bitwise equal to an
uninterrupted one; SIGTERM finishes the step, checkpoints and exits 0, and the run continues on
another mesh with the same losses; a broken latest checkpoint falls back to the previous one;
NaN losses stop or skip; a full disk or bad input fails in one line with nothing damaged.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmjax import checkpoint, cli, config_base, preemption, steps, train
from lmjax.data import lm as lm_data
from lmjax.data import tokenizers
from lmjax.errors import UserError
from cli_checks import free_port, listing, one_line_error, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/synthetic_lm.py:tiny'
STEPS = 8
ARGS = [f'--config={TINY}', f'--config.num_train_steps={STEPS}', '--config.log_every=1',
        '--config.eval_every=4', '--config.checkpoint.every=1',
        f'--config.checkpoint.max_to_keep={STEPS}', '--config.sample.num_samples=0',
        '--config.mesh.data=8']
MESH_222 = ['--config.mesh.data=2', '--config.mesh.fsdp=2', '--config.mesh.tensor=2']


def env():
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
              XLA_FLAGS=xla_flags(8))


def main_cmd(workdir, *extra):
  return [sys.executable, '-m', 'lmjax.main', *ARGS, f'--workdir={workdir}', *extra]


def run(workdir, *extra, timeout=240):
  return subprocess.run(main_cmd(workdir, *extra), cwd=REPO, env=env(), capture_output=True,
                        text=True, timeout=timeout)


def run_until(workdir, first_step, sig, *extra, timeout=240):
  """Starts a run; sends `sig` once it prints 'step N/..' with N >= first_step (0: any step).

  Returns (returncode, stdout, stderr)."""
  proc = subprocess.Popen(main_cmd(workdir, *extra), cwd=REPO, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, t0 = [], time.time()
  try:
    for line in proc.stdout:
      out.append(line)
      if line.startswith('step ') and int(line.split()[1].split('/')[0]) >= first_step:
        proc.send_signal(sig)
        break
      assert time.time() - t0 < timeout, ''.join(out)
    rest, err = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, ''.join(out) + rest, err


def params_at(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  state = ocp.StandardCheckpointer().restore(path)
  return jax.tree.map(np.asarray, jax.device_get(state))


def meta_at(workdir, step):
  return json.load(open(os.path.join(workdir, 'checkpoints', str(step), 'meta', 'metadata')))


def train_losses(workdir):
  """step -> loss (a restarted run repeats steps after its checkpoint: the later line wins)."""
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return {r['step']: r['loss'] for r in rows if r['split'] == 'train'}


def assert_bitwise_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape
    x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    assert np.array_equal(x.view(np.uint8), y.view(np.uint8))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The uninterrupted run: 8 steps on data=8, a checkpoint after every step, all kept."""
  wd = str(tmp_path_factory.mktemp('reference'))
  proc = run(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd


def test_checkpoint_holds_its_tokenizer(reference):
  step_dir = os.path.join(reference, 'checkpoints', str(STEPS))
  assert {'data', 'meta', 'metrics', 'state', 'tokenizer'} <= set(os.listdir(step_dir))
  copy = os.path.join(reference, 'tok_copy')
  payload = json.load(open(os.path.join(step_dir, 'tokenizer', 'metadata')))
  checkpoint.write_tokenizer_files(payload, copy)
  assert (tokenizers.load_tokenizer(copy).fingerprint()
          == meta_at(reference, STEPS)['tokenizer_fingerprint'])
  # The checkpoint is self-contained: generation works without the workdir's tokenizer/.
  alone = os.path.join(os.path.dirname(reference), 'ckpt_only')
  shutil.copytree(os.path.join(reference, 'checkpoints'), os.path.join(alone, 'checkpoints'))
  proc = subprocess.run([sys.executable, '-m', 'lmjax.generate', f'--workdir={alone}',
                         '--prompt=the', '--max_new_tokens=3'], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.startswith('the'), proc.stderr[-2000:]


def test_best_checkpoint_is_kept_beyond_the_last_n(tmp_path):
  """orbax bookkeeping: the best by ppl survives max_to_keep, also across a restart."""
  mngr = checkpoint.manager(str(tmp_path), max_to_keep=2, async_save=False, best_metric='ppl')
  state = {'w': np.zeros(3, np.float32)}
  ppl = {1: 9.0, 2: 3.0, 3: None, 4: 5.0, 5: None}
  for step, p in ppl.items():
    checkpoint.save(mngr, step, state, {}, {}, metrics={'ppl': p} if p else {})
  assert mngr.all_steps() == [2, 4, 5]
  mngr.close()
  mngr = checkpoint.manager(str(tmp_path), max_to_keep=2, async_save=False, best_metric='ppl')
  checkpoint.save(mngr, 6, state, {}, {}, metrics={})
  assert mngr.all_steps() == [2, 5, 6] and mngr.best_step() == 2
  mngr.close()


def test_sigkill_sigterm_and_another_mesh(reference, tmp_path):
  """SIGKILL at step ~3 and restart: bitwise the uninterrupted run. SIGTERM: finish the step,
  checkpoint, exit 0. Then continue on data=2,fsdp=2,tensor=2 with the same losses."""
  wd = str(tmp_path / 'interrupted')
  rc, out, err = run_until(wd, 3, signal.SIGKILL)
  assert rc == -signal.SIGKILL, err[-2000:]
  saved = sorted(int(d) for d in os.listdir(os.path.join(wd, 'checkpoints')) if d.isdigit())
  assert saved and max(saved) < STEPS - 2, saved
  rc, out, err = run_until(wd, 0, signal.SIGTERM)
  assert rc == 0, err[-3000:]
  assert f'resuming from step {max(saved)}: {wd}/checkpoints/{max(saved)}' in out
  line = [l for l in out.splitlines() if l.startswith('preempted: SIGTERM')]
  assert line, out[-2000:]
  k = int(line[0].split('finished step ')[1].split()[0])
  assert max(saved) < k < STEPS, (saved, k)
  assert max(int(d) for d in os.listdir(os.path.join(wd, 'checkpoints')) if d.isdigit()) == k
  assert_bitwise_equal(params_at(wd, k), params_at(reference, k))
  assert meta_at(wd, k)['checksum'] == meta_at(reference, k)['checksum']

  proc = run(wd, *MESH_222)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'resuming from step {k}' in proc.stdout
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in proc.stdout
  ref, got = train_losses(reference), train_losses(wd)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(k + 1, STEPS + 1):
    assert got[step] == pytest.approx(ref[step], rel=1e-5), (step, got, ref)


def test_ctrl_c_saves_the_step_and_exits_130(tmp_path):
  """SIGINT is a preemption: the step finishes, a checkpoint is saved even between checkpoint
  steps, one line says where, exit 130; restarting resumes from it."""
  wd = str(tmp_path / 'wd')
  rc, out, err = run_until(wd, 2, signal.SIGINT, '--config.checkpoint.every=100')
  assert rc == 130, err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith('interrupted: ')]
  assert len(lines) == 1 and 'saved checkpoint step' in lines[0], err[-3000:]
  k = int(lines[0].split('finished step ')[1].split()[0])
  assert sorted(int(d) for d in os.listdir(os.path.join(wd, 'checkpoints')) if d.isdigit()) == [k]
  proc = run(wd, '--config.checkpoint.every=100')
  assert proc.returncode == 0 and f'resuming from step {k}' in proc.stdout, proc.stderr[-3000:]


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
  proc = subprocess.Popen(main_cmd(str(tmp_path / 'wd'), '--config.num_train_steps=100000'),
                          cwd=REPO, env=env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  try:
    for line in proc.stdout:
      if line.startswith('step '):
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        break
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  assert [l for l in err.splitlines() if l.startswith('interrupted')], err[-3000:]


def test_the_second_ctrl_c_raises_at_once():
  """The handler's own logic (the process test above cannot time two signals apart): the
  first SIGINT asks for a stop after the step, the second raises at once."""
  before = signal.getsignal(signal.SIGINT)
  watch = preemption.StopWatch()
  try:
    signal.raise_signal(signal.SIGINT)
    assert watch.requested and watch.signal_name == 'SIGINT'
    with pytest.raises(KeyboardInterrupt, match='second Ctrl-C: stopped at once'):
      signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the second also restored the handler
  finally:
    watch.close()


def _garble(step_dir, how):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, 'state'))
           for f in fs if os.sep + 'd' + os.sep in os.path.join(r, f)]
  assert files
  for f in files:
    data = open(f, 'rb').read()
    if how == 'truncate':
      data = data[:len(data) // 3]
    else:  # flip bytes in the middle, same length
      mid = len(data) // 2
      data = data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:]
    open(f, 'wb').write(data)


def test_broken_latest_checkpoint_falls_back_to_the_previous(reference, tmp_path):
  wd = str(tmp_path / 'broken')
  shutil.copytree(reference, wd)
  _garble(os.path.join(wd, 'checkpoints', str(STEPS)), 'flip')
  # A save killed mid-write leaves only orbax's temporary directory: it must be ignored.
  tmp = os.path.join(wd, 'checkpoints', f'{STEPS + 2}.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(tmp, 'state'))
  proc = run(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  warn = [l for l in proc.stderr.splitlines() if l.startswith('warning: checkpoint step')]
  assert len(warn) == 1, proc.stderr[-3000:]
  assert f'step {STEPS} ({wd}/checkpoints/{STEPS})' in warn[0]
  assert f'falling back to step {STEPS - 1} ({wd}/checkpoints/{STEPS - 1})' in warn[0]
  assert f'resuming from step {STEPS - 1}' in proc.stdout
  assert 'Traceback' not in proc.stderr
  assert os.listdir(os.path.join(wd, 'checkpoints_bad'))  # moved aside, not deleted
  assert meta_at(wd, STEPS)['checksum'] == meta_at(reference, STEPS)['checksum']


def test_checksum_mismatch_falls_back(tmp_path, capsys):
  """Arrays that read back without an orbax error but differ from what was saved."""
  sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  csum = checkpoint.checksum_fn(sh)
  mngr = checkpoint.manager(str(tmp_path), async_save=False)
  for step in (1, 2):
    st = {'w': jax.device_put(np.full(4, step, np.float32), sh)}
    checkpoint.save(mngr, step, st, {'epoch': 0, 'index': step},
                    {'vocab_size': 5, 'checksum': csum(st)})
  path = tmp_path / 'checkpoints' / '2' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  meta['checksum'][0] ^= 1
  path.write_text(json.dumps(meta))
  abstract = {'w': jax.ShapeDtypeStruct((4,), np.float32, sharding=sh)}
  step, st, data = checkpoint.restore_good(mngr, abstract, csum, 5, 'fp', 'here',
                                           config_now={'seed': 3})
  assert step == 1 and data == {'epoch': 0, 'index': 1} and np.all(np.asarray(st['w']) == 1)
  out, err = capsys.readouterr()
  assert 'checkpoint step 2' in err and 'checksum' in err and 'falling back to step 1' in err
  # The config changes are those of the step restored, said once (not once per step tried).
  assert out.count('resuming with a changed config: config.seed') == 1, out
  assert os.listdir(tmp_path / 'checkpoints_bad') and mngr.all_steps() == [1]


def test_checksum_is_the_same_on_every_mesh():
  x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  mesh = jax.make_mesh((4, 2), ('a', 'b'))
  many = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('a', 'b'))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  a = checkpoint.checksum_fn(one)({'x': jax.device_put(x, one)})
  b = checkpoint.checksum_fn(repl)({'x': jax.device_put(x, many)})
  y = x.copy()
  y[3, 5] = np.nextafter(y[3, 5], np.float32(1))
  c = checkpoint.checksum_fn(one)({'x': jax.device_put(y, one)})
  assert a == b and a != c


def test_no_restorable_checkpoint_is_an_error_and_deletes_nothing(reference, tmp_path):
  wd = str(tmp_path / 'all_broken')
  shutil.copytree(reference, wd)
  for d in os.listdir(os.path.join(wd, 'checkpoints')):
    _garble(os.path.join(wd, 'checkpoints', d), 'truncate')
  before = listing(wd)
  one_line_error(run(wd), 'no checkpoint in', 'can be restored', 'nothing was deleted')
  assert listing(wd) == before


def test_nan_stop_names_the_step_and_writes_no_checkpoint_of_it(tmp_path):
  wd = str(tmp_path / 'nan')
  proc = run(wd, '--config.debug_nan_at_step=3', '--config.log_every=5',
             '--config.checkpoint.every=2', '--config.eval_every=100')
  line = one_line_error(proc, 'not finite at step 3', "nan_policy='stop'",
                        f'last good checkpoint: step 2 ({wd}/checkpoints/2)')
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2'], line


def test_nan_skip_keeps_params_and_counts_the_step():
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.mesh.update(data=1)
  c.debug_nan_at_step = 2
  run = steps.prepare(c, None, devices=jax.devices()[:1])
  it = lm_data.WindowIterator(run.task.train.stream, c.batch_size, c.seq_len, 0)
  state = run.init(0)
  state, out1 = run.train_step(state, next(it))
  before = jax.device_get({'params': state['params'], 'opt': state['opt_state']})
  state, out2 = run.train_step(state, next(it))
  after = jax.device_get({'params': state['params'], 'opt': state['opt_state']})
  state, out3 = run.train_step(state, next(it))
  assert bool(out1['finite']) and not bool(out2['finite']) and bool(out3['finite'])
  assert np.isnan(float(out2['loss']))
  assert_bitwise_equal(before, after)
  assert int(state['step']) == 3


def test_nan_skip_run_completes_and_logs_skipped(tmp_path, capsys):
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.update(num_train_steps=3, log_every=1, eval_every=3, nan_policy='skip',
           debug_nan_at_step=2)
  c.mesh.update(data=1)
  c.sample.num_samples = 0
  c.checkpoint.update(every=3, async_save=False)
  train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert {r['step']: r['skipped'] for r in rows if r['split'] == 'train'} == {1: 0, 2: 1, 3: 0}
  assert 'skipped 1 non-finite steps' in capsys.readouterr().out


def test_full_disk_while_saving_fails_in_one_line_and_damages_nothing(reference, tmp_path):
  wd = str(tmp_path / 'full')
  shutil.copytree(reference, wd)
  before = listing(os.path.join(wd, 'checkpoints'))
  line = one_line_error(run(wd, f'--config.num_train_steps={STEPS + 1}',
                            f'--config.debug_fail_save_at_step={STEPS + 1}'),
                        f'cannot write checkpoint step {STEPS + 1}', 'No space left on device',
                        f'latest complete: step {STEPS}')
  assert listing(os.path.join(wd, 'checkpoints')) == before, line


def test_agree_to_stop_single_process():
  assert preemption.agree_to_stop(True) and not preemption.agree_to_stop(False)


AGREE = """
import sys, jax
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from lmjax import preemption
me = jax.process_index()
print(preemption.agree_to_stop(me == 1), preemption.agree_to_stop(False),
      preemption.agree_to_stop(True))
"""


def test_agree_to_stop_two_processes():
  """Only process 1 got SIGTERM: both processes must decide to stop at the same step."""
  addr = f'127.0.0.1:{free_port()}'
  e = dict(env(), XLA_FLAGS=xla_flags(1))
  procs = [subprocess.Popen([sys.executable, '-c', AGREE, addr, str(i)], cwd=REPO, env=e,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == 'True False True', (out, err[-1000:])


# --- bad input: what is not already covered in test_cli.py / test_data_sources.py / test_train.py


def test_bad_inputs_through_the_cli_fail_in_one_line(tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_bytes(b'')
  adir = tmp_path / 'adir'
  adir.mkdir()
  text = ['--config.data.source=text', '--config.data.tokenizer=word']
  cases = {
      'empty file': (text + [f'--config.data.train={empty}', f'--config.data.eval={empty}'],
                     ['empty.txt', 'is empty']),
      'directory': (text + [f'--config.data.train={adir}', f'--config.data.eval={adir}'],
                    ['adir', 'is a directory']),
      'mesh': (['--config.mesh.data=3'], ['needs 3 devices']),
      'heads': (['--config.model.num_heads=3'], ['num_heads=3 does not divide']),
      'batch': (['--config.batch_size=12'], ['batch_size=12 is not divisible']),
      'seq_len': (['--config.seq_len=100'], ['seq_len=100 exceeds']),
      'model': (['--config.model.name=lstmx'], ["unknown model 'lstmx'"]),
      'nan_policy': (['--config.nan_policy=ignore'], ['config.nan_policy']),
  }
  procs = {}
  for name, (extra, _) in cases.items():
    wd = tmp_path / f'wd_{name.replace(" ", "_")}'
    procs[name] = (wd, subprocess.Popen(main_cmd(wd, *extra), cwd=REPO, env=env(), text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  for name, (wd, p) in procs.items():
    out, err = p.communicate(timeout=240)
    p.stdout, p.stderr = out, err
    one_line_error(p, *cases[name][1])
    assert not wd.exists(), (name, listing(str(wd)))  # nothing written, not even the dir


def test_unwritable_workdir(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(UserError, match='exists and is not a directory'):
    cli.check_workdir(str(a_file))
  with pytest.raises(UserError, match='cannot create it'):
    cli.check_workdir(str(a_file / 'sub'))
  if os.geteuid() != 0:  # root writes anywhere
    ro = tmp_path / 'ro'
    ro.mkdir(mode=0o500)
    with pytest.raises(UserError, match='not writable'):
      cli.check_workdir(str(ro))
  proc = run(str(a_file / 'sub'))
  one_line_error(proc, '--workdir', 'cannot create it')


def test_single_10mb_line_loads(tmp_path):
  words = np.random.default_rng(0).choice(['a', 'bb', 'ccc', 'dddd'], 3_000_000)
  path = tmp_path / 'one_line.txt'
  path.write_text(' '.join(words) + '\n')
  assert path.stat().st_size > 10_000_000
  cfg = config_base.base_config().data
  cfg.update(source='text', train=str(path), eval=str(path), tokenizer='word')
  tok, tr, ev, _ = lm_data.load_lm_data(cfg, None)
  assert tok.vocab_size == 7 and tr.num_predictions == 3_000_001
  batch = next(lm_data.WindowIterator(tr.stream, 8, 32, 0))
  assert batch['inputs'].shape == (8, 32)
