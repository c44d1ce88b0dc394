"""Autoregressive sampling (language models) and greedy/beam search (translation).

Sampling: the prompt is run through the model once (a Transformer fills its preallocated
key/value cache at positions 0..P-1, an RNN carries its recurrent state), then each new token is
one step at position P+i, all inside one jitted `fori_loop`, so no step re-reads the prefix.
Greedy decoding is temperature 0. A model offers this through `lm_decoder(params) ->
(prefill, step)`:

  prefill(prompt [B, P] int32, max_len) -> (logits [B, V] after the prompt, state)
  step(tokens [B] int32, state, t) -> (logits [B, V], state), tokens at position t

(`transformer.lm_decoder`, `rnn.lm_decoder`; each config's `lm_decoder` method binds it).
`generate_from_family` samples from any model family that has one.

For translation, `greedy_search` and `beam_search` (below) decode from any model that supplies a
per-token step function and a batched decoder state.

Axis legend: B batch, P prompt length, N new tokens, V vocab.
"""

import functools
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.errors import UserError
from lmjax.models import transformer


def filter_logits(logits: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
  """Temperature, then keep the top_k most likely and the smallest set with mass >= top_p."""
  logits = logits.astype(jnp.float32) / temperature  # [B, V]
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)  # [B, V], most likely first
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Drop a token when the mass strictly before it already reaches top_p.
    drop_sorted = (jnp.cumsum(probs, axis=-1) - probs) >= top_p
    drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        drop_sorted)
    logits = jnp.where(drop, -jnp.inf, logits)
  return logits


def next_token(logits: jax.Array, rng: jax.Array, temperature: float, top_k: int,
               top_p: float) -> jax.Array:
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, filter_logits(logits, temperature, top_k, top_p),
                                axis=-1).astype(jnp.int32)


def sample(prefill, step, prompt: jax.Array, rng: jax.Array, *, num_new: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """The sampling loop over a model's (prefill, step): prompt [B, P] -> new tokens [B, N].

  Traceable (call it under jit); one fresh key per token, split from rng in order.
  """
  b, p = prompt.shape
  logits, state = prefill(prompt, p + num_new)  # [B, V]
  rng, sub = jax.random.split(rng)
  tok = next_token(logits, sub, temperature, top_k, top_p)  # [B]
  out = jnp.zeros((b, num_new), jnp.int32).at[:, 0].set(tok)

  def body(i, carry):
    tok, state, rng, out = carry
    logits, state = step(tok, state, p + i - 1)  # [B, V]
    rng, sub = jax.random.split(rng)
    tok = next_token(logits, sub, temperature, top_k, top_p)
    return tok, state, rng, out.at[:, i].set(tok)

  _, _, _, out = jax.lax.fori_loop(1, num_new, body, (tok, state, rng, out))
  return out


@functools.partial(jax.jit, static_argnames=('config', 'num_new', 'temperature', 'top_k',
                                             'top_p'))
def generate(params: Any, prompt: jax.Array, rng: jax.Array, *,
             config: transformer.TransformerConfig, num_new: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Transformer LM: prompt [B, P] int32 -> new tokens [B, num_new]."""
  prefill, step = transformer.lm_decoder(params, config)
  return sample(prefill, step, prompt, rng, num_new=num_new, temperature=temperature,
                top_k=top_k, top_p=top_p)


def lm_decoder_of(family: Any):
  """A family's `lm_decoder(params) -> (prefill, step)`, or None if it cannot sample text.

  The family's own attribute if it has one, else its model config's method of that name.
  """
  if family is None:  # a task without a network (word embeddings)
    return None
  fn = getattr(family, 'lm_decoder', None)
  return fn if fn is not None else getattr(family.config, 'lm_decoder', None)


@functools.lru_cache(maxsize=None)
def _sample_fn(lm_decoder, num_new: int, temperature: float, top_k: int, top_p: float):
  def run(params, prompt, rng):
    prefill, step = lm_decoder(params)
    return sample(prefill, step, prompt, rng, num_new=num_new, temperature=temperature,
                  top_k=top_k, top_p=top_p)
  return jax.jit(run)


def generate_from_family(family: Any, params: Any, prompt: jax.Array, rng: jax.Array,
                         num_new: int, temperature: float = 1.0, top_k: int = 0,
                         top_p: float = 1.0) -> jax.Array:
  """Samples num_new tokens after prompt [B, P] from any language-model family -> [B, N].

  One jitted loop per (model, num_new, sampling settings); Transformer (cache) and RNN
  (carried state) alike. Raises UserError for a family that cannot generate text.
  """
  lm_decoder = lm_decoder_of(family)
  if lm_decoder is None:
    raise UserError(f'model {type(family.config).__name__} cannot generate text '
                    '(it has no lm_decoder)')
  fn = _sample_fn(lm_decoder, int(num_new), float(temperature), int(top_k), float(top_p))
  return fn(params, jnp.asarray(prompt, jnp.int32), rng)


# --- Translation decoding: greedy and beam search over a model-supplied step function. ---
#
# Axis legend: B batch, K beam, N rows fed to the model (B or B*K), T max_len (output tokens),
# V vocab, C 2*K beam candidates.
#
# `step_fn(tokens [N] int32, state, t int32 scalar) -> (logits [N, V], new_state)` consumes the
# previous token (bos at t=0) at decoder position t. Every leaf of `state` has leading dim N.
# Outputs exclude bos, hold eos once, then pad id 0. Both searches are a single while_loop with
# fixed shapes, so they compile once under jit for given static sizes.

_NEG_INF = float('-inf')


def _limits(max_lens: jax.Array | None, batch_size: int, max_len: int) -> jax.Array:
  """Per-example output-length limit in [1, max_len], including eos."""
  if max_lens is None:
    return jnp.full((batch_size,), max_len, jnp.int32)
  return jnp.clip(jnp.asarray(max_lens, jnp.int32), 1, max_len)  # [B]


def greedy_search(step_fn, state, *, batch_size: int, max_len: int, bos_id: int, eos_id: int,
                  max_lens: jax.Array | None = None) -> jax.Array:
  """Greedy decoding: take the most likely token at each step until eos.

  Args:
    step_fn: `(tokens [B], state, t) -> (logits [B, V], new_state)`.
    state: pytree of decoder state, every leaf with leading dim batch_size.
    batch_size: B.
    max_len: static bound on the number of output tokens (eos included).
    bos_id: token fed at t=0.
    eos_id: end of sequence; forced at step max_lens[b]-1 if not produced before.
    max_lens: optional [B] int32 per-example limit on output tokens including eos.

  Returns:
    tokens [B, max_len] int32: eos-terminated, zero padded after eos.
  """
  limit = _limits(max_lens, batch_size, max_len)  # [B]

  def cond(carry):
    t, _, _, _, done = carry
    return (t < max_len) & ~jnp.all(done)

  def body(carry):
    t, prev, state, out, done = carry
    logits, state = step_fn(prev, state, t)  # [B, V]
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B]
    tok = jnp.where(t >= limit - 1, eos_id, tok)
    tok = jnp.where(done, 0, tok)  # finished rows keep padding
    out = out.at[:, t].set(tok)
    return t + 1, tok, state, out, done | (tok == eos_id)

  carry = (jnp.int32(0), jnp.full((batch_size,), bos_id, jnp.int32), state,
           jnp.zeros((batch_size, max_len), jnp.int32), jnp.zeros((batch_size,), bool))
  return jax.lax.while_loop(cond, body, carry)[3]


def _length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """Wu et al. (2016): ((5 + |Y|) / 6) ** alpha, |Y| counting eos."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(step_fn, state, *, batch_size: int, beam_size: int, max_len: int, bos_id: int,
                eos_id: int, alpha: float = 0.6, max_lens: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """Beam search with alive/finished hypothesis sets and the GNMT length penalty.

  Each step extends the K alive hypotheses of an example by every token, keeps the top 2K
  candidates by log-prob, sends those ending in eos to the finished set (scored logprob / lp)
  and keeps the best K others alive. 2K candidates always hold at least K non-eos ones, since
  each alive beam contributes a single eos candidate. An example stops changing once its K-th
  best finished score is at least the best score any alive hypothesis could still reach; the
  loop exits when all examples have stopped or after max_len steps.

  Args:
    step_fn: `(tokens [B*K], state, t) -> (logits [B*K, V], new_state)`.
    state: pytree of decoder state, every leaf with leading dim batch_size. It is tiled to
      B*K rows (row b*K + k is beam k of example b) and reordered by parent beam after every
      step.
    batch_size: B.
    beam_size: K.
    max_len: static bound on the number of output tokens (eos included).
    bos_id: token fed at t=0.
    eos_id: end of sequence; forced at step max_lens[b]-1 (non-eos tokens get -inf, eos keeps
      its model log-prob).
    alpha: length penalty exponent; 0 ranks by raw log-prob.
    max_lens: optional [B] int32 per-example limit on output tokens including eos.

  Returns:
    tokens [B, K, max_len] int32 (eos-terminated, zero padded) and length-normalised scores
    [B, K], best first. Finished slots never filled score -inf. An example with no finished
    hypothesis (the model gave eos -inf even when forced) returns its last alive ones, without
    eos, normalised by their length.
  """
  b, k, n = batch_size, beam_size, max_len
  limit = _limits(max_lens, b, n)  # [B]
  # Best reachable lp for an alive hypothesis is at the longest allowed length (alpha >= 0) or
  # the shortest (alpha < 0); the max of both ends covers either sign.
  lp_limit = _length_penalty(limit, alpha)  # [B]
  batch_rows = jnp.arange(b)[:, None] * k  # [B, 1]

  def gather_beams(x, idx):
    """x [B, M, ...], idx [B, J] -> [B, J, ...]."""
    return jax.vmap(lambda xb, ib: xb[ib])(x, idx)

  def best_alive_bound(t, alive_logp):
    lp = jnp.maximum(lp_limit, _length_penalty(t + 1, alpha))  # [B]
    return jnp.max(alive_logp, axis=1) / lp  # [B]

  def cond(carry):
    t, _, alive_logp, _, dead, _, fin_score, fin_flag, _, _ = carry
    # Worst of the K finished, or -inf until K have finished.
    worst = jnp.where(jnp.all(fin_flag, axis=1), fin_score[:, -1], _NEG_INF)  # [B]
    bound = best_alive_bound(t, jnp.where(dead[:, None], _NEG_INF, alive_logp))  # [B]
    return (t < n) & ~jnp.all(bound <= worst)  # bound -inf: nothing left alive

  def body(carry):
    t, alive_seq, alive_logp, alive_len, dead, fin_seq, fin_score, fin_flag, prev, state = carry
    logits, state = step_fn(prev.reshape(b * k), state, t)  # [B*K, V]
    v = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    forced = (t >= limit - 1)[:, None, None] & (jnp.arange(v) != eos_id)  # [B, 1, V]
    logp = jnp.where(forced, _NEG_INF, logp)
    live_logp = jnp.where(dead[:, None], _NEG_INF, alive_logp)  # [B, K]
    cand = (live_logp[:, :, None] + logp).reshape(b, k * v)  # [B, K*V]
    cand_logp, cand_idx = jax.lax.top_k(cand, min(2 * k, k * v))  # [B, C]
    parent = cand_idx // v  # [B, C]
    tok = (cand_idx % v).astype(jnp.int32)  # [B, C]
    cand_seq = gather_beams(alive_seq, parent).at[:, :, t].set(tok)  # [B, C, T]
    is_eos = tok == eos_id  # [B, C]

    # Alive: the best K candidates not ending in eos.
    new_logp, sel = jax.lax.top_k(jnp.where(is_eos, _NEG_INF, cand_logp), k)  # [B, K]
    prev = jnp.take_along_axis(tok, sel, axis=1)  # [B, K]
    rows = (batch_rows + jnp.take_along_axis(parent, sel, axis=1)).reshape(b * k)  # [B*K]
    state = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), state)
    # When no candidate survives (at the length limit), keep the last real alive set for the
    # no-finished fallback and mark it dead so that it is never extended again.
    dead = ~jnp.any(new_logp > _NEG_INF, axis=1)  # [B]
    alive_seq = jnp.where(dead[:, None, None], alive_seq, gather_beams(cand_seq, sel))
    alive_logp = jnp.where(dead[:, None], alive_logp, new_logp)
    alive_len = jnp.where(dead, alive_len, t + 1)

    # Finished: merge eos candidates (length t+1) into the K best so far.
    new_flag = is_eos & (cand_logp > _NEG_INF)  # -inf ones come from empty/forced-out beams
    new_score = jnp.where(new_flag, cand_logp / _length_penalty(t + 1, alpha), _NEG_INF)
    all_score = jnp.concatenate([fin_score, new_score], axis=1)  # [B, K+C]
    all_flag = jnp.concatenate([fin_flag, new_flag], axis=1)
    fin_score, keep = jax.lax.top_k(all_score, k)  # [B, K]
    fin_flag = jnp.take_along_axis(all_flag, keep, axis=1)
    fin_seq = gather_beams(jnp.concatenate([fin_seq, cand_seq], axis=1), keep)
    return (t + 1, alive_seq, alive_logp, alive_len, dead, fin_seq, fin_score, fin_flag, prev,
            state)

  state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state)  # [B*K, ...]
  # Only beam 0 is live at the start, so the K identical bos beams do not fill the top K.
  alive_logp = jnp.full((b, k), _NEG_INF, jnp.float32).at[:, 0].set(0.0)
  carry = (jnp.int32(0), jnp.zeros((b, k, n), jnp.int32), alive_logp,
           jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool),
           jnp.zeros((b, k, n), jnp.int32), jnp.full((b, k), _NEG_INF, jnp.float32),
           jnp.zeros((b, k), bool), jnp.full((b, k), bos_id, jnp.int32), state)
  _, alive_seq, alive_logp, alive_len, _, fin_seq, fin_score, fin_flag, _, _ = (
      jax.lax.while_loop(cond, body, carry))
  any_fin = jnp.any(fin_flag, axis=1)  # [B]
  tokens = jnp.where(any_fin[:, None, None], fin_seq, alive_seq)
  alive_score = alive_logp / _length_penalty(jnp.maximum(alive_len, 1), alpha)[:, None]
  scores = jnp.where(any_fin[:, None], fin_score, alive_score)
  return tokens, scores


# --- translation: batches of sources -> beam search -> detokenized text ---
#
# Sentences are sorted by length and decoded in batches whose source is padded to a multiple
# of SOURCE_BUCKET tokens, so only a few shapes compile; each sentence may produce up to
# max_len_ratio x its source length + max_len_offset tokens.

SOURCE_BUCKET = 16


def _bucket(n: int, limit: int | None) -> int:
  rounded = -(-n // SOURCE_BUCKET) * SOURCE_BUCKET
  return rounded if limit is None else min(limit, rounded)


@functools.lru_cache(maxsize=None)
def _decode_fn(family: Any, beam_size: int, alpha: float, max_len: int, bos: int, eos: int):
  """A jitted (params, inputs [B, S], max_lens [B]) -> tokens [B, max_len] for one setting."""
  def run(params, inputs, max_lens):
    init_state, model_step = family.decoder(params)

    def step(tokens, state, t):
      # pad and bos are never targets: a model can only emit them by mistake.
      logits, state = model_step(tokens, state, t)
      never = jnp.asarray([0] if bos == eos else [0, bos])
      return logits.at[:, never].set(-jnp.inf), state

    state = init_state(inputs, max_len)
    b = inputs.shape[0]
    if beam_size <= 1:
      return greedy_search(step, state, batch_size=b, max_len=max_len, bos_id=bos,
                                    eos_id=eos, max_lens=max_lens)
    tokens, _ = beam_search(step, state, batch_size=b, beam_size=beam_size,
                                     max_len=max_len, bos_id=bos, eos_id=eos, alpha=alpha,
                                     max_lens=max_lens)
    return tokens[:, 0]  # best first

  return jax.jit(run)


def decode_ids(family: Any, params: Any, sources: list, *, bos: int, eos: int,
               batch_size: int, beam_size: int, alpha: float, max_len_ratio: float,
               max_len_offset: int, max_len: int | None,
               line_numbers: list | None = None) -> list[list[int]]:
  """Token ids per source (each ending in eos) -> output ids per source, eos stripped.

  max_len bounds the source and output lengths in tokens (the model's positions); None: no
  bound (a recurrent model). Longer sources are cut to max_len with one warning line naming
  them by line_numbers (default 1, 2, ...).
  """
  long = [(i, len(s)) for i, s in enumerate(sources) if max_len is not None and len(s) > max_len]
  if long and jax.process_index() == 0:
    number = (lambda i: line_numbers[i]) if line_numbers is not None else (lambda i: i + 1)
    shown = ', '.join(f'line {number(i)}: {n} tokens' for i, n in long[:3])
    more = f' and {len(long) - 3} more' if len(long) > 3 else ''
    print(f'warning: {len(long)} source line(s) are longer than the model takes ({max_len} '
          f'tokens: {shown}{more}); translating their first {max_len} tokens',
          file=sys.stderr, flush=True)
  order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
  out: list = [None] * len(sources)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    src_len = _bucket(max(len(sources[i]) for i in idx), max_len)
    inputs = np.zeros((batch_size, src_len), np.int32)
    lens = np.ones((batch_size,), np.int32)
    for r, i in enumerate(idx):
      ids = sources[i][:src_len]
      inputs[r, :len(ids)] = ids
      lens[r] = len(ids)
    budget = int(np.ceil(max_len_ratio * src_len)) + max_len_offset
    budget = budget if max_len is None else min(max_len, budget)
    max_lens = np.minimum(budget, np.ceil(max_len_ratio * lens).astype(np.int32)
                          + max_len_offset).astype(np.int32)
    fn = _decode_fn(family, beam_size, float(alpha), budget, bos, eos)
    tokens = np.asarray(fn(params, inputs, max_lens))
    for r, i in enumerate(idx):
      row = tokens[r].tolist()
      out[i] = row[:row.index(eos)] if eos in row else row
  return out


def translate_lines(family: Any, params: Any, tok: Any, lines: list[str], decode_cfg: Any,
                    max_len: int | None = None) -> list[str]:
  """Detokenized translations of `lines`; a blank line translates to an empty one (the model
  never saw an empty source). max_len: the longest source and output in tokens; default the
  model's own limit (config.model.max_len), none for a recurrent model without one."""
  if max_len is None:
    from lmjax import models  # pylint: disable=g-import-not-at-top
    max_len = models.max_len(family)
  encode_source = getattr(tok, 'encode_source', tok.encode)  # separate source vocabulary
  kept = [i for i, line in enumerate(lines) if line.strip()]
  sources = [encode_source(lines[i]) + [tok.eos_id] for i in kept]
  ids = decode_ids(family, params, sources, bos=tok.bos_id, eos=tok.eos_id,
                   batch_size=int(decode_cfg.batch_size), beam_size=int(decode_cfg.beam_size),
                   alpha=float(decode_cfg.alpha), max_len_ratio=float(decode_cfg.max_len_ratio),
                   max_len_offset=int(decode_cfg.max_len_offset), max_len=max_len,
                   line_numbers=[i + 1 for i in kept]) if sources else []
  out = [''] * len(lines)
  for i, row in zip(kept, ids):
    out[i] = tok.decode(row)
  return out
