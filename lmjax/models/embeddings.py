"""Word embeddings: word2vec (skip-gram and CBOW with negative sampling) and GloVe.

Both are tables of word vectors and an objective; there is no network to apply, so each is a
pair of pure functions: `init_*(rng, V, D)` -> boxed parameters (logical axes ('vocab',
'embed'), sharded over the mesh like any embedding table) and `*_loss(params, batch, ...)` ->
summed loss and weight for one batch (lmjax/tasks/embeddings.py; the step applies the plain
summed gradient, config.loss_normalization='sum', as the reference tools update per pair).

word2vec (Mikolov et al. 2013; the reference C tool's updates). A batch is rows of corpus words
after frequent-word subsampling (lmjax/data/embeddings.py), with each word's line (segment) and
its reduced window b in [1, window]. For a centre word i and each context word j with
0 < |i - j| <= b_i in the same line:

  skip-gram  -log σ(x_j · y_i) - Σ_k log σ(-x_j · y_{n_k})        one term per (i, j) pair
  CBOW       -log σ(h_i · y_i) - Σ_k log σ(-h_i · y_{n_k}),        h_i = mean_j x_j

x = params['input'] (the vectors one keeps), y = params['output'] (the C tool's syn1neg),
n_k ~ unigram^noise_power, k = 1..K; a draw that hits the centre word is skipped, as the C tool
skips it. Each position draws its K negatives once: in skip-gram they serve every pair whose
context (input) word stands there, in CBOW the centre. So the step scores B·L·K negatives,
not B·L·2w·K: every pair still has K negatives from the same distribution, only the draws of
one word's pairs are shared rather than independent (measured: WordSim-353 and SimLex-999
within gensim's, benchmarks/word2vec.py).

GloVe (Pennington et al. 2014): for each non-zero co-occurrence X_ij of a batch,
  ½ f(X_ij) (w_i · c_j + b_i + b̃_j - log X_ij)²,   f(x) = min(1, (x / x_max)^α),
trained with AdaGrad; the output vectors are w + c.

Axis legend: B rows, L words per row, O window offsets (2·window), K negatives, D dimension,
V vocabulary, N co-occurrence entries per batch.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

TABLE_AXES = ('vocab', 'embed')


def _table(value: jax.Array) -> nn.LogicallyPartitioned:
  return nn.LogicallyPartitioned(value, names=TABLE_AXES)


def init_word2vec(rng: jax.Array, vocab_size: int, dim: int) -> dict:
  """Input vectors uniform in ±0.5/D and output vectors zero, as the C tool and gensim start."""
  x = jax.random.uniform(rng, (vocab_size, dim), jnp.float32, -0.5 / dim, 0.5 / dim)
  return {'input': _table(x), 'output': _table(jnp.zeros((vocab_size, dim), jnp.float32))}


def init_glove(rng: jax.Array, vocab_size: int, dim: int) -> dict:
  """Every parameter uniform in ±0.5/D, as glove.c initialises them."""
  k = jax.random.split(rng, 4)
  u = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -0.5 / dim, 0.5 / dim)
  return {'word': _table(u(k[0], (vocab_size, dim))),
          'context': _table(u(k[1], (vocab_size, dim))),
          'word_bias': nn.LogicallyPartitioned(u(k[2], (vocab_size,)), names=('vocab',)),
          'context_bias': nn.LogicallyPartitioned(u(k[3], (vocab_size,)), names=('vocab',))}


def word_vectors(method: str, params: dict) -> jax.Array:
  """The vectors a run exports: word2vec's input table, GloVe's word + context tables."""
  if method == 'glove':
    return params['word'] + params['context']
  return params['input']


def _shift(a: jax.Array, d: int, fill) -> jax.Array:
  """a[:, i + d] at position i along axis 1 (`fill` past either end)."""
  length = a.shape[1]
  if d == 0:
    return a
  pad = [(0, 0)] * a.ndim
  pad[1] = (max(-d, 0), max(d, 0))
  padded = jnp.pad(a, pad, constant_values=fill)
  start = max(d, 0)
  return jax.lax.slice_in_dim(padded, start, start + length, axis=1)


def draw_negatives(rng: jax.Array, noise_cdf: jax.Array, shape: tuple) -> jax.Array:
  """Word ids from the noise distribution (its cumulative table [V]) by inverse CDF."""
  u = jax.random.uniform(rng, shape, jnp.float32) * noise_cdf[-1]
  ids = jnp.searchsorted(noise_cdf, u, side='right')
  return jnp.minimum(ids, noise_cdf.shape[0] - 1).astype(jnp.int32)


@jax.custom_vjp
def _scaled_rows(table: jax.Array, scale: jax.Array) -> jax.Array:
  """`table` [V, D], whose gradient comes back with row r multiplied by scale[r]."""
  del scale
  return table


def _scaled_rows_fwd(table, scale):
  return table, scale


def _scaled_rows_bwd(scale, g):
  return g * scale[:, None].astype(g.dtype), jnp.zeros_like(scale)


_scaled_rows.defvjp(_scaled_rows_fwd, _scaled_rows_bwd)


def _row_scale(vocab_size: int, ids: list, weights: list, cap: float) -> jax.Array:
  """[V] min(1, cap / n_r), n_r the number of loss terms of the batch that touch row r."""
  n = jnp.zeros((vocab_size,), jnp.float32)
  for i, w in zip(ids, weights):
    n = n.at[i.reshape(-1)].add(w.reshape(-1))
  return jnp.minimum(1.0, cap / jnp.maximum(n, 1.0))


def word2vec_loss(params: dict, batch: dict, negatives: jax.Array, window: int,
                  cbow: bool, row_cap: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(summed loss, number of terms) of one batch.

  batch: 'words' [B, L] int32 (0 past a row's end), 'segment' [B, L] int32 (-1 past the end),
  'window' [B, L] int32 (each centre's reduced window b). negatives: [B, L, K] word ids, the
  draws of the word at each position: of each context word in skip-gram (for every pair it is
  the context of), of each centre in CBOW.
  Terms: (centre, context) pairs for skip-gram, centres with a context for CBOW.
  row_cap > 0: a table row that n > row_cap terms of the batch touch gets its summed gradient
  scaled by row_cap / n (the value is unchanged). Sequential SGD, as the reference tools run,
  lets a frequent word's many updates in one stretch of text saturate one after another; summed
  in one step they overshoot and diverge at the reference learning rate.
  """
  words, seg, win = batch['words'], batch['segment'], batch['window']
  real = seg >= 0  # [B, L]
  offsets = [d for d in range(-window, window + 1) if d]
  masks = [(real & (_shift(seg, d, -1) == seg) & (abs(d) <= win)).astype(jnp.float32)
           for d in offsets]  # each [B, L]: centre i has context i + d
  count = sum(masks)  # [B, L] context words per centre
  centre = (count > 0).astype(jnp.float32)
  if cbow:
    # Centre i's draws; one hitting the centre itself is skipped.
    neg_w = centre[..., None] * (negatives != words[..., None])  # [B, L, K]
    as_context = sum(_shift(m * centre, -d, 0.0) for m, d in zip(masks, offsets))
    per_centre = centre
  else:
    # Pair (i, j = i + d) uses j's draws; one hitting the centre w_i is skipped for that pair.
    # neg_w[j, k]: the pairs whose context is j and whose centre is not draw k.
    neg_w = sum(_shift(m[..., None] * (_shift(negatives, d, -1) != words[..., None]), -d, 0.0)
                for m, d in zip(masks, offsets))  # [B, L, K]
    as_context = sum(_shift(m, -d, 0.0) for m, d in zip(masks, offsets))  # [B, L]
    per_centre = count
  x_table, y_table = params['input'], params['output']
  if row_cap > 0:
    vocab_size = x_table.shape[0]
    x_table = _scaled_rows(x_table, _row_scale(vocab_size, [words], [as_context], row_cap))
    y_table = _scaled_rows(y_table, _row_scale(vocab_size, [words, negatives],
                                               [per_centre, neg_w], row_cap))
  x = x_table[words]  # [B, L, D]
  y = y_table[words]  # [B, L, D]
  z = y_table[negatives]  # [B, L, K, D]
  if cbow:
    h = sum(m[..., None] * _shift(x, d, 0.0) for m, d in zip(masks, offsets))
    h = h / jnp.maximum(count, 1.0)[..., None]  # [B, L, D]
    pos = -jax.nn.log_sigmoid(jnp.einsum('bld,bld->bl', h, y)) * centre  # [B, L]
    neg = -jax.nn.log_sigmoid(-jnp.einsum('bld,blkd->blk', h, z)) * neg_w  # [B, L, K]
    return pos.sum() + neg.sum(), centre.sum()
  # Positive terms, one per pair: x at i + d against y at i.
  pos = sum((-jax.nn.log_sigmoid(jnp.einsum('bld,bld->bl', _shift(x, d, 0.0), y)) * m).sum()
            for m, d in zip(masks, offsets))
  # Negative terms: each context word's K draws, once per pair it is the context of.
  neg = (-jax.nn.log_sigmoid(-jnp.einsum('bld,blkd->blk', x, z)) * neg_w).sum()
  return pos + neg, count.sum()


def glove_loss(params: dict, batch: dict, x_max: float,
               alpha: float) -> tuple[jax.Array, jax.Array]:
  """(summed weighted squared error, number of entries) over batch 'row', 'col' [N] int32 and
  'count' [N] float32 (0: padding)."""
  i, j, x = batch['row'], batch['col'], batch['count']
  real = x > 0
  safe = jnp.where(real, x, 1.0)
  pred = (jnp.einsum('nd,nd->n', params['word'][i], params['context'][j])
          + params['word_bias'][i] + params['context_bias'][j])  # [N]
  f = jnp.where(real, jnp.minimum(1.0, (safe / x_max) ** alpha), 0.0)
  diff = pred - jnp.log(safe)
  return 0.5 * (f * diff * diff).sum(), real.astype(jnp.float32).sum()

