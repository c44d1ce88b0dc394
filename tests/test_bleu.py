"""BLEU/chrF report against independent computations: corpus BLEU on whitespace and on
hand-13a-tokenized text, the tokenize option and its signature, and corpus chrF."""

import collections
import math
import re

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


def hand_13a(text):
  """sacreBLEU's 13a tokenization, by hand, for text of lower-case letters, spaces and
  . , ! ? : " only (no digits, dashes or markup, where 13a has special cases): every
  punctuation mark becomes its own token."""
  assert set(text) <= set('abcdefghijklmnopqrstuvwxyzäöüß .,!?:"'), text
  return re.sub(r'([.,!?:"])', r' \1 ', text).split()


def reference_chrf(hyps, refs, order=6, beta=2):
  """Popovic (2015) chrF on the corpus as sacreBLEU defines it: character n-grams (n <= 6)
  with whitespace removed, counts summed over the corpus, precision and recall averaged
  over the orders, then F_beta with beta = 2 (recall weighted more)."""
  hyp_n, ref_n, match_n = [0] * order, [0] * order, [0] * order
  for hyp, ref in zip(hyps, refs):
    h, g = ''.join(hyp.split()), ''.join(ref.split())
    for n in range(1, order + 1):
      hc = collections.Counter(h[i:i + n] for i in range(len(h) - n + 1))
      gc = collections.Counter(g[i:i + n] for i in range(len(g) - n + 1))
      hyp_n[n - 1] += sum(hc.values())
      ref_n[n - 1] += sum(gc.values())
      match_n[n - 1] += sum(min(c, gc[ng]) for ng, c in hc.items())
  assert all(hyp_n) and all(ref_n)  # every order counts (sacreBLEU's effective order = 6)
  prec = sum(m / c for m, c in zip(match_n, hyp_n)) / order
  rec = sum(m / r for m, r in zip(match_n, ref_n)) / order
  return 100 * (1 + beta**2) * prec * rec / (beta**2 * prec + rec)


def test_13a_bleu_matches_a_computation_on_hand_tokenized_text():
  """Raw references with punctuation attached ('klein,', 'laut!') score as if tokenized by 13a."""
  report = metrics.bleu_report(HYPS, REFS)
  hyps = [' '.join(hand_13a(h)) for h in HYPS]
  refs = [' '.join(hand_13a(r)) for r in REFS]
  want, bp = reference_bleu(hyps, refs)
  assert report['bleu'] == pytest.approx(want, abs=1e-6)
  assert report['bp'] == pytest.approx(bp, abs=1e-9)
  assert report['sys_len'] == sum(len(hand_13a(h)) for h in HYPS)
  assert report['ref_len'] == sum(len(hand_13a(r)) for r in REFS)


def test_tokenize_none_scores_the_raw_whitespace_tokens():
  """tokenize='none' leaves 'klein,' one token: the score is the whitespace computation on the
  raw text, lower than 13a's, and the signature says which tokenization produced it."""
  none, tok13a = metrics.bleu_report(HYPS, REFS, tokenize='none'), metrics.bleu_report(HYPS, REFS)
  want, _ = reference_bleu(HYPS, REFS)
  assert none['bleu'] == pytest.approx(want, abs=1e-6)
  assert none['ref_len'] == sum(len(r.split()) for r in REFS)
  assert none['bleu'] < tok13a['bleu'] - 5
  fields = lambda sig: dict(f.split(':', 1) for f in sig.split('|'))
  assert fields(none['bleu_signature']) == {
      'nrefs': '1', 'case': 'mixed', 'eff': 'no', 'tok': 'none', 'smooth': 'exp',
      'version': sacrebleu.__version__}
  assert fields(tok13a['bleu_signature'])['tok'] == '13a'
  assert none['chrf'] == tok13a['chrf']  # chrF ignores the BLEU tokenizer


def test_chrf_matches_an_independent_computation():
  report = metrics.bleu_report(HYPS, REFS)
  assert report['chrf'] == pytest.approx(reference_chrf(HYPS, REFS), abs=1e-6)
  assert dict(f.split(':', 1) for f in report['chrf_signature'].split('|')) == {
      'nrefs': '1', 'case': 'mixed', 'eff': 'yes', 'nc': '6', 'nw': '0', 'space': 'no',
      'version': sacrebleu.__version__}


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
