"""Translation: cross-attention, the encoder-decoder, packing, the data pipeline, the loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import config_base, decoding, models, steps, train
from lmjax.data import synthetic, translation as mt
from lmjax.errors import UserError
from lmjax.models import attention, encoder_decoder as ed


def _np_mha(xq, xkv, p, kv_valid):
  """Multi-head cross-attention in float64 numpy from the module's parameters."""
  f = lambda a: np.asarray(a, np.float64)
  q = np.einsum('btd,dhk->bthk', f(xq), f(p['query']))
  k = np.einsum('bsd,dhk->bshk', f(xkv), f(p['key']))
  v = np.einsum('bsd,dhk->bshk', f(xkv), f(p['value']))
  logits = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(q.shape[-1])
  logits = np.where(kv_valid[:, None, None, :], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bthk,hkd->btd', np.einsum('bhts,bshk->bthk', w, v), f(p['out']))


def test_cross_attention_matches_numpy_and_precomputed_keys():
  rng = np.random.default_rng(0)
  b, t, s, d, h = 2, 3, 6, 12, 3
  xq = rng.normal(size=(b, t, d)).astype(np.float32)
  xkv = rng.normal(size=(b, s, d)).astype(np.float32)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  mask = jnp.asarray(valid)[:, None, None, :]
  mha = attention.MultiHeadAttention(num_heads=h, head_dim=d // h)
  params = nn.meta.unbox(mha.init(jax.random.key(0), xq, xkv, mask)['params'])
  out, _ = mha.apply({'params': params}, xq, xkv, mask)
  np.testing.assert_allclose(np.asarray(out), _np_mha(xq, xkv, params, valid), atol=1e-5)
  # Decoding path: keys/values projected once, then read from the cache with x_kv=None.
  cache = attention.project_kv(params, jnp.asarray(xkv))
  out2, _ = mha.apply({'params': params}, xq, None, mask, cache=cache)
  np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-6)


def _model(scan=True, **kw):
  cfg = ed.EncoderDecoderConfig(vocab_size=29, d_model=32, num_heads=4, num_encoder_layers=2,
                                num_decoder_layers=2, d_ff=64, max_len=32, dropout_rate=0.0,
                                scan_layers=scan, **kw)
  model = ed.EncoderDecoder(cfg)
  src = jnp.ones((2, 7), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(1), src, src)['params'])
  return cfg, model, params


def _pairs(rng, n, max_len=7, vocab=29):
  out = []
  for _ in range(n):
    s = rng.integers(4, vocab, rng.integers(2, max_len + 1))
    t = rng.integers(4, vocab, rng.integers(2, max_len + 1))
    out.append((s.astype(np.int32), t.astype(np.int32)))
  return out


@pytest.mark.parametrize('scan', [True, False])
def test_cached_incremental_decoding_equals_full_sequence(scan):
  cfg, model, params = _model(scan)
  rng = np.random.default_rng(2)
  src = np.zeros((3, 8), np.int32)
  for r, n in enumerate([8, 5, 3]):  # padded sources
    src[r, :n] = rng.integers(4, 29, n)
  dec_in = rng.integers(4, 29, (3, 6)).astype(np.int32)
  dec_in[:, 0] = 3
  full = model.apply({'params': params}, src, dec_in)  # [B, T, V]
  p, c = ed.unstack_layers(params, cfg)
  state = ed.init_decode_state(p, c, jnp.asarray(src), 10)
  for t in range(dec_in.shape[1]):
    logits, state = ed.decode_step(p, c, jnp.asarray(dec_in[:, t]), state, t)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, t]), atol=2e-5)


def test_packed_rows_equal_each_pair_alone():
  """Segment masks: a pair packed with others gets exactly the logits it gets alone."""
  cfg, model, params = _model()
  rng = np.random.default_rng(3)
  pairs = _pairs(rng, 5)
  split = mt.ParallelSplit([s for s, _ in pairs], [t for _, t in pairs], [''] * 5, [''] * 5)
  rows = [[0, 1, 2], [3, 4]]
  batch = mt.packed_batch(split, rows, 24, bos=3)
  keys = models.ENCDEC_PACKED_KEYS
  packed = np.asarray(model.apply({'params': params}, **{k: batch[k] for k in keys}))
  for r, members in enumerate(rows):
    off = 0
    for i in members:
      s, t = pairs[i]
      dec_in = np.concatenate([[3], t[:-1]])[None]
      alone = np.asarray(model.apply({'params': params}, s[None], dec_in))[0]
      np.testing.assert_allclose(packed[r, off:off + len(t)], alone, atol=2e-5)
      off += len(t)
  assert batch['weights'].sum() == sum(len(t) for _, t in pairs)


def test_packing_places_every_pair_once_within_capacity():
  rng = np.random.default_rng(4)
  src_lens = rng.integers(1, 30, 3000)
  tgt_lens = rng.integers(1, 30, 3000)
  rows = mt.pack_rows(src_lens, tgt_lens, rng.permutation(3000), 64)
  members = sorted(i for r in rows for i in r)
  assert members == list(range(3000))
  for r in rows:
    assert src_lens[r].sum() <= 64 and tgt_lens[r].sum() <= 64
  fill = (src_lens.sum() + tgt_lens.sum()) / (2 * 64 * len(rows))
  assert fill > 0.8, fill  # padding waste under 20%


def _synthetic_splits(n=600, packing=True):
  c = config_base.translation_config()
  c.data.update(synthetic_lines=n, synthetic_eval_lines=20, vocab_size=100,
                max_source_len=24, max_target_len=24)
  c.seq_len = 32
  tok, splits = mt.load_translation_data(c.data, c.seq_len, None)
  return c, tok, splits


def test_synthetic_pairs_and_padding_waste():
  pairs = synthetic.generate_pairs(200, 0)
  assert pairs == synthetic.generate_pairs(200, 0)
  # The transduction is a function: the same source always gets the same target.
  seen = {}
  for s, t in pairs:
    assert seen.setdefault(s, t) == t
  _, tok, splits = _synthetic_splits()
  for packing in (True, False):
    it = mt.TranslationIterator(splits['train'], 8, 32, packing, tok.bos_id, seed=0,
                                pad_multiple=2)
    batches = [next(it) for _ in range(it.steps_per_epoch)]
    waste = mt.padding_waste(batches)
    assert waste['target'] < 0.2 and waste['source'] < 0.2, (packing, waste)
    for b in batches:  # decoder inputs are the targets shifted right, bos first, per pair
      for row_in, row_t in zip(b['decoder_inputs'], b['targets']):
        n = int((row_t != 0).sum())
        if not packing and n:
          assert row_in[0] == tok.bos_id and (row_in[1:n] == row_t[:n - 1]).all()


def test_iterator_resumes_exactly_and_eval_covers_every_token():
  c, tok, splits = _synthetic_splits()
  it = mt.TranslationIterator(splits['train'], 8, 32, True, tok.bos_id, seed=1)
  for _ in range(it.steps_per_epoch - 2):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(4)]  # crosses an epoch boundary
  it2 = mt.TranslationIterator(splits['train'], 8, 32, True, tok.bos_id, seed=1)
  it2.set_state(state)
  for a in want:
    b = next(it2)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  for packing in (True, False):
    batches = mt.eval_batches(splits['eval'], 8, 32, packing, tok.bos_id)
    assert sum(b['weights'].sum() for b in batches) == splits['eval'].num_target_tokens


def test_bad_parallel_inputs(tmp_path):
  (tmp_path / 'train.en').write_text('a b\nc d\ne f\n')
  (tmp_path / 'train.de').write_text('x y\nz w\n')
  c = config_base.translation_config()
  c.data.update(source='text', train=str(tmp_path / 'train'), eval=str(tmp_path / 'train'))
  with pytest.raises(UserError, match=r'train\.en has 3 lines.*train\.de has 2'):
    mt.load_translation_data(c.data, c.seq_len, None)
  c.data.update(max_source_len=1000)
  with pytest.raises(UserError, match='max_source_len'):
    mt.load_translation_data(c.data, c.seq_len, None)


def test_beam_search_on_the_encoder_decoder_beam1_is_greedy():
  cfg, _, params = _model()
  family = models.build_lm(ml_model_cfg(cfg), 29)
  rng = np.random.default_rng(5)
  sources = [list(rng.integers(4, 29, n)) + [1] for n in (3, 6, 2, 5)]
  init_state, step = family.decoder(params)
  src = jnp.asarray(np.stack([np.pad(s, (0, 8 - len(s))) for s in sources]).astype(np.int32))
  g = decoding.greedy_search(step, init_state(src, 12), batch_size=4, max_len=12, bos_id=3,
                             eos_id=1)
  b, _ = decoding.beam_search(step, init_state(src, 12), batch_size=4, beam_size=1,
                              max_len=12, bos_id=3, eos_id=1, alpha=0.0)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(b[:, 0]))


def ml_model_cfg(cfg):
  import ml_collections
  d = {f: getattr(cfg, f) for f in ('d_model', 'num_heads', 'num_encoder_layers',
                                    'num_decoder_layers', 'd_ff', 'max_len', 'dropout_rate',
                                    'scan_layers')}
  return ml_collections.ConfigDict(dict(d, name='encoder_decoder'))


def test_translation_loop_learns_and_reports_bleu(tmp_path):
  c = config_base.load_experiment('synthetic_translation.py', 'tiny')
  c.num_train_steps = 150
  c.eval_every = 150
  c.checkpoint.every = 150
  c.optimizer.learning_rate = 3e-3
  report = train.train_and_evaluate(c, str(tmp_path / 'wd'), devices=jax.devices()[:2])
  assert report['ppl'] < 6.0, report['ppl']  # uniform over the vocabulary is 120
  assert 'bleu' in report and 'chrf' in report and report['bleu_signature'].startswith('nrefs')
  assert report['bleu'] > 5.0, report['bleu']


def test_config_errors_name_the_field_before_reading_data():
  c = config_base.load_experiment('multi30k_rnn_attention.py', 'tiny')
  c.data.packing = True  # RNNs take one pair per row
  with pytest.raises(UserError, match='config.data.packing'):
    steps.prepare(c, None, devices=jax.devices()[:1])
  c = config_base.load_experiment('synthetic_translation.py', 'tiny')
  c.model.num_heads = 3  # does not divide d_model 32
  with pytest.raises(UserError, match='config.model.num_heads=3'):
    steps.prepare(c, None, devices=jax.devices()[:1])
  c = config_base.load_experiment('synthetic_translation.py', 'tiny')
  c.data.update(source_lang='en', target_lang='en')
  with pytest.raises(UserError, match='source_lang'):
    steps.prepare(c, None, devices=jax.devices()[:1])
