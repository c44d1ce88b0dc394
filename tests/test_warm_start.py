"""config.init_from: a run starts from another run's parameters (fine-tuning, pretrained import)."""

import jax
import numpy as np
import pytest

from lmjax import config_base, steps, train, warm_start
from lmjax.errors import UserError


def tiny(**model):
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps = c.eval_every = c.checkpoint.every = 10
  c.sample.num_samples = 0
  c.optimizer.update(learning_rate=1e-2, warmup_steps=0, schedule='constant')
  c.model.update(model)
  return c


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A trained source run: (workdir, its final eval report)."""
  wd = str(tmp_path_factory.mktemp('source'))
  report = train.train_and_evaluate(tiny(), wd, devices=jax.devices()[:1])
  return wd, report


def warm(config, source_dir, devices, lines=None):
  run = steps.prepare(config, None, devices=devices)
  fresh = run.init(1)
  state = warm_start.init_from(run, fresh, source_dir,
                               (lines.append if lines is not None else lambda _: None))
  return run, fresh, state


def test_warm_start_begins_at_the_source_runs_eval_loss(source):
  wd, report = source
  run, fresh, state = warm(tiny(), wd, jax.devices()[:1])
  assert run.evaluate(state['params']) == report  # same mesh: the very same numbers
  assert run.evaluate(fresh['params'])['nll'] > report['nll'] + 0.5  # and not by chance
  assert int(state['step']) == 0  # a new run, not a resume
  # Onto another mesh (fsdp x tensor sharded), from one step directory.
  c = tiny()
  c.mesh.update(data=2, fsdp=2, tensor=2)
  run8, _, state8 = warm(c, f'{wd}/checkpoints/10', jax.devices())
  assert state8['params']['embedding'].sharding.spec == jax.sharding.PartitionSpec('tensor',
                                                                                  'fsdp')
  assert run8.evaluate(state8['params'])['nll'] == pytest.approx(report['nll'], rel=1e-5)


def test_an_extra_head_keeps_its_init_and_is_reported(source):
  wd, _ = source
  lines = []
  _, fresh, state = warm(tiny(tie_embeddings=False), wd, jax.devices()[:1], lines)
  src = jax.device_get(warm(tiny(), wd, jax.devices()[:1])[2]['params'])
  new = [k for k in state['params'] if k not in src]
  assert new, 'an untied output layer adds parameters'
  for k in new:  # the new head is this run's own init ...
    np.testing.assert_array_equal(jax.device_get(state['params'][k]),
                                  jax.device_get(fresh['params'][k]))
    assert any(k in l for l in lines if 'new' in l), lines
  # ... and everything shared is the source's.
  np.testing.assert_array_equal(jax.device_get(state['params']['embedding']), src['embedding'])


def test_parameters_only_in_the_source_are_dropped_and_named(tmp_path):
  c = tiny(tie_embeddings=False)
  c.num_train_steps = c.eval_every = c.checkpoint.every = 1
  train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  lines = []
  _, _, state = warm(tiny(), str(tmp_path), jax.devices()[:1], lines)
  dropped = [l for l in lines if 'dropped' in l]
  assert len(dropped) == 1 and 'logits' in dropped[0], lines
  assert 'logits' not in state['params']


def test_a_mismatched_shape_names_the_parameter(source):
  wd, _ = source
  with pytest.raises(UserError, match=r'shapes differ .* for layers/mlp/bi \(2, 64\) vs '
                                      r'\(2, 48\), .*layers/mlp/wi \(2, 32, 64\) vs '
                                      r'\(2, 32, 48\)'):
    warm(tiny(d_ff=48), wd, jax.devices()[:1])


def test_bad_init_from_is_one_line_naming_the_field(tmp_path):
  with pytest.raises(UserError, match='config.init_from=.*neither a workdir'):
    warm(tiny(), str(tmp_path / 'nothing'), jax.devices()[:1])
  (tmp_path / 'empty' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(UserError, match='config.init_from=.*no checkpoint'):
    warm(tiny(), str(tmp_path / 'empty'), jax.devices()[:1])


def test_the_loop_warm_starts_once_then_resumes(source, tmp_path, capsys):
  wd, report = source
  c = tiny()
  c.init_from = wd
  c.num_train_steps = c.eval_every = c.checkpoint.every = 2
  c.optimizer.learning_rate = 0.0  # lr 0: the eval is the source's
  out = train.train_and_evaluate(c, str(tmp_path / 'b'), devices=jax.devices()[:1])
  assert out['nll'] == pytest.approx(report['nll'], rel=1e-6)
  assert 'init_from' in capsys.readouterr().out
  # Restarted, the run resumes its own checkpoint and does not warm start again.
  c.num_train_steps = 4
  train.train_and_evaluate(c, str(tmp_path / 'b'), devices=jax.devices()[:1])
  printed = capsys.readouterr().out
  assert 'resuming from step 2' in printed and 'init_from' not in printed


def test_hf_directory_warm_starts_the_encoder_of_a_classifier(tmp_path):
  """init_from='hf:DIR': the encoder is the Hugging Face weights (as lmjax.hf reads them), the
  classifier head keeps its init, the MLM head is dropped."""
  import ml_collections
  from flax import traverse_util
  from lmjax import hf
  from test_hf import D, F, H, L, P, Y, random_tensors, write_dir
  hf_dir = write_dir(tmp_path / 'hf', random_tensors())
  c = config_base.load_experiment('sst2.py', 'tiny')
  c.data.update(wordpiece_vocab=hf_dir)
  c.model = ml_collections.ConfigDict({
      'name': 'bert', 'd_model': D, 'num_heads': H, 'num_layers': L, 'd_ff': F, 'max_len': P,
      'type_vocab_size': Y, 'layer_norm_eps': 1e-12, 'dropout_rate': 0.0,
      'attention_dropout_rate': 0.0})
  c.classifier.pooling = 'pooler'
  lines = []
  run, fresh, state = warm(c, f'hf:{hf_dir}', jax.devices()[:1], lines)
  _, want = hf.load(hf_dir, scan_layers=run.task.model.config.scan_layers)
  got = traverse_util.flatten_dict(jax.device_get(state['params']['encoder']))
  want = traverse_util.flatten_dict(want['encoder'])
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  np.testing.assert_array_equal(jax.device_get(state['params']['classifier']['dense']['kernel']),
                                jax.device_get(fresh['params']['classifier']['dense']['kernel']))
  assert any('new' in l and 'classifier/dense/kernel' in l for l in lines), lines
  assert any('dropped' in l and 'mlm_head' in l for l in lines), lines
