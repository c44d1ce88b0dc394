"""Intrinsic evaluation of word vectors: word-pair similarity, analogies, nearest neighbours.

  python -m lmjax.embeddings_eval --vectors=PATH [--format=auto] [--wordsim=PATH]
      [--simlex=PATH] [--analogy=PATH] [--restrict_vocab=30000] [--neighbours=w1,w2,...]

As a library, `evaluate(vectors, paths)` gives one flat report (the training loop calls it on
in-memory `Vectors`); `similarity`, `analogy` and `nearest` are the pieces. The evaluation sets
default to the copies gensim ships in its test data (WordSim-353, SimLex-999 and Mikolov et
al.'s questions-words) when gensim is installed; a flag set to '' skips that set.

The numbers are those of gensim's KeyedVectors.evaluate_word_pairs (similarity) and
evaluate_word_analogies (analogy, 3CosAdd) with dummy4unknown=False:

- Vocabulary: only the first `restrict_vocab` rows of the file count (the most frequent words);
  an item with a word outside them is skipped and counted as out of vocabulary.
- Case: with case_insensitive (the default) the file's words and the test words are compared
  upper-cased (str.upper, as gensim does: so 'ß' matches 'SS' and 'ς' matches 'σ'); when several
  of the file's words fold to one form, the first row is that form's vector.
- Similarity: cosine of the two words' vectors; Spearman's and Pearson's correlation with the
  gold scores (scipy.stats).
- Analogy 'a b c d' (a is to b as c is to d): the prediction is the word whose unit vector has
  the highest dot product with b̂ - â + ĉ (unit vectors), among the restricted vocabulary less
  every row folding to a, b or c; it is right when it folds to d. The overall accuracy counts
  every section, as gensim's 'Total accuracy' does.

Where this differs from gensim: a malformed line (a pair without three tab-separated fields or
with a non-numeric score, a question without four words) is a UserError naming the file and
line, where gensim skips it; fields of a pair are stripped of surrounding spaces; a line
starting with ':' opens a section even without the space gensim needs; when no item is in
vocabulary the figure is nan (gensim: 0.0 for analogies, a ValueError for pairs); an all-zero
vector has cosine 0 with everything (gensim divides by its zero norm); a section without any
question is left out of `sections` (gensim lists it at 0.0). gensim looks at its 5 best
candidates only: when all 5 are case variants of the question words it scores the question
wrong, where this code takes the next candidate. `evaluate` applies one restrict_vocab (30000)
to every set; `similarity` alone defaults to gensim's 300000.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping

import numpy as np

from lmjax.data import text
from lmjax.errors import UserError
from lmjax.vectors import FORMATS, Vectors, read_vectors

# Evaluation set name -> file in gensim's test data.
GENSIM_FILES = {'wordsim353': 'wordsim353.tsv', 'simlex999': 'simlex999.txt',
                'analogy': 'questions-words.txt'}
BATCH = 256  # analogy questions per matrix product: scores [BATCH, restrict_vocab] float32


def default_paths() -> dict[str, str | None]:
  """{'wordsim353', 'simlex999', 'analogy'} -> gensim's test-data file, None without gensim."""
  try:
    from gensim.test.utils import datapath  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {name: None for name in GENSIM_FILES}
  paths = {name: datapath(f) for name, f in GENSIM_FILES.items()}
  return {name: p if os.path.isfile(p) else None for name, p in paths.items()}


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, D] rows scaled to norm 1; all-zero rows stay zero."""
  norms = np.linalg.norm(matrix, axis=1, keepdims=True)  # [N, 1]
  return matrix / np.where(norms > 0, norms, 1)


def _folded_vocab(words: list[str], restrict_vocab: int,
                  case_insensitive: bool) -> tuple[dict[str, int], list[str]]:
  """(folded word -> its first row, the folded forms of the first restrict_vocab words)."""
  folded = [w.upper() if case_insensitive else w for w in words[:restrict_vocab]]
  vocab = {}
  for i, key in enumerate(folded):
    vocab.setdefault(key, i)
  return vocab, folded


# ---------------------------------------------------------------------------------------------
# Word-pair similarity


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, float]]:
  """The (word, word, score) lines of a tab-separated pairs file; '#' lines and blank lines are
  skipped. A line without 3 fields, with an empty word or a non-numeric score is a UserError."""
  what = f'word-pairs file {os.fspath(path)}'
  pairs = []
  for n, line in enumerate(text.read_lines(path, what='word-pairs file'), 1):
    if line.startswith('#') or not line.strip():
      continue
    fields = [f.strip() for f in line.split('\t')]
    if len(fields) != 3:
      raise UserError(f'{what} line {n}: expected 3 tab-separated fields (word, word, score), '
                      f'got {len(fields)}')
    if not fields[0] or not fields[1]:
      raise UserError(f'{what} line {n}: empty word')
    try:
      score = float(fields[2])
    except ValueError:
      raise UserError(f'{what} line {n}: score {fields[2][:40]!r} is not a number') from None
    pairs.append((fields[0], fields[1], score))
  if not pairs:
    raise UserError(f'{what}: no word pairs, only comments')
  return pairs


def similarity(vectors: Vectors, pairs_path: str | os.PathLike, restrict_vocab: int = 300000,
               case_insensitive: bool = True) -> dict:
  """Correlation of cosine similarities with the human scores of a word-pairs file.

  Returns:
    dict(spearman=rho, pearson=r, pairs=pairs scored, skipped=pairs with a word outside the
    first restrict_vocab words); rho and r are nan below two pairs.
  """
  vocab, _ = _folded_vocab(vectors.words, restrict_vocab, case_insensitive)
  gold, rows = [], []
  skipped = 0
  for w1, w2, score in read_pairs(pairs_path):
    if case_insensitive:
      w1, w2 = w1.upper(), w2.upper()
    if w1 in vocab and w2 in vocab:
      gold.append(score)
      rows.append((vocab[w1], vocab[w2]))
    else:
      skipped += 1
  spearman = pearson = math.nan
  if len(rows) >= 2:
    from scipy import stats  # pylint: disable=g-import-not-at-top
    rows = np.array(rows)  # [P, 2]
    unit = _unit_rows(vectors.matrix[rows.reshape(-1)].astype(np.float64)).reshape(
        len(rows), 2, vectors.dim)  # [P, 2, D]
    cosine = np.sum(unit[:, 0] * unit[:, 1], axis=-1)  # [P]
    spearman = float(stats.spearmanr(gold, cosine)[0])
    pearson = float(stats.pearsonr(gold, cosine)[0])
  return dict(spearman=spearman, pearson=pearson, pairs=len(gold), skipped=skipped)


# ---------------------------------------------------------------------------------------------
# Analogies


def read_questions(path: str | os.PathLike) -> list[tuple[str, tuple[str, str, str, str]]]:
  """(section, (a, b, c, d)) for each question line of an analogy file, in file order.

  A line starting with ':' names the section of the lines after it (': capital-world');
  blank lines are skipped. A question before any section, or a line that is not 4 words, is a
  UserError naming the line.
  """
  what = f'analogy file {os.fspath(path)}'
  questions, section = [], None
  for n, line in enumerate(text.read_lines(path, what='analogy file'), 1):
    if line.startswith(':'):
      section = line.lstrip(':').strip()
      if not section:
        raise UserError(f"{what} line {n}: a section line ':' without a name")
      continue
    words = line.split()
    if not words:
      continue
    if len(words) != 4:
      raise UserError(f'{what} line {n}: expected 4 words (a b c d: a is to b as c is to d), '
                      f'got {len(words)}')
    if section is None:
      raise UserError(f"{what} line {n}: a question before the first ': section' line")
    questions.append((section, tuple(words)))
  if not questions:
    raise UserError(f'{what}: no questions')
  return questions


def _variants(canon: np.ndarray) -> np.ndarray:
  """[R] first row of each row's folded form -> [R, K]: row f lists the rows of f's form (K the
  most case variants of one word, usually 1 to 3), padded with f; rows not first: themselves."""
  sizes = np.bincount(canon, minlength=len(canon))  # [R] rows per form, at its first row
  variants = np.repeat(np.arange(len(canon))[:, None], sizes.max(), axis=1)  # [R, K]
  order = np.argsort(canon, kind='stable')  # rows grouped by form
  grouped = canon[order]
  slot = np.arange(len(canon)) - (np.cumsum(sizes) - sizes)[grouped]  # place within the form
  variants[grouped, slot] = order
  return variants


def analogy(vectors: Vectors, questions_path: str | os.PathLike, restrict_vocab: int = 30000,
            case_insensitive: bool = True) -> dict:
  """3CosAdd accuracy on an analogy file (see the module docstring).

  Returns:
    dict(accuracy=correct / questions over all sections, correct, questions=questions
    attempted, skipped=questions with a word outside the first restrict_vocab words,
    sections={name: dict(accuracy, correct, questions)} in file order). An accuracy is nan
    when no question of its scope was attempted.
  """
  vocab, folded = _folded_vocab(vectors.words, restrict_vocab, case_insensitive)
  canon = np.array([vocab[key] for key in folded], np.int64)  # [R] row -> first row of its form
  questions = read_questions(questions_path)
  names, quads, skipped = [], [], 0  # attempted questions: section, rows
  for section, words in questions:
    keys = [w.upper() for w in words] if case_insensitive else words
    if all(k in vocab for k in keys):
      names.append(section)
      quads.append([vocab[k] for k in keys])
    else:
      skipped += 1
  quads = np.array(quads, np.int64).reshape(-1, 4)  # [Q, 4] rows of a, b, c, d
  unit = _unit_rows(vectors.matrix[:len(canon)])  # [R, D] float32
  variants = _variants(canon)  # [R, K]
  right = np.zeros(len(quads), bool)  # [Q]
  for start in range(0, len(quads), BATCH):
    a, b, c, d = quads[start:start + BATCH].T  # each [B]
    target = unit[b] - unit[a] + unit[c]  # [B, D]
    scores = target @ unit.T  # [B, R]
    batch = np.arange(len(a))[:, None]  # [B, 1]
    for word in (a, b, c):  # no question word (nor a case variant) may be the answer
      scores[batch, variants[word]] = -np.inf
    right[start:start + BATCH] = canon[np.argmax(scores, axis=1)] == d

  def summary(hits: np.ndarray) -> dict:
    n = len(hits)
    return dict(accuracy=float(hits.mean()) if n else math.nan, correct=int(hits.sum()),
                questions=n)

  sections = {}
  for name in dict.fromkeys(section for section, _ in questions):  # file order, once each
    sections[name] = summary(right[np.array([n == name for n in names], bool)])
  return dict(**summary(right), skipped=skipped, sections=sections)


# ---------------------------------------------------------------------------------------------
# Neighbours and the combined report


def nearest(vectors: Vectors, word: str, k: int = 10) -> list[tuple[str, float]]:
  """The k words of highest cosine with `word` (itself excluded), best first."""
  row = vectors.index.get(word)
  if row is None:
    raise UserError(f'{word!r} is not in the vectors')
  unit = _unit_rows(vectors.matrix)  # [N, D]
  cosine = unit @ unit[row]  # [N]
  cosine[row] = -np.inf
  k = min(k, len(vectors) - 1)
  if k <= 0:
    return []
  top = np.argpartition(-cosine, k - 1)[:k]
  top = top[np.argsort(-cosine[top], kind='stable')]
  return [(vectors.words[i], float(cosine[i])) for i in top]


def evaluate(vectors: Vectors, paths: Mapping[str, str | os.PathLike | None],
             restrict_vocab: int = 30000) -> dict:
  """One flat report over the evaluation sets in `paths`.

  Args:
    vectors: the vectors to evaluate.
    paths: set name -> file, e.g. default_paths(); a name starting with 'analogy' is an
      analogy file, any other a word-pairs file; None or '' skips the set.
    restrict_vocab: the vocabulary for every set (pairs and questions).

  Returns:
    For a pairs set NAME: NAME (Spearman's rho), NAME_pearson, NAME_pairs, NAME_skipped; for
    an analogy set NAME: NAME (accuracy), NAME_questions, NAME_skipped and NAME/SECTION per
    section.
  """
  report = {}
  for name, path in paths.items():
    if not path:
      continue
    if name.startswith('analogy'):
      result = analogy(vectors, path, restrict_vocab)
      report.update({name: result['accuracy'], f'{name}_questions': result['questions'],
                     f'{name}_skipped': result['skipped']})
      report.update({f'{name}/{s}': r['accuracy'] for s, r in result['sections'].items()})
    else:
      result = similarity(vectors, path, restrict_vocab)
      report.update({name: result['spearman'], f'{name}_pearson': result['pearson'],
                     f'{name}_pairs': result['pairs'], f'{name}_skipped': result['skipped']})
  return report


# ---------------------------------------------------------------------------------------------
# Command line


def define_flags() -> None:
  """The command line flags (defined only when run as a program)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  gensim_default = "(default: gensim's test-data copy if gensim is installed; '' skips it)"
  flags.DEFINE_string('vectors', None, 'The word-vector file.')
  flags.DEFINE_enum('format', 'auto', list(FORMATS), 'The file format (auto: detect it).')
  flags.DEFINE_string('wordsim', None, f'WordSim-353 pairs file {gensim_default}.')
  flags.DEFINE_string('simlex', None, f'SimLex-999 pairs file {gensim_default}.')
  flags.DEFINE_string('analogy', None, f'questions-words analogy file {gensim_default}.')
  flags.DEFINE_integer('restrict_vocab', 30000, 'Evaluate over the first (most frequent) N '
                       'words of the file only.')
  flags.DEFINE_list('neighbours', [], 'Words whose nearest neighbours to print.')
  flags.DEFINE_integer('num_neighbours', 10, 'Neighbours printed per word.')


def main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.vectors:
    raise UserError('--vectors is required')
  if FLAGS.restrict_vocab < 1:
    raise UserError('--restrict_vocab must be at least 1')
  vectors = read_vectors(FLAGS.vectors, FLAGS.format)
  defaults = default_paths()
  chosen = {'wordsim353': FLAGS.wordsim, 'simlex999': FLAGS.simlex, 'analogy': FLAGS.analogy}
  paths = {name: defaults[name] if path is None else path for name, path in chosen.items()}
  print(f'{FLAGS.vectors}: {len(vectors)} vectors of {vectors.dim} dimensions; evaluating '
        f'over the first {min(FLAGS.restrict_vocab, len(vectors))}')
  for name, path in paths.items():
    if not path:
      continue
    if name == 'analogy':
      r = analogy(vectors, path, FLAGS.restrict_vocab)
      print(f"{name}: accuracy {r['accuracy']:.4f} ({r['correct']}/{r['questions']} questions; "
            f"{r['skipped']} skipped, out of vocabulary)")
      for section, s in r['sections'].items():
        print(f"  {section}: {s['accuracy']:.4f} ({s['correct']}/{s['questions']})")
    else:
      r = similarity(vectors, path, FLAGS.restrict_vocab)
      print(f"{name}: spearman {r['spearman']:.4f}, pearson {r['pearson']:.4f} over "
            f"{r['pairs']} pairs ({r['skipped']} skipped, out of vocabulary)")
  for word in FLAGS.neighbours:
    if word not in vectors.index:
      print(f'neighbours of {word}: not in the vectors')
      continue
    found = nearest(vectors, word, FLAGS.num_neighbours)
    print(f'neighbours of {word}: ' + ', '.join(f'{w} {c:.4f}' for w, c in found))
  sys.stdout.flush()


if __name__ == '__main__':
  from lmjax import cli  # pylint: disable=g-import-not-at-top  (defines --debug, --verbose)
  define_flags()
  cli.run(main)
