"""An embedded synthetic corpus: English-like sentences from a small probabilistic grammar.

Deterministic from a seed and needing no file or network, it gives the default experiment and the
tests real structure to learn: subject-verb number agreement across an optional relative clause,
prepositional phrases, and counting runs ("count three four five six .") whose continuation is
fully determined. A unigram model sees ~60 word types; a model that learns the grammar reaches
a perplexity several times lower.
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


def _noun_phrase(rng: np.random.Generator, plural: bool) -> list[str]:
  det = ('the', 'some')[rng.integers(2)] if plural else DETS[rng.integers(len(DETS))]
  words = [det]
  if rng.random() < 0.4:
    words.append(ADJS[rng.integers(len(ADJS))])
  noun = NOUNS[rng.integers(len(NOUNS))]
  words.append(_plural_noun(noun) if plural else noun)
  return words


def _sentence(rng: np.random.Generator) -> list[str]:
  if rng.random() < 0.15:
    start = int(rng.integers(0, 6))
    length = int(rng.integers(3, len(NUMBERS) - start + 1))
    return ['count'] + list(NUMBERS[start:start + length]) + ['.']
  plural = bool(rng.random() < 0.4)
  words = _noun_phrase(rng, plural)
  if rng.random() < 0.3:
    # Relative clause between subject and verb: agreement must skip over it.
    rel = INTRANS[rng.integers(len(INTRANS))]
    words += ['that', _plural_verb(rel) if plural else rel]
  if rng.random() < 0.5:
    verb = VERBS[rng.integers(len(VERBS))]
    words.append(_plural_verb(verb) if plural else verb)
    words += _noun_phrase(rng, bool(rng.random() < 0.4))
  else:
    verb = INTRANS[rng.integers(len(INTRANS))]
    words.append(_plural_verb(verb) if plural else verb)
  if rng.random() < 0.3:
    words += [PREPS[rng.integers(len(PREPS))]] + _noun_phrase(rng, bool(rng.random() < 0.4))
  return words + ['.']


def generate_lines(num_lines: int, seed: int) -> list[str]:
  """num_lines sentences of space-separated words, deterministic in seed."""
  rng = np.random.default_rng(seed)
  return [' '.join(_sentence(rng)) for _ in range(num_lines)]
