"""word2vec against gensim: the same corpus and hyperparameters, quality and speed side by side.

Both sides train skip-gram with negative sampling on one text file (default WikiText-2's
training text), dimension 100, window 5, 5 negatives, min count 5, sample 1e-3, 5 epochs,
lr 0.025 -> 0.0001 x 0.025, each in a fresh process, the sides alternated per round and seed:

  lmjax   the trainer's own jitted step (lmjax.steps.prepare on experiments/word2vec.py:sgns),
          driven over the task's own batches; the clock runs over the train steps only (the
          first step, which compiles, is timed separately and reported as compile_s).
  gensim  gensim.models.Word2Vec with `--workers` threads (default 2, this machine's cores),
          vocabulary built first, the clock over `train()` only.

Words/s = the corpus words in the vocabulary x epochs / train seconds (before subsampling, as
gensim counts its "raw words"). Both sides' vectors are scored by lmjax.embeddings_eval on
gensim's WordSim-353, SimLex-999 and Google analogies (30,000 most frequent words). Peak RSS
is each process's ru_maxrss. `<unk>` tokens (WikiText's) are removed for both sides.

  PYTHONPATH=. python benchmarks/word2vec.py [--train=../shared/data/wikitext-2/train.txt]
      [--seeds=0,1] [--epochs=5] [--workers=2] [--method=sgns] [--override=FIELD=VALUE ...]

Each process prints one JSON line; the driver prints the per-side mean and spread over seeds,
the speed ratio (median over rounds) and the load average.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_TRAIN = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data',
                             'wikitext-2', 'train.txt')


def _lines(path: str) -> list:
  with open(path, encoding='utf-8') as f:
    return [' '.join(w for w in line.split() if w != '<unk>') for line in f.read().split('\n')]


def _scores(words, matrix) -> dict:
  from lmjax import embeddings_eval, vectors
  v = vectors.Vectors(list(words), matrix)
  r = embeddings_eval.evaluate(v, embeddings_eval.default_paths(), restrict_vocab=30000)
  return {k: r[k] for k in ('wordsim353', 'simlex999', 'analogy')}


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_lmjax(train: str, seed: int, epochs: int, method: str, overrides: list) -> dict:
  import tempfile

  import jax
  from lmjax import cli, config_base
  from lmjax import steps as lmjax_steps
  cli.keep_freed_host_memory()  # as lmjax.main does on CPU
  tmp = tempfile.mkdtemp()
  path = os.path.join(tmp, 'train.txt')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(_lines(train)) + '\n')
  c = config_base.load_experiment('word2vec.py', 'cbow' if method == 'cbow' else 'sgns')
  c.data.train, c.seed, c.num_epochs = path, seed, epochs
  for item in overrides:  # --override=embeddings.row_cap=64 (lmjax only)
    key, value = item.split('=', 1)
    *parents, leaf = key.split('.')
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value)
  run = lmjax_steps.prepare(c, None)
  task = run.task
  it = task.train_iterator()
  state = run.init()
  with run.context():
    t0 = time.perf_counter()
    state, out = run.p_train(state, run.put(next(it)))
    jax.block_until_ready(out['loss'])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(task.num_steps - 1):
      state, out = run.p_train(state, run.put(next(it)))
    jax.block_until_ready(state['params'])
    train_s = time.perf_counter() - t0
  v = task.vectors(state['params'])
  words = len(task.corpus.ids) * epochs * (task.num_steps - 1) / task.num_steps
  return {'impl': 'lmjax', 'seed': seed, 'words_per_s': words / train_s, 'train_s': train_s,
          'compile_s': compile_s, 'peak_rss_mb': _rss_mb(), 'vocab': len(v.words),
          **_scores(v.words, v.matrix)}


def run_gensim(train: str, seed: int, epochs: int, workers: int, method: str) -> dict:
  import numpy as np
  from gensim.models import Word2Vec
  sentences = [line.split() for line in _lines(train)]
  sentences = [s for s in sentences if s]
  m = Word2Vec(vector_size=100, window=5, negative=5, min_count=5, sample=1e-3,
               sg=0 if method == 'cbow' else 1, workers=workers, seed=seed, alpha=0.025,
               min_alpha=0.025 * 1e-4)
  m.build_vocab(sentences)
  t0 = time.perf_counter()
  m.train(sentences, total_examples=m.corpus_count, epochs=epochs)
  train_s = time.perf_counter() - t0
  words = m.corpus_total_words * epochs
  kv = m.wv
  return {'impl': f'gensim {__import__("gensim").__version__}, {workers} workers',
          'seed': seed, 'words_per_s': words / train_s, 'train_s': train_s,
          'peak_rss_mb': _rss_mb(), 'vocab': len(kv.index_to_key),
          **_scores(kv.index_to_key, np.asarray(kv.vectors, np.float32))}


def child(args, side: str, seed: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f'--role={side}', f'--train={args.train}',
         f'--seeds={seed}', f'--epochs={args.epochs}', f'--workers={args.workers}',
         f'--method={args.method}'] + [f'--override={o}' for o in args.override]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
  if proc.returncode:
    raise SystemExit(f'{side} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--train', default=DEFAULT_TRAIN)
  ap.add_argument('--seeds', default='0,1')
  ap.add_argument('--epochs', type=int, default=5)
  ap.add_argument('--workers', type=int, default=2)
  ap.add_argument('--method', default='sgns', choices=('sgns', 'cbow'))
  ap.add_argument('--sides', default='lmjax,gensim')
  ap.add_argument('--override', action='append', default=[],
                  help='lmjax config field=value (repeatable), e.g. embeddings.row_cap=64')
  ap.add_argument('--role', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  if args.role == 'lmjax':
    print(json.dumps(run_lmjax(args.train, seeds[0], args.epochs, args.method, args.override)),
          flush=True)
    return
  if args.role == 'gensim':
    print(json.dumps(run_gensim(args.train, seeds[0], args.epochs, args.workers, args.method)),
          flush=True)
    return
  sides = args.sides.split(',')
  got = {s: [] for s in sides}
  for r, seed in enumerate(seeds):
    for side in (sides if r % 2 == 0 else sides[::-1]):
      res = child(args, side, seed)
      got[side].append(res)
      print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in res.items()}), flush=True)
  summary = {'loadavg': [round(x, 2) for x in os.getloadavg()]}
  for side, results in got.items():
    for k in ('wordsim353', 'simlex999', 'analogy', 'words_per_s', 'peak_rss_mb'):
      vals = [x[k] for x in results]
      summary[f'{side}_{k}'] = (round(statistics.mean(vals), 4),
                                round(statistics.pstdev(vals), 4) if len(vals) > 1 else 0.0)
  if len(sides) == 2:
    a, b = got[sides[0]], got[sides[1]]
    summary['speed_ratio_median'] = round(statistics.median(
        x['words_per_s'] / y['words_per_s'] for x, y in zip(a, b)), 3)
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
