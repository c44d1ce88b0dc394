"""Layer scan, rematerialisation and gradient accumulation change cost, never the result."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import config_base, losses, steps
from lmjax.models import transformer


def _loss_and_grads(cfg, params, tokens):
  model = transformer.TransformerLM(cfg)

  def loss(p):
    logits = model.apply({'params': p}, tokens[:, :-1])
    return losses.cross_entropy(logits, tokens[:, 1:]).mean()

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize('remat', sorted(transformer.REMAT_POLICIES))
def test_scan_unrolled_and_remat_give_the_same_loss_and_gradients(remat):
  kw = dict(vocab_size=40, d_model=32, num_heads=4, num_layers=3, d_ff=64, max_len=16,
            dropout_rate=0.0)
  tokens = jax.random.randint(jax.random.key(0), (4, 12), 0, 40)
  scanned = transformer.TransformerConfig(scan_layers=True, remat='none', **kw)
  ps = nn.meta.unbox(transformer.TransformerLM(scanned).init(jax.random.key(1), tokens)['params'])
  pu, _ = transformer.unstack_layers(ps, scanned)
  ref_loss, ref_grads = _loss_and_grads(scanned, ps, tokens)
  for scan in (True, False):
    cfg = transformer.TransformerConfig(scan_layers=scan, remat=remat, **kw)
    loss, grads = _loss_and_grads(cfg, ps if scan else pu, tokens)
    if not scan:  # restack per-layer gradients to compare with the scanned ones
      layers = jax.tree.map(lambda *a: jnp.stack(a), *[grads[f'layer_{i}'] for i in range(3)])
      grads = {**{k: v for k, v in grads.items() if not k.startswith('layer_')},
               'layers': layers}
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads, ref_grads)


@pytest.mark.parametrize('model', ['transformer', 'rnn'])
def test_gradient_accumulation_equals_the_large_batch(model):
  c = config_base.load_experiment('synthetic_lm.py' if model == 'transformer' else
                                  'ptb_lstm.py', 'tiny')
  if model == 'rnn':
    c.data.update(source='synthetic', synthetic_lines=300, synthetic_eval_lines=20)
    c.batch_size, c.eval_batch_size = 8, 8
  c.model.update(dropout_rate=0.0) if model == 'transformer' else c.model.update(dropout=0.0)
  c.mesh.update(data=2, fsdp=1, tensor=1)
  results = []
  for accum in (1, 4):
    c.grad_accum_steps = accum
    run = steps.prepare(c, None, devices=jax.devices()[:2])
    it = run.task.train_iterator()
    state = run.init(0)
    outs = []
    for _ in range(3):
      state, out = run.train_step(state, next(it))
      outs.append(float(out['loss']))
    results.append((outs, jax.device_get(state['params'])))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               results[0][1], results[1][1])


def test_bfloat16_matmuls_track_float32():
  """model.dtype=bfloat16 (bf16 matmul inputs, f32 accumulation and master weights): the same
  parameters give the f32 loss and gradients to within bf16 rounding."""
  kw = dict(vocab_size=40, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=16,
            dropout_rate=0.0)
  tokens = jax.random.randint(jax.random.key(0), (4, 12), 0, 40)
  f32 = transformer.TransformerConfig(**kw)
  bf16 = transformer.TransformerConfig(compute_dtype=jnp.bfloat16, **kw)
  params = nn.meta.unbox(transformer.TransformerLM(f32).init(jax.random.key(1), tokens)['params'])
  l32, g32 = _loss_and_grads(f32, params, tokens)
  l16, g16 = _loss_and_grads(bf16, params, tokens)
  assert float(l16) == pytest.approx(float(l32), rel=2e-2)
  assert float(l16) != float(l32)  # the bf16 path really ran
  for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=0.1, atol=2e-2 * float(np.abs(b).max()))
