"""Tokenizers: a word vocabulary, SentencePiece and BERT WordPiece, behind one small protocol.

Every tokenizer has `kind`, `vocab_size`, `pad_id` (always 0, so batches pad with zeros and masks
are `ids != 0`), `eos_id`, `bos_id`, `unk_id`, `encode(text)` (no eos added: the pipelines append
it), `decode(ids)` (skips pad/bos/eos), `save(directory)` and `fingerprint()`.
`load_tokenizer(directory)` reads what `save` wrote: a `tokenizer.json` naming the kind and its
files, plus those files (a plain vocabulary list, a SentencePiece model proto, or a Hugging Face
`tokenizers` JSON for WordPiece). Nothing is ever unpickled.

WordPiece runs through the Hugging Face `tokenizers` library itself (not a re-implementation), so
ids match a pretrained BERT-family checkpoint exactly; lmjax controls truncation and padding
(whatever a tokenizer.json carries is switched off) and `encode_pair` adds the specials:
`[CLS] A [SEP] B [SEP]` with token types 0 for A and 1 for B.

Language modelling on raw text feeds one line at a time and ends each line with eos, so a newline
*is* eos; neither tokenizer needs a newline symbol.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from etils import epath
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_model_pb2

from lmjax.errors import UserError

TOKENIZER_JSON = 'tokenizer.json'


@runtime_checkable
class Tokenizer(Protocol):
  """What the data pipelines, metrics and decoding rely on."""
  kind: str
  vocab_size: int
  pad_id: int
  eos_id: int
  bos_id: int
  unk_id: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Iterable[int]) -> str:
    ...

  def save(self, directory: str | os.PathLike) -> None:
    ...

  def fingerprint(self) -> str:
    ...


def _write_tokenizer_json(directory: epath.Path, tok: Tokenizer, files: dict[str, str]) -> None:
  meta = {'kind': tok.kind, 'files': files, 'vocab_size': tok.vocab_size,
          'fingerprint': tok.fingerprint()}
  (directory / TOKENIZER_JSON).write_text(json.dumps(meta, indent=2) + '\n')


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
  ids = [int(i) for i in ids]  # Accepts numpy / jax arrays too.
  bad = [i for i in ids if not 0 <= i < vocab_size]
  if bad:
    # Loud on purpose: a model whose output layer is padded past the vocabulary can sample such ids.
    raise ValueError(f'token id {bad[0]} is outside the vocabulary [0, {vocab_size})')
  return ids


# ----------------------------------------------------------------------------- word vocabulary


class WordVocab:
  """Whitespace-split words for pre-tokenized corpora such as PTB.

  Ids: `<pad>`=0, `<eos>`=1, `<unk>`=2, then words by frequency (descending), ties alphabetical, so
  the same corpus always gives the same ids. A corpus that already contains `<unk>` (PTB) shares the
  special entry. There is no separate bos: `bos_id == eos_id`, as in the classic LM setup where the
  previous sentence's eos starts the next. A literal `<pad>` in the text encodes as unknown, so it
  can never be confused with padding.
  """
  kind = 'word'
  PAD, EOS, UNK = '<pad>', '<eos>', '<unk>'
  SPECIALS = (PAD, EOS, UNK)
  VOCAB_FILE = 'vocab.txt'

  def __init__(self, tokens: Sequence[str]):
    tokens = tuple(tokens)
    if tokens[:len(self.SPECIALS)] != self.SPECIALS:
      raise ValueError(f'a word vocabulary starts with {self.SPECIALS}, got {tokens[:3]}')
    if len(set(tokens)) != len(tokens):
      raise ValueError('word vocabulary has duplicate tokens')
    if any(not t or t != t.strip() or len(t.split()) != 1 for t in tokens):
      raise ValueError('word vocabulary tokens must be non-empty and contain no whitespace')
    self._tokens = tokens
    self._ids = {t: i for i, t in enumerate(tokens)}
    self._ids.pop(self.PAD)  # Text never encodes to padding.
    self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
    self.bos_id = self.eos_id
    self.vocab_size = len(tokens)

  @classmethod
  def build(cls, lines: Iterable[str], max_size: int | None = None,
            min_count: int = 1) -> WordVocab:
    """Counts the words of `lines`.

    Args:
      lines: text lines; words are split on whitespace.
      max_size: largest `vocab_size`, specials included (None: no limit).
      min_count: drop words seen fewer times.

    Returns:
      The vocabulary.
    """
    if max_size is not None and max_size < len(cls.SPECIALS) + 1:
      raise UserError(f'word vocabulary max_size={max_size} leaves no room for words '
                      f'(it includes the {len(cls.SPECIALS)} special tokens)')
    counts = collections.Counter(itertools.chain.from_iterable(line.split() for line in lines))
    for special in cls.SPECIALS:
      counts.pop(special, None)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if not words:
      raise UserError(f'cannot build a word vocabulary: no word occurs {min_count}+ times '
                      f'(config.data.min_count={min_count})')
    if max_size is not None:
      words = words[:max_size - len(cls.SPECIALS)]
    return cls(cls.SPECIALS + tuple(words))

  @property
  def tokens(self) -> tuple[str, ...]:
    """All entries, indexed by id."""
    return self._tokens

  def encode_with_oov(self, text: str) -> tuple[list[int], int]:
    """Returns the ids of `text`'s words and how many of them were out of vocabulary."""
    ids = [self._ids.get(w, -1) for w in text.split()]
    n_oov = ids.count(-1)
    if n_oov:
      ids = [self.unk_id if i < 0 else i for i in ids]
    return ids, n_oov

  def encode(self, text: str) -> list[int]:
    return self.encode_with_oov(text)[0]

  def decode(self, ids: Iterable[int]) -> str:
    skip = (self.pad_id, self.eos_id, self.bos_id)
    return ' '.join(self._tokens[i] for i in _check_ids(ids, self.vocab_size) if i not in skip)

  def fingerprint(self) -> str:
    # JSON of the token list: unambiguous, and independent of how the file was written.
    return hashlib.sha256(json.dumps([self.kind, self._tokens]).encode('utf-8')).hexdigest()

  def save(self, directory: str | os.PathLike) -> None:
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / self.VOCAB_FILE).write_text('\n'.join(self._tokens) + '\n')
    _write_tokenizer_json(directory, self, {'vocab': self.VOCAB_FILE})

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> WordVocab:
    """Reads a vocabulary written by `save` (one token per line, in id order)."""
    path = epath.Path(path)
    try:
      text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f'cannot read word vocabulary {path}: {e}') from None
    try:
      return cls(text.split('\n')[:-1] if text.endswith('\n') else text.split('\n'))
    except ValueError as e:
      raise UserError(f'word vocabulary {path} is malformed: {e}') from None

  def __repr__(self) -> str:
    return f'WordVocab(vocab_size={self.vocab_size})'


# ----------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer:
  """A SentencePiece model (unigram, BPE or char), kept as its serialized proto.

  Whitespace is kept faithfully: training uses the 'identity' normalization and keeps repeated
  spaces, so `decode(encode(s)) == s` for any line whose characters are in the vocabulary (tabs
  included; without byte fallback, unseen characters decode as ' ⁇ '). Unigram/BPE models add a
  dummy leading space so the first word of a line tokenizes like any other; char models do not, so
  each character is exactly one token.

  Ids of models trained here: pad 0, eos 1, unk 2, bos 3. A loaded model must have pad 0 and eos and
  unk ids; one without bos uses eos as bos.
  """
  kind = 'sentencepiece'
  MODEL_FILE = 'spm.model'

  def __init__(self, model_proto: bytes, *, source: str = 'SentencePiece model'):
    self._proto = bytes(model_proto)
    self._fingerprint = None
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    except (RuntimeError, OSError, ValueError) as e:
      first = (str(e).strip().splitlines() or [''])[0]
      raise UserError(f'{source} is not a valid SentencePiece model: {first}') from None
    sp = self._sp
    if sp.pad_id() != 0 or sp.eos_id() < 0 or sp.unk_id() < 0:
      raise UserError(f'{source} has pad/eos/unk ids {sp.pad_id()}/{sp.eos_id()}/{sp.unk_id()}; '
                      'lmjax needs pad id 0 and eos and unk ids')
    self.pad_id, self.eos_id, self.unk_id = 0, sp.eos_id(), sp.unk_id()
    self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else self.eos_id
    self.vocab_size = sp.get_piece_size()

  @classmethod
  def train(cls, lines: Iterable[str], vocab_size: int | None = None, *,
            model_type: str = 'unigram', character_coverage: float = 1.0, seed: int = 0,
            byte_fallback: bool = False, user_defined_symbols: Sequence[str] = (),
            add_dummy_prefix: bool | None = None, max_sentence_length: int = 16384,
            input_sentence_size: int = 0, num_threads: int = 16
            ) -> SentencePieceTokenizer:
    """Trains a model in-process on `lines` (blank lines are skipped).

    Args:
      lines: training text, one sentence/line per item.
      vocab_size: target size, specials included; an upper bound (small corpora give fewer pieces
        instead of an error). Required for unigram/BPE; for char, None keeps every character.
      model_type: 'unigram', 'bpe' or 'char'.
      character_coverage: fraction of characters the vocabulary must cover (1.0: all).
      seed: seeds SentencePiece's sampling (global to the process).
      byte_fallback: spell unseen characters as UTF-8 byte pieces instead of unk.
      user_defined_symbols: strings always kept as one piece.
      add_dummy_prefix: prepend a space to each line; None: True except for char models.
      max_sentence_length: longer lines (in bytes) are left out of training (not of encoding).
      input_sentence_size: train on a random sample of this many lines (0: all).
      num_threads: trainer threads. The pieces depend on it, so the default is fixed (16,
        SentencePiece's own) rather than the machine's core count.

    Returns:
      The trained tokenizer.
    """
    if model_type not in ('unigram', 'bpe', 'char'):
      raise UserError(f"SentencePiece model_type must be 'unigram', 'bpe' or 'char', "
                      f'got {model_type!r}')
    if vocab_size is None and model_type != 'char':
      raise UserError(f'SentencePiece {model_type} training needs a vocab_size')
    if add_dummy_prefix is None:
      add_dummy_prefix = model_type != 'char'
    options = dict(
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, eos_id=1, unk_id=2, bos_id=3,
        pad_piece='<pad>', eos_piece='</s>', unk_piece='<unk>', bos_piece='<s>',
        # Keep text as is: no NFKC, no collapsing of repeated spaces.
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=add_dummy_prefix, byte_fallback=byte_fallback,
        hard_vocab_limit=False,  # Small corpora yield fewer pieces instead of failing.
        max_sentence_length=max_sentence_length, input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True, num_threads=num_threads,
        minloglevel=2)
    if user_defined_symbols:
      options['user_defined_symbols'] = list(user_defined_symbols)
    if vocab_size is None:
      options.update(vocab_size=8, use_all_vocab=True)  # Char: every character seen.
    else:
      options['vocab_size'] = vocab_size
    spm.set_random_generator_seed(seed)
    writer = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=(line for line in lines if line), model_writer=writer, **options)
    except RuntimeError as e:
      if 'sentences_.empty()' in str(e):
        raise UserError('cannot train SentencePiece: the training text has no non-blank '
                        'line') from None
      first = (str(e).strip().splitlines() or [''])[0]
      raise UserError(f'SentencePiece training failed: {first}') from None
    return cls(writer.getvalue())

  @classmethod
  def load(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
    """Reads a `.model` file (a serialized SentencePiece ModelProto)."""
    path = epath.Path(path)
    if not path.is_file():
      raise UserError(f'SentencePiece model not found: {path}')
    return cls(path.read_bytes(), source=f'SentencePiece model {path}')

  @property
  def model_proto(self) -> bytes:
    return self._proto

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text, out_type=int)

  def decode(self, ids: Iterable[int]) -> str:
    skip = (self.pad_id, self.eos_id, self.bos_id)
    return self._sp.decode([i for i in _check_ids(ids, self.vocab_size) if i not in skip])

  def fingerprint(self) -> str:
    # Pieces, scores and normalization all change what ids a text gets; the trainer spec (thread
    # count, sampling sizes) does not, so it is left out of the hash.
    if self._fingerprint is None:
      model = sp_model_pb2.ModelProto.FromString(self._proto)
      model.ClearField('trainer_spec')
      self._fingerprint = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    return self._fingerprint

  def save(self, directory: str | os.PathLike) -> None:
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / self.MODEL_FILE).write_bytes(self._proto)
    _write_tokenizer_json(directory, self, {'model': self.MODEL_FILE})

  # Pickling (for multiprocess data workers) carries the proto bytes, never a processor object.
  def __getstate__(self) -> dict[str, bytes]:
    return {'model_proto': self._proto}

  def __setstate__(self, state: dict[str, bytes]) -> None:
    self.__init__(state['model_proto'])

  def __repr__(self) -> str:
    return f'SentencePieceTokenizer(vocab_size={self.vocab_size})'


class PairTokenizer:
  """Separate source and target SentencePiece models for translation, saved side by side.

  Acts as the target tokenizer (vocab_size, special ids, encode, decode are the target's, as
  for the losses, the output layer and the hypotheses); sources go through `encode_source`.
  Both models must agree on pad/eos/bos ids (lmjax-trained ones do: 0/1/3).
  """
  kind = 'sentencepiece_pair'

  def __init__(self, source: 'SentencePieceTokenizer', target: 'SentencePieceTokenizer'):
    for name in ('pad_id', 'eos_id', 'bos_id'):
      if getattr(source, name) != getattr(target, name):
        raise UserError(f'source and target SentencePiece models differ in {name} '
                        f'({getattr(source, name)} vs {getattr(target, name)})')
    self.source, self.target = source, target
    self.vocab_size, self.source_vocab_size = target.vocab_size, source.vocab_size
    self.pad_id, self.eos_id, self.bos_id = target.pad_id, target.eos_id, target.bos_id
    self.unk_id = target.unk_id

  def encode(self, text: str) -> list[int]:
    return self.target.encode(text)

  def encode_source(self, text: str) -> list[int]:
    return self.source.encode(text)

  def decode(self, ids: Iterable[int]) -> str:
    return self.target.decode(ids)

  def fingerprint(self) -> str:
    both = f'{self.source.fingerprint()}:{self.target.fingerprint()}'
    return hashlib.sha256(both.encode()).hexdigest()

  def save(self, directory: str | os.PathLike) -> None:
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'source.model').write_bytes(self.source.model_proto)
    (directory / 'target.model').write_bytes(self.target.model_proto)
    _write_tokenizer_json(directory, self, {'source': 'source.model', 'target': 'target.model'})

  def __repr__(self) -> str:
    return f'PairTokenizer(source={self.source_vocab_size}, target={self.vocab_size})'


# ----------------------------------------------------------------------------- WordPiece


def _hf():
  """The Hugging Face `tokenizers` package (imported on first use: LM runs never need it)."""
  try:
    import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('WordPiece needs the Hugging Face tokenizers package: '
                    'pip install tokenizers') from None
  return hf_tokenizers


class WordPieceTokenizer:
  """BERT WordPiece through the Hugging Face `tokenizers` library.

  Sources: a Hugging Face `tokenizer.json` (any model directory that has one), a BERT
  `vocab.txt` (lower-casing from a `tokenizer_config.json` beside it, else `lowercase`), or
  `train` on text (the from-scratch vocabulary of config.data.tokenizer='wordpiece').

  Padding and truncation settings stored in a tokenizer.json are switched off on load: batches
  are padded by lmjax's pipelines (pad id 0) and `encode_pair(a, b, max_len)` truncates
  longest-first with the library's own truncation on a private copy, so the shared tokenizer
  never changes state.

  Ids: pad must be 0 ('[PAD]' in every BERT vocabulary). bos is [CLS], eos is [SEP]; `encode`
  adds no specials (as the other tokenizers), `encode_pair` adds the post-processor's
  (`[CLS] A [SEP] B [SEP]`, token types 0 then 1). Vocabularies trained here: [PAD] 0,
  [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4.
  """
  kind = 'wordpiece'
  JSON_FILE = 'wordpiece.json'  # tokenizer.json is lmjax's own index file in a saved dir
  PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
  SPECIALS = (PAD, UNK, CLS, SEP, MASK)

  def __init__(self, tokenizer, *, source: str = 'WordPiece tokenizer'):
    """tokenizer: a `tokenizers.Tokenizer` (its padding and truncation are switched off)."""
    hf = _hf()
    tk = hf.Tokenizer.from_str(tokenizer.to_str())  # a private copy
    tk.no_padding()
    tk.no_truncation()
    ids = {t: tk.token_to_id(t) for t in (self.PAD, self.UNK, self.CLS, self.SEP, self.MASK)}
    missing = [t for t in (self.PAD, self.UNK, self.CLS, self.SEP) if ids[t] is None]
    if missing:
      raise UserError(f'{source} has no {", ".join(missing)} token (a BERT WordPiece '
                      'vocabulary has [PAD], [UNK], [CLS] and [SEP])')
    if ids[self.PAD] != 0:
      raise UserError(f'{source}: [PAD] has id {ids[self.PAD]}; lmjax needs pad id 0')
    if tk.post_processor is None:  # a bare vocabulary: BERT's single/pair template
      tk.post_processor = hf.processors.TemplateProcessing(
          single=f'{self.CLS} $A {self.SEP}', pair=f'{self.CLS} $A {self.SEP} $B:1 {self.SEP}:1',
          special_tokens=[(self.CLS, ids[self.CLS]), (self.SEP, ids[self.SEP])])
    self._tk = tk
    self._truncating = {}  # max_len -> a copy with the library's longest-first truncation
    self._fingerprint = None
    self.pad_id, self.unk_id = 0, ids[self.UNK]
    self.cls_id, self.sep_id = ids[self.CLS], ids[self.SEP]
    self.mask_id = ids[self.MASK]  # None when the vocabulary has no [MASK]
    self.bos_id, self.eos_id = self.cls_id, self.sep_id
    self.vocab_size = tk.get_vocab_size(with_added_tokens=True)

  # --- construction ---

  @classmethod
  def from_json(cls, text: str, *, source: str = 'tokenizer.json') -> WordPieceTokenizer:
    """A Hugging Face tokenizer.json (its text)."""
    hf = _hf()
    try:
      tk = hf.Tokenizer.from_str(text)
    except Exception as e:  # pylint: disable=broad-except  (the library raises plain Exception)
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise UserError(f'{source} is not a Hugging Face tokenizer.json: {first}') from None
    model = json.loads(text).get('model', {}).get('type')
    if model != 'WordPiece':
      raise UserError(f'{source} holds a {model} tokenizer model, not WordPiece')
    return cls(tk, source=source)

  @classmethod
  def from_vocab(cls, path: str | os.PathLike, lowercase: bool = True,
                 strip_accents: bool | None = None) -> WordPieceTokenizer:
    """A BERT vocab.txt (one token per line, in id order) with BERT's normalizer and
    pre-tokenizer; strip_accents None follows lowercase, as in BERT."""
    hf = _hf()
    path = epath.Path(path)
    try:
      tokens = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f'cannot read WordPiece vocabulary {path}: {e}') from None
    vocab = {}
    for t in tokens:
      vocab.setdefault(t, len(vocab))  # duplicates keep the first id, as BertTokenizer does
    if cls.UNK not in vocab:
      raise UserError(f'WordPiece vocabulary {path} has no {cls.UNK} token')
    tk = hf.Tokenizer(hf.models.WordPiece(vocab, unk_token=cls.UNK))
    tk.normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase,
                                                  strip_accents=strip_accents)
    tk.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    tk.decoder = hf.decoders.WordPiece()
    tk.add_special_tokens([t for t in cls.SPECIALS if t in vocab])
    return cls(tk, source=f'WordPiece vocabulary {path}')

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike) -> WordPieceTokenizer:
    """A Hugging Face model directory (tokenizer.json, else vocab.txt with do_lower_case from
    tokenizer_config.json), or one of those files itself; or an lmjax workdir or its
    tokenizer/ directory (the vocabulary a run saved, e.g. an MLM pretraining run's)."""
    path = epath.Path(path)
    if path.is_dir() and (path / 'tokenizer' / TOKENIZER_JSON).is_file():
      path = path / 'tokenizer'  # an lmjax workdir: its saved tokenizer
    if path.is_dir() and (path / cls.JSON_FILE).is_file():  # saved by lmjax (`save`)
      tok = load_tokenizer(path)
      if not isinstance(tok, cls):
        raise UserError(f'{path} holds a {tok.kind} tokenizer, not WordPiece')
      return tok
    if path.is_dir():
      for name in (TOKENIZER_JSON, 'vocab.txt'):
        if (path / name).is_file():
          return cls.from_pretrained(path / name)
      raise UserError(f'{path} has neither tokenizer.json nor vocab.txt (a WordPiece '
                      'tokenizer directory)')
    if not path.is_file():
      raise UserError(f'WordPiece tokenizer not found: {path}')
    if path.suffix == '.json':
      return cls.from_json(path.read_text(encoding='utf-8'), source=str(path))
    lowercase, strip = True, None
    config = path.parent / 'tokenizer_config.json'
    if config.is_file():
      try:
        tc = json.loads(config.read_text(encoding='utf-8'))
      except ValueError as e:
        raise UserError(f'{config} is not JSON: {e}') from None
      lowercase, strip = bool(tc.get('do_lower_case', True)), tc.get('strip_accents')
    return cls.from_vocab(path, lowercase=lowercase, strip_accents=strip)

  @classmethod
  def train(cls, lines: Iterable[str], vocab_size: int, *, lowercase: bool = True,
            min_frequency: int = 1) -> WordPieceTokenizer:
    """A new WordPiece vocabulary (the library's WordPieceTrainer) on `lines`, with BERT's
    normalizer (lower-casing and accent stripping when `lowercase`) and pre-tokenizer.

    The trainer breaks ties between equally frequent merges in hash-map order, so two trainings
    on the same text may differ in a few pieces: a run saves its vocabulary and resumes with
    it, and in a multi-process run the processes take process 0's (lmjax.data.lm)."""
    hf = _hf()
    if vocab_size <= len(cls.SPECIALS):
      raise UserError(f'WordPiece vocab_size={vocab_size} leaves no room beside the '
                      f'{len(cls.SPECIALS)} special tokens')
    tk = hf.Tokenizer(hf.models.WordPiece(unk_token=cls.UNK))
    tk.normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase)
    tk.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    tk.decoder = hf.decoders.WordPiece()
    trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                           special_tokens=list(cls.SPECIALS),
                                           show_progress=False)
    lines = [line for line in lines if line.strip()]
    if not lines:
      raise UserError('cannot train WordPiece: the training text has no non-blank line')
    tk.train_from_iterator(lines, trainer, length=len(lines))
    # The trainer's ids follow a hash map's order, which changes from run to run; WordPiece
    # matching does not depend on ids, so renumber: specials, then the pieces sorted.
    trained = tk.get_vocab(with_added_tokens=False)
    pieces = sorted(t for t in trained if t not in cls.SPECIALS)
    vocab = {t: i for i, t in enumerate(cls.SPECIALS + tuple(pieces))}
    out = hf.Tokenizer(hf.models.WordPiece(vocab, unk_token=cls.UNK))
    out.normalizer, out.pre_tokenizer, out.decoder = tk.normalizer, tk.pre_tokenizer, tk.decoder
    out.add_special_tokens(list(cls.SPECIALS))
    return cls(out, source='trained WordPiece tokenizer')

  # --- encoding ---

  def encode(self, text: str) -> list[int]:
    """Ids of `text` without special tokens."""
    return self._tk.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of many texts at once (the library's parallel batch encoding)."""
    return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]

  def _with_truncation(self, max_len: int | None):
    if max_len is None:
      return self._tk
    if max_len not in self._truncating:
      tk = _hf().Tokenizer.from_str(self._tk.to_str())
      tk.enable_truncation(max_len, strategy='longest_first')
      self._truncating[max_len] = tk
    return self._truncating[max_len]

  def encode_pairs(self, first: Sequence[str], second: Sequence[str] | None = None,
                   max_len: int | None = None) -> list[tuple[list[int], list[int]]]:
    """[(ids, token_types)] of `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` per example,
    truncated longest-first to max_len tokens (specials included) when given."""
    tk = self._with_truncation(max_len)
    inputs = list(first) if second is None else list(zip(first, second))
    try:
      encs = tk.encode_batch(inputs, add_special_tokens=True)
    except Exception as e:  # pylint: disable=broad-except
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise UserError(f'WordPiece encoding failed (max_len={max_len}): {first_line}') from None
    return [(e.ids, e.type_ids) for e in encs]

  def encode_pair(self, a: str, b: str | None = None,
                  max_len: int | None = None) -> tuple[list[int], list[int]]:
    """(ids, token_types) of one example; see `encode_pairs`."""
    return self.encode_pairs([a], None if b is None else [b], max_len)[0]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tk.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=True)

  def id_to_token(self, i: int) -> str:
    return self._tk.id_to_token(int(i))

  def token_to_id(self, token: str) -> int | None:
    return self._tk.token_to_id(token)

  # --- files ---

  def to_json(self) -> str:
    """The Hugging Face tokenizer.json text (padding and truncation off)."""
    return self._tk.to_str(pretty=True)

  def fingerprint(self) -> str:
    # The canonical JSON of the whole pipeline (normalizer, vocabulary, post-processor).
    if self._fingerprint is None:
      canon = json.dumps(json.loads(self._tk.to_str()), sort_keys=True)
      self._fingerprint = hashlib.sha256(canon.encode('utf-8')).hexdigest()
    return self._fingerprint

  def save(self, directory: str | os.PathLike) -> None:
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / self.JSON_FILE).write_text(self.to_json() + '\n', encoding='utf-8')
    _write_tokenizer_json(directory, self, {'tokenizer': self.JSON_FILE})

  def save_hf(self, directory: str | os.PathLike) -> None:
    """Hugging Face files: tokenizer.json, vocab.txt, tokenizer_config.json and
    special_tokens_map.json (what transformers' BertTokenizer(Fast) loads)."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TOKENIZER_JSON).write_text(self.to_json() + '\n', encoding='utf-8')
    vocab = self._tk.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    (directory / 'vocab.txt').write_text('\n'.join(tokens) + '\n', encoding='utf-8')
    norm = json.loads(self._tk.to_str()).get('normalizer') or {}
    specials = {'unk_token': self.UNK, 'sep_token': self.SEP, 'pad_token': self.PAD,
                'cls_token': self.CLS}
    if self.mask_id is not None:
      specials['mask_token'] = self.MASK
    config = {'tokenizer_class': 'BertTokenizer',
              'do_lower_case': bool(norm.get('lowercase', False)),
              'strip_accents': norm.get('strip_accents'),
              'tokenize_chinese_chars': bool(norm.get('handle_chinese_chars', True)),
              'model_max_length': 512, **specials}
    (directory / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n')
    (directory / 'special_tokens_map.json').write_text(json.dumps(specials, indent=2) + '\n')

  @classmethod
  def load(cls, path: str | os.PathLike) -> WordPieceTokenizer:
    """Reads a file written by `save` (a Hugging Face tokenizer.json)."""
    path = epath.Path(path)
    if not path.is_file():
      raise UserError(f'WordPiece tokenizer file not found: {path}')
    return cls.from_json(path.read_text(encoding='utf-8'), source=str(path))

  # Pickling (multiprocess data workers) carries the JSON text, never a Rust object.
  def __getstate__(self) -> dict[str, str]:
    return {'json': self._tk.to_str()}

  def __setstate__(self, state: dict[str, str]) -> None:
    self.__init__(_hf().Tokenizer.from_str(state['json']))

  def __repr__(self) -> str:
    return f'WordPieceTokenizer(vocab_size={self.vocab_size})'


# ----------------------------------------------------------------------------- loading


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
  """Reads a tokenizer saved by `save(directory)`, checking its files against its fingerprint
  (or a Hugging Face directory whose tokenizer.json is WordPiece)."""
  directory = epath.Path(directory)
  meta_path = directory / TOKENIZER_JSON
  if not meta_path.is_file():
    raise UserError(f'no tokenizer found: {meta_path} does not exist')
  try:
    meta = json.loads(meta_path.read_text())
    if isinstance(meta, dict) and 'kind' not in meta and 'model' in meta:
      return WordPieceTokenizer.from_pretrained(directory)  # a Hugging Face model directory
    kind, files = meta['kind'], meta['files']
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f'{meta_path} is malformed: {type(e).__name__}: {e}') from None
  try:
    if kind == WordVocab.kind:
      tok = WordVocab.from_file(directory / files['vocab'])
    elif kind == SentencePieceTokenizer.kind:
      tok = SentencePieceTokenizer.load(directory / files['model'])
    elif kind == WordPieceTokenizer.kind:
      tok = WordPieceTokenizer.load(directory / files['tokenizer'])
    elif kind == PairTokenizer.kind:
      tok = PairTokenizer(SentencePieceTokenizer.load(directory / files['source']),
                          SentencePieceTokenizer.load(directory / files['target']))
    else:
      raise UserError(f"{meta_path}: unknown tokenizer kind {kind!r} "
                      f"(known: '{WordVocab.kind}', '{SentencePieceTokenizer.kind}', "
                      f"'{WordPieceTokenizer.kind}', '{PairTokenizer.kind}')")
  except (KeyError, TypeError) as e:
    raise UserError(f'{meta_path}: missing file entry {e}') from None
  expected = meta.get('fingerprint')
  if expected is not None and expected != tok.fingerprint():
    raise UserError(f'tokenizer files in {directory} do not match the fingerprint in {meta_path}')
  return tok
