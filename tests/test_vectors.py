"""Word-vector files and their evaluation, against gensim: lmjax.vectors, lmjax.embeddings_eval."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from lmjax import embeddings_eval, vectors
from lmjax.errors import UserError
from cli_checks import listing, one_line_error

gensim_models = pytest.importorskip('gensim.models')
KeyedVectors = gensim_models.KeyedVectors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITERS = {'word2vec_text': vectors.write_word2vec_text,
           'word2vec_binary': vectors.write_word2vec_binary,
           'glove': vectors.write_glove_text}
WORDS = ['the', 'The', 'king', 'Queen', 'queen', 'naïve', 'Straße', '東京', 'café', 'ünïcödé',
         'a', 'b']


def random_vectors(words, dim=7, seed=0):
  return np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)


def gensim_kv(words, matrix):
  kv = KeyedVectors(matrix.shape[1])
  kv.add_vectors(list(words), matrix)
  return kv


def write(path, content: str | bytes):
  with open(path, 'wb') as f:
    f.write(content.encode() if isinstance(content, str) else content)
  return str(path)


# ---------------------------------------------------------------------------------------------
# File formats


@pytest.mark.parametrize('fmt', list(WRITERS))
def test_round_trip_and_detection(tmp_path, fmt):
  m = random_vectors(WORDS)
  m[0, 0], m[1, 1] = np.float32(1e-38), np.float32(3.4e38)  # extremes survive 9 digits
  path = str(tmp_path / 'v')
  WRITERS[fmt](path, WORDS, m)
  for read_as in ('auto', fmt):
    v = vectors.read_vectors(path, read_as)
    assert v.words == WORDS and v.dim == 7 and v.matrix.dtype == np.float32
    np.testing.assert_array_equal(v.matrix, m)
  assert vectors.detect_format(open(path, 'rb').read()) == fmt
  assert v.index['queen'] == 4 and len(v) == len(WORDS)
  assert os.listdir(tmp_path) == ['v']  # no temporary file left


@pytest.mark.parametrize('fmt', list(WRITERS))
def test_gensim_reads_ours(tmp_path, fmt):
  m = random_vectors(WORDS)
  path = str(tmp_path / 'v')
  WRITERS[fmt](path, WORDS, m)
  kv = KeyedVectors.load_word2vec_format(path, binary=fmt == 'word2vec_binary',
                                         no_header=fmt == 'glove')
  assert kv.index_to_key == WORDS
  np.testing.assert_array_equal(kv.vectors, m)


@pytest.mark.parametrize('fmt', list(WRITERS))
def test_we_read_gensims(tmp_path, fmt):
  m = random_vectors(WORDS, seed=1)
  path = str(tmp_path / 'v')
  gensim_kv(WORDS, m).save_word2vec_format(path, binary=fmt == 'word2vec_binary',
                                           write_header=fmt != 'glove')
  v = vectors.read_vectors(path)  # gensim's binary has no newline after a vector
  assert v.words == WORDS
  np.testing.assert_array_equal(v.matrix, m)


def test_c_tool_text_layout(tmp_path):
  """The C tool ends each value with a space; Windows line ends and a BOM are read too."""
  v = vectors.read_vectors(write(tmp_path / 'v', '\ufeff2 3\r\nx 1 2 3 \r\ny\t4 5 6\r\n\r\n'))
  assert v.words == ['x', 'y']
  np.testing.assert_array_equal(v.matrix, [[1, 2, 3], [4, 5, 6]])


def _binary(words, matrix):
  matrix = np.asarray(matrix, '<f4')
  out = f'{len(words)} {matrix.shape[1]}\n'.encode()
  for w, row in zip(words, matrix):
    out += w.encode() + b' ' + row.tobytes() + b'\n'
  return out


BAD_FILES = [  # name, content, fmt, what the message must say
    ('empty', b'', 'auto', ['is empty']),
    ('blank', b'\n \n', 'auto', ['is empty']),
    ('short_row', b'2 3\nw1 1 2 3\nw2 1 2\n', 'auto', ['line 3', '2 values']),
    ('glove_row', b'w1 1 2 3\nw2 1 2\n', 'auto', ['line 2', 'line 1 has 3']),
    ('count', b'3 2\nw1 1 2\nw2 1 2\n', 'auto', ['line 1', 'says 3 vectors', 'has 2']),
    ('header_only', b'2 3\n', 'auto', ['line 1', 'says 2 vectors', 'has 0']),
    ('not_number', b'2 2\nw1 1 2\nw2 1 x\n', 'auto', ['line 3', "'x'", 'not a number']),
    ('glove_nan', b'w1 1 2\nw2 abc 2\n', 'glove', ['line 2', "'abc'", 'not a number']),
    ('blank_middle', b'2 2\nw1 1 2\n\nw2 1 2\n', 'auto', ['line 3', 'blank line']),
    ('not_utf8', b'w\xff 1 2\n', 'auto', ['line 1', 'not UTF-8']),
    ('no_header', b'w1 1 2\n', 'word2vec_text', ['line 1', "'N D' header"]),
    ('truncated', _binary(['a', 'b'], [[1, 2, 3], [4, 5, 6]])[:-7], 'auto',
     ['vector 2 of 2', 'truncated', '12 bytes of float32 expected, 6 left']),
    ('too_few', _binary(['a', 'b'], [[1, 2, 3], [4, 5, 6]]).replace(b'2 3', b'3 3', 1), 'auto',
     ['line 1', 'says 3 vectors', 'ends after 2']),
    ('too_many', _binary(['a', 'b'], [[1, 2, 3], [4, 5, 6]]).replace(b'2 3', b'1 3', 1), 'auto',
     ['bytes after the 1 vectors', 'line 1']),
]


@pytest.mark.parametrize('name,content,fmt,needles', BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_one_line_errors(tmp_path, name, content, fmt, needles):
  src = write(tmp_path / f'{name}.vec', content)
  out = write(tmp_path / 'out.txt', 'keep me\n')
  before = listing(tmp_path)
  with pytest.raises(UserError) as e:
    v = vectors.read_vectors(src, fmt)
    vectors.write_word2vec_text(out, v.words, v.matrix)  # a conversion never gets this far
  msg = str(e.value)
  assert '\n' not in msg and src in msg, msg
  for needle in needles:
    assert needle in msg, msg
  assert listing(tmp_path) == before and open(out).read() == 'keep me\n'


def test_missing_file_and_bad_format(tmp_path):
  with pytest.raises(UserError, match='not found: .*nope.vec'):
    vectors.read_vectors(str(tmp_path / 'nope.vec'))
  with pytest.raises(UserError, match="format 'w2v'"):
    vectors.read_vectors(write(tmp_path / 'v', 'a 1\n'), 'w2v')


class InterruptedWords(list):
  """Words whose second pass (the write, after the checks) stops after two rows."""

  def __init__(self, words):
    super().__init__(words)
    self.passes = 0

  def __iter__(self):
    self.passes += 1
    for i, w in enumerate(super().__iter__()):
      if self.passes > 1 and i == 2:
        raise KeyboardInterrupt
      yield w


@pytest.mark.parametrize('fmt', list(WRITERS))
def test_failed_writes_leave_the_old_file(tmp_path, fmt):
  out = write(tmp_path / 'out', 'old contents\n')
  before = listing(tmp_path)
  m = random_vectors(WORDS)
  with pytest.raises(KeyboardInterrupt):
    WRITERS[fmt](out, InterruptedWords(WORDS), m)
  with pytest.raises(UserError, match=r"out: word 2 \('a b'\)"):
    WRITERS[fmt](out, ['x', 'a b'], m[:2])
  with pytest.raises(UserError, match='directory .* does not exist'):
    WRITERS[fmt](str(tmp_path / 'no' / 'out'), WORDS, m)
  assert listing(tmp_path) == before and open(out).read() == 'old contents\n'


# ---------------------------------------------------------------------------------------------
# Evaluation against gensim

PAIRS = """# a comment line, then pairs in mixed case; 'unicorn' and 'zebra' are not in the file
king\tqueen\t8.5
King\tman\t5.0
the\tThe\t10
queen\twoman\t7.25
unicorn\tking\t3
man\twoman\t8.0
Man\tking\t5.5
woman\tzebra\t1
apple\tpear\t7.9
apple\tking\t0.5
pear\tman\t1.2
dog\tcat\t7.0
cat\tking\t2.2
dog\twoman\t1.8
"""

EVAL_WORDS = ['the', 'king', 'The', 'queen', 'man', 'woman', 'King', 'apple', 'pear', 'MAN',
              'dog', 'cat']


@pytest.mark.parametrize('restrict_vocab,case_insensitive', [(300000, True), (8, True),
                                                              (300000, False)])
def test_similarity_matches_gensim(tmp_path, restrict_vocab, case_insensitive):
  path = write(tmp_path / 'pairs.tsv', PAIRS)
  m = random_vectors(EVAL_WORDS, dim=5, seed=3)
  ours = embeddings_eval.similarity(vectors.Vectors(EVAL_WORDS, m), path, restrict_vocab,
                                    case_insensitive)
  pearson, spearman, oov_ratio = gensim_kv(EVAL_WORDS, m).evaluate_word_pairs(
      path, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
  assert ours['spearman'] == pytest.approx(spearman[0], abs=1e-9)
  assert ours['pearson'] == pytest.approx(pearson[0], abs=1e-6)
  assert 100 * ours['skipped'] / (ours['pairs'] + ours['skipped']) == pytest.approx(oov_ratio)
  assert ours['pairs'] >= 5 and ours['skipped'] >= 2


def test_similarity_on_gensims_wordsim353(tmp_path):
  path = embeddings_eval.default_paths()['wordsim353']
  words = [l.split('\t')[i] for l in open(path, encoding='utf-8') if not l.startswith('#')
           for i in (0, 1)]
  words = list(dict.fromkeys(words))[:-40]  # the last 40 words out of vocabulary
  words = [w.upper() if i % 3 == 0 else w for i, w in enumerate(words)]
  m = random_vectors(words, dim=10, seed=4)
  ours = embeddings_eval.similarity(vectors.Vectors(words, m), path, restrict_vocab=300)
  _, spearman, oov_ratio = gensim_kv(words, m).evaluate_word_pairs(path, restrict_vocab=300)
  assert ours['spearman'] == pytest.approx(spearman[0], abs=1e-9)
  assert 100 * ours['skipped'] / (ours['pairs'] + ours['skipped']) == pytest.approx(oov_ratio)


def test_spearman_tracks_the_scores(tmp_path):
  """Scores that are a monotone function of the cosine give rho 1; shuffled, far less."""
  words = [f'w{i}' for i in range(40)]
  v = vectors.Vectors(words, random_vectors(words, dim=6, seed=5))
  unit = v.matrix / np.linalg.norm(v.matrix, axis=1, keepdims=True)
  pairs = [(i, i + 20) for i in range(20)]
  scores = [float(np.exp(unit[i] @ unit[j])) for i, j in pairs]
  shuffled = np.random.default_rng(0).permutation(scores)
  for col, low, high in ((scores, 1 - 1e-12, 1 + 1e-12), (shuffled, -1, 0.5)):
    path = write(tmp_path / 'p.tsv', ''.join(f'w{i}\tw{j}\t{s}\n' for (i, j), s in
                                             zip(pairs, col)))
    assert low <= embeddings_eval.similarity(v, path)['spearman'] <= high


def analogy_world(seed=6, dim=12, noise=1.2):
  """Two relations over 7 pairs each, mixed-case duplicate words, distractors; a questions
  file with every ordered pair of pairs, in random case, plus questions with unknown words."""
  rng = np.random.default_rng(seed)
  words, rows, lines = [], [], []
  for section in ('capital', 'plural'):
    relation = rng.standard_normal(dim)
    pairs = [(f'{section}X{i}', f'{section}Y{i}') for i in range(7)]
    for x, y in pairs:
      base = rng.standard_normal(dim)
      words += [x, y]
      rows += [base, base + relation + noise * rng.standard_normal(dim)]
    lines.append(f': {section}')
    for i, (a, b) in enumerate(pairs):
      for j, (c, d) in enumerate(pairs):
        if i != j:
          lines.append(' '.join(w.lower() if rng.random() < 0.5 else w for w in (a, b, c, d)))
    lines.append(f'{pairs[0][0]} {pairs[0][1]} unknownword {pairs[1][1]}')
  for w, r in list(zip(words, rows))[::5]:  # lower-case variants, later rows, nearby vectors
    words.append(w.lower())
    rows.append(r + 0.3 * rng.standard_normal(dim))
  words += [f'distractor{i}' for i in range(30)]
  rows += list(rng.standard_normal((30, dim)))
  return words, np.array(rows, np.float32), '\n'.join(lines) + '\n'


@pytest.mark.parametrize('restrict_vocab,case_insensitive', [(30000, True), (24, True),
                                                              (30000, False)])
def test_analogy_matches_gensim(tmp_path, restrict_vocab, case_insensitive):
  words, m, questions = analogy_world()
  path = write(tmp_path / 'questions.txt', questions)
  ours = embeddings_eval.analogy(vectors.Vectors(words, m), path, restrict_vocab,
                                 case_insensitive)
  score, sections = gensim_kv(words, m).evaluate_word_analogies(
      path, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
  assert ours['accuracy'] == pytest.approx(score)
  total = sections[-1]
  assert (ours['correct'], ours['questions']) == (len(total['correct']),
                                                  len(total['correct']) + len(total['incorrect']))
  for s in sections[:-1]:
    mine = ours['sections'][s['section']]
    assert (mine['correct'], mine['questions']) == (len(s['correct']),
                                                    len(s['correct']) + len(s['incorrect']))
  assert ours['skipped'] >= 2
  if case_insensitive and restrict_vocab > len(words):
    assert 0.2 < ours['accuracy'] < 0.9  # neither trivial: the comparison means something


def test_analogy_exact_offsets_score_one(tmp_path):
  """With unit a, b, c and d = b - a + c the target is d's direction itself: accuracy 1;
  the same questions asking for another question's d: accuracy 0."""
  rng = np.random.default_rng(7)
  unit = lambda x: x / np.linalg.norm(x)
  words, rows, quads = [], [], []
  for q in range(20):
    a, b, c = (unit(rng.standard_normal(16)) for _ in range(3))
    names = [f'a{q}', f'b{q}', f'c{q}', f'd{q}']
    words += names
    rows += [a, b, c, b - a + c]
    quads.append(names)
  words += [f'noise{i}' for i in range(200)]
  rows += list(rng.standard_normal((200, 16)))
  v = vectors.Vectors(words, np.array(rows))
  right = ': exact\n' + ''.join(' '.join(q) + '\n' for q in quads)
  wrong = ': shifted\n' + ''.join(' '.join(q[:3] + [quads[i - 1][3]]) + '\n'
                                  for i, q in enumerate(quads))
  assert embeddings_eval.analogy(v, write(tmp_path / 'r.txt', right))['accuracy'] == 1.0
  assert embeddings_eval.analogy(v, write(tmp_path / 'w.txt', wrong))['accuracy'] == 0.0


BAD_EVAL_FILES = [
    ('pairs', '# c\nking\tqueen\t8\nking queen 8\n', 'line 3', '3 tab-separated fields'),
    ('pairs', 'king\tqueen\tvery\n', 'line 1', "'very' is not a number"),
    ('analogy', ': s\na b c d\na b c\n', 'line 3', 'expected 4 words'),
    ('analogy', 'a b c d\n', 'line 1', 'before the first'),
]


@pytest.mark.parametrize('kind,content,line,needle', BAD_EVAL_FILES)
def test_bad_evaluation_files(tmp_path, kind, content, line, needle):
  v = vectors.Vectors(list('abcd') + ['king', 'queen'], random_vectors('abcdef'))
  path = write(tmp_path / 'set.txt', content)
  fn = embeddings_eval.similarity if kind == 'pairs' else embeddings_eval.analogy
  with pytest.raises(UserError) as e:
    fn(v, path)
  assert path in str(e.value) and line in str(e.value) and needle in str(e.value), e.value


def test_nearest_and_evaluate(tmp_path):
  words = ['x', 'y', 'z', 'w']
  v = vectors.Vectors(words, [[1, 0], [0.9, 0.1], [-1, 0], [0, 1]])
  best = embeddings_eval.nearest(v, 'x', k=2)
  assert [w for w, _ in best] == ['y', 'w'] and best[0][1] == pytest.approx(0.9 / 0.9055385)
  with pytest.raises(UserError, match="'q' is not in the vectors"):
    embeddings_eval.nearest(v, 'q')
  pairs = write(tmp_path / 'p.tsv', 'x\ty\t9\nx\tz\t0\ny\tw\t3\nx\tq\t1\n')
  report = embeddings_eval.evaluate(v, {'wordsim353': pairs, 'simlex999': None})
  assert report['wordsim353'] == pytest.approx(1.0) and report['wordsim353_skipped'] == 1
  assert 'simlex999' not in report


def test_importing_defines_no_flags():
  for name in ('wordsim', 'simlex', 'restrict_vocab', 'neighbours'):
    assert name not in flags.FLAGS


# ---------------------------------------------------------------------------------------------
# Aligning to a model vocabulary


def test_align_exact_then_lowercase_then_fresh_rows():
  file_words = ['the', 'king', 'The', 'queen'] + [f'f{i}' for i in range(500)]
  v = vectors.Vectors(file_words, random_vectors(file_words, dim=4, seed=8) * [1, 2, 3, 4])
  vocab = ['The', 'KING', 'queen', '<pad>'] + [f'new{i}' for i in range(3000)]
  table, found, missing = vectors.align(v, vocab)
  assert table.shape == (len(vocab), 4) and table.dtype == np.float32
  assert found == 3 and missing == vocab[3:]
  np.testing.assert_array_equal(table[:3], v.matrix[[2, 1, 3]])  # 'The' exact, 'KING' -> king
  sigma = v.matrix.std(axis=0)
  np.testing.assert_allclose(table[3:].std(axis=0), sigma, rtol=0.08)
  np.testing.assert_allclose(table[3:].mean(axis=0), 0, atol=0.15 * sigma.max())
  again, _, _ = vectors.align(v, vocab)
  np.testing.assert_array_equal(again, table)  # the same seed, the same draws
  half, _, _ = vectors.align(v, vocab, scale=0.5)
  np.testing.assert_allclose(half[3:], 0.5 * table[3:], rtol=1e-6)
  exact, found, missing = vectors.align(v, vocab, init='zeros', lowercase_fallback=False)
  assert found == 2 and missing == ['KING'] + vocab[3:]
  assert not exact[[1] + list(range(3, len(vocab)))].any()


# ---------------------------------------------------------------------------------------------
# The command line


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'lmjax.embeddings_eval', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120)


def test_cli_prints_the_library_numbers(tmp_path):
  words, m, questions = analogy_world()
  words, m = words + EVAL_WORDS, np.concatenate([m, random_vectors(EVAL_WORDS, dim=12)])
  path = str(tmp_path / 'v.bin')
  vectors.write_word2vec_binary(path, words, m)
  pairs, qs = write(tmp_path / 'p.tsv', PAIRS), write(tmp_path / 'q.txt', questions)
  proc = run_cli(f'--vectors={path}', f'--wordsim={pairs}', '--simlex=', f'--analogy={qs}',
                 '--restrict_vocab=60', '--neighbours=king,nosuchword')
  assert proc.returncode == 0, proc.stderr[-3000:]
  v = vectors.read_vectors(path)
  sim = embeddings_eval.similarity(v, pairs, 60)
  ana = embeddings_eval.analogy(v, qs, 60)
  out = proc.stdout
  assert (f"wordsim353: spearman {sim['spearman']:.4f}, pearson {sim['pearson']:.4f} over "
          f"{sim['pairs']} pairs ({sim['skipped']} skipped, out of vocabulary)") in out
  assert (f"analogy: accuracy {ana['accuracy']:.4f} ({ana['correct']}/{ana['questions']} "
          f"questions; {ana['skipped']} skipped, out of vocabulary)") in out
  assert 'simlex999' not in out
  near = embeddings_eval.nearest(v, 'king')
  assert 'neighbours of king: ' + ', '.join(f'{w} {c:.4f}' for w, c in near) in out
  assert 'neighbours of nosuchword: not in the vectors' in out


def test_cli_malformed_file_is_one_line(tmp_path):
  path = write(tmp_path / 'bad.vec', '2 3\nw1 1 2 3\nw2 1 2\n')
  one_line_error(run_cli(f'--vectors={path}', '--wordsim=', '--simlex=', '--analogy='),
                 path, 'line 3')
