"""An embedded synthetic corpus: English-like sentences from a small probabilistic grammar.

Deterministic from a seed and needing no file or network, it gives the default experiment and the
tests real structure to learn: subject-verb number agreement across an optional relative clause,
prepositional phrases, and counting runs ("count three four five six .") whose continuation is
fully determined. A unigram model sees ~60 word types; a model that learns the grammar reaches
a perplexity several times lower. `generate_pairs` realises each sentence also in a made-up
target language (lexicon, reordering, agreement): the embedded translation corpus.
"""

import numpy as np

DETS = ('the', 'a', 'every', 'some')
ADJS = ('small', 'red', 'old', 'quiet', 'happy', 'green', 'tall', 'dark')
NOUNS = ('cat', 'dog', 'bird', 'child', 'teacher', 'farmer', 'king', 'river', 'tree', 'house')
VERBS = ('sees', 'likes', 'follows', 'finds', 'helps', 'watches')  # singular; plural drops 's'
INTRANS = ('sleeps', 'runs', 'sings', 'waits')
PREPS = ('near', 'behind', 'under', 'with')
NUMBERS = ('one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten')


def _plural_noun(n: str) -> str:
  return n[:-1] + 'ies' if n.endswith('y') else (n + 'ren' if n == 'child' else n + 's')


def _plural_verb(v: str) -> str:
  return v[:-1]


def _noun_phrase(rng: np.random.Generator, plural: bool) -> dict:
  det = ('the', 'some')[rng.integers(2)] if plural else DETS[rng.integers(len(DETS))]
  adj = ADJS[rng.integers(len(ADJS))] if rng.random() < 0.4 else None
  return {'det': det, 'adj': adj, 'noun': NOUNS[rng.integers(len(NOUNS))], 'plural': plural}


def _structure(rng: np.random.Generator) -> dict:
  """One sentence as a small tree (both languages realise the same tree)."""
  if rng.random() < 0.15:
    start = int(rng.integers(0, 6))
    length = int(rng.integers(3, len(NUMBERS) - start + 1))
    return {'count': list(NUMBERS[start:start + length])}
  plural = bool(rng.random() < 0.4)
  s = {'subj': _noun_phrase(rng, plural), 'plural': plural, 'rel': None, 'obj': None,
       'pp': None}
  if rng.random() < 0.3:
    # Relative clause between subject and verb: agreement must skip over it.
    s['rel'] = INTRANS[rng.integers(len(INTRANS))]
  if rng.random() < 0.5:
    s['verb'] = VERBS[rng.integers(len(VERBS))]
    s['obj'] = _noun_phrase(rng, bool(rng.random() < 0.4))
  else:
    s['verb'] = INTRANS[rng.integers(len(INTRANS))]
  if rng.random() < 0.3:
    s['pp'] = (PREPS[rng.integers(len(PREPS))], _noun_phrase(rng, bool(rng.random() < 0.4)))
  return s


def _english(s: dict) -> list[str]:
  if 'count' in s:
    return ['count'] + s['count'] + ['.']

  def np_(p):
    return ([p['det']] + ([p['adj']] if p['adj'] else [])
            + [_plural_noun(p['noun']) if p['plural'] else p['noun']])

  agree = lambda v: _plural_verb(v) if s['plural'] else v
  words = np_(s['subj'])
  if s['rel']:
    words += ['that', agree(s['rel'])]
  words.append(agree(s['verb']))
  if s['obj']:
    words += np_(s['obj'])
  if s['pp']:
    words += [s['pp'][0]] + np_(s['pp'][1])
  return words + ['.']


# The target side of the parallel corpus: a made-up language with its own words, adjectives
# after nouns, verb-final clauses, plural suffixes on nouns (-i) and verbs (-n), and a
# determiner that agrees in number. Translating needs a lexicon, reordering and agreement.
LEXICON = {
    'the': 'lo', 'a': 'un', 'every': 'cada', 'some': 'alku', 'small': 'peti', 'red': 'rossa',
    'old': 'vekka', 'quiet': 'tasa', 'happy': 'feliko', 'green': 'verda', 'tall': 'alta',
    'dark': 'nokta', 'cat': 'kato', 'dog': 'hundo', 'bird': 'fogel', 'child': 'infan',
    'teacher': 'docent', 'farmer': 'bauer', 'king': 'rega', 'river': 'flusso', 'tree': 'arbo',
    'house': 'domo', 'sees': 'vida', 'likes': 'plaza', 'follows': 'seka', 'finds': 'trova',
    'helps': 'ayuda', 'watches': 'mira', 'sleeps': 'dorma', 'runs': 'kura', 'sings': 'kanta',
    'waits': 'atenda', 'near': 'apud', 'behind': 'malantaw', 'under': 'sub', 'with': 'kun',
    'one': 'uno', 'two': 'duo', 'three': 'tri', 'four': 'kvar', 'five': 'kvin', 'six': 'ses',
    'seven': 'sep', 'eight': 'ok', 'nine': 'nau', 'ten': 'dek', 'count': 'nombru',
    'that': 'ke', '.': '.'}


def _target(s: dict) -> list[str]:
  if 'count' in s:
    return [LEXICON[w] for w in ['count'] + s['count']] + ['.']

  def np_(p):
    det = LEXICON[p['det']] + ('s' if p['plural'] else '')
    noun = LEXICON[p['noun']] + ('i' if p['plural'] else '')
    return [det, noun] + ([LEXICON[p['adj']]] if p['adj'] else [])

  agree = lambda v: LEXICON[v] + ('n' if s['plural'] else '')
  words = np_(s['subj'])
  if s['rel']:
    words += ['ke', agree(s['rel'])]
  if s['obj']:
    words += np_(s['obj'])
  words.append(agree(s['verb']))
  if s['pp']:
    words += [LEXICON[s['pp'][0]]] + np_(s['pp'][1])
  return words + ['.']


def generate_lines(num_lines: int, seed: int) -> list[str]:
  """num_lines sentences of space-separated words, deterministic in seed."""
  rng = np.random.default_rng(seed)
  return [' '.join(_english(_structure(rng))) for _ in range(num_lines)]


def generate_pairs(num_pairs: int, seed: int) -> list[tuple[str, str]]:
  """(English-like source, made-up-language target) sentence pairs, deterministic in seed."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_pairs):
    s = _structure(rng)
    out.append((' '.join(_english(s)), ' '.join(_target(s))))
  return out
