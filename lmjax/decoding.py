"""Autoregressive sampling with a preallocated key/value cache.

The prompt is run through the model once (filling the cache at positions 0..P-1), then each new
token is one cached step at position P+i, all inside one jitted `fori_loop`, so no step
re-reads the prefix. Greedy decoding is temperature 0.

Axis legend: B batch, P prompt length, N new tokens, V vocab.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

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


@functools.partial(jax.jit, static_argnames=('config', 'num_new', 'temperature', 'top_k',
                                             'top_p'))
def generate(params: Any, prompt: jax.Array, rng: jax.Array, *,
             config: transformer.TransformerConfig, num_new: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """prompt [B, P] int32 -> new tokens [B, num_new]."""
  params, config = transformer.unstack_layers(params, config)
  model = transformer.TransformerLM(config)
  b, p = prompt.shape
  cache = transformer.init_cache(config, b, p + num_new)
  logits, cache = model.apply({'params': params}, prompt, cache=cache, cache_index=0)
  rng, sub = jax.random.split(rng)
  tok = next_token(logits[:, -1], sub, temperature, top_k, top_p)  # [B]
  out = jnp.zeros((b, num_new), jnp.int32).at[:, 0].set(tok)

  def step(i, carry):
    tok, cache, rng, out = carry
    logits, cache = model.apply({'params': params}, tok[:, None], cache=cache,
                                cache_index=p + i - 1)  # [B, 1, V]
    rng, sub = jax.random.split(rng)
    tok = next_token(logits[:, 0], sub, temperature, top_k, top_p)
    return tok, cache, rng, out.at[:, i].set(tok)

  _, _, _, out = jax.lax.fori_loop(1, num_new, step, (tok, cache, rng, out))
  return out
