"""The Kneser-Ney baseline through the common loop, its data and perplexity code."""

import json
import math

import numpy as np

from lmjax import config_base, train
from lmjax.data import lm as lm_data
from lmjax.data import synthetic
from lmjax.tasks import ngram


def test_kneser_ney_scores_every_eval_token(tmp_path, capsys):
  (tmp_path / 'train.txt').write_text('\n'.join(synthetic.generate_lines(3000, 0)) + '\n')
  (tmp_path / 'valid.txt').write_text('\n'.join(synthetic.generate_lines(200, 1)) + '\n')
  (tmp_path / 'test.txt').write_text('\n'.join(synthetic.generate_lines(200, 2)) +
                                     '\nthe zebra sleeps .\n')
  c = config_base.load_experiment('ptb_kneser_ney.py', '3')
  c.data.update(train=str(tmp_path / 'train.txt'), eval=str(tmp_path / 'valid.txt'),
                test=str(tmp_path / 'test.txt'))
  report = train.train_and_evaluate(c, str(tmp_path))
  out = {'eval': report, 'test': report['test']}
  lines = synthetic.generate_lines(200, 1)
  assert out['eval']['tokens'] == sum(len(l.split()) + 1 for l in lines)
  # The grammar is far from uniform (72 words) and trigram-friendly.
  assert out['eval']['ppl'] < 8
  assert out['test']['oov'] == 1 and '1 words mapped to <unk>' in capsys.readouterr().out
  saved = json.load(open(tmp_path / 'ngram_report.json'))
  assert saved['order'] == 3 and math.isclose(saved['eval']['ppl'], out['eval']['ppl'])


def test_sentences_round_trip_the_stream():
  stream = np.array([1, 5, 6, 1, 7, 1], np.int32)  # <eos> a b <eos> c <eos>
  corpus = lm_data.Corpus(stream=stream, num_words=5, num_bytes=6)
  got = [s.tolist() for s in ngram.sentences(corpus, 1)]
  assert got == [[5, 6, 1], [7, 1]]
  assert sum(map(len, got)) == corpus.num_predictions
