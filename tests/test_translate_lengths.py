"""Translation reads whole sources up to the model's length limit, and says when it cuts one."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax import config_base, decoding, models


def recording_family(max_len):
  c = config_base.load_experiment('synthetic_translation.py', 'tiny')
  c.model.max_len = max_len
  family = models.build_lm(c.model, 40)
  dummy = {k: jnp.zeros((1, 8), jnp.int32) for k in family.input_keys}
  params = nn.meta.unbox(family.init(jax.random.PRNGKey(0), dummy)['params'])
  seen = []

  def decoder(p):
    init_state, step = family.decoder(p)

    def init(inputs, limit):
      seen.append(inputs.shape[1])  # traced once per shape: the source length fed
      return init_state(inputs, limit)

    return init, step

  return dataclasses.replace(family, decoder=decoder), params, seen


def decode(family, params, sources, max_len):
  return decoding.decode_ids(family, params, sources, bos=1, eos=2, batch_size=2, beam_size=1,
                             alpha=0.6, max_len_ratio=1.0, max_len_offset=2, max_len=max_len)


def test_sources_longer_than_seq_len_are_read_whole_up_to_the_models_limit(capsys):
  family, params, seen = recording_family(max_len=48)
  long = [3 + i % 30 for i in range(39)] + [2]  # 40 tokens: past the tiny config's seq_len 32
  out = decode(family, params, [long, [5, 2]], models.max_len(family))
  assert len(out) == 2 and seen and max(seen) >= len(long)  # nothing cut
  assert 'warning' not in capsys.readouterr().err


def test_a_source_past_the_limit_is_cut_with_one_warning(capsys):
  family, params, seen = recording_family(max_len=48)
  sources = [[3 + i % 30 for i in range(37)] + [2], list(range(3, 25)) + [2], [7, 2]]
  decode(family, params, sources, 16)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('warning: 2 source line(s)'), err
  assert 'line 1: 38 tokens' in err[0] and 'line 2: 23 tokens' in err[0] and '16' in err[0]
  assert max(seen) == 16


class Tok:
  """Token ids written as numbers."""
  bos_id, eos_id = 1, 2
  encode = staticmethod(lambda line: [int(w) for w in line.split()])
  decode = staticmethod(lambda ids: ' '.join(map(str, ids)))


def greedy_config():
  cfg = config_base.translation_config().decode
  cfg.update(beam_size=1, batch_size=2)
  return cfg


def test_translate_lines_defaults_to_the_models_limit():
  family, params, seen = recording_family(max_len=40)
  cfg = greedy_config()
  line = ' '.join(str(3 + i % 30) for i in range(36))  # 36 tokens + eos: within 40
  decoding.translate_lines(family, params, Tok(), [line], cfg)
  assert max(seen) >= 37
  np.testing.assert_equal(models.max_len(family), 40)


def test_blank_lines_translate_to_empty_ones_and_keep_their_numbers(capsys):
  """A blank source line comes out empty (it is not decoded), the others exactly as they
  translate alone, and a cut line is named by its number in the input."""
  family, params, _ = recording_family(max_len=16)
  cfg = greedy_config()
  long = ' '.join(str(3 + i % 30) for i in range(20))  # 21 tokens with eos: past 16
  lines = ['5 6 7', '', long, '   ', '8 9']
  out = decoding.translate_lines(family, params, Tok(), lines, cfg)
  alone = decoding.translate_lines(family, params, Tok(), ['5 6 7', long, '8 9'], cfg)
  assert out[1] == out[3] == '' and [out[0], out[2], out[4]] == alone
  warns = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning')]
  assert warns and all('line 3: 21 tokens' in w for w in warns[:1]), warns
