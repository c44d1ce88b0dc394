"""The config schema (lmjax/config_schema.py, rules in config_base.SCHEMA), in process.

Every bad value below must be refused with one line naming the field; the boundary values a
run may legitimately use must pass; every experiment config and variant must pass as shipped.
The same checks as real processes (exit 2, nothing written): tests/test_refused_runs.py.
"""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from lmjax import config_base, config_schema, models, sharding
from lmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(name='synthetic_lm.py', variant='tiny', **overrides):
  c = config_base.load_experiment(name, variant)
  for path, value in overrides.items():
    *parents, leaf = path.split('.')
    node = c
    for p in parents:
      node = node[p]
    with c.unlocked():
      node[leaf] = value
  return c


LM = 'synthetic_lm.py'
MT = 'synthetic_translation.py'
RNN = 'ptb_lstm.py'

# (experiment, field, bad value, what the line must say)
BAD = [
    (LM, 'log_every', 0, 'must be positive'),
    (LM, 'log_every', -5, 'must be positive'),
    (LM, 'eval_every', -1, 'must be >= 0'),
    (LM, 'checkpoint.every', 0, 'must be positive'),
    (LM, 'checkpoint.max_to_keep', 0, 'must be positive'),
    (LM, 'checkpoint.stop_check_every', 0, 'must be positive'),
    (LM, 'checkpoint.best_mode', 'lowest', "one of 'min', 'max'"),
    (LM, 'checkpoint.best_metric', 'bleu', "'ppl'"),  # an LM reports no BLEU
    (LM, 'optimizer.learning_rate', -1.0, 'must be >= 0'),
    (LM, 'optimizer.learning_rate', float('nan'), 'finite'),
    (LM, 'optimizer.warmup_steps', -1, 'must be >= 0'),
    (LM, 'optimizer.weight_decay', -0.1, 'must be >= 0'),
    (LM, 'optimizer.grad_clip_norm', -1.0, 'must be >= 0'),
    (LM, 'optimizer.b2', 1.0, 'must be in [0, 1)'),
    (LM, 'optimizer.eps', -1e-9, 'must be >= 0'),
    (LM, 'optimizer.min_lr_ratio', 1.5, 'must be in [0, 1]'),
    (LM, 'optimizer.decay_factor', 0.0, 'must be in (0, 1]'),
    (LM, 'optimizer.name', 'lion', "one of 'adamw', 'adam', 'sgd'"),
    (LM, 'optimizer.schedule', 'step', "'cosine'"),
    (LM, 'model.dropout_rate', 1.5, 'must be in [0, 1)'),
    (LM, 'model.dropout_rate', 1.0, 'must be in [0, 1)'),
    (LM, 'model.attention_dropout_rate', -0.1, 'must be in [0, 1)'),
    (LM, 'model.dtype', 'float16', "one of 'float32', 'bfloat16'"),
    (LM, 'model.num_layers', 0, 'must be positive'),
    (LM, 'model.d_ff', -64, 'must be positive'),
    (LM, 'data.eval_fraction', 1.5, 'must be in [0, 1)'),
    (LM, 'data.eval_fraction', 1.0, 'must be in [0, 1)'),
    (LM, 'data.source', 'web', "one of 'synthetic', 'text', 'tfds'"),
    (LM, 'data.tokenizer', 'bpe', "one of 'word', 'sentencepiece', 'char', 'wordpiece'"),
    (LM, 'data.spm_type', 'wordpiece', "'unigram', 'bpe'"),
    (LM, 'data.synthetic_lines', 0, 'must be positive'),
    (LM, 'batch_size', 0, 'must be positive'),
    (LM, 'eval_batch_size', -8, 'must be positive'),
    (LM, 'seq_len', 0, 'must be positive'),
    (LM, 'num_train_steps', 0, 'must be positive'),
    (LM, 'num_epochs', -1, 'must be >= 0'),
    (LM, 'grad_accum_steps', 0, 'must be positive'),
    (LM, 'label_smoothing', 1.0, 'must be in [0, 1)'),
    (LM, 'label_smoothing', -0.1, 'must be in [0, 1)'),
    (LM, 'loss_normalization', 'batch', "one of 'tokens', 'sequences'"),
    (LM, 'nan_policy', 'ignore', "one of 'stop', 'skip'"),
    (LM, 'task', 'seq2seq', "one of 'lm', 'translation', 'ngram'"),
    (LM, 'mesh.tensor', 0, 'must be positive or -1'),
    (LM, 'mesh.data', -2, 'must be positive or -1'),
    (LM, 'sample.num_samples', -1, 'must be >= 0'),
    (LM, 'sample.top_p', 1.5, 'must be in (0, 1]'),
    (LM, 'sample.temperature', -0.5, 'must be >= 0'),
    (LM, 'sample.top_k', -1, 'must be >= 0'),
    (MT, 'decode.alpha', -5.0, 'must be >= 0'),
    (MT, 'decode.beam_size', -1, 'must be >= 0'),
    (MT, 'decode.batch_size', 0, 'must be positive'),
    (MT, 'decode.max_len_ratio', 0.0, 'must be > 0'),
    (MT, 'data.max_source_len', 1, 'must be >= 2'),
    (MT, 'data.pad_multiple', 0, 'must be positive'),
    (RNN, 'model.dropout', 1.2, 'must be in [0, 1)'),
    (RNN, 'model.init_scale', 0.0, 'must be > 0'),
]


@pytest.mark.parametrize('name,field,value,needle', BAD,
                         ids=[f'{n[:-3]}-{f}={v}' for n, f, v, _ in BAD])
def test_bad_value_is_refused_naming_the_field(name, field, value, needle):
  c = config(name, **{field: value})
  with pytest.raises(UserError) as e:
    config_schema.check(c, data=False)
  line = str(e.value)
  assert '\n' not in line
  assert line.startswith(f'config.{field}='), line
  assert needle in line, line


def test_wrong_types_are_refused():
  # ConfigDicts keep a field's type on override; a config built without type safety does not.
  import ml_collections
  for field, value in [('log_every', 2.5), ('batch_size', True), ('model.dtype', 32),
                       ('checkpoint.async_save', 'yes'), ('optimizer.learning_rate', '1e-3')]:
    c = ml_collections.ConfigDict(config().to_dict(), type_safe=False)
    *parents, leaf = field.split('.')
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
    with pytest.raises(UserError, match=f'^config.{field}='):
      config_schema.check(c, data=False)


GOOD = [
    ('optimizer.learning_rate', 0.0),  # frozen weights: a legitimate probe
    ('optimizer.warmup_steps', 0), ('optimizer.grad_clip_norm', 0.0),
    ('optimizer.weight_decay', 0.0), ('model.dropout_rate', 0.0), ('model.dropout_rate', 0.99),
    ('eval_every', 0), ('label_smoothing', 0.0), ('data.eval_fraction', 0.0),
    ('sample.temperature', 0.0), ('sample.top_p', 1.0), ('num_epochs', 3),
    ('checkpoint.best_metric', ''), ('mesh.data', -1), ('mesh.data', 8),
]


@pytest.mark.parametrize('field,value', GOOD, ids=[f'{f}={v}' for f, v in GOOD])
def test_boundary_values_pass(field, value):
  config_schema.check(config(**{field: value}), num_devices=8)


def test_cross_field_rules():
  cases = [
      (config(**{'mesh.data': -1, 'mesh.fsdp': -1}), 'at most one axis may be -1'),
      (config(grad_accum_steps=3), 'grad_accum_steps=3'),
      (config(**{'model.num_heads': 3}), 'num_heads=3 does not divide'),
      (config(seq_len=100), 'seq_len=100 exceeds'),
      (config(**{'model.name': 'lstmx'}), "unknown model 'lstmx'"),
      (config('ptb_kneser_ney.py', '5', **{'model.name': 'rnn'}), "fits 'kneser_ney'"),
      (config(**{'checkpoint.best_mode': 'max'}), 'best_mode'),
      (config(MT, **{'data.max_source_len': 64}), 'max_source_len=64 must be in [2'),
      (config(MT, **{'data.target_lang': 'en'}), 'source_lang and target_lang'),
      (config(MT, 'rnn', **{'data.packing': True}), 'config.data.packing=True'),
      (config(logical_axis_rules=[['heads', 'model']]), "unknown mesh axis 'model'"),
  ]
  for c, needle in cases:
    with pytest.raises(UserError, match=None) as e:
      config_schema.check(c, data=False)
    assert needle in str(e.value), (needle, str(e.value))


def test_mesh_against_the_devices():
  with pytest.raises(UserError, match='needs 3 devices but 8'):
    config_schema.check(config(**{'mesh.data': 3}), num_devices=8)
  with pytest.raises(UserError, match='does not divide the 8 available'):
    config_schema.check(config(**{'mesh.data': 3, 'mesh.fsdp': -1}), num_devices=8)
  with pytest.raises(UserError, match='batch_size=12 is not divisible by the data-parallel '
                     'size 8'):
    config_schema.check(config(batch_size=12, **{'mesh.data': 8}), num_devices=8)
  # tensor=8 with 2 heads: jax would end in an IndivisibleError traceback at the first init
  with pytest.raises(UserError) as e:
    config_schema.check(config(**{'mesh.data': 1, 'mesh.tensor': 8}), num_devices=8)
  assert 'config.model.num_heads=2' in str(e.value) and 'config.mesh.tensor=8' in str(e.value)
  # an axis left at -1 is checked once the device count resolves it
  c = config(**{'mesh.data': 1, 'mesh.tensor': -1})
  config_schema.check(c)
  with pytest.raises(UserError, match='mesh.tensor=8'):
    config_schema.check(c, num_devices=8)
  # fsdp shards 'embed': d_model 32 over fsdp 8 divides, d_model 36 does not
  config_schema.check(config(**{'mesh.data': 1, 'mesh.fsdp': 8}), num_devices=8)
  with pytest.raises(UserError, match=r'config.model.d_model=36 .*config.mesh.fsdp=8'):
    config_schema.check(config(**{'mesh.data': 1, 'mesh.fsdp': 8, 'model.d_model': 36,
                                  'model.num_heads': 2}), num_devices=8)


def test_data_fields_a_source_ignores_are_refused(tmp_path):
  f = tmp_path / 'corpus.txt'
  f.write_text('a b c\n')
  for name, variant in [(LM, 'tiny'), (MT, 'tiny'), ('lm1b_transformer.py', '')]:
    c = config(name, variant, **{'data.train': str(f)})
    with pytest.raises(UserError, match=r"config.data.train=.* is ignored: config.data.source="):
      config_schema.check(c)
    config_schema.check(c, data=False)  # lmjax.plan reads no data
  with pytest.raises(UserError, match='spm_model'):
    config_schema.check(config(**{'data.spm_model': str(f), 'data.tokenizer': 'word'}))
  # the LM task reads data.test from a file whatever the source: honoured, so allowed
  config_schema.check(config(**{'data.test': str(f)}))
  with pytest.raises(UserError, match='config.data.test not found'):
    config_schema.check(config(**{'data.test': str(tmp_path / 'nope.txt')}))


def test_data_files_must_exist(tmp_path):
  (tmp_path / 'train.txt').write_text('a b\n')
  (tmp_path / 'pairs.en').write_text('a b\n')
  text = {'data.source': 'text', 'data.train': str(tmp_path / 'train.txt')}
  with pytest.raises(UserError, match='config.data.eval must be set'):
    config_schema.check(config(**text))
  config_schema.check(config(**text, **{'data.eval_fraction': 0.1}))
  with pytest.raises(UserError, match=f'config.data.eval not found: {tmp_path}/valid.txt'):
    config_schema.check(config(**text, **{'data.eval': str(tmp_path / 'valid.txt')}))
  with pytest.raises(UserError, match='is a directory'):
    config_schema.check(config(**text, **{'data.eval': str(tmp_path)}))
  prefix = str(tmp_path / 'pairs')
  mt = {'data.source': 'text', 'data.train': prefix, 'data.eval': prefix}
  with pytest.raises(UserError, match=f'config.data.train not found: {prefix}.de'):
    config_schema.check(config(MT, **mt))
  (tmp_path / 'pairs.de').write_text('x y\n')
  config_schema.check(config(MT, **mt))


def test_tool_flags_share_the_rules():
  config_schema.check_field('sample.num_samples', 3, name='--num_samples')
  with pytest.raises(UserError, match=r'^--num_samples=-1: must be >= 0$'):
    config_schema.check_field('sample.num_samples', -1, name='--num_samples')
  with pytest.raises(UserError, match=r'^--alpha=-5: must be >= 0$'):
    config_schema.check_field('decode.alpha', -5, name='--alpha')


def _experiments():
  out = []
  for path in sorted(glob.glob(os.path.join(REPO, 'experiments', '*.py'))):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out += [(os.path.basename(path), v) for v in module.VARIANTS]
  return out


@pytest.mark.parametrize('name,variant', _experiments())
def test_every_experiment_and_variant_passes(name, variant):
  c = config_base.load_experiment(name, variant)
  sizes = [c.mesh[a] for a in ('data', 'fsdp', 'tensor')]
  n = 8 if -1 in sizes else int(np.prod(sizes))
  config_schema.check(c, num_devices=n, data=c.data.source != 'text')


def test_check_param_shardings_agrees_with_jax():
  """A vocabulary the tensor axis does not divide is named before jax fails compiling."""
  c = config()
  mesh = sharding.make_mesh({'data': 4, 'fsdp': 1, 'tensor': 2})
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tokens = jax.numpy.zeros((8, 32), jax.numpy.int32)
  for vocab, ok in [(38, True), (37, False)]:
    fam = models.build_lm(c.model, vocab)
    boxed = jax.eval_shape(fam.init, jax.random.PRNGKey(0), tokens)['params']
    shardings = sharding.logical_to_sharding(boxed, mesh, rules)
    init = lambda rng: jax.tree.map(lambda x: x.value, fam.init(rng, tokens)['params'],
                                    is_leaf=lambda x: hasattr(x, 'names'))
    try:
      jax.jit(init, out_shardings=shardings).lower(jax.random.PRNGKey(0))
      jax_ok = True
    except ValueError:  # jax's IndivisibleError
      jax_ok = False
    assert jax_ok == ok
    if ok:
      config_schema.check_param_shardings(boxed, mesh, rules)
    else:
      with pytest.raises(UserError, match=r'vocabulary size, size 37\) is not divisible by '
                         r'config.mesh.tensor=2'):
        config_schema.check_param_shardings(boxed, mesh, rules)
