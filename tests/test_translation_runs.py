"""Translation runs that are slow enough to want their own test worker: the same losses on
every mesh and with gradient accumulation, and separate source and target vocabularies
(split from test_translation.py so that the two files run side by side)."""

import jax
import numpy as np
import pytest

from lmjax import config_base, decoding, steps, train


@pytest.mark.parametrize('model', ['encoder_decoder', 'rnn_seq2seq'])
def test_same_translation_losses_on_every_mesh_and_with_accumulation(model):
  """Data / FSDP / tensor sharding and gradient accumulation change cost, not the result."""
  name = 'synthetic_translation.py' if model == 'encoder_decoder' else 'multi30k_rnn_attention.py'
  c = config_base.load_experiment(name, 'tiny')
  c.data.update(source='synthetic', synthetic_lines=300, synthetic_eval_lines=8)
  c.model.update(dropout_rate=0.0)
  losses = {}
  # One sharded run covers data, FSDP, tensor and accumulation at once (a compile per mesh is
  # most of this test's time).
  for mesh, accum in (((1, 1, 1), 1), ((2, 2, 2), 2)):
    c.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    c.grad_accum_steps = accum
    run = steps.prepare(c, None, devices=jax.devices()[:int(np.prod(mesh))])
    it = run.task.train_iterator()
    state = run.init(0)
    out = []
    for _ in range(3):
      state, o = run.train_step(state, next(it))
      out.append(float(o['loss']))
    losses[(mesh, accum)] = out
  ref = losses[((1, 1, 1), 1)]
  for key, out in losses.items():
    np.testing.assert_allclose(out, ref, rtol=2e-5, err_msg=str(key))


@pytest.mark.parametrize('name', ['synthetic_translation.py', 'multi30k_rnn_attention.py'])
def test_separate_source_and_target_vocabularies(tmp_path, name):
  from lmjax import checkpoint
  from lmjax.data import tokenizers
  c = config_base.load_experiment(name, 'tiny')
  c.data.update(source='synthetic', synthetic_lines=400, synthetic_eval_lines=8,
                joint_vocab=False, vocab_size=90, source_vocab_size=70)
  c.num_train_steps = c.eval_every = c.checkpoint.every = 4
  c.decode.beam_size = 2
  wd = str(tmp_path / 'wd')
  report = train.train_and_evaluate(c, wd, devices=jax.devices()[:1])
  tok = tokenizers.load_tokenizer(f'{wd}/tokenizer')
  assert isinstance(tok, tokenizers.PairTokenizer)
  assert tok.source_vocab_size != tok.vocab_size
  # Each model was trained on its own side: the made-up target words are single pieces of
  # the target model only.
  assert len(tok.target.encode('hundoi')) < len(tok.source.encode('hundoi'))
  _, family, params, tok2, _ = checkpoint.load_trained(wd)
  assert tok2.fingerprint() == tok.fingerprint()
  # The encoder reads its own table, [V_src, D]; the decoder the target one, [V, D].
  source_table = (params['source_embedding'] if c.model.name == 'encoder_decoder'
                  else params['embeddings']['source'])
  target_table = (params['embedding'] if c.model.name == 'encoder_decoder'
                  else params['embeddings']['embedding' if c.model.tie_embeddings else 'target'])
  assert source_table.shape[0] == tok.source_vocab_size != tok.vocab_size
  assert target_table.shape[0] == tok.vocab_size
  # The restored checkpoint translates the eval sources as the loop's final eval did.
  srcs, hyps, _ = zip(*report['examples'])
  out = decoding.translate_lines(family, params, tok, list(srcs), c.decode, c.seq_len)
  assert out == list(hyps)
