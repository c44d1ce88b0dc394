"""Language-modelling input: corpus -> tokenizer -> token stream -> batches.

config.data fields:
  source: synthetic | text | tfds
  train, eval, test: file paths (text; test is optional, evaluated at the end); eval_fraction: split the train file's last lines off as
    eval when eval is empty; name, train_split, eval_split, data_dir, text_key (tfds)
  tokenizer: word | sentencepiece | char | wordpiece;  vocab_size (sentencepiece, wordpiece),
    spm_model (a trained .model file to load instead of training one), spm_type (unigram |
    bpe), spm_input_sentence_size (train on a sample of this many lines; 0 = all);
    wordpiece_vocab (a Hugging Face directory, tokenizer.json or vocab.txt to load instead of
    training one), lowercase (a trained WordPiece vocabulary lower-cases and strips accents)
  synthetic_lines, synthetic_eval_lines, seed (synthetic)

Every line becomes its tokens followed by <eos>, and the split is one stream that starts with
<eos>, so every token of the split (each <eos> included) is predicted exactly once. Train
batches are windows of seq_len+1 tokens with stride seq_len, shuffled per epoch (`WindowIterator`)
or fed in order as contiguous streams for truncated BPTT (`BpttIterator`). Both iterators are
deterministic and expose get_state()/set_state() so that a checkpoint can resume them exactly.
"""

import dataclasses
import hashlib
import json
from typing import Any, Iterator, Optional

import jax
import numpy as np

from lmjax import paths
from lmjax.data import clean, synthetic, text, tokenizers
from lmjax.errors import UserError, warn


@dataclasses.dataclass
class Corpus:
  """A tokenized split and what per-word and per-byte metrics need."""
  stream: np.ndarray  # int32 [N + 1]: <eos>, tokens of line 1, <eos>, tokens of line 2, ...
  num_words: int  # whitespace words + one <eos> per line
  num_bytes: int  # UTF-8 bytes, one newline per line
  num_oov: int = 0  # words mapped to <unk> (word-level tokenizers)

  @property
  def num_predictions(self) -> int:
    return len(self.stream) - 1


def raw_lines(cfg: Any, split: str) -> list[str]:
  """The text lines of a split (config.data.source: synthetic, text or tfds), cleaned by
  config.data.clean when any of its options is on."""
  return clean_lines(cfg, _source_lines(cfg, split), f'config.data.{split}')


def clean_lines(cfg: Any, lines: list[str], what: str) -> list[str]:
  """`lines` through config.data.clean (lmjax/data/clean.py); one log line of what changed."""
  if not cfg.get('clean'):
    return lines
  cleaner = clean.Cleaner(cfg.clean)
  if not cleaner.active:
    return lines
  lines = cleaner.clean(lines)
  cleaner.check_not_empty(lines, what)
  if jax.process_index() == 0:
    print(cleaner.describe(what), flush=True)
  return lines


def _source_lines(cfg: Any, split: str) -> list[str]:
  if cfg.source == 'synthetic':
    n = cfg.synthetic_lines if split == 'train' else cfg.synthetic_eval_lines
    return synthetic.generate_lines(n, cfg.seed + (0 if split == 'train' else 1))
  if cfg.source == 'text':
    frac = float(cfg.get('eval_fraction', 0.0))
    if frac and not cfg.eval:
      # One file split by lines: the last eval_fraction for eval (as char-rnn / nanoGPT do).
      lines = text.read_lines(cfg.train, what='config.data.train')
      cut = len(lines) - max(1, int(round(len(lines) * frac)))
      return lines[:cut] if split == 'train' else lines[cut:]
    path = cfg.train if split == 'train' else cfg.eval
    if not path:
      raise UserError(f'config.data.{split} must be set for data.source=text '
                      '(or config.data.eval_fraction to split the training file)')
    return text.read_lines(path, what=f'config.data.{split}')
  if cfg.source == 'tfds':
    from lmjax.data import tfds_source  # tensorflow_datasets is slow to import
    return tfds_source.load_text_split(
        cfg.name, cfg.train_split if split == 'train' else cfg.eval_split,
        text_key=cfg.get('text_key') or None, data_dir=cfg.get('data_dir') or None)
  raise UserError(f'config.data.source: unknown source {cfg.source!r} (synthetic, text, tfds)')


TRAINING_TEXT = 'training_text.json'  # beside the saved tokenizer: what it was built from


def _text_digest(lines: list[str]) -> str:
  h = hashlib.sha256()
  for line in lines:
    h.update(line.encode('utf-8', 'surrogatepass') + b'\n')
  return h.hexdigest()


def _training_source(cfg: Any) -> str:
  if cfg.source == 'text':
    return f'config.data.train={cfg.train}'
  if cfg.source == 'tfds':
    return f'config.data.name={cfg.name} split {cfg.train_split}'
  return f'config.data.source={cfg.source}'


def record_training_text(saved: str, lines: list[str], cfg: Any) -> None:
  """Notes (digest, line count, source) of the text a new tokenizer was built from."""
  paths.write_text(paths.join(saved, TRAINING_TEXT), json.dumps(
      {'sha256': _text_digest(lines), 'lines': len(lines), 'source': _training_source(cfg)}))


def check_training_text(saved: str, lines: list[str], cfg: Any) -> None:
  """A resumed run keeps its saved vocabulary; warn when the training text has changed."""
  path = paths.join(saved, TRAINING_TEXT)
  if jax.process_index() or not paths.exists(path):
    return
  was = json.loads(paths.read_text(path))
  if was.get('sha256') != _text_digest(lines):
    warn(f'{_training_source(cfg)}: the training text differs from the text the '
         f'vocabulary in {saved} was built from ({was.get("source")}, {was.get("lines"):,} '
         f'lines; now {len(lines):,}); the run keeps that vocabulary (new words map to '
         '<unk>): use a new workdir to build one from this text')


def warn_small_vocab(field: str, asked: int, got: int) -> None:
  if jax.process_index() == 0:
    warn(f'{field}={asked:,}: the training text supports only {got:,} SentencePiece pieces; '
         f'the vocabulary has {got:,}')


def build_tokenizer(cfg: Any, train_lines: list[str], workdir: Optional[str]):
  """The workdir's tokenizer if one was saved there by a run with checkpoints (a resumed
  run), else a new one (saved there). A tokenizer without any checkpoint belongs to no model
  (a run refused before its first save, e.g. by a warm start's vocabulary check) and is built
  again, so the corrected command works in the same workdir."""
  saved = paths.join(workdir, 'tokenizer') if workdir else None
  has_steps = bool(workdir) and any(d.isdigit()
                                    for d in paths.listdir(paths.join(workdir, 'checkpoints')))
  if saved and has_steps and paths.exists(paths.join(saved, 'tokenizer.json')):
    check_training_text(saved, train_lines, cfg)
    tok = tokenizers.load_tokenizer(saved)
    if cfg.get('spm_model'):
      given = tokenizers.SentencePieceTokenizer.load(cfg.spm_model)
      if given.fingerprint() != tok.fingerprint():
        raise UserError(f'config.data.spm_model={cfg.spm_model} does not match the tokenizer '
                        f'saved with the checkpoints in {saved}')
    if cfg.get('wordpiece_vocab') and cfg.get('tokenizer') == 'wordpiece':
      given = tokenizers.WordPieceTokenizer.from_pretrained(cfg.wordpiece_vocab)
      if given.fingerprint() != tok.fingerprint():
        raise UserError(f'config.data.wordpiece_vocab={cfg.wordpiece_vocab} does not match the '
                        f'tokenizer saved with the checkpoints in {saved}')
    return tok
  kind = cfg.tokenizer
  if kind == 'word':
    if cfg.get('spm_model'):
      raise UserError(f'config.data.spm_model={cfg.spm_model} is a SentencePiece model but '
                      "config.data.tokenizer='word' builds a word vocabulary: set "
                      "config.data.tokenizer='sentencepiece' to use it, or clear spm_model")
    tok = tokenizers.WordVocab.build(train_lines, max_size=(
        int(cfg.max_vocab) + len(tokenizers.WordVocab.SPECIALS) if cfg.get('max_vocab')
        else None), min_count=int(cfg.get('min_count', 1)))
  elif kind in ('sentencepiece', 'char'):
    if cfg.get('spm_model'):
      tok = tokenizers.SentencePieceTokenizer.load(cfg.spm_model)
    else:
      tok = tokenizers.SentencePieceTokenizer.train(
          train_lines, vocab_size=cfg.vocab_size,
          model_type='char' if kind == 'char' else cfg.get('spm_type', 'unigram'),
          input_sentence_size=int(cfg.get('spm_input_sentence_size', 0)))
      if kind == 'sentencepiece' and tok.vocab_size < cfg.vocab_size:
        warn_small_vocab('config.data.vocab_size', cfg.vocab_size, tok.vocab_size)
  elif kind == 'wordpiece':
    tok = wordpiece_tokenizer(cfg, train_lines)
  else:
    raise UserError(f'config.data.tokenizer: unknown tokenizer {kind!r} '
                    '(word, sentencepiece, char, wordpiece)')
  if saved and jax.process_index() == 0:  # one writer; the others built the same tokenizer
    tok.save(saved)
    record_training_text(saved, train_lines, cfg)
  return tok


def wordpiece_tokenizer(cfg: Any, train_lines: list[str]):
  """config.data.wordpiece_vocab (a Hugging Face directory, tokenizer.json or vocab.txt), or a
  vocabulary of config.data.vocab_size trained on the training text (process 0 trains; the
  library's trainer is not deterministic, so the other processes take its result)."""
  if cfg.get('spm_model'):
    raise UserError(f'config.data.spm_model={cfg.spm_model} is a SentencePiece model but '
                    "config.data.tokenizer='wordpiece': set config.data.wordpiece_vocab "
                    'instead, or clear spm_model')
  if cfg.get('wordpiece_vocab'):
    return tokenizers.WordPieceTokenizer.from_pretrained(cfg.wordpiece_vocab)
  train = lambda: tokenizers.WordPieceTokenizer.train(
      train_lines, cfg.vocab_size, lowercase=bool(cfg.get('lowercase', True)))
  if jax.process_count() == 1:
    return train()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  text = train().to_json().encode('utf-8') if jax.process_index() == 0 else b''
  size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(text), np.int64)))
  buf = np.zeros(size, np.uint8)
  buf[:len(text)] = np.frombuffer(text, np.uint8)
  text = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8))
  return tokenizers.WordPieceTokenizer.from_json(text.decode('utf-8'), source='process 0\'s '
                                                 'WordPiece vocabulary')


def encode_corpus(lines: list[str], tok: Any) -> Corpus:
  pieces = [np.asarray([tok.eos_id], np.int32)]
  num_words = num_oov = 0
  word_level = isinstance(tok, tokenizers.WordVocab)
  for line in lines:
    if word_level:
      ids, oov = tok.encode_with_oov(line)
      num_oov += oov
    else:
      ids = tok.encode(line)
    pieces.append(np.asarray(ids + [tok.eos_id], np.int32))
    num_words += len(line.split()) + 1
  return Corpus(stream=np.concatenate(pieces), num_words=num_words,
                num_bytes=text.count_utf8_bytes(lines), num_oov=num_oov)


def load_lm_data(cfg: Any, workdir: Optional[str]):
  """Returns (tokenizer, train Corpus, eval Corpus, test Corpus or None)."""
  train_lines = raw_lines(cfg, 'train')
  eval_lines = raw_lines(cfg, 'eval')
  tok = build_tokenizer(cfg, train_lines, workdir)
  test = None
  if cfg.get('test'):
    test = encode_corpus(clean_lines(cfg, text.read_lines(cfg.test, what='config.data.test'),
                                     'config.data.test'), tok)
  return tok, encode_corpus(train_lines, tok), encode_corpus(eval_lines, tok), test


def _window_batch(stream: np.ndarray, starts: np.ndarray, seq_len: int) -> dict:
  idx = starts[:, None] + np.arange(seq_len + 1)  # [B, T+1]
  valid = idx < len(stream)
  w = stream[np.minimum(idx, len(stream) - 1)] * valid
  return {'inputs': w[:, :-1].astype(np.int32), 'targets': w[:, 1:].astype(np.int32),
          'weights': valid[:, 1:].astype(np.float32)}


class WindowIterator:
  """Shuffled non-overlapping windows: batch [B, T] of inputs/targets/weights, endless."""

  def __init__(self, stream: np.ndarray, batch_size: int, seq_len: int, seed: int):
    self.stream, self.batch_size, self.seq_len, self.seed = stream, batch_size, seq_len, seed
    self.num_windows = (len(stream) - 1) // seq_len
    self.steps_per_epoch = self.num_windows // batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split has {len(stream) - 1} tokens: too few for one batch '
                      f'of config.batch_size={batch_size} x config.seq_len={seq_len}')
    self.epoch, self.index = 0, 0

  def get_state(self) -> dict:
    return {'epoch': self.epoch, 'index': self.index}

  def set_state(self, state: dict) -> None:
    self.epoch, self.index = int(state['epoch']), int(state['index'])

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_windows)
    sel = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
    self.index += 1
    return _window_batch(self.stream, sel * self.seq_len, self.seq_len)


def bptt_layout(stream: np.ndarray, batch_size: int, seq_len: int, pad: bool):
  """Split the stream into batch_size contiguous rows: (data [B, N+1], valid [B, N+1]).

  pad=False drops the remainder (training); pad=True keeps every token, padding the last row.
  Row r holds tokens r*N .. (r+1)*N, one token of overlap so each row's targets follow on.
  """
  n = len(stream) - 1
  per_row = -(-n // batch_size) if pad else n // batch_size
  if per_row < 1 or (not pad and per_row < seq_len):
    raise UserError(f'the split has {n} tokens: too few for config.batch_size={batch_size} '
                    f'streams of config.seq_len={seq_len}')
  idx = np.arange(batch_size)[:, None] * per_row + np.arange(per_row + 1)  # [B, N+1]
  valid = idx <= n
  return stream[np.minimum(idx, n)] * valid, valid


class BpttIterator:
  """Stateful truncated BPTT: consecutive windows of each contiguous stream, in order.

  'reset' is 1 on the first window of each epoch: the trainer zeroes the carried state then.
  """

  def __init__(self, stream: np.ndarray, batch_size: int, seq_len: int, seed: int = 0):
    del seed  # the order is fixed by definition
    self.data, _ = bptt_layout(stream, batch_size, seq_len, pad=False)
    self.seq_len = seq_len
    self.steps_per_epoch = (self.data.shape[1] - 1) // seq_len
    self.epoch, self.index = 0, 0

  get_state = WindowIterator.get_state
  set_state = WindowIterator.set_state

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    s = self.index * self.seq_len
    w = self.data[:, s:s + self.seq_len + 1]
    self.index += 1
    b = w.shape[0]
    return {'inputs': w[:, :-1].astype(np.int32), 'targets': w[:, 1:].astype(np.int32),
            'weights': np.ones((b, self.seq_len), np.float32),
            'reset': np.asarray(1 if s == 0 else 0, np.int32)}


def eval_batches(stream: np.ndarray, batch_size: int, seq_len: int,
                 stateful: bool) -> list[dict]:
  """Batches that predict every token of the split once; padding has weight 0.

  stateful=False: independent windows (Transformer); the window count is padded to a multiple
  of the batch size. stateful=True: contiguous rows fed in order (RNN with carried state).
  """
  if stateful:
    data, valid = bptt_layout(stream, batch_size, seq_len, pad=True)
    steps = -(-(data.shape[1] - 1) // seq_len)
    out = []
    for i in range(steps):
      s = i * seq_len
      w = np.zeros((batch_size, seq_len + 1), np.int32)
      v = np.zeros((batch_size, seq_len + 1), bool)
      chunk = data[:, s:s + seq_len + 1]
      w[:, :chunk.shape[1]] = chunk
      v[:, :chunk.shape[1]] = valid[:, s:s + seq_len + 1]
      out.append({'inputs': w[:, :-1], 'targets': w[:, 1:],
                  'weights': v[:, 1:].astype(np.float32),
                  'reset': np.asarray(1 if i == 0 else 0, np.int32)})
    return out
  num_windows = -(-(len(stream) - 1) // seq_len)
  num_windows = -(-num_windows // batch_size) * batch_size
  starts = np.arange(num_windows) * seq_len
  return [_window_batch(stream, starts[i:i + batch_size], seq_len)
          for i in range(0, num_windows, batch_size)]
