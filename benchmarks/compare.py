"""lmjax against its peers in one command: every measurement a fresh process, the sides alternated.

For each round (--rounds, default 3) and each case, lmjax's benchmark script and its peer run
as separate processes (subprocess, never in one process: a peer inside lmjax's process reads
slower, benchmarks/README.md), lmjax first in even rounds and the peer first in odd ones, so
both see the same machine load. Each prints one JSON line (--json); the 1-minute load average
is printed (stderr) before each process starts. The result is one Markdown table on stdout and
in --out: per case the medians over rounds of lmjax's and the peer's tokens/s, the ratio (the
median of the per-round ratios lmjax / peer), lmjax's compile seconds and both peak RSS (the
processes' ru_maxrss), then every round's samples.

Default cases (the PyTorch peers, benchmarks/torch_*.py):
  train_fp32   transformer_lm.py (experiments/decoder_lm.py:bench)  vs torch_transformer_lm.py
  train_bf16   the same, --dtype bfloat16 (bf16 matmuls, f32 accumulation) vs torch autocast
  decode_b1    transformer_lm.py --generate --batch 1 (128 tokens after 16), greedy, vs torch's
  decode_b8    the same at batch 8
  lstm_fp32    lstm_lm.py (experiments/ptb_lstm.py:medium) float32 vs torch_lstm_lm.py
  lstm_bf16    lstm_lm.py --dtype bfloat16 vs torch_lstm_lm.py (float32)
  gru_fp32     lstm_lm.py --variant gru_medium (the same sizes) vs torch_lstm_lm.py --cell gru
  mt_train_fp32  translation.py --step (experiments/multi30k_transformer.py:small, the trainer's
               step on a random [32, 64] batch, target tokens/s) vs torch_translation.py
  mt_beam4     translation.py --beam: beam 4, batch 100, random-init parameters, the 1,000
               test_2016_flickr.en sources (benchmarks/mt_sources.py: the same token ids on both
               sides), sentences/s, vs torch_translation.py --beam (transformers MarianMTModel
               .generate(num_beams=4) at the same sizes); one timed pass per process (a pass is minutes)
Opt-in cases (--cases=NAME,... or --cases=all), with their own drivers' child processes:
  encoder_finetune, encoder_embed   benchmarks/encoder.py (needs --model_dir, the `verify` extra)
  word2vec                          benchmarks/word2vec.py vs gensim (WikiText-2 in ../shared)

  PYTHONPATH=. python benchmarks/compare.py --out benchmarks/results.md   # the tables' numbers
  PYTHONPATH=. python benchmarks/compare.py --cases=train_fp32,decode_b1 --rounds 5
  PYTHONPATH=. python benchmarks/compare.py --dry-run       # every default case at tiny size, once

--dry-run runs each process at a tiny size (experiments/decoder_lm.py:tiny, ptb_lstm.py:tiny,
multi30k_transformer.py:tiny with 8 random sources) for one round with one timed step, to check
the plumbing in seconds; its numbers mean nothing.
Where both sides report `params`, one line gives both counts; the peer's `params_extra` names
each difference from lmjax's layout, and counts that differ by anything else fail the run.
The peers need torch (`pip install torch==2.13.0+cpu`, benchmarks/README.md); without it
(checked with --peer_python, default this interpreter; mt_beam4's peer also needs transformers)
the peer columns stay empty and the lmjax side still runs. Exit status 1 if any process failed.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY_LM = '--config=experiments/decoder_lm.py:tiny'
TINY_LSTM = ['--variant=tiny', '--vocab=512']
TINY_MT = '--config=experiments/multi30k_transformer.py:tiny'
MT_TEST = os.path.normpath(os.path.join(REPO, '..', 'shared', 'data', 'multi30k', 'raw',
                                        'test_2016_flickr.en'))


@dataclasses.dataclass(frozen=True)
class Case:
  """One row: lmjax's command and its peer's (script and arguments, each with --json added
  where `json` says so), full size and tiny (--dry-run); `metric` is the JSON key compared."""
  name: str
  what: str
  lmjax: tuple
  peer: tuple
  lmjax_tiny: tuple = ()
  peer_tiny: tuple = ()
  timing: str = 'train'  # train: --steps/--repeats; generate: --repeats; '' neither
  metric: str = 'tokens_per_s'
  peer_needs: str = 'torch'  # modules the peer imports, comma-separated
  extra: bool = False  # opt-in (not in the default list, no tiny size)
  max_repeats: int = 0  # > 0: at most this many timed repeats per process


TRAIN_TINY = (TINY_LM, '--no-mfu')
DECODE_TINY = (TINY_LM, '--prompt=4', '--new=8')
BEAM_TINY = ('--source=', '--sentences=8', '--batch_size=8')  # random lengths, one batch
CASES = [
    Case('train_fp32', 'decoder-only train, fp32',
         ('transformer_lm.py', '--dtype=float32'), ('torch_transformer_lm.py', '--dtype=float32'),
         TRAIN_TINY, ('--tiny',)),
    Case('train_bf16', 'decoder-only train, bf16 matmuls vs torch autocast',
         ('transformer_lm.py', '--dtype=bfloat16'),
         ('torch_transformer_lm.py', '--dtype=bfloat16'), TRAIN_TINY, ('--tiny',)),
    Case('decode_b1', 'greedy decode, batch 1',
         ('transformer_lm.py', '--generate', '--batch=1'),
         ('torch_transformer_lm.py', '--generate', '--batch=1'), DECODE_TINY,
         ('--tiny', '--prompt=4', '--new=8'), timing='generate'),
    Case('decode_b8', 'greedy decode, batch 8',
         ('transformer_lm.py', '--generate', '--batch=8'),
         ('torch_transformer_lm.py', '--generate', '--batch=8'), DECODE_TINY,
         ('--tiny', '--prompt=4', '--new=8'), timing='generate'),
    Case('lstm_fp32', 'LSTM LM (PTB medium), fp32',
         ('lstm_lm.py', '--dtype=float32'), ('torch_lstm_lm.py',), tuple(TINY_LSTM), ('--tiny',)),
    Case('lstm_bf16', 'LSTM LM (PTB medium), bf16 matmuls vs torch fp32',
         ('lstm_lm.py', '--dtype=bfloat16'), ('torch_lstm_lm.py',), tuple(TINY_LSTM),
         ('--tiny',)),
    Case('gru_fp32', 'GRU LM (PTB medium sizes), fp32',
         ('lstm_lm.py', '--dtype=float32', '--variant=gru_medium'),
         ('torch_lstm_lm.py', '--cell=gru'), ('--variant=gru_tiny', '--vocab=512'),
         ('--tiny',)),
    Case('mt_train_fp32', 'Multi30k small Transformer train, fp32 (target tokens)',
         ('translation.py', '--step'), ('torch_translation.py',), (TINY_MT,), ('--tiny',)),
    Case('mt_beam4', 'Multi30k small Transformer beam 4, batch 100, random init',
         ('translation.py', '--beam', f'--source={MT_TEST}'),
         ('torch_translation.py', '--beam', f'--source={MT_TEST}'), (TINY_MT, *BEAM_TINY),
         ('--tiny', *BEAM_TINY), timing='generate', metric='sentences_per_s',
         peer_needs='torch,transformers', max_repeats=1),
    Case('encoder_finetune', 'BERT (MiniLM) fine-tuning step vs transformers',
         ('encoder.py', '--role=finetune:lmjax'), ('encoder.py', '--role=finetune:torch'),
         timing='', peer_needs='transformers', extra=True),
    Case('encoder_embed', 'sentence embeddings vs sentence-transformers',
         ('encoder.py', '--role=embed:lmjax'), ('encoder.py', '--role=embed:torch'),
         timing='', metric='sentences_per_s', peer_needs='sentence_transformers', extra=True),
    Case('word2vec', 'word2vec SGNS vs gensim (words/s)',
         ('word2vec.py', '--role=lmjax'), ('word2vec.py', '--role=gensim'),
         timing='', metric='words_per_s', peer_needs='gensim', extra=True),
]
BY_NAME = {c.name: c for c in CASES}


def command(case: Case, side: str, args) -> list:
  """The child's argv: the script, the case's arguments, sizes and timing, --json."""
  script, *rest = case.lmjax if side == 'lmjax' else case.peer
  py = sys.executable if side == 'lmjax' else args.peer_python
  cmd = [py, os.path.join(HERE, script), *rest]
  if case.extra:  # the other drivers' child roles take their own flags and print JSON
    if script == 'encoder.py':
      cmd += [f'--model_dir={args.model_dir}', f'--steps={args.steps}']
    return cmd
  if args.dry_run:
    cmd += list(case.lmjax_tiny if side == 'lmjax' else case.peer_tiny)
    steps, repeats = 1, 1
  else:
    steps, repeats = args.steps, args.repeats
  if case.max_repeats:
    repeats = min(repeats, case.max_repeats)
  if case.timing == 'train':
    cmd += [f'--steps={steps}', f'--repeats={repeats}']
  elif case.timing == 'generate':
    cmd += [f'--repeats={repeats}']
  return cmd + ['--json']


def run_child(cmd: list, timeout: int) -> tuple:
  """(last JSON line of stdout as a dict, or None; an error line or '')."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
  env.setdefault('JAX_PLATFORMS', 'cpu')
  try:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return None, f'timed out after {timeout} s'
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return None, f'exit {proc.returncode}: ' + ' | '.join(tail)
  return json.loads(lines[-1]), ''


def needs(case: Case) -> list:
  return [m for m in case.peer_needs.split(',') if m]


def probe(python: str, module: str):
  """None if `python` cannot import module; else its version (and torch's thread count)."""
  code = f'import {module} as m; print(getattr(m, "__version__", "?"))'
  if module == 'torch':
    code += '; print(m.get_num_threads())'
  proc = subprocess.run([python, '-c', code], capture_output=True, text=True)
  return proc.stdout.split() if proc.returncode == 0 else None


def fmt(x, digits: int = 1) -> str:
  return '—' if x is None else f'{x:,.{digits}f}'


def median_of(rows: list, key: str):
  xs = [r[key] for r in rows if r and r.get(key) is not None]
  return statistics.median(xs) if xs else None


def agreement(cases: list, results: dict) -> tuple:
  """(note lines, failures): parameter counts and decoded lengths where both sides give them.

  The peer's params_extra {what: count} names each difference from lmjax's layout; counts
  that differ by anything else are a failure, and so are different decode lengths per batch
  (decode_steps)."""
  notes, failures = [], []
  for c in cases:
    pairs = [(a, b) for a, b in zip(results[c.name]['lmjax'], results[c.name]['peer']) if a and b]
    with_params = [(a, b) for a, b in pairs if 'params' in a and 'params' in b]
    for a, b in with_params:
      extra = b.get('params_extra') or {}
      if b['params'] != a['params'] + sum(extra.values()):
        failures.append(f'{c.name}: parameter counts differ: lmjax {a["params"]:,}, peer '
                        f'{b["params"]:,}, named differences {extra or "none"}')
    if with_params:
      a, b = with_params[0]
      extra = b.get('params_extra') or {}
      why = ('equal' if a['params'] == b['params'] else
             'peer: ' + '; '.join(f'{v:+,} {k}' for k, v in extra.items()))
      notes.append(f'Parameters, {c.name}: lmjax {a["params"]:,}, peer {b["params"]:,} ({why}).')
    for a, b in pairs:  # the same batches and decode lengths on both sides
      if 'decode_steps' in a and 'decode_steps' in b and a['decode_steps'] != b['decode_steps']:
        failures.append(f'{c.name}: decode lengths per batch differ: lmjax {a["decode_steps"]}, '
                        f'peer {b["decode_steps"]}')
    lengths = [(a, b) for a, b in pairs if 'output_tokens_mean' in a and 'output_tokens_mean' in b]
    if lengths:
      a, b = lengths[0]
      notes.append(f'Output tokens per sentence (eos included), {c.name}: lmjax '
                   f'{a["output_tokens_mean"]}, peer {b["output_tokens_mean"]}.')
  return notes, failures


def table(cases: list, results: dict, loads: list, note: list) -> str:
  """The Markdown table and the per-round samples."""
  out = ['| case | lmjax tokens/s | peer tokens/s | lmjax / peer | lmjax compile s | '
         'lmjax peak RSS MB | peer peak RSS MB |',
         '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  samples = []
  for c in cases:
    lm, pe = results[c.name]['lmjax'], results[c.name]['peer']
    ratios = [a[c.metric] / b[c.metric] for a, b in zip(lm, pe) if a and b and b[c.metric]]
    unit = '' if c.metric == 'tokens_per_s' else f' ({c.metric.replace("_per_s", "")}/s)'
    out.append(f'| {c.name}: {c.what}{unit} | {fmt(median_of(lm, c.metric))} | '
               f'{fmt(median_of(pe, c.metric))} | '
               f'{fmt(statistics.median(ratios) if ratios else None, 3)} | '
               f'{fmt(median_of(lm, "compile_s"))} | {fmt(median_of(lm, "peak_rss_mb"), 0)} | '
               f'{fmt(median_of(pe, "peak_rss_mb"), 0)} |')
    samples.append(f'- {c.name}: lmjax ' + ', '.join(fmt(r and r[c.metric]) for r in lm) +
                   '; peer ' + ', '.join(fmt(r and r[c.metric]) for r in pe))
  load = (f'1-minute load average before each process: {min(loads):.2f}–{max(loads):.2f}'
          if loads else '')
  return '\n'.join(out + [''] + note + [load, 'Per round (tokens/s):'] + samples) + '\n'


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--cases', default='',
                  help='comma list of ' + ', '.join(BY_NAME) + ', or all (default: the '
                       'non-opt-in ones)')
  ap.add_argument('--rounds', type=int, default=3)
  ap.add_argument('--steps', type=int, default=2, help='train steps per timed repeat')
  ap.add_argument('--repeats', type=int, default=5, help='timed repeats in each process')
  ap.add_argument('--dry-run', dest='dry_run', action='store_true',
                  help='tiny sizes, one round, one step: checks the plumbing')
  ap.add_argument('--peer_python', default=sys.executable,
                  help='the interpreter for the peers (one with torch)')
  ap.add_argument('--model_dir', default='', help='the BERT directory of the encoder cases')
  ap.add_argument('--timeout', type=int, default=1800, help='seconds per process')
  ap.add_argument('--out', default='', help='also write the table to this file')
  args = ap.parse_args(argv)
  if args.cases == 'all':
    names = list(BY_NAME)
  elif args.cases:
    names = [n for n in args.cases.split(',') if n]
  else:
    names = [c.name for c in CASES if not c.extra]
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    ap.error(f'--cases: unknown {", ".join(unknown)} (one of {", ".join(BY_NAME)}, all)')
  cases = [BY_NAME[n] for n in names]
  if args.dry_run:
    skipped = [c.name for c in cases if c.extra]
    if skipped:
      print(f'--dry-run: skipping {", ".join(skipped)} (no tiny size)', file=sys.stderr)
    cases = [c for c in cases if not c.extra]
  if any(c.name.startswith('encoder') for c in cases) and not args.model_dir:
    ap.error('--model_dir is required by the encoder cases (benchmarks/encoder.py)')
  rounds = 1 if args.dry_run else args.rounds

  note, peer_ok = [], {}
  for module in sorted({m for c in cases for m in needs(c)}):
    got = probe(args.peer_python, module)
    peer_ok[module] = got is not None
    if got is None:
      line = (f'peer: {module} is not importable by {args.peer_python}; '
              + ('pip install torch==2.13.0+cpu (benchmarks/README.md)' if module == 'torch'
                 else f'pip install {module}') + '; running the lmjax side only of '
              + ', '.join(c.name for c in cases if module in needs(c)))
      print(line, file=sys.stderr, flush=True)
      note.append(line)
    elif module == 'torch':
      version, threads = (got + ['?', '?'])[:2]
      note.append(f'PyTorch peer: torch {version}, {threads} threads.')
    else:
      note.append(f'Peer: {module} {got[0] if got else "?"}.')
  if args.dry_run:
    note.append('Dry run: tiny sizes, one round, one step; the numbers mean nothing.')

  results = {c.name: {'lmjax': [], 'peer': []} for c in cases}
  loads, failed = [], []
  for r in range(rounds):
    for c in cases:
      has_peer = all(peer_ok[m] for m in needs(c))
      sides = ['lmjax'] + (['peer'] if has_peer else [])
      if r % 2:
        sides.reverse()
      for side in sides:
        cmd = command(c, side, args)
        load = os.getloadavg()[0]
        loads.append(load)
        print(f'[round {r + 1}/{rounds}] {c.name} {side}: load {load:.2f}; '
              + ' '.join(os.path.relpath(x, REPO) if x.startswith(HERE) else x
                         for x in cmd[1:]), file=sys.stderr, flush=True)
        row, err = run_child(cmd, args.timeout)
        if err:
          failed.append(f'{c.name} {side}: {err}')
          print(f'  failed: {err}', file=sys.stderr, flush=True)
        results[c.name][side].append(row)
      if not has_peer:
        results[c.name]['peer'].append(None)

  checks, mismatched = agreement(cases, results)
  failed += mismatched
  text = table(cases, results, loads, note + checks)
  if failed:
    text += 'Failed:\n' + ''.join(f'- {f}\n' for f in failed)
  print(text, end='', flush=True)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(text)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
