"""Hugging Face BERT directories <-> lmjax parameters (lmjax.models.bert), without torch.

  fields, params = hf.load(HFDIR)        # config.model fields and {'encoder', 'mlm_head'?}
  hf.save(params, fields, OUT, tokenizer_dir=None)   # config.json + model.safetensors (+ tok)

A directory holds config.json (model_type 'bert') and model.safetensors, read with the
safetensors package's numpy API. Both key layouts in circulation are read:

  unprefixed (BertModel, sentence-transformers)  embeddings.word_embeddings.weight,
      encoder.layer.N.attention.self.query.weight, ..., LayerNorm.weight / LayerNorm.bias
  'bert.'-prefixed (BertForMaskedLM / BertForPreTraining, the original TF conversions)
      bert.embeddings..., often with LayerNorm.gamma / LayerNorm.beta

and the masked-LM head cls.predictions.* when present (its decoder is the word embeddings:
cls.predictions.decoder.weight, when stored, must equal them). torch Linear weights are
[out, in]: kernels are their transposes, reshaped to lmjax's [D, H, K] / [H, K, D] attention
layout. The position_ids buffer and the next-sentence head (cls.seq_relationship) are not
parameters of lmjax's model and are skipped. Missing, unexpected or mis-shaped tensors are one
UserError line listing them.

Parameter names on the lmjax side (per layer, stacked on a leading axis under 'layers' when
config.model.scan_layers, else under 'layer_i'):

  encoder/embeddings/{word, position, token_type, ln/{scale, bias}}
  encoder/layers/attn/{query, key, value [D, H, K], out [H, K, D], bias_query, ...}
  encoder/layers/{ln_attn, ln_mlp}/{scale, bias}, encoder/layers/mlp/{wi, bi, wo, bo}
  encoder/pooler/{kernel, bias}; mlm_head/{dense/{kernel, bias}, ln/{scale, bias}, bias}
"""

import json
import os
import shutil
from typing import Any, Optional

import numpy as np

from lmjax.errors import UserError

MODEL_TYPES = ('bert',)
GELU = {'gelu': 'erf', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu_fast': 'tanh'}
WEIGHTS = 'model.safetensors'
# Tokenizer files of a Hugging Face directory (copied in and out as they are).
TOKENIZER_FILES = ('tokenizer.json', 'vocab.txt', 'tokenizer_config.json',
                   'special_tokens_map.json')
SKIPPED = ('embeddings.position_ids', 'cls.seq_relationship.')
MAX_LISTED = 8


def _where(model_dir: str, name: str) -> str:
  return os.path.join(model_dir, name)


def read_config(model_dir: str) -> dict:
  """config.json of a BERT-family directory; one line for anything else."""
  path = _where(model_dir, 'config.json')
  if not os.path.isdir(model_dir):
    raise UserError(f'--model_dir {model_dir}: no such directory')
  try:
    with open(path) as f:
      config = json.load(f)
  except FileNotFoundError:
    raise UserError(f'{path}: missing (not a Hugging Face model directory)') from None
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: unreadable ({type(e).__name__}: {e})') from None
  if not isinstance(config, dict):
    raise UserError(f'{path}: not a JSON object')
  kind = config.get('model_type')
  if kind not in MODEL_TYPES:
    arch = ', '.join(config.get('architectures') or []) or 'none given'
    raise UserError(f'{path}: model_type {kind!r} (architectures: {arch}) is not a BERT model '
                    f'(supported: {", ".join(MODEL_TYPES)})')
  return config


def model_fields(config: dict, where: str = 'config.json') -> dict:
  """A Hugging Face BERT config.json -> lmjax config.model fields (model name 'bert')."""
  act = config.get('hidden_act', 'gelu')
  if act not in GELU:
    raise UserError(f'{where}: hidden_act {act!r} is not one of {sorted(GELU)}')
  pos = config.get('position_embedding_type', 'absolute')
  if pos != 'absolute':
    raise UserError(f'{where}: position_embedding_type {pos!r}: only absolute positions')
  try:
    fields = {
        'name': 'bert', 'vocab_size': int(config['vocab_size']),
        'd_model': int(config['hidden_size']), 'num_heads': int(config['num_attention_heads']),
        'num_layers': int(config['num_hidden_layers']),
        'd_ff': int(config['intermediate_size']),
        'max_len': int(config['max_position_embeddings']),
        'type_vocab_size': int(config.get('type_vocab_size', 2)),
        'dropout_rate': float(config.get('hidden_dropout_prob', 0.1)),
        'attention_dropout_rate': float(config.get('attention_probs_dropout_prob', 0.1)),
        'layer_norm_eps': float(config.get('layer_norm_eps', 1e-12)),
        'initializer_range': float(config.get('initializer_range', 0.02)),
        'gelu': GELU[act], 'norm': 'post', 'position': 'learned'}
  except KeyError as e:
    raise UserError(f'{where}: missing field {e.args[0]!r}') from None
  except (TypeError, ValueError) as e:
    raise UserError(f'{where}: bad field value ({e})') from None
  if fields['d_model'] % max(fields['num_heads'], 1):
    raise UserError(f'{where}: num_attention_heads={fields["num_heads"]} does not divide '
                    f'hidden_size={fields["d_model"]}')
  return fields


# ----------------------------------------------------------------------------------------
# The name map: HF key (unprefixed, LayerNorm weight/bias) -> (lmjax path, how to convert).
# ----------------------------------------------------------------------------------------


def _key_map(f: dict, pooler: bool, mlm: bool) -> dict:
  """{hf key: (lmjax path tuple below a layer or the root, layer or None, kind, shape)}.

  kind: 'copy', 'linear' (kernel = weightᵀ), 'qkv' (weightᵀ -> [D, H, K]), 'qkv_bias' ([H, K]),
  'out' (weightᵀ -> [H, K, D]).
  """
  d, f_ = f['d_model'], f['d_ff']
  m = {}

  def ln(hf, path, layer=None):
    m[f'{hf}.weight'] = (path + ('scale',), layer, 'copy', (d,))
    m[f'{hf}.bias'] = (path + ('bias',), layer, 'copy', (d,))

  emb = ('encoder', 'embeddings')
  m['embeddings.word_embeddings.weight'] = (emb + ('word',), None, 'copy',
                                            (f['vocab_size'], d))
  m['embeddings.position_embeddings.weight'] = (emb + ('position',), None, 'copy',
                                                (f['max_len'], d))
  if f['type_vocab_size']:
    m['embeddings.token_type_embeddings.weight'] = (emb + ('token_type',), None, 'copy',
                                                    (f['type_vocab_size'], d))
  ln('embeddings.LayerNorm', emb + ('ln',))
  for i in range(f['num_layers']):
    p = f'encoder.layer.{i}.'
    for name in ('query', 'key', 'value'):
      m[f'{p}attention.self.{name}.weight'] = (('attn', name), i, 'qkv', (d, d))
      m[f'{p}attention.self.{name}.bias'] = (('attn', f'bias_{name}'), i, 'qkv_bias', (d,))
    m[f'{p}attention.output.dense.weight'] = (('attn', 'out'), i, 'out', (d, d))
    m[f'{p}attention.output.dense.bias'] = (('attn', 'bias_out'), i, 'copy', (d,))
    ln(f'{p}attention.output.LayerNorm', ('ln_attn',), i)
    m[f'{p}intermediate.dense.weight'] = (('mlp', 'wi'), i, 'linear', (f_, d))
    m[f'{p}intermediate.dense.bias'] = (('mlp', 'bi'), i, 'copy', (f_,))
    m[f'{p}output.dense.weight'] = (('mlp', 'wo'), i, 'linear', (d, f_))
    m[f'{p}output.dense.bias'] = (('mlp', 'bo'), i, 'copy', (d,))
    ln(f'{p}output.LayerNorm', ('ln_mlp',), i)
  if pooler:
    m['pooler.dense.weight'] = (('encoder', 'pooler', 'kernel'), None, 'linear', (d, d))
    m['pooler.dense.bias'] = (('encoder', 'pooler', 'bias'), None, 'copy', (d,))
  if mlm:
    m['cls.predictions.transform.dense.weight'] = (('mlm_head', 'dense', 'kernel'), None,
                                                   'linear', (d, d))
    m['cls.predictions.transform.dense.bias'] = (('mlm_head', 'dense', 'bias'), None, 'copy',
                                                 (d,))
    ln('cls.predictions.transform.LayerNorm', ('mlm_head', 'ln'))
    m['cls.predictions.bias'] = (('mlm_head', 'bias'), None, 'copy', (f['vocab_size'],))
  return m


def _to_lmjax(x: np.ndarray, kind: str, h: int) -> np.ndarray:
  if kind == 'linear':
    return x.T
  if kind == 'qkv':
    return x.T.reshape(x.shape[1], h, -1)  # [D, H, K]
  if kind == 'qkv_bias':
    return x.reshape(h, -1)  # [H, K]
  if kind == 'out':
    return x.T.reshape(h, -1, x.shape[0])  # [H, K, D]
  return x


def _to_hf(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'linear':
    return x.T
  if kind == 'qkv':
    return x.reshape(x.shape[0], -1).T  # [D_out, D_in]
  if kind == 'qkv_bias':
    return x.reshape(-1)
  if kind == 'out':
    return x.reshape(-1, x.shape[-1]).T
  return x


def _normalise_key(key: str) -> str:
  """'bert.'-prefixed, gamma/beta keys -> the unprefixed weight/bias spelling."""
  if key.startswith('bert.'):
    key = key[len('bert.'):]
  if key.endswith('.gamma'):
    key = key[:-len('gamma')] + 'weight'
  elif key.endswith('.beta'):
    key = key[:-len('beta')] + 'bias'
  return key


def _listing(names: list, what: str) -> str:
  more = f' and {len(names) - MAX_LISTED} more' if len(names) > MAX_LISTED else ''
  return f'{what} {", ".join(names[:MAX_LISTED])}{more}'


def read_tensors(model_dir: str) -> dict:
  """model.safetensors as {key: numpy array}; one line when it is absent or unreadable."""
  path = _where(model_dir, WEIGHTS)
  if not os.path.exists(path):
    other = [n for n in ('pytorch_model.bin', 'tf_model.h5', 'flax_model.msgpack')
             if os.path.exists(_where(model_dir, n))]
    hint = (f' (it has {other[0]}: convert it to safetensors, e.g. with transformers\' '
            'save_pretrained(safe_serialization=True))' if other else '')
    raise UserError(f'{path}: missing{hint}')
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    return load_file(path)
  except Exception as e:  # pylint: disable=broad-except  (any parse error: one line)
    raise UserError(f'{path}: unreadable ({type(e).__name__}: {str(e)[:160]})') from None


def load(model_dir: str, scan_layers: bool = True) -> tuple[dict, dict]:
  """(config.model fields, params) of a Hugging Face BERT directory.

  params: nested dict of float32 numpy arrays {'encoder': ..., 'mlm_head': ...} ('mlm_head'
  only when the directory has cls.predictions.*); fields['pooler'] says whether it has a
  pooler. Layers are stacked under 'layers' (scan_layers) or named 'layer_i'.
  """
  fields = model_fields(read_config(model_dir), _where(model_dir, 'config.json'))
  raw = read_tensors(model_dir)
  path = _where(model_dir, WEIGHTS)
  tensors, duplicate = {}, []
  for key, value in raw.items():
    name = _normalise_key(key)
    if name in tensors:
      duplicate.append(key)
    tensors[name] = value
  if duplicate:
    raise UserError(f'{path}: {_listing(duplicate, "tensors stored twice (both layouts):")}')
  pooler = 'pooler.dense.weight' in tensors
  mlm = any(k.startswith('cls.predictions.') for k in tensors)
  # The decoder is the word embeddings; its bias is cls.predictions.bias (newer files store
  # it a second time as the decoder's).
  decoder_w = tensors.pop('cls.predictions.decoder.weight', None)
  decoder_b = tensors.pop('cls.predictions.decoder.bias', None)
  if decoder_b is not None and 'cls.predictions.bias' not in tensors:
    tensors['cls.predictions.bias'] = decoder_b
  key_map = _key_map(fields, pooler, mlm)
  skipped = [k for k in tensors if k.startswith(SKIPPED)]
  missing = [k for k in key_map if k not in tensors]
  unexpected = [k for k in tensors if k not in key_map and k not in skipped]
  misshaped = [f'{k} {tuple(tensors[k].shape)} (expected {key_map[k][3]})'
               for k in key_map if k in tensors and tuple(tensors[k].shape) != key_map[k][3]]
  problems = []
  if missing:
    problems.append(_listing(missing, 'missing'))
  if unexpected:
    problems.append(_listing(unexpected, 'unexpected'))
  if misshaped:
    problems.append(_listing(misshaped, 'mis-shaped'))
  if problems:
    raise UserError(f'{path}: ' + '; '.join(problems) + ' (for the model of its config.json)')
  word = tensors['embeddings.word_embeddings.weight']
  if decoder_w is not None and (decoder_w.shape != word.shape or
                                not np.array_equal(decoder_w, word)):
    raise UserError(f'{path}: cls.predictions.decoder.weight differs from the word embeddings '
                    '(an untied MLM decoder; lmjax ties it)')
  bad_dtype = [k for k in key_map if not np.issubdtype(tensors[k].dtype, np.floating)]
  if bad_dtype:
    raise UserError(f'{path}: {_listing(bad_dtype, "not floating-point:")}')

  h, n = fields['num_heads'], fields['num_layers']
  flat, per_layer = {}, {}
  for key, (sub, layer, kind, _) in key_map.items():
    value = np.asarray(_to_lmjax(tensors[key], kind, h), np.float32)
    if layer is None:
      flat[sub] = value
    else:
      per_layer.setdefault(sub, [None] * n)[layer] = value
  for sub, values in per_layer.items():
    if scan_layers:
      flat[('encoder', 'layers') + sub] = np.stack(values)
    else:
      for i, v in enumerate(values):
        flat[('encoder', f'layer_{i}') + sub] = v
  fields = dict(fields, pooler=pooler, scan_layers=scan_layers)
  return fields, _unflatten(flat)


def _unflatten(flat: dict) -> dict:
  out = {}
  for path, value in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def _flatten(tree: dict, prefix: tuple = ()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


# ----------------------------------------------------------------------------------------
# Export.
# ----------------------------------------------------------------------------------------


def hf_config(fields: dict, mlm: bool) -> dict:
  """lmjax config.model fields of a BERT -> a Hugging Face BertConfig's config.json."""
  if fields.get('norm', 'post') != 'post' or fields.get('position', 'learned') != 'learned':
    raise UserError('export_hf: Hugging Face BERT needs config.model.norm=post and '
                    f'position=learned (this model: norm={fields.get("norm")!r}, '
                    f'position={fields.get("position")!r})')
  act = {'erf': 'gelu', 'tanh': 'gelu_new'}[fields.get('gelu', 'erf')]
  return {
      'architectures': ['BertForMaskedLM' if mlm else 'BertModel'], 'model_type': 'bert',
      'vocab_size': int(fields['vocab_size']), 'hidden_size': int(fields['d_model']),
      'num_hidden_layers': int(fields['num_layers']),
      'num_attention_heads': int(fields['num_heads']),
      'intermediate_size': int(fields['d_ff']), 'hidden_act': act,
      'hidden_dropout_prob': float(fields.get('dropout_rate', 0.1)),
      'attention_probs_dropout_prob': float(fields.get('attention_dropout_rate', 0.1)),
      'max_position_embeddings': int(fields['max_len']),
      # HF BERT always has token types: a model without them exports one zero row.
      'type_vocab_size': max(int(fields.get('type_vocab_size', 2)), 1),
      'initializer_range': float(fields.get('initializer_range', 0.02)),
      'layer_norm_eps': float(fields.get('layer_norm_eps', 1e-12)),
      'pad_token_id': 0, 'position_embedding_type': 'absolute'}


def to_tensors(params: dict, fields: dict) -> dict:
  """lmjax BERT params -> {HF key: float32 numpy array}, 'bert.'-prefixed when there is an MLM
  head (BertForMaskedLM's layout, which BertModel also reads), else unprefixed (BertModel).
  Only 'encoder' and 'mlm_head' are exported (`not_exported` names the rest, e.g. a task's
  classifier head)."""
  flat = {k: np.asarray(v) for k, v in _flatten(params).items()
          if k[0] in ('encoder', 'mlm_head')}
  if not any(k[:1] == ('encoder',) for k in flat):
    raise UserError('export_hf: the parameters have no encoder (not a BERT model)')
  fields = dict(fields, type_vocab_size=int(fields.get('type_vocab_size', 2)))
  mlm = any(k[0] == 'mlm_head' for k in flat)
  pooler = ('encoder', 'pooler', 'kernel') in flat
  no_types = not fields['type_vocab_size']
  if no_types:
    fields['type_vocab_size'] = 1
    flat[('encoder', 'embeddings', 'token_type')] = np.zeros((1, int(fields['d_model'])),
                                                             np.float32)
  scanned = any(k[:2] == ('encoder', 'layers') for k in flat)
  out, used = {}, set()
  for key, (sub, layer, kind, _) in _key_map(fields, pooler, mlm).items():
    if layer is None:
      path, value = sub, flat.get(sub)
    elif scanned:
      path = ('encoder', 'layers') + sub
      value = None if path not in flat else flat[path][layer]
    else:
      path = ('encoder', f'layer_{layer}') + sub
      value = flat.get(path)
    if value is None:
      raise UserError(f'export_hf: parameter {"/".join(path)} missing for {key}')
    used.add(path)
    prefix = 'bert.' if mlm and not key.startswith('cls.') else ''
    out[prefix + key] = np.ascontiguousarray(_to_hf(value, kind), np.float32)
  left = sorted('/'.join(k) for k in flat if k not in used)
  if left:
    raise UserError(f'export_hf: {_listing(left, "parameters with no Hugging Face name:")}')
  return out


def not_exported(params: dict) -> list:
  """Top-level parameter groups that to_tensors leaves out."""
  return sorted(k for k in params if k not in ('encoder', 'mlm_head'))


def save(params: dict, fields: dict, out_dir: str, tokenizer: Any = None,
         tokenizer_dir: Optional[str] = None) -> list:
  """Writes config.json and model.safetensors into out_dir (which must not exist or be empty),
  and the tokenizer's Hugging Face files: `tokenizer.save_hf(out_dir)` (lmjax's WordPiece
  tokenizer), or those of TOKENIZER_FILES found in tokenizer_dir. Returns the names written."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = _flatten(params)
  mlm = any(k[0] == 'mlm_head' for k in flat)
  config = hf_config(fields, mlm)
  tensors = to_tensors(params, fields)
  if tokenizer is not None and not hasattr(tokenizer, 'save_hf'):
    raise UserError(f'export_hf: a {type(tokenizer).__name__} has no Hugging Face files; '
                    'pass --tokenizer_dir')
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise UserError(f'--out {out_dir}: exists and is not an empty directory')
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'config.json'), 'w') as f:
    json.dump(config, f, indent=2)
    f.write('\n')
  weights = os.path.join(out_dir, WEIGHTS)
  save_file(tensors, weights, metadata={'format': 'pt'})
  os.chmod(weights, 0o644)
  if tokenizer is not None:
    tokenizer.save_hf(out_dir)
  elif tokenizer_dir:
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(tokenizer_dir, name)):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
  return sorted(os.listdir(out_dir))


def num_params(params: Any) -> int:
  return int(sum(np.asarray(v).size for v in _flatten(params).values()))
