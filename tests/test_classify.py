"""Sentence classification: metrics against hand computations, the data readers and their
one-line errors, the bucketed resumable iterator, label batches on an 8-device mesh, the
bidirectional RNN encoder's masking, learning through the real loop, and lmjax.classify."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats
from jax.sharding import PartitionSpec as P

from lmjax import config_base, metrics, models, steps, train
from lmjax.data import classification as cls_data
from lmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**data):
  c = config_base.load_experiment('sst2.py', 'tiny')
  c.data.update(**data)
  return c


def data_cfg(**kw):
  c = config_base.classify_config().data
  c.update(**kw)
  return c


# ----------------------------------------------------------------------------- metrics


def test_classification_metrics_against_hand_computation():
  # rows: true class, columns: predicted class
  cm = np.array([[5, 2, 0],
                 [1, 3, 1],
                 [0, 2, 6]])
  r = metrics.classification_report(cm)
  assert r['accuracy'] == pytest.approx(14 / 20)
  # per class F1 = 2TP / (2TP + FP + FN): 10/(10+1+2), 6/(6+4+2), 12/(12+1+2)
  assert r['macro_f1'] == pytest.approx((10 / 13 + 6 / 12 + 12 / 15) / 3)
  # MCC as the correlation of the one-hot label and prediction matrices (Gorodkin's R_K)
  y = np.repeat([0, 0, 0, 1, 1, 1, 2, 2, 2], cm.ravel())
  p = np.tile([0, 1, 2], 3).repeat(cm.ravel())
  ey, ep = np.eye(3)[y], np.eye(3)[p]
  cov = lambda a, b: ((a - a.mean(0)) * (b - b.mean(0))).sum()
  assert r['mcc'] == pytest.approx(cov(ey, ep) / np.sqrt(cov(ey, ey) * cov(ep, ep)))
  assert r['majority'] == pytest.approx(8 / 20) and r['examples'] == 20
  # Binary: MCC = (TP TN - FP FN) / sqrt(...); F1 of class 1.
  tn, fp, fn, tp = 40, 10, 5, 45
  b = metrics.classification_report([[tn, fp], [fn, tp]])
  want = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  assert b['mcc'] == pytest.approx(want)
  assert b['f1'] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert metrics.classification_report([[3, 0], [2, 0]])['mcc'] == 0.0  # one column empty


def test_correlations_against_scipy():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 50).astype(float)  # ties
  y = x + rng.normal(size=50)
  assert metrics.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
  np.testing.assert_allclose(metrics.ranks(x), scipy.stats.rankdata(x))
  sums = {'weight': 50, 'loss': float(((x - y) ** 2).sum()), 'sum_p': x.sum(), 'sum_y': y.sum(),
          'sum_pp': (x * x).sum(), 'sum_yy': (y * y).sum(), 'sum_py': (x * y).sum()}
  r = metrics.regression_report(sums)
  assert r['pearson'] == pytest.approx(scipy.stats.pearsonr(x, y)[0])
  assert r['mse'] == pytest.approx(np.mean((x - y) ** 2))


# ----------------------------------------------------------------------------- reading


def write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return str(path)


def test_glue_tsv_csv_and_json_lines(tmp_path):
  tsv = write(tmp_path / 'train.tsv', '\ufeffsentence\tlabel\nit \'s a "charming" film \t1\n'
              'dull , dull\t0\n\nfine\t10\n')
  t = cls_data.read_file(tsv, data_cfg(), 'train')
  assert t.first == ['it \'s a "charming" film ', 'dull , dull', 'fine']  # no quoting
  assert cls_data.class_list(data_cfg(), t) == ('0', '1', '10')  # numeric order
  assert list(cls_data.map_labels(t, data_cfg(), ('0', '1', '10'))) == [1, 0, 2]
  csv_path = write(tmp_path / 'pairs.csv', 'a,b,y\n"one, two",three,neg\nfour,five,pos\n')
  cfg = data_cfg(text_column='a', text_pair_column='b', label_column='y')
  t = cls_data.read_file(csv_path, cfg, 'train')
  assert (t.first, t.second, t.labels) == (['one, two', 'four'], ['three', 'five'], ['neg', 'pos'])
  jl = write(tmp_path / 'r.jsonl', '{"s": "a b", "score": 3.5}\n{"s": "c", "score": 1}\n')
  cfg = data_cfg(text_column='s', label_column='score', regression=True)
  t = cls_data.read_file(jl, cfg, 'train')
  assert list(cls_data.map_labels(t, cfg, None)) == [3.5, 1.0]


@pytest.mark.parametrize('text,cfg,match', [
    ('sentence\tlabel\nfine\t1\n', dict(text_column='text'),
     r"train.tsv: no column 'text' \(config.data.text_column\); columns: sentence, label"),
    ('sentence\tlabel\nfine\t1\n', dict(text_pair_column='hypothesis'),
     r"no column 'hypothesis' \(config.data.text_pair_column\)"),
    ('sentence\tscore\nfine\t1\n', dict(), r"no column 'label' \(config.data.label_column\)"),
    ('sentence\tlabel\nfine\t0.5\nbad\thigh\n', dict(regression=True),
     r"train.tsv line 3: label 'high' in column 'label' is not a number "
     r'\(config.data.regression=True\)'),
    ('sentence\tlabel\nfine\t1\nbad\t2\n', dict(classes=['0', '1']),
     r"train.tsv line 3: label '2' in column 'label' is not one of the classes \['0', '1'\]"),
    ('sentence\tlabel\nfine\t1\n \t0\n', dict(), r"train.tsv line 3: empty 'sentence' field"),
    ('sentence\tlabel\nfine\t1\t2\n', dict(), r'train.tsv line 2: 3 fields, the header has 2'),
])
def test_bad_rows_are_one_line_errors(tmp_path, text, cfg, match):
  path = write(tmp_path / 'train.tsv', text)
  c = data_cfg(**cfg)
  with pytest.raises(UserError, match=match) as e:
    t = cls_data.read_file(path, c, 'train')
    cls_data.map_labels(t, c, None if c.regression else cls_data.class_list(c, t))
  assert '\n' not in str(e.value) and path in str(e.value)


def test_eval_label_outside_the_training_classes(tmp_path):
  c = tiny(source='text', train=write(tmp_path / 'tr.tsv', 'sentence\tlabel\na\tx\nb\ty\n'),
           eval=write(tmp_path / 'ev.tsv', 'sentence\tlabel\nc\tz\n'), classes=[])
  with pytest.raises(UserError, match=r"ev.tsv line 2: label 'z' .* read from the training"):
    cls_data.load_classification_data(c.data, 16, None)


def test_cleaning_applies_to_the_texts_and_an_emptied_one_names_its_line(tmp_path):
  c = tiny(source='text', train=write(tmp_path / 'tr.tsv',
                                      'sentence\tlabel\n<b>GOOD</b> film\t1\nbad film\t0\n'),
           eval=write(tmp_path / 'ev.tsv', 'sentence\tlabel\n<i>Good</i>\t1\n'), classes=[])
  c.data.clean.update(strip_html=True, lowercase=True)
  data = cls_data.load_classification_data(c.data, 16, None)
  assert data.tokenizer.encode('good film') == [int(i) for i in data.train.ids[0][1:-1]]
  c.data.eval = write(tmp_path / 'ev2.tsv', 'sentence\tlabel\nfine\t1\n<br/>\t1\n')
  with pytest.raises(UserError, match=r'ev2.tsv line 3: the text is empty after config.data.clean'):
    cls_data.load_classification_data(c.data, 16, None)


# ----------------------------------------------------------------------------- batches


def test_pairs_encode_with_token_types_and_truncate_longest_first(tmp_path):
  from lmjax.data import tokenizers
  tok = tokenizers.WordPieceTokenizer.train(['the cat sat on the mat', 'a dog ran'] * 20, 60)
  ids, types, n = cls_data.encode_texts(tok, ['the cat sat on the mat', 'a dog'],
                                        ['a dog ran', 'the cat'], max_len=8)
  assert n == 1 and [len(x) for x in ids] == [8, 7]
  assert list(types[1]) == [0, 0, 0, 0, 1, 1, 1] and ids[1][0] == tok.cls_id
  assert tok.decode(ids[0]) == 'the cat sat a dog'  # 6+3 words cut longest-first to 3+2
  word = tokenizers.WordVocab.build(['the cat sat on the mat a dog ran'])
  ids, types, n = cls_data.encode_texts(word, ['the cat sat on the mat'], ['a dog ran'], 8)
  assert n == 1 and len(ids[0]) == 8 and list(types[0]) == [0] * 5 + [1] * 3


def test_iterator_is_deterministic_resumable_and_bucketed():
  rng = np.random.default_rng(0)
  n = 400
  ids = [np.arange(1, 2 + rng.integers(2, 60), dtype=np.int32) for _ in range(n)]
  split = cls_data.Split(ids, [np.zeros_like(x) for x in ids], np.arange(n, dtype=np.int32), 0)
  it = cls_data.BucketIterator(split, 16, 64, seed=3, multiple=8)
  first = [next(it) for _ in range(30)]  # crosses the epoch boundary (25 steps)
  epoch0 = np.concatenate([b['labels'] for b in first[:25]])
  assert len(set(epoch0.tolist())) == 400  # every example once per epoch (400 = 25 x 16)
  other = cls_data.BucketIterator(split, 16, 64, seed=3, multiple=8)
  other.set_state({'epoch': 1, 'index': 2})
  for a, b in zip(first[27:], [next(other) for _ in range(3)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert all(b['inputs'].shape[1] % 8 == 0 and b['inputs'].shape[1] <= 64 for b in first)
  flat = cls_data.BucketIterator(split, 16, 64, seed=3, multiple=8, bucket=False)
  bucketed = cls_data.padding_fraction(first[:25])
  unbucketed = cls_data.padding_fraction([next(flat) for _ in range(25)])
  assert bucketed < 0.5 * unbucketed, (bucketed, unbucketed)
  ev = cls_data.eval_batches(split, 48, 64)
  assert sum(b['weights'].sum() for b in ev) == n and ev[-1]['weights'][-1] == 0


# ----------------------------------------------------------------------------- model, mesh


def test_rnn_encoder_masks_padding_in_both_directions():
  model_cfg = ml_collections.ConfigDict({'name': 'rnn_encoder', 'cell': 'gru', 'embed_dim': 8,
                                         'hidden_size': 6, 'num_layers': 2, 'dropout': 0.0})
  fam = models.build_lm(model_cfg, 20)
  tokens = jnp.asarray([[3, 4, 5, 0, 0, 0, 0, 0]], jnp.int32)
  variables = fam.init(jax.random.PRNGKey(0), tokens)
  assert set(variables['params']) == {'encoder'}

  def enc(t):
    t = jnp.asarray(t, jnp.int32)
    return fam.encode(variables, {'inputs': t, 'token_types': jnp.zeros_like(t),
                                  'mask': t != 0}, None, True)

  short, pooled = enc([[3, 4, 5]])
  long, _ = enc([[3, 4, 5, 0, 0, 0, 0, 0]])
  assert pooled is None and short.shape == (1, 3, 12)
  np.testing.assert_allclose(long[:, :3], short, rtol=1e-5, atol=1e-6)  # both directions
  np.testing.assert_array_equal(long[:, 3:], 0.0)
  with pytest.raises(UserError, match='no language-model head'):
    fam.apply(variables, tokens, None, {}, True)


def test_label_batch_placed_on_an_8_device_mesh():
  c = tiny(pad_multiple=16)  # every batch [B, seq_len]: one shape to compile
  c.mesh.update(data=8, fsdp=1, tensor=1)
  run = steps.prepare(c, None, devices=jax.devices()[:8])
  batch = next(run.task.train_iterator())
  placed = run.put(batch)
  labels = placed['labels']
  assert labels.shape == (16,) and labels.sharding.spec == P(('data', 'fsdp'))
  assert {s.data.shape for s in labels.addressable_shards} == {(2,)}
  for shard in labels.addressable_shards:  # each device holds its own rows
    np.testing.assert_array_equal(shard.data, batch['labels'][shard.index])
  state = run.init()
  state, out = run.train_step(state, batch)
  assert np.isfinite(float(out['loss'])) and float(out['tokens']) == 16
  # The report over the mesh equals an independent count from the task's predictions.
  report = run.evaluate(state['params'])
  correct = total = 0
  with run.context():
    for b in run.task.eval_batches('eval'):
      probs = np.asarray(run.task.predict(state['params'], b))
      keep = b['weights'] > 0
      correct += int((probs.argmax(-1)[keep] == b['labels'][keep]).sum())
      total += int(keep.sum())
  assert total == 64 and report['accuracy'] == pytest.approx(correct / total)


def test_regression_report_matches_the_predictions():
  c = tiny(regression=True, pad_multiple=16)
  c.checkpoint.best_metric, c.checkpoint.best_mode = 'pearson', 'max'
  run = steps.prepare(c, None, devices=jax.devices()[:2])
  assert run.batch_spec['labels'].dtype == jnp.float32
  state = run.init()
  for _ in range(3):
    state, _ = run.train_step(state, next(run.task.train_iterator()))
  report = run.evaluate(state['params'])
  preds, ys = [], []
  with run.context():
    for b in run.task.eval_batches('eval'):
      keep = b['weights'] > 0
      preds.append(np.asarray(run.task.predict(state['params'], b))[keep])
      ys.append(b['labels'][keep])
  p, y = np.concatenate(preds), np.concatenate(ys)
  assert report['mse'] == pytest.approx(np.mean((p - y) ** 2), rel=1e-4)
  assert report['pearson'] == pytest.approx(scipy.stats.pearsonr(p, y)[0], abs=1e-4)
  assert report['spearman'] == pytest.approx(scipy.stats.spearmanr(p, y)[0], abs=1e-6)


def test_config_errors_name_the_field():
  c = tiny()
  c.classifier.pooling = 'pooler'
  with pytest.raises(UserError, match="pooling='pooler': this encoder has no pooler"):
    steps.prepare(c, None, devices=jax.devices()[:1])
  c = tiny()
  c.model.name = 'transformer'
  c.model = ml_collections.ConfigDict({'name': 'transformer', 'd_model': 8, 'num_heads': 2,
                                       'num_layers': 1, 'd_ff': 16, 'max_len': 16})
  with pytest.raises(UserError, match="'transformer' is not an encoder family"):
    steps.prepare(c, None, devices=jax.devices()[:1])
  c = tiny(regression=True)  # best_metric accuracy is not reported for regression
  with pytest.raises(UserError, match="best_metric='accuracy' is not reported for regression"):
    steps.prepare(c, None, devices=jax.devices()[:1])


# ----------------------------------------------------------------------------- the real loop


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('classify') / 'w')
  c = tiny()
  c.mesh.update(data=2, fsdp=1, tensor=1)
  report = train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  return workdir, report


def test_learns_a_separable_task_through_the_loop(trained):
  workdir, report = trained
  assert report['examples'] == 64
  assert report['accuracy'] >= 0.85 and report['mcc'] >= 0.7, report  # chance: ~0.5 / 0
  saved = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any(r['split'] == 'eval' and r['accuracy'] == report['accuracy'] for r in saved)


def test_classify_cli_prints_labels_and_probabilities(trained, tmp_path):
  workdir, _ = trained
  text = '\ufeffthe cat likes a great river\nbad dog near the house\r\ngood\n'
  proc = subprocess.run(
      [sys.executable, '-m', 'lmjax.classify', f'--workdir={workdir}'], input=text.encode(),
      capture_output=True, cwd=REPO, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr.decode()[-2000:]
  rows = [line.split('\t') for line in proc.stdout.decode().splitlines()]
  assert [r[0] for r in rows] == ['positive', 'negative', 'positive']
  for label, probs in rows:
    named = dict(kv.split('=') for kv in probs.split())
    assert list(named) == ['negative', 'positive']
    assert sum(map(float, named.values())) == pytest.approx(1.0, abs=2e-4)
    assert float(named[label]) >= 0.5
  from lmjax import classify
  with pytest.raises(UserError, match='standard input line 2: empty sentence'):
    classify.split_examples(['fine', '  '], False, 'standard input')
  with pytest.raises(UserError, match='line 1: a tab, but the model classifies single'):
    classify.split_examples(['a\tb'], False, 'standard input')


def test_bert_encoder_under_the_same_head():
  c = tiny(pad_multiple=16)
  scratch = config_base.load_experiment('sst2.py', 'scratch').model.to_dict()
  c.model = ml_collections.ConfigDict(dict(scratch, d_model=16, num_heads=2, num_layers=1,
                                           d_ff=32, max_len=16))
  c.classifier.pooling = 'pooler'
  run = steps.prepare(c, None, devices=jax.devices()[:1])
  state = run.init()
  params = state['params']
  assert set(params) == {'encoder', 'classifier'}  # the MLM head is not part of a classifier
  assert params['classifier']['dense']['kernel'].shape == (16, 2)
  state, out = run.train_step(state, next(run.task.train_iterator()))
  assert np.isfinite(float(out['loss']))
