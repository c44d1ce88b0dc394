"""The source sentences both translation benchmarks decode, as token ids: the same on both sides.

benchmarks/translation.py (lmjax) and benchmarks/torch_translation.py (Hugging Face) run in
separate processes, perhaps under different interpreters, and decode with RANDOM-INIT weights,
so the text of a source does not matter, only its length in tokens. Both call `sources(...)`
here: standard library only, deterministic from the seed.

Lengths:
  --source FILE: per line, round(PIECES_PER_TOKEN x (words + punctuation marks)) + 1 (eos).
    PIECES_PER_TOKEN was measured once: the trainer's tokenizer for
    experiments/multi30k_transformer.py (a joint 8k unigram SentencePiece trained on
    train.en + train.de) cuts test_2016_flickr.en into 14,615 pieces, 1.117 per word or
    punctuation mark; this rule gives a mean of 15.61 tokens with eos (SentencePiece: 15.62),
    1.3 tokens off per sentence on average.
  no file: lengths drawn from SPM_LENGTHS, the histogram of those 1,000 SentencePiece lengths.
Ids: uniform in [FIRST_ID, vocab) for every token but the last, which is EOS (the trainer's
SentencePiece ids: pad 0, eos 1, unk 2, bos 3). Lengths are cut to the model's max_len so that
every source keeps its eos.

Batching and the decode length follow lmjax.decoding.decode_ids: sources sorted by length
(stable), batches of batch_size; a batch's longest hypothesis may take
min(max_len, ceil(ratio x longest source) + offset) tokens, eos included (config.decode's
max_len_ratio 1.5 and max_len_offset 10). With random weights nothing ends early, so every
batch runs that many decoder steps; the peer passes it as max_new_tokens.
"""

import math
import random
import re

PAD, EOS, UNK, BOS = 0, 1, 2, 3
FIRST_ID = 4
PIECES_PER_TOKEN = 1.117
# Sentence length (pieces + eos) -> count, test_2016_flickr.en under the joint 8k SentencePiece.
SPM_LENGTHS = {6: 2, 7: 3, 8: 16, 9: 36, 10: 59, 11: 73, 12: 101, 13: 105, 14: 92, 15: 81,
               16: 81, 17: 69, 18: 49, 19: 52, 20: 38, 21: 29, 22: 23, 23: 24, 24: 14, 25: 9,
               26: 4, 27: 7, 28: 3, 29: 4, 30: 10, 31: 3, 32: 3, 33: 2, 34: 3, 35: 2, 36: 1,
               37: 2}
_TOKENS = re.compile(r'\w+|[^\w\s]')


def lengths_from_file(path: str) -> list:
  """Estimated SentencePiece lengths (eos included) of the lines of a text file."""
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  return [round(PIECES_PER_TOKEN * len(_TOKENS.findall(line))) + 1 for line in lines]


def random_lengths(n: int, seed: int = 0) -> list:
  """n lengths drawn from SPM_LENGTHS."""
  rng = random.Random(seed)
  values, weights = list(SPM_LENGTHS), list(SPM_LENGTHS.values())
  return rng.choices(values, weights=weights, k=n)


def sources(vocab: int, max_len: int, *, path: str = '', n: int = 1000, seed: int = 0) -> list:
  """Token-id lists ending in EOS: one per line of `path` (its first n; n=0: all), or n random."""
  lengths = lengths_from_file(path) if path else random_lengths(n, seed)
  if path and n:
    lengths = lengths[:n]
  rng = random.Random(seed + 1)
  out = []
  for length in lengths:
    length = max(1, min(length, max_len))
    out.append([FIRST_ID + int(rng.random() * (vocab - FIRST_ID)) for _ in range(length - 1)]
               + [EOS])
  return out


def batches(srcs: list, batch_size: int) -> list:
  """Index lists of lmjax.decoding.decode_ids' batches: sorted by length (stable)."""
  order = sorted(range(len(srcs)), key=lambda i: len(srcs[i]))
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def decode_steps(longest: int, max_len: int, ratio: float = 1.5, offset: int = 10) -> int:
  """Output tokens (eos included) the longest hypothesis of a batch may take."""
  return min(max_len, int(math.ceil(ratio * longest)) + offset)
