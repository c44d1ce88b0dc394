"""The BERT family (lmjax.models.bert): its options, padding, the encode/apply interface and
one-line config errors. The forward pass itself is checked against numpy in test_hf.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax import models
from lmjax.errors import UserError

V = 30
IDS = np.array([[2, 5, 6, 7, 3, 9], [2, 11, 12, 3, 0, 0]], np.int32)
BATCH = {'inputs': jnp.asarray(IDS), 'token_types': jnp.asarray((IDS > 6).astype(np.int32)),
         'mask': jnp.asarray(IDS != 0)}


def family(**fields):
  cfg = dict(name='bert', d_model=16, num_heads=2, num_layers=2, d_ff=24, max_len=16,
             dropout_rate=0.1, attention_dropout_rate=0.1)
  return models.build_lm(ml_collections.ConfigDict(dict(cfg, **fields)), V)


def params_of(fam, seed=0):
  return nn.meta.unbox(fam.init(jax.random.PRNGKey(seed), BATCH))


def test_parameter_tree_and_outputs_of_bert():
  fam = family()
  v = params_of(fam)
  p = v['params']
  assert sorted(p) == ['encoder', 'mlm_head']
  assert sorted(p['encoder']) == ['embeddings', 'layers', 'pooler']
  assert sorted(p['encoder']['embeddings']) == ['ln', 'position', 'token_type', 'word']
  assert sorted(p['encoder']['layers']['attn']) == ['bias_key', 'bias_out', 'bias_query',
                                                     'bias_value', 'key', 'out', 'query', 'value']
  logits, carry = fam.apply(v, BATCH, None, None, True)
  assert logits.shape == (2, 6, V) and logits.dtype == jnp.float32 and carry is None
  hidden, pooled = fam.encode(v, BATCH, None, True)
  assert hidden.shape == (2, 6, 16) and pooled.shape == (2, 16)
  # encode reads only the encoder: a classifier's tree {'encoder', 'classifier'} works.
  h2, _ = fam.encode({'params': {'encoder': p['encoder'], 'classifier': {}}}, BATCH, None, True)
  np.testing.assert_array_equal(np.asarray(hidden), np.asarray(h2))
  # Dropout runs when not deterministic, and changes the output.
  h3, _ = fam.encode(v, BATCH, {'dropout': jax.random.PRNGKey(1)}, False)
  assert not np.allclose(np.asarray(h3), np.asarray(hidden))


def test_padding_does_not_change_real_tokens_and_bare_inputs_work():
  fam = family(scan_layers=False)
  v = params_of(fam)
  hidden, _ = fam.encode(v, BATCH, None, True)
  short = {k: x[1:, :4] for k, x in BATCH.items()}  # row 1 without its padding
  h_short, _ = fam.encode(v, short, None, True)
  np.testing.assert_allclose(np.asarray(hidden)[1, :4], np.asarray(h_short)[0], atol=1e-6)
  # A bare [B, T] array: no token types, mask inputs != 0 (what init with a dummy batch uses).
  bare, _ = fam.apply(v, BATCH['inputs'], None, None, True)
  zero_types = dict(BATCH, token_types=jnp.zeros_like(BATCH['inputs']))
  np.testing.assert_allclose(np.asarray(bare),
                             np.asarray(fam.apply(v, zero_types, None, None, True)[0]),
                             atol=1e-6)


def test_pre_ln_rotary_no_token_types_no_pooler_bfloat16():
  fam = family(norm='pre', position='rotary', type_vocab_size=0, pooler=False,
               dtype='bfloat16', gelu='tanh')
  v = params_of(fam)
  enc = v['params']['encoder']
  assert 'ln_final' in enc and 'pooler' not in enc
  assert sorted(enc['embeddings']) == ['word']  # no positions, token types or embedding LN
  hidden, pooled = fam.encode(v, BATCH, None, True)
  assert pooled is None and hidden.dtype == jnp.float32
  assert np.isfinite(np.asarray(hidden)).all()
  grads = jax.grad(lambda p: fam.apply(p, BATCH, None, None, True)[0].sum())(v)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('fields,match', [
    ({'norm': 'middle'}, 'config.model.norm'),
    ({'position': 'sinusoidal'}, 'config.model.position'),
    ({'gelu': 'relu'}, 'config.model.gelu'),
    ({'num_heads': 3}, 'config.model.num_heads=3 does not divide'),
    ({'vocab_size': 10}, 'config.model.vocab_size=10 is smaller'),
    ({'layer_norm_eps': 0.0}, 'config.model.layer_norm_eps'),
    ({'type_vocab_size': -1}, 'config.model.type_vocab_size'),
    ({'dropout': 0.1}, 'config.model.dropout: not a field'),
])
def test_config_errors_are_one_line_naming_the_field(fields, match):
  with pytest.raises(UserError, match=match) as e:
    family(**fields)
  assert '\n' not in str(e.value)
