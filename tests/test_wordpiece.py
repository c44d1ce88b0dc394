"""WordPiece through the Hugging Face tokenizers library: the same ids as the library itself,
pairs with token types, truncation under lmjax's control, files in and out, training."""

import json
import os

import pytest
import tokenizers as hf

from lmjax.data import lm as lm_data
from lmjax.data import tokenizers
from lmjax.errors import UserError

WORDS = ['the', 'cat', 'sat', 'on', 'mat', 'dog', 'ran', 'fast', 'caf', 'run', 'a', '.', ',',
         '!', "'", 's', 'un', 'believ', 'able']
PIECES = ['##s', '##ning', '##able', '##e', '##believ', '##n', '##at']
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS + PIECES
SENTENCES = ['The cat sat on the mat.', 'A dog ran fast!', 'Unbelievable, the café cats.',
             'running dogs', '', 'the ' * 30, 'ÇAFÉ x  y', "the dog's mat"]


def library_tokenizer(lowercase=True):
  """A BERT tokenizer built with the library alone (what transformers' BertTokenizerFast does)."""
  vocab = {t: i for i, t in enumerate(VOCAB)}
  tk = hf.Tokenizer(hf.models.WordPiece(vocab, unk_token='[UNK]'))
  tk.normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase)
  tk.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
  tk.decoder = hf.decoders.WordPiece()
  tk.post_processor = hf.processors.TemplateProcessing(
      single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
      special_tokens=[('[CLS]', 2), ('[SEP]', 3)])
  tk.add_special_tokens(VOCAB[:5])
  return tk


def write_hf_dir(path, padding=True):
  """A Hugging Face directory whose tokenizer.json carries fixed padding and truncation."""
  os.makedirs(path, exist_ok=True)
  tk = library_tokenizer()
  if padding:
    tk.enable_padding(length=16, pad_id=0, pad_token='[PAD]')
    tk.enable_truncation(8)
  tk.save(os.path.join(path, 'tokenizer.json'))
  with open(os.path.join(path, 'vocab.txt'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(VOCAB) + '\n')
  return path


def test_same_ids_as_the_library_with_padding_and_truncation_off(tmp_path):
  tok = tokenizers.WordPieceTokenizer.from_pretrained(write_hf_dir(str(tmp_path / 'hf')))
  ref = library_tokenizer()  # no padding, no truncation
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (2, 3, len(VOCAB))
  for s in SENTENCES:
    assert tok.encode(s) == ref.encode(s, add_special_tokens=False).ids, s
    e = ref.encode(s)
    assert tok.encode_pair(s) == (e.ids, e.type_ids), s  # not padded to 16, not cut at 8
  assert tok.encode_batch(SENTENCES) == [tok.encode(s) for s in SENTENCES]
  ids = tok.encode('Unbelievable cats')
  assert [tok.id_to_token(i) for i in ids] == ['un', '##believ', '##able', 'cat', '##s']
  assert tok.decode(tok.encode_pair('the cat', 'a dog')[0]) == 'the cat a dog'


def test_pairs_token_types_and_longest_first_truncation():
  tok = tokenizers.WordPieceTokenizer(library_tokenizer())
  ids, types = tok.encode_pair('the cat sat', 'a dog')
  assert ids == [2, 5, 6, 7, 3, 15, 10, 3]  # [CLS] the cat sat [SEP] a dog [SEP]
  assert types == [0, 0, 0, 0, 0, 1, 1, 1]
  ref = library_tokenizer()
  a, b = 'the cat sat on the mat . the dog ran', 'a dog ran fast'
  for max_len in (5, 8, 11, 40):
    ref.enable_truncation(max_len, strategy='longest_first')
    e = ref.encode(a, b)
    got = tok.encode_pair(a, b, max_len=max_len)
    assert got == (e.ids, e.type_ids), max_len
    assert len(got[0]) == min(max_len, 3 + 10 + 4)
  # The shared tokenizer kept no truncation state.
  assert len(tok.encode_pair(a, b)[0]) == 17
  assert len(tok.encode_pair(a, max_len=4)[0]) == 4


def test_vocab_txt_and_tokenizer_json_agree(tmp_path):
  d = write_hf_dir(str(tmp_path / 'hf'), padding=False)
  from_json = tokenizers.WordPieceTokenizer.from_pretrained(os.path.join(d, 'tokenizer.json'))
  from_vocab = tokenizers.WordPieceTokenizer.from_pretrained(os.path.join(d, 'vocab.txt'))
  for s in SENTENCES:
    assert from_vocab.encode_pair(s, 'a dog') == from_json.encode_pair(s, 'a dog'), s
  with open(os.path.join(d, 'tokenizer_config.json'), 'w') as f:
    json.dump({'do_lower_case': False}, f)
  cased = tokenizers.WordPieceTokenizer.from_pretrained(os.path.join(d, 'vocab.txt'))
  assert cased.encode('The') == [1] and from_vocab.encode('The') == [5]  # [UNK] vs 'the'


def test_save_load_and_hf_files_round_trip(tmp_path):
  tok = tokenizers.WordPieceTokenizer(library_tokenizer())
  tok.save(str(tmp_path / 'saved'))
  back = tokenizers.load_tokenizer(str(tmp_path / 'saved'))
  assert back.kind == 'wordpiece' and back.fingerprint() == tok.fingerprint()
  tok.save_hf(str(tmp_path / 'hf'))
  assert sorted(os.listdir(tmp_path / 'hf')) == ['special_tokens_map.json', 'tokenizer.json',
                                                 'tokenizer_config.json', 'vocab.txt']
  assert json.load(open(tmp_path / 'hf' / 'tokenizer_config.json'))['do_lower_case'] is True
  hf_back = tokenizers.load_tokenizer(str(tmp_path / 'hf'))  # a Hugging Face directory
  assert hf_back.fingerprint() == tok.fingerprint()
  # The library reads the exported file with the same ids.
  ref = hf.Tokenizer.from_file(str(tmp_path / 'hf' / 'tokenizer.json'))
  for s in SENTENCES:
    assert ref.encode(s).ids == tok.encode_pair(s)[0]
  # A changed file no longer matches the saved fingerprint.
  path = tmp_path / 'saved' / 'wordpiece.json'
  path.write_text(path.read_text().replace('"##ning"', '"##nink"'))
  with pytest.raises(UserError, match='do not match the fingerprint'):
    tokenizers.load_tokenizer(str(tmp_path / 'saved'))


def test_bad_tokenizers_are_one_line_errors(tmp_path):
  vocab = {t: i for i, t in enumerate(['[UNK]', '[PAD]', '[CLS]', '[SEP]', 'a'])}
  tk = hf.Tokenizer(hf.models.WordPiece(vocab, unk_token='[UNK]'))
  with pytest.raises(UserError, match='pad id 0'):
    tokenizers.WordPieceTokenizer(tk)
  no_sep = hf.Tokenizer(hf.models.WordPiece({'[PAD]': 0, '[UNK]': 1, '[CLS]': 2},
                                            unk_token='[UNK]'))
  with pytest.raises(UserError, match=r'no \[SEP\]'):
    tokenizers.WordPieceTokenizer(no_sep)
  bpe = hf.Tokenizer(hf.models.BPE())
  bpe.save(str(tmp_path / 'bpe.json'))
  with pytest.raises(UserError, match='BPE tokenizer model, not WordPiece'):
    tokenizers.WordPieceTokenizer.from_pretrained(str(tmp_path / 'bpe.json'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='neither tokenizer.json nor vocab.txt'):
    tokenizers.WordPieceTokenizer.from_pretrained(str(tmp_path / 'empty'))


def test_trained_from_the_training_text_through_the_data_config(tmp_path):
  import ml_collections
  lines = ['The cat sat on the mat.', 'A dog ran fast!', 'Cats and dogs ran.'] * 50
  cfg = ml_collections.ConfigDict({'tokenizer': 'wordpiece', 'vocab_size': 60,
                                   'wordpiece_vocab': '', 'lowercase': True, 'spm_model': '',
                                   'source': 'text', 'train': 'x'})
  tok = lm_data.build_tokenizer(cfg, lines, str(tmp_path))
  assert tok.kind == 'wordpiece' and tok.vocab_size <= 60
  assert [tok.id_to_token(i) for i in range(5)] == list(tokenizers.WordPieceTokenizer.SPECIALS)
  assert tok.decode(tok.encode('The cat sat.')) == 'the cat sat.'
  assert tok.unk_id not in tok.encode('dogs ran fast')
  # A resumed run loads the saved vocabulary rather than training another.
  again = lm_data.build_tokenizer(cfg, lines, str(tmp_path))
  assert again.fingerprint() == tok.fingerprint()
  with pytest.raises(UserError, match='no room'):
    tokenizers.WordPieceTokenizer.train(lines, 5)
