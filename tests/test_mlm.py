"""Masked-LM pretraining: rows and BERT's masking against their definitions, the loss at the
masked positions against the numpy transcription of BERT, a fixed eval masking, learning
through the real loop, and a classifier warm-started from the run (its vocabulary checked)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import config_base, hf, import_hf, tasks, train
from lmjax.data import mlm as mlm_data
from lmjax.data import tokenizers
from lmjax.errors import UserError
from test_hf import IDS, MASK, V, np_bert, random_tensors, write_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def masker(vocab=50, continuation=None, **kw):
  cont = np.zeros(vocab, bool) if continuation is None else continuation
  return mlm_data.Masker(mask_id=4, vocab_size=vocab, special_ids=SPECIALS,
                         normal_ids=np.arange(5, vocab, dtype=np.int32), continuation=cont,
                         max_predictions=kw.pop('max_predictions', 8), **kw)


def random_rows(n, t, vocab, seed=0):
  """[CLS] random tokens [SEP], then padding of a random length."""
  rng = np.random.default_rng(seed)
  rows = np.zeros((n, t), np.int32)
  for r in range(n):
    k = rng.integers(1, t - 1)
    rows[r, 0], rows[r, 1:k + 1], rows[r, k + 1] = 2, rng.integers(5, vocab, k), 3
  return rows


def test_rows_hold_every_token_once_between_cls_and_sep(tmp_path):
  tok = tokenizers.WordPieceTokenizer.from_pretrained(write_dir(tmp_path, random_tensors()))
  lines = ['the cat sat on the mat', '', 'a dog ran and the cats sat', 'hello', '  ',
           'the big red hat was on a dog']
  rows = mlm_data.make_rows(lines, tok, 6)
  stream = [i for line in lines if line.strip() for i in tok.encode(line)]
  assert rows.num_tokens == len(stream)
  assert rows.ids[:, 1:-1][rows.ids[:, 1:-1] > 4].tolist() == stream  # in order, once each
  assert (rows.ids[:, 0] == tok.cls_id).all()
  assert ((rows.ids == tok.sep_id).sum(1) == 1).all()
  last = rows.ids[-1]
  assert (last[np.flatnonzero(last == tok.sep_id)[0] + 1:] == 0).all()  # padding after [SEP]


def test_masking_follows_bert():
  rows = random_rows(3000, 24, 50)
  out = masker(max_predictions=4)(rows, np.random.default_rng(1))
  real = (rows > 4).sum(1)
  want = np.minimum(4, np.maximum(1, np.round(0.15 * real)))
  np.testing.assert_array_equal(out['weights'].sum(1), want)
  b, p = np.nonzero(out['weights'])
  pos = out['positions'][b, p]
  assert (rows[b, pos] > 4).all()  # never a special token
  np.testing.assert_array_equal(out['targets'][b, p], rows[b, pos])
  untouched = np.ones(rows.shape, bool)
  untouched[b, pos] = False
  np.testing.assert_array_equal(out['inputs'][untouched], rows[untouched])
  new = out['inputs'][b, pos]
  n = len(new)
  masked, kept = (new == 4).mean(), (new == rows[b, pos]).mean()
  # 80% [MASK]; 10% a random normal token (1/45 of those equal the original); 10% kept
  assert masked == pytest.approx(0.8, abs=0.015)
  assert kept == pytest.approx(0.1 + 0.1 / 45, abs=0.012)
  assert ((new != 4) & (new != rows[b, pos]) & (new > 4)).sum() == n - (new == 4).sum() - (
      new == rows[b, pos]).sum()
  again = masker(max_predictions=4)(rows, np.random.default_rng(1))
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])


def test_whole_word_masking_takes_whole_words():
  vocab = 40
  cont = np.zeros(vocab, bool)
  cont[30:] = True  # ids 30.. are '##' continuations
  rng = np.random.default_rng(0)
  rows = random_rows(400, 20, 30, seed=2)
  for r in rows:  # turn some tokens into continuations of the one before
    body = np.flatnonzero(r > 4)[1:]
    pick = body[rng.random(len(body)) < 0.4]
    r[pick] = rng.integers(30, 40, len(pick))
  out = masker(vocab, cont, whole_word=True, max_predictions=6)(rows, np.random.default_rng(3))
  for r, row in enumerate(rows):
    chosen = set(out['positions'][r][out['weights'][r] > 0].tolist())
    real = np.flatnonzero(row > 4)
    starts = ~cont[row[real]]
    starts[0] = True
    for word in np.split(real, np.flatnonzero(starts)[1:]):
      inside = {int(i) in chosen for i in word}
      assert len(inside) == 1, (row, word, chosen)  # all of a word or none of it
    assert len(chosen) <= max(1, round(0.15 * len(real)))


def test_loss_at_the_masked_positions_equals_numpy_bert(tmp_path):
  t = random_tensors(seed=3)
  fields, params = hf.load(write_dir(tmp_path, t), scan_layers=True)
  config = import_hf.import_config(fields)
  config.seq_len, config.batch_size = IDS.shape[1], IDS.shape[0]
  config.mlm.max_predictions = 3
  task = tasks.build(config, None, vocab_size=V)
  positions = np.array([[1, 2, 6], [1, 2, 0]], np.int32)
  targets = np.array([[7, 5, 12], [13, 20, 0]], np.int32)
  weights = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  batch = {'inputs': IDS, 'positions': positions, 'targets': targets, 'weights': weights}
  sums, _ = task.loss(params, jax.tree.map(jnp.asarray, batch), None, None, False)
  _, _, logits = np_bert(t, IDS, np.zeros_like(IDS), MASK)  # [B, T, V] float64
  at = np.take_along_axis(logits, positions[..., None], axis=1)  # [B, P, V]
  logp = at - np.log(np.exp(at - at.max(-1, keepdims=True)).sum(-1, keepdims=True)) - at.max(
      -1, keepdims=True)
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  assert float(sums['loss']) == pytest.approx((nll * weights).sum(), rel=2e-5)
  assert float(sums['weight']) == 5.0
  assert float(sums['correct']) == ((at.argmax(-1) == targets) * weights).sum()


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mlm') / 'w')
  c = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  c.mesh.update(data=2)
  report = train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  return workdir, report


def test_learns_through_the_loop_with_a_fixed_eval_masking(pretrained):
  workdir, report = pretrained
  c = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  vocab = json.load(open(os.path.join(workdir, 'tokenizer', 'tokenizer.json')))
  assert vocab['kind'] == 'wordpiece'
  # The grammar's context beats the unigram distribution of the training tokens (measured:
  # ppl 6.6-10.4 over seeds 0-3 against about 44 after 300 steps), which no model of the
  # masked token alone can.
  task = tasks.build(c, workdir)
  train_ids = task.data.train.ids[task.data.train.ids > 4]
  freq = np.bincount(train_ids, minlength=task.tokenizer.vocab_size) + 1.0
  targets = np.concatenate([b['targets'][b['weights'] > 0] for b in task.eval_batches('eval')])
  unigram = np.exp(-np.log(freq[targets] / freq.sum()).mean())
  assert report['ppl'] < unigram / 2, (report, unigram)
  assert report['tokens'] == sum(int(b['weights'].sum()) for b in task.eval_batches('eval'))
  c.seed, c.eval_batch_size = 7, 5  # another training seed and batch: the same eval masking
  other = tasks.build(c, workdir).eval_batches('eval')
  rows = len(task.data.eval)
  for k in other[0]:
    a = np.concatenate([b[k] for b in task.eval_batches('eval')])[:rows]
    np.testing.assert_array_equal(a, np.concatenate([b[k] for b in other])[:rows])


def test_classifier_warm_starts_from_the_run_with_its_vocabulary(pretrained, tmp_path, capsys):
  workdir, _ = pretrained
  mlm = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  c = config_base.load_experiment('sst2.py', 'tiny')
  c.model = mlm.model
  c.classifier.pooling = 'first'
  c.num_train_steps, c.eval_every, c.checkpoint.every = 2, 2, 2
  c.init_from = workdir
  c.mesh.update(data=1)
  fine = str(tmp_path / 'fine')
  with pytest.raises(UserError, match='its tokenizer differs from this run'):
    train.train_and_evaluate(c, fine, devices=jax.devices()[:1])  # a vocabulary of its own
  c.data.wordpiece_vocab = workdir  # the corrected run, in the same workdir
  capsys.readouterr()
  train.train_and_evaluate(c, fine, devices=jax.devices()[:1])
  loaded = [l for l in capsys.readouterr().out.splitlines() if l.startswith('init_from')]
  assert any('new (kept their init): classifier/dense/bias, classifier/dense/kernel' in l
             for l in loaded), loaded
  assert any('dropped' in l and 'mlm_head' in l for l in loaded), loaded


def test_config_errors_name_the_field():
  c = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  c.data.tokenizer = 'sentencepiece'
  with pytest.raises(UserError, match="config.data.tokenizer='sentencepiece'"):
    tasks.build(c, None, vocab_size=100)
  c = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  c.model = config_base.base_config().model
  with pytest.raises(UserError, match="config.model.name='transformer'"):
    tasks.build(c, None, vocab_size=100)
  c = config_base.load_experiment('mlm_wikitext2.py', 'tiny')
  c.mlm.update(mask_token_rate=0.95, random_token_rate=0.1)
  with pytest.raises(UserError, match='exceeds 1'):
    tasks.build(c, None, vocab_size=100)


# ----------------------------------------------------------------------------- lmjax.embed


def test_embeddings_do_not_depend_on_batching_and_the_cli_writes_them(pretrained, tmp_path):
  import subprocess
  import sys
  from lmjax import checkpoint, embed
  from cli_checks import one_line_error
  workdir, _ = pretrained
  config, family, params, tok, _ = checkpoint.load_trained(workdir)
  sentences = ['the dog sees a cat .', '', 'count one two three four five six seven eight',
               'some birds sing\nnear the river', 'a', 'the old king waits .']
  got, truncated = embed.embed_sentences(family, params, tok, sentences, 32, 'mean', True, 4)
  assert truncated == 0 and got.shape == (6, config.model.d_model)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
  for i, s in enumerate(sentences):  # alone, unpadded: the mean over its own tokens
    ids = np.asarray([[tok.cls_id] + tok.encode(s) + [tok.sep_id]], np.int32)
    batch = {'inputs': ids, 'token_types': np.zeros_like(ids), 'mask': ids != 0}
    hidden, _ = family.encode({'params': params}, batch, {}, True)
    v = np.asarray(hidden[0]).mean(0)
    np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=2e-5)

  src = tmp_path / 'in.json'
  src.write_text(json.dumps(sentences))
  out = tmp_path / 'out.npy'
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'lmjax.embed', f'--workdir={workdir}', f'--output={out}',
         '--normalize', '--batch_size=4', '--max_len=32']
  proc = subprocess.run(cmd + [f'--input={src}'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  np.testing.assert_allclose(np.load(out), got, atol=1e-6)
  before = out.read_bytes()
  (tmp_path / 'bad.json').write_text('{"not": "a list"}')
  proc = subprocess.run(cmd + [f'--input={tmp_path / "bad.json"}'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  one_line_error(proc, 'expected a JSON list of strings')
  assert out.read_bytes() == before  # the existing output is untouched
