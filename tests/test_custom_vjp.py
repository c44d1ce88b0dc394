"""Every model's custom_vjp option: 'on' (the hand-written backward passes: attention.matmul's
weight gradient, rnn.py's recurrent one) computes what plain autodiff ('off') computes, values
and gradients; 'auto' is 'on' on the CPU backend (bitwise) and 'off' on any other."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.errors import UserError
from lmjax.models import encoder_decoder, rnn, rnn_seq2seq, transformer

B, T, V = 2, 7, 19


def _tokens(seed, shape=(B, T)):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, size=shape), jnp.int32)


def _transformer(option):
  cfg = transformer.TransformerConfig(vocab_size=V, d_model=16, num_heads=2, num_layers=2,
                                      d_ff=24, max_len=16, dropout_rate=0.0,
                                      position='rotary', tie_embeddings=False,
                                      custom_vjp=option)
  model, toks = transformer.TransformerLM(cfg), _tokens(0)
  return model, lambda p: model.apply({'params': p}, toks), (toks,)


def _encoder_decoder(option):
  cfg = encoder_decoder.EncoderDecoderConfig(
      vocab_size=V, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=2,
      d_ff=24, max_len=16, dropout_rate=0.0, scan_layers=False, custom_vjp=option)
  model, src, dec = encoder_decoder.EncoderDecoder(cfg), _tokens(1), _tokens(2)
  return model, lambda p: model.apply({'params': p}, src, dec), (src, dec)


def _rnn(option, cell='lstm'):
  cfg = rnn.RNNLMConfig(vocab_size=V, embed_dim=8, hidden_size=8, num_layers=2, cell=cell,
                        dropout=0.0, init_scale=0.3, custom_vjp=option)
  model, toks = rnn.RNNLM(cfg), _tokens(3)
  carry = rnn.init_carry(cfg, B)
  return model, lambda p: model.apply({'params': p}, toks, carry)[0], (toks, carry)


def _rnn_seq2seq(option):
  cfg = rnn_seq2seq.RNNSeq2SeqConfig(vocab_size=V, embed_dim=6, hidden_size=8,
                                     attention='bahdanau', dropout_rate=0.0, init_scale=0.3,
                                     tie_embeddings=False, custom_vjp=option)
  model, src, dec = rnn_seq2seq.RNNSeq2Seq(cfg), _tokens(4), _tokens(5)
  return model, lambda p: model.apply({'params': p}, src, dec), (src, dec)


MODELS = {'transformer': _transformer, 'encoder_decoder': _encoder_decoder, 'rnn_lstm': _rnn,
          'rnn_gru': lambda o: _rnn(o, 'gru'), 'rnn_seq2seq': _rnn_seq2seq}


def _loss_and_grads(build, option, params):
  _, logits_fn, _ = build(option)
  weights = jnp.asarray(np.random.default_rng(9).normal(size=(B, T, V)), jnp.float32)
  loss = lambda p: jnp.sum(jax.nn.log_softmax(logits_fn(p)) * weights)
  return loss, jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_custom_vjp_on_equals_autodiff(name):
  build = MODELS[name]
  model, _, args = build('off')
  params = nn.meta.unbox(model.init(jax.random.key(0), *args)['params'])
  loss_on, (l_on, g_on) = _loss_and_grads(build, 'on', params)
  loss_off, (l_off, g_off) = _loss_and_grads(build, 'off', params)
  # The option changes the program (else the comparison below would prove nothing).
  assert 'custom_vjp' in str(jax.make_jaxpr(loss_on)(params))
  assert 'custom_vjp' not in str(jax.make_jaxpr(loss_off)(params))
  np.testing.assert_allclose(float(l_on), float(l_off), rtol=1e-5)
  pairs = zip(jax.tree_util.tree_flatten_with_path(g_on)[0], jax.tree.leaves(g_off))
  for (path, a), b in pairs:
    scale = float(jnp.abs(b).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))
  assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g_on))


@pytest.mark.parametrize('name', ['transformer', 'rnn_lstm'])
def test_custom_vjp_auto_follows_the_backend(name, monkeypatch):
  build = MODELS[name]
  model, _, args = build('auto')
  params = nn.meta.unbox(model.init(jax.random.key(0), *args)['params'])
  assert jax.default_backend() == 'cpu'
  _, (l_auto, g_auto) = _loss_and_grads(build, 'auto', params)
  _, (l_on, g_on) = _loss_and_grads(build, 'on', params)
  assert float(l_auto) == float(l_on)
  for a, b in zip(jax.tree.leaves(g_auto), jax.tree.leaves(g_on)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  loss_auto, _ = _loss_and_grads(build, 'auto', params)
  assert 'custom_vjp' not in str(jax.make_jaxpr(loss_auto)(params))


@pytest.mark.parametrize('cls,extra', [
    (transformer.TransformerConfig, {'vocab_size': V}),
    (encoder_decoder.EncoderDecoderConfig, {'vocab_size': V}),
    (rnn.RNNLMConfig, {}),
    (rnn_seq2seq.RNNSeq2SeqConfig, {'vocab_size': V}),
])
def test_bad_custom_vjp_option_names_the_field(cls, extra):
  with pytest.raises(UserError, match='custom_vjp'):
    cls(custom_vjp='fast', **extra)
