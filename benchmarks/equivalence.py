"""Refactoring guard: per-step train losses and final reports of every experiment's tiny variant.

  python benchmarks/equivalence.py dump OUT.json [SUBSTRING ...]   # run from a checkout
  python benchmarks/equivalence.py compare BEFORE.json AFTER.json

Run `dump` on the commit before a change (e.g. a `git worktree` with PYTHONPATH pointing at it)
and after it; `compare` prints, per case, whether the train losses are bitwise equal, the largest
loss difference and the largest relative difference over the numbers of the final report. Only
public entry points are used (train.train_and_evaluate and WORKDIR/metrics.jsonl), so the same
script runs on both sides of a redesign. The cases cover both LM modes, gradient accumulation
with dropout, packed and length-sorted translation and the fitted n-gram model.
"""
import json
import os
import shutil
import sys
import tempfile

CASES = [
    ('synthetic_lm.py', 'tiny', {}),
    ('synthetic_lm.py', 'tiny', {'grad_accum_steps': 2, 'model.dropout_rate': 0.1}),
    ('decoder_lm.py', 'tiny', {}),
    ('lm1b_transformer.py', 'tiny', {}),
    ('tinyshakespeare.py', 'tiny', {'data.source': 'synthetic'}),
    ('ptb_lstm.py', 'tiny', {'data.source': 'synthetic', 'num_epochs': 0, 'num_train_steps': 12,
                             'eval_every': 6, 'data.synthetic_lines': 400,
                             'data.synthetic_eval_lines': 40}),
    ('ptb_lstm.py', 'gru_tiny', {'data.source': 'synthetic', 'num_epochs': 0,
                                 'num_train_steps': 8, 'eval_every': 8,
                                 'data.synthetic_lines': 400, 'data.synthetic_eval_lines': 40}),
    ('ptb_lstm.py', 'elman_tiny', {'data.source': 'synthetic', 'num_epochs': 1,
                                   'data.synthetic_lines': 200, 'data.synthetic_eval_lines': 40}),
    ('synthetic_translation.py', 'tiny', {}),
    ('multi30k_transformer.py', 'tiny', {}),
    ('multi30k_rnn_attention.py', 'tiny', {}),
    ('wmt14_transformer.py', 'tiny', {}),
    ('ptb_kneser_ney.py', '3', {'data.source': 'synthetic', 'data.synthetic_lines': 500,
                                'data.synthetic_eval_lines': 50}),
]


def _set(c, key, value):
  *path, last = key.split('.')
  for p in path:
    c = c[p]
  c[last] = value


def _plain(x):
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x.item() if hasattr(x, 'item') else x


def run_case(exp, variant, overrides):
  from lmjax import config_base
  c = config_base.load_experiment(exp, variant)
  with c.unlocked():
    for k, v in overrides.items():
      _set(c, k, v)
    if c.model.name != 'kneser_ney':
      c.log_every = 1
      c.checkpoint.async_save = False
  wd = tempfile.mkdtemp(prefix='equivalence')
  try:
    if c.model.name == 'kneser_ney' and 'task' not in c:  # before lmjax/tasks existed
      from lmjax import ngram_lm  # pylint: disable=import-error
      report = ngram_lm.fit_and_evaluate(c, wd)
      report = dict(report['eval'], test=report.get('test'))
    else:
      from lmjax import train
      report = train.train_and_evaluate(c, wd)
    losses, path = [], os.path.join(wd, 'metrics.jsonl')
    if os.path.exists(path):
      for line in open(path, encoding='utf-8'):
        r = json.loads(line)
        if r.get('split') == 'train':
          losses.append((r['step'], r['loss']))
    return {'report': _plain(report), 'losses': losses}
  finally:
    shutil.rmtree(wd, ignore_errors=True)


def _numbers(x, prefix=''):
  if isinstance(x, dict):
    for k, v in x.items():
      yield from _numbers(v, f'{prefix}.{k}')
  elif isinstance(x, list):
    for i, v in enumerate(x):
      yield from _numbers(v, f'{prefix}[{i}]')
  elif x is not None:
    yield prefix, x


def compare(before, after) -> float:
  worst = 0.0
  for key, a in before.items():
    if key not in after:
      print(f'{key}: missing after')
      continue
    b = after[key]
    la, lb = [l for _, l in a['losses']], [l for _, l in b['losses']]
    dloss = (max((abs(x - y) for x, y in zip(la, lb)), default=0.0) if len(la) == len(lb)
             else float('inf'))
    na, nb = dict(_numbers(a['report'])), dict(_numbers(b['report']))
    rel, differ = 0.0, []
    for k in sorted(set(na) & set(nb)):
      if 'sentences_per_sec' in k:  # a speed, not a result
        continue
      x, y = na[k], nb[k]
      if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        rel = max(rel, abs(x - y) / max(abs(x), 1e-12))
      elif x != y:
        differ.append(k)
    print(f'{key}\n  {len(la)} steps, losses bitwise equal: {la == lb}, max |dloss| {dloss:.2e}; '
          f'report max rel diff {rel:.2e}; differing fields {differ}')
    worst = max(worst, dloss, rel, float('inf') if differ else 0.0)
  print(f'largest difference: {worst:.2e}')
  return worst


def main(argv):
  if len(argv) >= 2 and argv[0] == 'dump':
    out = {}
    for exp, variant, overrides in CASES:
      key = f'{exp}:{variant} {json.dumps(overrides, sort_keys=True)}'
      if len(argv) > 2 and not any(s in key for s in argv[2:]):
        continue
      out[key] = run_case(exp, variant, overrides)
    with open(argv[1], 'w', encoding='utf-8') as f:
      json.dump(out, f, indent=1)
    return 0
  if len(argv) == 3 and argv[0] == 'compare':
    worst = compare(*(json.load(open(p, encoding='utf-8')) for p in argv[1:]))
    return 0 if worst <= 1e-6 else 1
  print(__doc__)
  return 2


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.exit(main(sys.argv[1:]))
