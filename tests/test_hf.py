"""Hugging Face BERT directories in and out (lmjax.hf, import_hf, export_hf) on tiny random
checkpoints written here in both key layouts, against a numpy transcription of BERT."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lmjax import export_hf, hf, import_hf, models
from lmjax.errors import UserError

V, D, H, F, L, P, Y = 24, 8, 2, 12, 2, 16, 2
EPS = 1e-12
WORDS = ['the', 'cat', 'sat', 'on', 'mat', 'a', 'dog', 'ran', '##s', '##ed', 'café', 'big',
         'red', 'hat', 'and', 'or', 'is', 'was', 'hello']
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS


def hf_config():
  return {'architectures': ['BertForMaskedLM'], 'model_type': 'bert', 'vocab_size': V,
          'hidden_size': D, 'num_hidden_layers': L, 'num_attention_heads': H,
          'intermediate_size': F, 'hidden_act': 'gelu', 'hidden_dropout_prob': 0.1,
          'attention_probs_dropout_prob': 0.1, 'max_position_embeddings': P,
          'type_vocab_size': Y, 'initializer_range': 0.02, 'layer_norm_eps': EPS,
          'pad_token_id': 0, 'position_embedding_type': 'absolute'}


def random_tensors(seed=0, mlm=True, pooler=True):
  """Unprefixed (BertModel) keys with LayerNorm weight/bias, as torch stores them."""
  rng = np.random.default_rng(seed)
  t = {}
  w = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)
  ln = lambda name: t.update({f'{name}.weight': 1 + w(D), f'{name}.bias': w(D)})
  t['embeddings.word_embeddings.weight'] = w(V, D)
  t['embeddings.position_embeddings.weight'] = w(P, D)
  t['embeddings.token_type_embeddings.weight'] = w(Y, D)
  t['embeddings.position_ids'] = np.arange(P, dtype=np.int64)[None]
  ln('embeddings.LayerNorm')
  for i in range(L):
    p = f'encoder.layer.{i}.'
    for n in ('query', 'key', 'value'):
      t[f'{p}attention.self.{n}.weight'], t[f'{p}attention.self.{n}.bias'] = w(D, D), w(D)
    t[f'{p}attention.output.dense.weight'], t[f'{p}attention.output.dense.bias'] = w(D, D), w(D)
    ln(f'{p}attention.output.LayerNorm')
    t[f'{p}intermediate.dense.weight'], t[f'{p}intermediate.dense.bias'] = w(F, D), w(F)
    t[f'{p}output.dense.weight'], t[f'{p}output.dense.bias'] = w(D, F), w(D)
    ln(f'{p}output.LayerNorm')
  if pooler:
    t['pooler.dense.weight'], t['pooler.dense.bias'] = w(D, D), w(D)
  if mlm:
    t['cls.predictions.transform.dense.weight'] = w(D, D)
    t['cls.predictions.transform.dense.bias'] = w(D)
    ln('cls.predictions.transform.LayerNorm')
    t['cls.predictions.bias'] = w(V)
  return t


def prefixed(t):
  """The 'bert.'-prefixed layout with LayerNorm gamma/beta and the tied decoder stored."""
  out = {}
  for k, v in t.items():
    name = k if k.startswith('cls.') else 'bert.' + k
    if '.LayerNorm.' in name:
      name = name.replace('.weight', '.gamma').replace('.bias', '.beta')
    out[name] = v
  if 'cls.predictions.bias' in t:
    out['cls.predictions.decoder.weight'] = t['embeddings.word_embeddings.weight'].copy()
  return out


def write_dir(path, tensors, config=None):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config or hf_config(), f)
  save_file(tensors, os.path.join(path, 'model.safetensors'))
  with open(os.path.join(path, 'vocab.txt'), 'w') as f:
    f.write('\n'.join(VOCAB) + '\n')
  with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
    json.dump({'do_lower_case': True}, f)
  return str(path)


# ---------------------------------------------------------------- numpy transcription of BERT


def np_ln(x, g, b):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + EPS) * g + b


def np_gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_bert(t, ids, types, mask):
  """(hidden [B, T, D], pooled [B, D], MLM logits [B, T, V]) in float64."""
  t = {k: v.astype(np.float64) for k, v in t.items() if v.dtype == np.float32}
  lin = lambda x, name: x @ t[f'{name}.weight'].T + t[f'{name}.bias']
  b, n = ids.shape
  x = (t['embeddings.word_embeddings.weight'][ids] + t['embeddings.position_embeddings.weight'][
      np.arange(n)] + t['embeddings.token_type_embeddings.weight'][types])
  x = np_ln(x, t['embeddings.LayerNorm.weight'], t['embeddings.LayerNorm.bias'])
  for i in range(L):
    p = f'encoder.layer.{i}.'
    heads = lambda y: y.reshape(b, n, H, D // H).transpose(0, 2, 1, 3)  # [B, H, T, K]
    q, k, v = (heads(lin(x, f'{p}attention.self.{m}')) for m in ('query', 'key', 'value'))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H)  # [B, H, T, T]
    s = np.where(mask[:, None, None, :], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, D)
    x = np_ln(x + lin(ctx, f'{p}attention.output.dense'),
              t[f'{p}attention.output.LayerNorm.weight'], t[f'{p}attention.output.LayerNorm.bias'])
    h = lin(np_gelu(lin(x, f'{p}intermediate.dense')), f'{p}output.dense')
    x = np_ln(x + h, t[f'{p}output.LayerNorm.weight'], t[f'{p}output.LayerNorm.bias'])
  pooled = np.tanh(lin(x[:, 0], 'pooler.dense'))
  h = np_gelu(lin(x, 'cls.predictions.transform.dense'))
  h = np_ln(h, t['cls.predictions.transform.LayerNorm.weight'],
            t['cls.predictions.transform.LayerNorm.bias'])
  logits = h @ t['embeddings.word_embeddings.weight'].T + t['cls.predictions.bias']
  return x, pooled, logits


IDS = np.array([[2, 5, 6, 7, 3, 9, 10, 3], [2, 11, 12, 3, 0, 0, 0, 0]], np.int32)
TYPES = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
MASK = IDS != 0


def run_lmjax(fields, params):
  fam = models.build_lm(ml_collections.ConfigDict(fields), V)
  batch = {'inputs': jnp.asarray(IDS), 'token_types': jnp.asarray(TYPES),
           'mask': jnp.asarray(MASK)}
  hidden, pooled = fam.encode({'params': params}, batch, None, True)
  logits, carry = fam.apply({'params': params}, batch, None, None, True)
  assert carry is None and hidden.dtype == jnp.float32
  return np.asarray(hidden), np.asarray(pooled), np.asarray(logits)


@pytest.mark.parametrize('layout,scan', [('unprefixed', True), ('prefixed', False)])
def test_import_matches_numpy_bert(tmp_path, layout, scan):
  t = random_tensors()
  write_dir(tmp_path, t if layout == 'unprefixed' else prefixed(t))
  fields, params = hf.load(str(tmp_path), scan_layers=scan)
  assert fields['pooler'] and fields['layer_norm_eps'] == EPS and fields['gelu'] == 'erf'
  assert sorted(params) == ['encoder', 'mlm_head']
  assert ('layers' in params['encoder']) == scan
  got = run_lmjax(fields, params)
  want = np_bert(t, IDS, TYPES, MASK)
  for g, w in zip(got, want):
    g, w = (g[MASK], w[MASK]) if g.ndim == 3 else (g, w)  # real tokens only
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)


def test_round_trip_import_export_import_is_bitwise(tmp_path):
  t = random_tensors(seed=1)
  src = write_dir(tmp_path / 'hf', prefixed(t))
  work, out = str(tmp_path / 'work'), str(tmp_path / 'out')
  import_hf.import_dir(src, work, say=lambda *_: None)
  assert {'checkpoints', 'tokenizer', 'config.json'} <= set(os.listdir(work))
  written = export_hf.export_dir(work, out, say=lambda *_: None)
  assert {'config.json', 'model.safetensors', 'vocab.txt', 'tokenizer.json'} <= set(written)
  exported = load_file(os.path.join(out, 'model.safetensors'))
  # BertForMaskedLM's layout: 'bert.'-prefixed, weight/bias, tied decoder not stored.
  want = {('' if k.startswith('cls.') else 'bert.') + k: v for k, v in t.items()
          if k != 'embeddings.position_ids'}
  assert sorted(exported) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(exported[k], v, err_msg=k)
  f1, p1 = hf.load(src)
  f2, p2 = hf.load(out)
  assert f1 == f2
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  with pytest.raises(UserError, match='exists and is not empty'):
    import_hf.import_dir(src, work, say=lambda *_: None)


def test_bert_model_without_mlm_head_or_types_of_pooler(tmp_path):
  """A BertModel directory (no cls.*, no pooler) loads; the head is absent, pooled None."""
  t = random_tensors(mlm=False, pooler=False)
  fields, params = hf.load(write_dir(tmp_path, t))
  assert sorted(params) == ['encoder'] and not fields['pooler']
  fam = models.build_lm(ml_collections.ConfigDict(fields), V)
  hidden, pooled = fam.encode({'params': params}, {'inputs': jnp.asarray(IDS),
                                                  'token_types': jnp.asarray(TYPES),
                                                  'mask': jnp.asarray(MASK)}, None, True)
  assert pooled is None
  np.testing.assert_allclose(np.asarray(hidden)[MASK], np_bert(
      dict(random_tensors(), **t), IDS, TYPES, MASK)[0][MASK], atol=2e-5, rtol=1e-5)


def _error(path) -> str:
  with pytest.raises(UserError) as e:
    hf.load(str(path))
  msg = str(e.value)
  assert '\n' not in msg
  return msg


def test_bad_directories_are_one_line_naming_the_tensor_or_file(tmp_path):
  t = random_tensors()
  bad = dict(t)
  del bad['encoder.layer.1.output.dense.bias']
  bad['encoder.layer.0.attention.self.query.weight'] = np.zeros((D, D + 1), np.float32)
  bad['classifier.weight'] = np.zeros((2, D), np.float32)
  msg = _error(write_dir(tmp_path / 'a', bad))
  assert 'missing encoder.layer.1.output.dense.bias' in msg
  assert 'unexpected classifier.weight' in msg
  assert 'mis-shaped encoder.layer.0.attention.self.query.weight (8, 9)' in msg
  assert 'model.safetensors' in msg

  untied = prefixed(t)
  untied['cls.predictions.decoder.weight'] = untied['cls.predictions.decoder.weight'] + 1
  assert 'cls.predictions.decoder.weight differs' in _error(write_dir(tmp_path / 'b', untied))

  gpt = dict(hf_config(), model_type='gpt2', architectures=['GPT2LMHeadModel'])
  msg = _error(write_dir(tmp_path / 'c', t, gpt))
  assert "model_type 'gpt2'" in msg and 'config.json' in msg

  os.remove(os.path.join(write_dir(tmp_path / 'd', t), 'model.safetensors'))
  assert 'model.safetensors: missing' in _error(tmp_path / 'd')
  assert 'config.json: missing' in _error(tmp_path)  # no config.json at the top
  with open(os.path.join(write_dir(tmp_path / 'e', t), 'model.safetensors'), 'wb') as f:
    f.write(b'garbage')
  assert 'model.safetensors: unreadable' in _error(tmp_path / 'e')


def test_import_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
  src = write_dir(tmp_path / 'hf', dict(random_tensors(), extra=np.zeros(3, np.float32)))
  work = tmp_path / 'work'
  proc = subprocess.run([sys.executable, '-m', 'lmjax.import_hf', f'--model_dir={src}',
                         f'--workdir={work}'], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'unexpected extra' in lines[0], proc.stderr
  assert not work.exists() and sorted(os.listdir(tmp_path)) == ['hf']
