"""Word embeddings (config.task='embeddings'): the objectives against numpy transcriptions, the
batches against the reference tools' rules, and tiny runs whose word classes are known.

The runs train on the embedded synthetic corpus (lmjax/data/synthetic.py), whose nouns,
adjectives and numbers are interchangeable within their class and whose plurals follow one
rule, so similarity and analogy have right answers the vectors must find.
"""

import collections
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import config_base, embeddings_eval, train, vectors
from lmjax.data import embeddings as emb_data
from lmjax.data import synthetic
from lmjax.errors import UserError
from lmjax.models import embeddings as emb


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _random_batch(rng, b=2, length=7, vocab=11, window=3):
  words = rng.integers(3, vocab, (b, length))
  segment = np.repeat(np.arange(length)[None] // 4, b, 0)  # two lines per row
  segment[1, 5:] = -1  # row 1 ends early
  words[1, 5:] = 0
  win = rng.integers(1, window + 1, (b, length))
  return {'words': words.astype(np.int32), 'segment': segment.astype(np.int32),
          'window': win.astype(np.int32)}


def _numpy_word2vec(params, batch, negatives, window, cbow):
  """The objective written pair by pair, as the C tool loops over them."""
  x, y = params['input'], params['output']
  words, seg, win = batch['words'], batch['segment'], batch['window']
  total, terms = 0.0, 0
  b, length = words.shape
  for r in range(b):
    for i in range(length):
      if seg[r, i] < 0:
        continue
      ctx = [j for j in range(max(0, i - win[r, i]), min(length, i + win[r, i] + 1))
             if j != i and seg[r, j] == seg[r, i]]
      # skip-gram: the pair takes its context word's draws; CBOW: the centre's. A draw
      # equal to the centre word is skipped.
      if cbow:
        inputs = [(np.mean([x[words[r, j]] for j in ctx], 0), i)] if ctx else []
      else:
        inputs = [(x[words[r, j]], j) for j in ctx]
      for h, drew in inputs:
        negs = [n for n in negatives[r, drew] if n != words[r, i]]
        loss = -np.log(_sigmoid(h @ y[words[r, i]]))
        loss -= sum(np.log(_sigmoid(-h @ y[n])) for n in negs)
        total += loss
        terms += 1
  return total, terms


@pytest.mark.parametrize('cbow', [False, True])
def test_word2vec_loss_matches_a_pairwise_transcription(cbow):
  rng = np.random.default_rng(0)
  batch = _random_batch(rng)
  params = {'input': rng.normal(size=(11, 5)) * 0.5, 'output': rng.normal(size=(11, 5)) * 0.5}
  negatives = rng.integers(3, 11, batch['words'].shape + (4,)).astype(np.int32)
  negatives[0, 0, 0] = batch['words'][0, 0]  # draws that hit the centre are skipped
  negatives[0, 1, 1] = batch['words'][0, 0]
  want, terms = _numpy_word2vec(params, batch, negatives, 3, cbow)
  got, weight = emb.word2vec_loss(jax.tree.map(jnp.asarray, params), batch, negatives, 3, cbow)
  assert int(weight) == terms > 0
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_glove_loss_matches_a_transcription():
  rng = np.random.default_rng(1)
  p = {'word': rng.normal(size=(6, 3)), 'context': rng.normal(size=(6, 3)),
       'word_bias': rng.normal(size=6), 'context_bias': rng.normal(size=6)}
  batch = {'row': np.array([1, 2, 5, 0]), 'col': np.array([2, 1, 3, 0]),
           'count': np.array([0.5, 150.0, 3.0, 0.0], np.float32)}  # the last is padding
  want = 0.0
  for i, j, x in zip(batch['row'][:3], batch['col'][:3], batch['count'][:3]):
    f = min(1.0, (x / 100.0) ** 0.75)
    d = p['word'][i] @ p['context'][j] + p['word_bias'][i] + p['context_bias'][j] - np.log(x)
    want += 0.5 * f * d * d
  got, n = emb.glove_loss(jax.tree.map(jnp.asarray, p), batch, 100.0, 0.75)
  assert int(n) == 3
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_subsampling_keeps_order_probability_and_resumes():
  counts = np.array([0, 0, 0, 1000, 10, 1], np.int64)
  keep = emb_data.keep_probability(counts, 1e-3)
  t = 1e-3 * counts.sum()
  for w in (3, 4, 5):
    assert keep[w] == pytest.approx(min(1.0, (np.sqrt(counts[w] / t) + 1) * t / counts[w]))
  ids = np.array([3] * 50 + [4, 5] * 5, np.int32)
  corpus = emb_data.Corpus(ids, np.arange(len(ids), dtype=np.int32) // 20, counts, 0)
  it = emb_data.Word2VecIterator(corpus, batch_size=2, seq_len=16, window=5, sample=1e-3, seed=3)
  assert it.steps_per_epoch == 2  # 60 words: 4 rows of 16, 2 per step
  batches = [next(it) for _ in range(5)]  # into the third epoch
  for b in batches:
    for r in range(2):
      n = int((b['segment'][r] >= 0).sum())
      assert (b['segment'][r, n:] == -1).all() and (b['words'][r, n:] == 0).all()
      assert (np.diff(b['segment'][r, :n]) >= 0).all()  # kept words stay in corpus order
    assert b['window'].min() >= 1 and b['window'].max() <= 5
  assert not np.array_equal(batches[0]['words'], batches[2]['words'])  # a fresh draw per epoch
  it2 = emb_data.Word2VecIterator(corpus, 2, 16, 5, 1e-3, seed=3)
  it2.set_state({'epoch': 1, 'index': 1})
  for want in batches[3:]:
    got = next(it2)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_cooccurrence_counts_within_lines_by_inverse_distance():
  lines = [[3, 4, 5, 3], [4, 4], [5]]
  ids = np.array([w for line in lines for w in line], np.int32)
  seg = np.array([n for n, line in enumerate(lines) for _ in line], np.int32)
  corpus = emb_data.Corpus(ids, seg, np.bincount(ids, minlength=6), 0)
  want = collections.defaultdict(float)
  for line in lines:
    for i, a in enumerate(line):
      for j, b in enumerate(line):
        if 0 < abs(i - j) <= 2:
          want[a, b] += 1.0 / abs(i - j)
  rows, cols, vals = emb_data.cooccurrence(corpus, 6, window=2, chunk=3)  # several chunks
  got = {(int(r), int(c)): float(v) for r, c, v in zip(rows, cols, vals)}
  assert got.keys() == want.keys()
  for k in want:
    assert got[k] == pytest.approx(want[k])


def test_glove_batches_cover_every_entry_per_epoch_and_resume():
  rows, cols = np.arange(10, dtype=np.int32), np.arange(10, dtype=np.int32)[::-1].copy()
  counts = np.linspace(1, 2, 10).astype(np.float32)
  it = emb_data.GloveIterator(rows, cols, counts, batch_size=4, seed=0)
  assert it.steps_per_epoch == 3
  epoch = [next(it) for _ in range(3)]
  got = np.concatenate([b['row'][b['count'] > 0] for b in epoch])
  assert sorted(got) == list(range(10))  # each entry once; the last batch padded with count 0
  later = [next(it) for _ in range(2)]
  again = emb_data.GloveIterator(rows, cols, counts, batch_size=4, seed=0)
  again.set_state({'epoch': 1, 'index': 0})
  for want in later:
    got = next(again)
    assert all(np.array_equal(got[k], want[k]) for k in want)
  assert not np.array_equal(later[0]['row'], epoch[0]['row'])  # reshuffled per epoch


# --- tiny runs on the synthetic corpus -------------------------------------------------------


def _eval_files(tmp_path):
  """A similarity file (same class high, other class low) and singular/plural analogies."""
  nouns, adjs = synthetic.NOUNS, synthetic.ADJS
  sim = tmp_path / 'sim.tsv'
  rows = ['# word1\tword2\tscore']
  for a, b in zip(nouns, nouns[1:]):
    rows.append(f'{a}\t{b}\t9.0')
  for a, b in zip(nouns, adjs):
    rows.append(f'{a}\t{b}\t1.0')
  for a, b in zip(adjs, adjs[1:]):
    rows.append(f'{a}\t{b}\t8.0')
  rows.append('cat\tnotaword\t5.0')
  sim.write_text('\n'.join(rows) + '\n')
  plural = {'child': 'children'}
  pl = lambda n: plural.get(n, n + 's')
  qs = [': plurals'] + [f'{a} {pl(a)} {b} {pl(b)}' for a in nouns[:5] for b in nouns[5:]]
  ana = tmp_path / 'analogy.txt'
  ana.write_text('\n'.join(qs) + '\n')
  return str(sim), str(ana)


def _tiny(name, tmp_path, **overrides):
  c = config_base.load_experiment(name, 'tiny')
  sim, ana = _eval_files(tmp_path)
  c.embeddings.update(wordsim=sim, analogy=ana)
  for k, v in overrides.items():
    node = c
    *parts, last = k.split('.')
    for p in parts:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture(scope='module')
def sgns_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('sgns')
  config = _tiny('word2vec.py', tmp, **{'checkpoint.every': 100})
  workdir = str(tmp / 'run')
  report = train.train_and_evaluate(config, workdir)
  return config, workdir, report


def test_sgns_learns_the_word_classes(sgns_run):
  config, workdir, report = sgns_run
  assert report['wordsim353'] > 0.75  # nouns with nouns, adjectives with adjectives (random: ~0)
  assert report['wordsim353_skipped'] == 1
  v = vectors.read_vectors(os.path.join(workdir, 'vectors.txt'))
  assert v.matrix.shape[1] == config.model.embed_dim
  near = [w for w, _ in embeddings_eval.nearest(v, 'cat', k=5)]
  assert set(near) <= set(synthetic.NOUNS) | {synthetic._plural_noun(n) for n in synthetic.NOUNS}


def test_sgns_resumes_exactly(sgns_run, tmp_path):
  config, workdir, _ = sgns_run
  copy = str(tmp_path / 'resumed')
  shutil.copytree(workdir, copy)
  final = max(int(s) for s in os.listdir(os.path.join(copy, 'checkpoints')) if s.isdigit())
  shutil.rmtree(os.path.join(copy, 'checkpoints', str(final)))
  os.remove(os.path.join(copy, 'vectors.txt'))
  train.train_and_evaluate(config, copy)  # from the step-100 checkpoint to the end
  a = vectors.read_vectors(os.path.join(workdir, 'vectors.txt'))
  b = vectors.read_vectors(os.path.join(copy, 'vectors.txt'))
  assert a.words == b.words
  np.testing.assert_array_equal(a.matrix, b.matrix)


def test_glove_learns_the_word_classes(tmp_path):
  config = _tiny('glove.py', tmp_path)
  report = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert report['wordsim353'] > 0.6  # 0.79 measured; random vectors score about 0


def test_cbow_learns_the_word_classes(tmp_path):
  config = _tiny('word2vec.py', tmp_path, **{'model.architecture': 'cbow'})
  report = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert report['wordsim353'] > 0.75  # 0.88 measured; random vectors score about 0


def test_min_count_that_removes_every_word_is_one_error(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('a b c\nd e f\n')
  config = _tiny('word2vec.py', tmp_path, **{'data.source': 'text', 'data.train': str(corpus),
                                             'data.min_count': 2})
  with pytest.raises(UserError, match='min_count'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def _lm_config(vectors_path, d_model):
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.model.update(d_model=d_model, init_embeddings=vectors_path)
  return c


def test_init_embeddings_loads_the_rows_and_freeze_keeps_them(sgns_run, tmp_path):
  from lmjax import steps, warm_start
  _, workdir, _ = sgns_run
  path = os.path.join(workdir, 'vectors.txt')
  file_vectors = vectors.read_vectors(path)
  config = _lm_config(path, file_vectors.dim)
  config.model.freeze_embeddings = True
  run = steps.prepare(config, str(tmp_path / 'lm'))
  fresh = run.init()
  state = warm_start.warm_start(run, fresh, config, lambda *_: None)
  (key,) = warm_start.embedding_tables(run.task)
  table = np.asarray(_leaf(state["params"], key))
  before = np.asarray(_leaf(fresh['params'], key))
  tokens = warm_start.token_strings(run.task.tokenizer)
  index = file_vectors.index
  for i, token in enumerate(tokens):
    if token in index:
      np.testing.assert_array_equal(table[i], file_vectors.matrix[index[token]])
    else:  # specials: the model's own initialisation
      np.testing.assert_array_equal(table[i], before[i])
  assert sum(t in index for t in tokens) == len(tokens) - 3  # every word but the specials
  old = {k: np.asarray(v) for k, v in _flat(state['params']).items()}
  batches = run.task.train_iterator()
  new_state, _ = run.train_step(state, next(batches))  # donates `state`; lr 0 (warm-up)
  new_state, _ = run.train_step(new_state, next(batches))
  new = {k: np.asarray(v) for k, v in _flat(new_state['params']).items()}
  np.testing.assert_array_equal(new[key], table)
  assert any(not np.array_equal(old[k], new[k]) for k in old if k != key)


def test_init_embeddings_of_another_dimension_is_one_error(sgns_run, tmp_path):
  from lmjax import steps, warm_start
  _, workdir, _ = sgns_run
  config = _lm_config(os.path.join(workdir, 'vectors.txt'), 32)  # the vectors have 16
  run = steps.prepare(config, str(tmp_path / 'lm'))
  with pytest.raises(UserError, match=r'dimension 16.*has 32'):
    warm_start.warm_start(run, run.init(), config, lambda *_: None)


def _flat(params):
  from flax import traverse_util
  return traverse_util.flatten_dict(params)


def _leaf(params, key):
  return _flat(params)[key]


def test_cleaning_options_reach_the_vocabulary(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('The <b>Cat</b> sat, the DOG ran!\nA cat &amp; a dog.\n' * 20)
  config = _tiny('word2vec.py', tmp_path, **{
      'data.source': 'text', 'data.train': str(corpus), 'num_train_steps': 2,
      'eval_every': 2, 'checkpoint.every': 2})
  config.data.clean.update(strip_html=True, lowercase=True, punctuation='strip',
                           stopwords='english', collapse_whitespace=True)
  from lmjax import tasks
  task = tasks.build(config, str(tmp_path / 'run'))
  words = set(task.tokenizer.tokens[3:])
  assert words == {'cat', 'sat', 'dog', 'ran'}  # no tags, case, punctuation or stop words


def test_a_corpus_empty_after_cleaning_is_one_error(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('the of and\n<p>a</p> an\n')
  config = _tiny('word2vec.py', tmp_path, **{'data.source': 'text', 'data.train': str(corpus)})
  config.data.clean.update(strip_html=True, stopwords='english')
  with pytest.raises(UserError, match='config.data.train: empty after cleaning'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


@pytest.mark.parametrize('name', ['word2vec.py', 'glove.py'])
def test_vocabulary_sharded_tables_give_the_same_losses(name, tmp_path):
  """The tables split over the mesh's tensor axis (logical 'vocab') change cost, not values."""
  from lmjax import steps
  losses = {}
  for mesh in ((1, 1, 1), (2, 2, 2)):
    c = _tiny(name, tmp_path)
    c.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    run = steps.prepare(c, str(tmp_path / f'wd{mesh}'), devices=jax.devices()[:int(np.prod(mesh))])
    it, state = run.task.train_iterator(), run.init()
    out = []
    for _ in range(3):
      state, o = run.train_step(state, next(it))
      out.append(float(o['loss']))
    losses[mesh] = out
  for mesh, out in losses.items():
    np.testing.assert_allclose(out, losses[(1, 1, 1)], rtol=1e-5, err_msg=str(mesh))
