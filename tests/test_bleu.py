"""BLEU/chrF report: sacrebleu agreement and an independent corpus BLEU computation."""

import collections
import math

import pytest
import sacrebleu

from lmjax import metrics
from lmjax.errors import UserError

# English/German-like pairs with punctuation: 13a tokenization splits it off.
HYPS = [
    'das haus ist klein , aber schön .',
    'der hund bellt laut !',
    'ich habe heute keine zeit für dich .',
    'wir fahren morgen nach berlin , oder ?',
    'the cat sat on a mat .',
    'she said : " hello , world " .',
]
REFS = [
    'das haus ist klein, aber sehr schön.',
    'der hund bellt sehr laut!',
    'ich habe heute leider keine zeit.',
    'fahren wir morgen nach berlin?',
    'the cat sat on the mat.',
    'she said: "hello, world".',
]

# No punctuation, so 13a tokenization is whitespace splitting. The hypotheses are shorter
# overall (brevity penalty < 1) and every n-gram order has matches (smoothing never applies).
PLAIN_HYPS = [
    'the small house is near the old river',
    'a dog barks at the man in the park',
    'we go to berlin tomorrow morning',
    'das ist ein sehr gutes buch',
    'er hat den zug heute verpasst',
    'it is raining again today',
]
PLAIN_REFS = [
    'the small house is close to the old river bank',
    'the dog barks at the old man in the park',
    'tomorrow morning we will go to berlin',
    'das ist wirklich ein sehr gutes buch',
    'er hat heute den zug verpasst',
    'it is raining again today',
]


def reference_bleu(hyps, refs):
  """Papineni et al. (2002) corpus BLEU on whitespace tokens, as a percentage."""
  matches, totals = [0] * 4, [0] * 4
  c = r = 0
  for hyp, ref in zip(hyps, refs):
    h, g = hyp.split(), ref.split()
    c, r = c + len(h), r + len(g)
    for n in range(1, 5):
      h_ngrams = collections.Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
      g_ngrams = collections.Counter(tuple(g[i:i + n]) for i in range(len(g) - n + 1))
      matches[n - 1] += sum(min(cnt, g_ngrams[ng]) for ng, cnt in h_ngrams.items())  # clipped
      totals[n - 1] += max(len(h) - n + 1, 0)
  assert all(m > 0 for m in matches)  # otherwise sacrebleu's smoothing would differ
  log_mean = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
  bp = 1.0 if c >= r else math.exp(1 - r / c)
  return 100 * bp * math.exp(log_mean), bp


def test_bleu_matches_sacrebleu_corpus_bleu():
  report = metrics.bleu_report(HYPS, REFS)
  assert report['bleu'] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
  assert report['chrf'] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
  assert 'tok:13a' in report['bleu_signature'] and 'nrefs:1' in report['bleu_signature']
  assert 'version:' in report['chrf_signature']
  assert len(report['precisions']) == 4 and 0 < report['bp'] <= 1
  assert 0 < report['bleu'] < 100


def test_bleu_matches_an_independent_computation():
  report = metrics.bleu_report(PLAIN_HYPS, PLAIN_REFS)
  want, bp = reference_bleu(PLAIN_HYPS, PLAIN_REFS)
  assert bp < 1.0  # the brevity penalty is exercised
  assert report['bleu'] == pytest.approx(want, abs=1e-6)
  assert report['bp'] == pytest.approx(bp, abs=1e-9)
  assert report['sys_len'] == sum(len(h.split()) for h in PLAIN_HYPS)
  assert report['ref_len'] == sum(len(r.split()) for r in PLAIN_REFS)
  # Without the brevity penalty: hypotheses and references swapped (c > r).
  want_swapped, bp_swapped = reference_bleu(PLAIN_REFS, PLAIN_HYPS)
  assert bp_swapped == 1.0
  assert metrics.bleu_report(PLAIN_REFS, PLAIN_HYPS)['bleu'] == pytest.approx(want_swapped,
                                                                              abs=1e-6)


def test_identical_text_scores_100():
  report = metrics.bleu_report(REFS, REFS)
  assert report['bleu'] == pytest.approx(100.0)
  assert report['chrf'] == pytest.approx(100.0)
  assert report['bp'] == 1.0 and report['precisions'] == pytest.approx([100.0] * 4)


def test_mismatched_lengths_raise_user_error():
  with pytest.raises(UserError, match='one reference per hypothesis'):
    metrics.bleu_report(HYPS, REFS[:-1])
