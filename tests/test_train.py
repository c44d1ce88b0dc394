"""The train loop: sharding equivalence, parameter placement, convergence, configs."""

import glob
import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lmjax import config_base, steps, tasks, train
from lmjax.data import synthetic
from lmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_experiment(name):
  path = os.path.join(REPO, 'experiments', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def tiny_config():
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.model.update(d_model=32, num_heads=2, d_ff=64, dropout_rate=0.1)
  return c


def one_step(config, mesh_shape, devices):
  """Loss and updated params after one train step on the given mesh."""
  config.mesh.update(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
  run = steps.prepare(config, None, devices=devices)
  it = run.task.train_iterator()
  state = run.init(0)
  state, out = run.train_step(state, next(it))
  state, out2 = run.train_step(state, next(it))
  return run, state, float(out['loss']), float(out2['loss'])


def test_same_loss_on_every_mesh():
  devices = jax.devices()
  assert len(devices) == 8
  ref = None
  # One compile per mesh. Pure data parallelism (8 x 1 x 1) is the mesh most real-process
  # tests train on (tests/test_fault_tolerance.py), and it is compared with another mesh
  # there; here the unsharded run against data x FSDP x tensor and against FSDP alone.
  for shape in [(1, 1, 1), (2, 2, 2), (1, 8, 1)]:
    n = int(np.prod(shape))
    _, state, l1, l2 = one_step(tiny_config(), shape, devices[:n])
    params = jax.tree.map(np.asarray, jax.device_get(state['params']))
    if ref is None:
      ref = (l1, l2, params)
      continue
    assert l1 == pytest.approx(ref[0], rel=1e-5), shape
    assert l2 == pytest.approx(ref[1], rel=1e-5), shape
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params, ref[2])


def test_params_and_optimizer_state_sharded_as_rules_say():
  s, state, _, _ = one_step(tiny_config(), (2, 2, 2), jax.devices())
  p = state['params']
  # embedding (vocab, embed) -> (tensor, fsdp); scanned layers lead with an unsharded axis.
  assert p['embedding'].sharding.spec == P('tensor', 'fsdp')
  assert p['layers']['attn']['query'].sharding.spec == P(None, 'fsdp', 'tensor', None)
  assert p['layers']['mlp']['wi'].sharding.spec == P(None, 'fsdp', 'tensor')
  assert p['layers']['mlp']['wo'].sharding.spec == P(None, 'tensor', 'fsdp')
  # Each device holds 1/4 of the query kernel (fsdp=2 x tensor=2).
  q = p['layers']['attn']['query']
  assert q.addressable_shards[0].data.size * 4 == q.size
  # AdamW moments follow their parameters.
  mu = state['opt_state'][1][0].mu
  assert mu['layers']['attn']['query'].sharding.spec == P(None, 'fsdp', 'tensor', None)
  assert mu['embedding'].sharding.spec == P('tensor', 'fsdp')


def test_mesh_and_batch_errors_before_compiling():
  c = tiny_config()
  c.mesh.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(UserError, match='needs 3 devices but 8'):
    steps.prepare(c, None)
  c = tiny_config()
  c.batch_size = 12
  c.mesh.update(data=8, fsdp=1, tensor=1)
  with pytest.raises(UserError, match='batch_size=12 is not divisible by the data-parallel size 8'):
    steps.prepare(c, None)
  c = tiny_config()
  c.model.num_heads = 3
  with pytest.raises(UserError, match='num_heads=3 does not divide'):
    steps.prepare(c, None)
  c = tiny_config()
  c.seq_len = 100
  with pytest.raises(UserError, match='seq_len=100 exceeds'):
    steps.prepare(c, None)
  c = tiny_config()
  c.model.name = 'lstmx'
  with pytest.raises(UserError, match="unknown model 'lstmx'"):
    steps.prepare(c, None)


def test_short_run_learns_the_synthetic_grammar(tmp_path, capsys):
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps = 150
  c.eval_every = 150
  report = train.train_and_evaluate(c, str(tmp_path))
  # Uniform over the 72-word vocabulary is 72; a unigram model is ~40. The grammar's entropy
  # allows ~5 (the default run reaches 5.1).
  assert report['ppl'] < 12.0, report
  # Every token of the eval split is predicted once: each word and one <eos> per line.
  eval_lines = synthetic.generate_lines(c.data.synthetic_eval_lines, c.data.seed + 1)
  assert report['tokens'] == sum(len(l.split()) + 1 for l in eval_lines)
  out = capsys.readouterr().out
  assert 'tokens/s' in out and 'sample:' in out
  # The first step's cost and its compile share, from jax.monitoring's compile events: this
  # run's steps are jitted afresh, so compiling is part of the first step, and never more.
  first = re.findall(r'first step ([0-9.]+)s, of which compiling ([0-9.]+)s \(([0-9]+)%\)', out)
  assert len(first) == 1, out
  first_s, compile_s, share = map(float, first[0])
  assert 0.0 < compile_s <= first_s and 0 < share <= 100, first  # (one-decimal seconds)
  # The backend's defaults, said once (in-process: no entry point chose a malloc setting).
  assert out.count('backend cpu') == 1
  assert ('backend cpu: hand-written backward passes on (model.custom_vjp=auto, on for CPU '
          'only)\n') in out
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert {l['split'] for l in lines} == {'train', 'eval'}
  assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))
  assert os.path.isdir(tmp_path / 'checkpoints' / '150')


def experiment_variants():
  for path in sorted(glob.glob(os.path.join(REPO, 'experiments', '*.py'))):
    mod = load_experiment(os.path.basename(path))
    for variant in getattr(mod, 'VARIANTS', ('',)):
      yield os.path.basename(path), variant


@pytest.mark.parametrize('name,variant', list(experiment_variants()))
def test_every_experiment_config_builds(name, variant):
  """Each config names a known task and model, passes the checks of a real run, and its train
  step traces (abstractly: no allocation) to a state of the same shapes and shardings and a
  finite-shaped scalar loss."""
  c = load_experiment(name).get_config(variant)
  assert c.task in tasks.TASKS
  if c.task == 'ngram':  # a count model: fitted on tiny data, nothing to trace
    c.data.update(source='synthetic', synthetic_lines=50, synthetic_eval_lines=10)
    task = tasks.build(c, None)
    assert task.num_steps == 0 and task.evaluate('eval', None, None)['tokens'] > 0
    return
  vocab = c.data.vocab_size if c.data.tokenizer != 'word' else 10000
  sizes = [int(c.mesh[a]) for a in ('data', 'fsdp', 'tensor')]
  devices = jax.devices()[:int(np.prod(sizes))] if -1 not in sizes else None
  run = steps.prepare(c, None, devices=devices, vocab_size=vocab)
  state = run.abstract_state()
  with run.context():
    new_state, out = jax.eval_shape(run.p_train, state, run.abstract_batch())
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
  assert out['loss'].shape == () and out['loss'].dtype == np.float32
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state['params'])) > 0


def test_steps_compile_once_over_a_run():
  """Several train steps and two evaluations trace the loss once for training and once for
  evaluation: no recompilation from step to step (chex counts the traces)."""
  import chex
  c = tiny_config()
  c.mesh.update(data=2)
  run = steps.prepare(c, None, devices=jax.devices()[:2])
  run.task.loss = chex.assert_max_traces(run.task.loss, n=2)
  it = run.task.train_iterator()
  state = run.init()
  for _ in range(4):
    state, out = run.train_step(state, next(it))
  first = run.evaluate(state['params'])
  second = run.evaluate(state['params'])
  assert first == second and np.isfinite(float(out['loss']))
