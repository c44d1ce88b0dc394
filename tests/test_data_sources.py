"""Data sources: strict text files, word/SentencePiece tokenizers, TFDS splits (offline)."""

import importlib.util
import json
import math
import os
import pickle
import random
import shutil
import time

import pytest
import tensorflow_datasets as tfds

from lmjax.data import text
from lmjax.data import tfds_source
from lmjax.data import tokenizers

import cli_checks


_user_error = cli_checks.user_error


def _write(path, data: bytes) -> str:
  path.write_bytes(data)
  return str(path)


# ----------------------------------------------------------------------------- read_lines


def test_read_lines_splits_on_newlines_only(tmp_path):
  data = '\ufeffone\r\ntwo  words\n\n\tthree\x0cstill three\nlast'.encode()
  path = _write(tmp_path / 'a.txt', data)
  assert text.read_lines(path) == ['one', 'two  words', '', '\tthree\x0cstill three', 'last']
  path = _write(tmp_path / 'b.txt', b'x\n')
  assert text.read_lines(path) == ['x']  # A final newline adds no empty line.


def test_read_lines_missing_file(tmp_path):
  path = str(tmp_path / 'nope.txt')
  message = _user_error(text.read_lines, path, what='training data', needles=[path])
  assert message.startswith('training data not found')


def test_read_lines_directory(tmp_path):
  _user_error(text.read_lines, str(tmp_path), needles=[str(tmp_path), 'directory'])


def test_read_lines_empty_file(tmp_path):
  path = _write(tmp_path / 'empty.txt', b'')
  _user_error(text.read_lines, path, needles=[path, 'empty'])


def test_read_lines_not_utf8_names_offset_and_line(tmp_path):
  path = _write(tmp_path / 'latin1.txt', b'ok\nab\xe9cd\n')
  _user_error(text.read_lines, path, needles=[path, 'not UTF-8', 'offset 5', 'line 2', '0xe9'])


def test_read_lines_only_blank_lines(tmp_path):
  path = _write(tmp_path / 'blank.txt', b'\n   \n\t\r\n')
  _user_error(text.read_lines, path, needles=[path, 'blank'])


def test_read_lines_single_huge_line_is_fast(tmp_path):
  line = ('abcdé ' * (10_000_000 // 7))
  path = _write(tmp_path / 'huge.txt', line.encode())
  start = time.perf_counter()
  lines = text.read_lines(path)
  assert time.perf_counter() - start < 2.0
  assert lines == [line]
  assert text.count_utf8_bytes(lines) == len(line.encode()) + 1


def test_count_utf8_bytes_counts_one_newline_per_line():
  assert text.count_utf8_bytes(['aé', '', '東']) == (3 + 1) + 1 + (3 + 1)
  assert text.count_utf8_bytes([]) == 0


# ----------------------------------------------------------------------------- read_parallel


def test_read_parallel_drops_blank_pairs(tmp_path):
  src = _write(tmp_path / 'src.de', b'eins\n\nzwei\ndrei\n')
  tgt = _write(tmp_path / 'tgt.en', b'one\nlost\ntwo\n  \n')
  pairs = text.read_parallel(src, tgt)
  assert list(pairs) == [('eins', 'one'), ('zwei', 'two')]
  assert pairs.num_dropped == 2


def test_read_parallel_line_count_mismatch(tmp_path):
  src = _write(tmp_path / 'src.de', b'a\nb\nc\n')
  tgt = _write(tmp_path / 'tgt.en', b'a\nb\n')
  _user_error(text.read_parallel, src, tgt, needles=[src, tgt, '3 lines', 'has 2'])


def test_read_parallel_bad_side_names_it(tmp_path):
  src = _write(tmp_path / 'src.de', b'a\n')
  tgt = str(tmp_path / 'missing.en')
  _user_error(text.read_parallel, src, tgt, needles=['target file', tgt])


def test_read_parallel_no_usable_pair(tmp_path):
  src = _write(tmp_path / 'src.de', b'a\n\n')
  tgt = _write(tmp_path / 'tgt.en', b'\nb\n')
  _user_error(text.read_parallel, src, tgt, needles=[src, tgt])


# ----------------------------------------------------------------------------- WordVocab

_WORDS = ['b a a', 'c a b', '<unk> x']


def test_word_vocab_ids_are_by_frequency_then_alphabetical():
  vocab = tokenizers.WordVocab.build(_WORDS)
  # a:3, b:2, then c and x tie at 1; the corpus' <unk> shares the special entry.
  assert vocab.tokens == ('<pad>', '<eos>', '<unk>', 'a', 'b', 'c', 'x')
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.bos_id) == (0, 1, 2, 1)
  assert vocab.vocab_size == 7
  assert tokenizers.WordVocab.build(_WORDS, max_size=5).tokens[3:] == ('a', 'b')
  assert tokenizers.WordVocab.build(_WORDS, min_count=2).tokens[3:] == ('a', 'b')


def test_word_vocab_unknown_words_and_oov_count():
  vocab = tokenizers.WordVocab.build(_WORDS)
  ids, n_oov = vocab.encode_with_oov('a  zz <unk> b <pad>')
  assert ids == [3, 2, 2, 4, 2]  # A literal <pad> is unknown, never padding.
  assert n_oov == 2  # The corpus' own <unk> is a known word.
  assert vocab.encode('a b') == [3, 4]  # No eos appended.
  assert vocab.decode([0, 3, 1, 4, 2, 0]) == 'a b <unk>'
  with pytest.raises(ValueError):
    vocab.decode([7])


def test_word_vocab_save_load_and_fingerprint(tmp_path):
  vocab = tokenizers.WordVocab.build(_WORDS)
  vocab.save(tmp_path / 'tok')
  loaded = tokenizers.load_tokenizer(tmp_path / 'tok')
  assert isinstance(loaded, tokenizers.WordVocab)
  assert loaded.tokens == vocab.tokens
  assert loaded.fingerprint() == vocab.fingerprint()
  assert isinstance(loaded, tokenizers.Tokenizer)
  bigger = tokenizers.WordVocab.build(_WORDS + ['y'])
  assert bigger.fingerprint() != vocab.fingerprint()


def test_word_vocab_bad_inputs(tmp_path):
  _user_error(tokenizers.WordVocab.build, ['  ', ''], needles=['no word'])
  _user_error(tokenizers.WordVocab.build, _WORDS, max_size=3, needles=['max_size'])
  tokenizers.WordVocab.build(_WORDS).save(tmp_path)
  (tmp_path / 'vocab.txt').write_text('<pad>\n<eos>\n<unk>\na\nb\nz\n')  # Edited behind our back.
  _user_error(tokenizers.load_tokenizer, tmp_path, needles=[str(tmp_path), 'fingerprint'])


def test_load_tokenizer_bad_directory(tmp_path):
  _user_error(tokenizers.load_tokenizer, tmp_path, needles=['tokenizer.json'])
  (tmp_path / 'tokenizer.json').write_text('{not json')
  _user_error(tokenizers.load_tokenizer, tmp_path, needles=['tokenizer.json', 'malformed'])
  (tmp_path / 'tokenizer.json').write_text(json.dumps({'kind': 'bpe-magic', 'files': {}}))
  _user_error(tokenizers.load_tokenizer, tmp_path, needles=['bpe-magic'])
  (tmp_path / 'tokenizer.json').write_text(json.dumps({'kind': 'word', 'files': {}}))
  _user_error(tokenizers.load_tokenizer, tmp_path, needles=['vocab'])


# ----------------------------------------------------------------------------- SentencePiece


def _generated_lines(n: int = 600, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  words = ['the', 'cat', 'sat', 'on', 'mat', 'über', 'naïve', 'dog', 'ran', 'far', 'Σ', '42']
  return [' '.join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)]


@pytest.fixture(scope='module')
def unigram():
  return tokenizers.SentencePieceTokenizer.train(_generated_lines(), vocab_size=60)


def test_sentencepiece_round_trip_keeps_whitespace(unigram):
  assert (unigram.pad_id, unigram.eos_id, unigram.unk_id, unigram.bos_id) == (0, 1, 2, 3)
  assert 4 < unigram.vocab_size <= 60
  for line in _generated_lines(50, seed=1) + ['  the  cat ', 'über\tdog']:
    ids = unigram.encode(line)
    assert unigram.eos_id not in ids
    if '\t' not in line:  # A tab never occurred in training: it decodes as unknown.
      assert unigram.decode(ids) == line
  ids = unigram.encode('the cat')
  assert unigram.decode([0, unigram.bos_id] + ids + [unigram.eos_id, 0]) == 'the cat'
  with pytest.raises(ValueError):
    unigram.decode([unigram.vocab_size])


def test_sentencepiece_save_load_and_pickle(unigram, tmp_path):
  unigram.save(tmp_path)
  assert (tmp_path / 'spm.model').is_file()
  loaded = tokenizers.load_tokenizer(tmp_path)
  also = tokenizers.SentencePieceTokenizer.load(tmp_path / 'spm.model')
  unpickled = pickle.loads(pickle.dumps(unigram))  # For multiprocess data workers.
  for line in _generated_lines(20, seed=2):
    ids = unigram.encode(line)
    assert loaded.encode(line) == also.encode(line) == unpickled.encode(line) == ids
  assert loaded.fingerprint() == unigram.fingerprint()
  assert isinstance(loaded, tokenizers.Tokenizer)


def test_sentencepiece_training_is_deterministic_and_fingerprinted(unigram):
  again = tokenizers.SentencePieceTokenizer.train(_generated_lines(), vocab_size=60)
  assert again.fingerprint() == unigram.fingerprint()
  bpe = tokenizers.SentencePieceTokenizer.train(_generated_lines(), vocab_size=60, model_type='bpe')
  assert bpe.fingerprint() != unigram.fingerprint()
  line = 'the naïve  dog'
  assert bpe.decode(bpe.encode(line)) == line


def test_sentencepiece_char_model():
  lines = ['First Citizen:', 'Before we proceed any further, hear me speak.', '', 'All:', 'Speak.']
  chars = sorted(set(''.join(lines)))
  model = tokenizers.SentencePieceTokenizer.train(lines, model_type='char')
  assert model.vocab_size == len(chars) + 4  # Every character, plus pad/eos/unk/bos.
  for line in lines:
    assert len(model.encode(line)) == len(line)  # One token per character, no dummy prefix.
    assert model.decode(model.encode(line)) == line
  capped = tokenizers.SentencePieceTokenizer.train(lines, vocab_size=10, model_type='char')
  assert capped.vocab_size == 10


def test_sentencepiece_bad_inputs(tmp_path):
  _user_error(tokenizers.SentencePieceTokenizer.train, ['', ''], vocab_size=20,
              needles=['SentencePiece'])
  _user_error(tokenizers.SentencePieceTokenizer.train, ['a'], vocab_size=20, model_type='wordpiece',
              needles=['model_type'])
  _user_error(tokenizers.SentencePieceTokenizer.train, ['a'], needles=['vocab_size'])
  missing = str(tmp_path / 'none.model')
  _user_error(tokenizers.SentencePieceTokenizer.load, missing, needles=[missing])
  junk = _write(tmp_path / 'junk.model', b'\x00not a model\xff' * 10)
  _user_error(tokenizers.SentencePieceTokenizer.load, junk, needles=[junk])


# ----------------------------------------------------------------------------- TFDS (offline)

_TEXT_NAME = 'lmjax_test_data_sources_text'
_PARALLEL_NAME = 'lmjax_test_data_sources_parallel'
_TRAIN_LINES = [f'line {i} ü' for i in range(7)]
_WHOLE_TEXT = 'First Citizen:\nBefore we proceed.\n\nAll:\nSpeak.\n'


# skip_registration: the builders stay out of tfds' global registry, so the reads below go through
# the same path as any dataset prepared elsewhere (found by name under data_dir).
class LmjaxTestDataSourcesText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Lines as train examples; the test split is one multi-line example, like tiny_shakespeare."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {'train': self._generate_examples(_TRAIN_LINES),
            'test': self._generate_examples([_WHOLE_TEXT])}

  def _generate_examples(self, texts):
    for i, t in enumerate(texts):
      yield i, {'text': t}


class LmjaxTestDataSourcesParallel(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """German-English pairs keyed by language, like wmt14_translate/de-en."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.Translation(languages=('de', 'en')))

  def _split_generators(self, dl_manager):
    del dl_manager
    pairs = [('eins', 'one'), ('zwei', 'two'), ('', 'lost'), ('drei', 'three')]
    return {'train': self._generate_examples(pairs)}

  def _generate_examples(self, pairs):
    for i, (de, en) in enumerate(pairs):
      yield i, {'de': de, 'en': en}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  tfds.disable_progress_bar()
  for cls in (LmjaxTestDataSourcesText, LmjaxTestDataSourcesParallel):
    cls(data_dir=str(root), file_format='array_record').download_and_prepare(
        download_config=tfds.download.DownloadConfig())
  return str(root)


def test_tfds_text_split(data_dir):
  lines = tfds_source.load_text_split(_TEXT_NAME, 'train', data_dir=data_dir)
  assert sorted(lines) == sorted(_TRAIN_LINES)  # TFDS stores examples in a hashed order.
  assert tfds_source.load_text_split(_TEXT_NAME, 'test', text_key='text', data_dir=data_dir) == [
      'First Citizen:', 'Before we proceed.', '', 'All:', 'Speak.']
  assert len(tfds_source.load_text_split(_TEXT_NAME, 'train[:3]', data_dir=data_dir)) == 3


def test_tfds_text_split_errors(data_dir, tmp_path):
  _user_error(tfds_source.load_text_split, 'lmjax_no_such_dataset', 'train', data_dir=data_dir,
              needles=['lmjax_no_such_dataset', data_dir])
  _user_error(tfds_source.load_text_split, _TEXT_NAME, 'validation', data_dir=data_dir,
              needles=['validation', 'train, test'])
  _user_error(tfds_source.load_text_split, _TEXT_NAME, 'train', text_key='body', data_dir=data_dir,
              needles=['body', 'text'])
  # A registered dataset that was never prepared there: no download, one line.
  _user_error(tfds_source.load_text_split, 'tiny_shakespeare', 'train', data_dir=str(tmp_path),
              needles=['tiny_shakespeare', 'not prepared', str(tmp_path)])
  _user_error(tfds_source.load_text_split, 'Bad Name!', 'train', data_dir=data_dir,
              needles=['Bad Name!'])


def test_tfds_tfrecord_without_tensorflow_asks_for_the_tf_extra(data_dir, tmp_path):
  if importlib.util.find_spec('tensorflow') is not None:
    pytest.skip('TensorFlow is installed: tfrecord datasets are readable')
  copy = tmp_path / _TEXT_NAME
  shutil.copytree(os.path.join(data_dir, _TEXT_NAME), copy)
  info_path = copy / '1.0.0' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'  # As prepared by a plain `tfds build`.
  info_path.write_text(json.dumps(info))
  _user_error(tfds_source.load_text_split, _TEXT_NAME, 'train', data_dir=str(tmp_path),
              needles=['tfrecord', 'pip install -e .[tf]'])


def test_tfds_parallel_split(data_dir):
  pairs = tfds_source.load_parallel_split(_PARALLEL_NAME, 'train', 'de', 'en', data_dir=data_dir)
  assert sorted(pairs) == [('drei', 'three'), ('eins', 'one'), ('zwei', 'two')]
  assert pairs.num_dropped == 1
  reverse = tfds_source.load_parallel_split(_PARALLEL_NAME, 'train', 'en', 'de', data_dir)
  assert sorted(reverse) == sorted((t, s) for s, t in pairs)
  _user_error(tfds_source.load_parallel_split, _PARALLEL_NAME, 'train', 'de', 'fr',
              data_dir=data_dir, needles=["'fr'", 'de, en'])
  # Two text features: which one is the text must be said.
  _user_error(tfds_source.load_text_split, _PARALLEL_NAME, 'train', data_dir=data_dir,
              needles=['text_key', 'de, en'])
  assert sorted(tfds_source.load_text_split(_PARALLEL_NAME, 'train', text_key='en',
                                            data_dir=data_dir)) == ['lost', 'one', 'three', 'two']


# ----------------------------------------------------------- the train loop on TFDS and files

_LOOP_NAME = 'lmjax_test_data_sources_loop'


class LmjaxTestDataSourcesLoop(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Synthetic-grammar sentences as a TFDS text dataset with train/validation splits."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    from lmjax.data import synthetic
    return {'train': self._generate_examples(synthetic.generate_lines(600, 0)),
            'validation': self._generate_examples(synthetic.generate_lines(60, 1))}

  def _generate_examples(self, texts):
    for i, t in enumerate(texts):
      yield i, {'text': t}


def _loop_config():
  from lmjax import config_base
  c = config_base.load_experiment('synthetic_lm.py', 'tiny')
  c.num_train_steps = 30
  c.eval_every = 30
  c.checkpoint.every = 30
  c.sample.num_samples = 1
  return c


def test_train_loop_reads_tfds_with_a_sentencepiece_model(tmp_path):
  import jax
  from lmjax import train
  root = tmp_path / 'tfds'
  LmjaxTestDataSourcesLoop(data_dir=str(root), file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig())
  c = _loop_config()
  c.data.update(source='tfds', name=_LOOP_NAME, data_dir=str(root), tokenizer='sentencepiece',
                vocab_size=60, train_split='train', eval_split='validation')
  report = train.train_and_evaluate(c, str(tmp_path / 'wd'), devices=jax.devices()[:2])
  tok = tokenizers.load_tokenizer(str(tmp_path / 'wd' / 'tokenizer'))
  assert isinstance(tok, tokenizers.SentencePieceTokenizer)
  # Every eval token (pieces plus one <eos> per line) was scored; word-level figures too.
  from lmjax.data import synthetic
  lines = synthetic.generate_lines(60, 1)
  assert report['tokens'] == sum(len(tok.encode(l)) + 1 for l in lines)
  assert report['ppl'] < tok.vocab_size
  words = sum(len(l.split()) + 1 for l in lines)
  assert report['word_ppl'] == pytest.approx(math.exp(report['nll'] * report['tokens'] / words))
  nbytes = sum(len(l.encode()) + 1 for l in lines)
  assert report['bpb'] == pytest.approx(report['nll'] * report['tokens'] / math.log(2) / nbytes)


def test_train_loop_on_word_level_files_counts_unknown_words(tmp_path, capsys):
  import jax
  from lmjax import train
  from lmjax.data import synthetic
  (tmp_path / 'train.txt').write_text('\n'.join(synthetic.generate_lines(400, 0)) + '\n')
  (tmp_path / 'valid.txt').write_text('\n'.join(synthetic.generate_lines(40, 1)) +
                                      '\nthe zebra sees a unicorn .\n')
  c = _loop_config()
  c.data.update(source='text', train=str(tmp_path / 'train.txt'),
                eval=str(tmp_path / 'valid.txt'), tokenizer='word')
  report = train.train_and_evaluate(c, str(tmp_path / 'wd'), devices=jax.devices()[:2])
  assert report['oov'] == 2
  assert '2 words mapped to <unk>' in capsys.readouterr().out


_MT_NAME = 'lmjax_test_data_sources_mt'


class LmjaxTestDataSourcesMt(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Synthetic parallel pairs as a TFDS Translation dataset (like wmt14_translate/de-en)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.Translation(languages=('en', 'xx')))

  def _split_generators(self, dl_manager):
    del dl_manager
    from lmjax.data import synthetic
    return {'train': self._generate_examples(synthetic.generate_pairs(300, 0)),
            'validation': self._generate_examples(synthetic.generate_pairs(12, 1))}

  def _generate_examples(self, pairs):
    for i, (en, xx) in enumerate(pairs):
      yield i, {'en': en, 'xx': xx}


@pytest.mark.parametrize('direction', [('en', 'xx'), ('xx', 'en')])
def test_translation_loop_reads_tfds_in_either_direction(tmp_path, direction):
  import jax
  from lmjax import config_base, train
  from lmjax.data import synthetic
  root = tmp_path / 'tfds'
  LmjaxTestDataSourcesMt(data_dir=str(root), file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig())
  c = config_base.load_experiment('synthetic_translation.py', 'tiny')
  c.num_train_steps = c.eval_every = c.checkpoint.every = 6
  c.decode.beam_size = 1
  c.data.update(source='tfds', name=_MT_NAME, data_dir=str(root), train_split='train',
                eval_split='validation', source_lang=direction[0], target_lang=direction[1])
  report = train.train_and_evaluate(c, str(tmp_path / 'wd'), devices=jax.devices()[:2])
  tok = tokenizers.load_tokenizer(str(tmp_path / 'wd' / 'tokenizer'))
  side = 1 if direction[1] == 'xx' else 0  # every target token of the validation split, + eos
  targets = [p[side] for p in synthetic.generate_pairs(12, 1)]
  assert report['tokens'] == sum(len(tok.encode(t)) + 1 for t in targets)
  assert 'bleu' in report
