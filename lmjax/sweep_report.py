"""A sweep's results: the table (Markdown, CSV, LaTeX, JSON), BLEU significance and plots.

Read from the runs' own files only: WORKDIR/metrics.jsonl (the final line of each split; a
resumed run may repeat steps, the later line wins), log.txt (the parameter count lmjax.main
prints), ablate.json (status and wall time), and for translation the test-set decode
WORKDIR/hypotheses.SPLIT.txt / references.SPLIT.txt (the test split unless the sweep says).

Table columns: group, row, what it changes, parameters, steps, wall time, then per metric
mean ± standard deviation over the finished seeds (sample std, n - 1; n shown), the best
mean per column marked (bold; `best` in the CSV). With `significance='bleu'`, each row's
test BLEU is compared with the base row's on the same seed by sacreBLEU's paired bootstrap
resampling (sacrebleu.significance.PairedTest, 1,000 resamples): ΔBLEU and its p-value.

Plots (matplotlib, PNG and SVG in ROOT/plots): learning curves (train loss and the first
metric on the eval split against step; a line per row, the mean over seeds, with the seeds'
range as a band) and the metrics per row with error bars (± std).
"""

import csv
import io
import json
import math
import os
import re
from typing import Optional

import numpy as np

from lmjax import paths, sweeps

_PARAMS = re.compile(r'^model \S+: ([\d,]+) parameters')


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except ValueError:
        continue  # a line cut by a kill
  return out


def final(lines: list[dict], split: str) -> dict:
  """The report at the highest step of `split` (later lines win)."""
  best = {}
  for rec in lines:
    if rec.get('split') == split and rec.get('step', -1) >= best.get('step', -1):
      best = rec
  return best


def curve(lines: list[dict], split: str, key: str) -> dict:
  """{step: value} of one key (later lines win)."""
  return {rec['step']: rec[key] for rec in lines
          if rec.get('split') == split and isinstance(rec.get(key), (int, float))}


def num_params(workdir: str) -> Optional[int]:
  """The parameter count the run's log.txt states, else (a workdir made outside lmjax.ablate)
  the sum over the newest checkpoint's saved parameter shapes."""
  try:
    with open(os.path.join(workdir, 'log.txt'), encoding='utf-8', errors='replace') as f:
      for line in f:
        m = _PARAMS.match(line)
        if m:
          return int(m.group(1).replace(',', ''))
  except OSError:
    pass
  steps = [int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))
           if d.isdigit()] if os.path.isdir(os.path.join(workdir, 'checkpoints')) else []
  if not steps:
    return None
  from lmjax import checkpoint  # pylint: disable=g-import-not-at-top  (orbax, only here)
  layout = checkpoint.saved_layout(os.path.join(workdir, 'checkpoints', str(max(steps))))
  if not layout:
    return None
  return sum(int(np.prod(shape)) for name, shape in layout.items() if name.startswith('params/'))


def short_config(spec: str) -> str:
  """experiments/FILE.py[:variant] of a resolved (absolute) experiment path."""
  i = spec.rfind('experiments/')
  return spec[i:] if i >= 0 else spec


def changes_text(row: sweeps.Row) -> str:
  parts = [short_config(row.config)] if row.config else []
  parts += [f'{k}={sweeps.value_text(v)}' for k, v in row.overrides.items()]
  return ', '.join(parts) or '-'


def collect(sweep: sweeps.Sweep, runs: list) -> list[dict]:
  """One entry per table line: a row (and its checkpoint average when it asks for one)."""
  by_row = {}
  for run in runs:
    by_row.setdefault(run.row.name, []).append(run)
  lines = []
  for row in sweep.rows:
    variants = [('', lambda r: r.workdir)]
    if row.average_last:
      variants.append((f'+avg{row.average_last}', lambda r: os.path.join(r.workdir, 'averaged')))
    for suffix, where in variants:
      seeds = {}
      for run in by_row[row.name]:
        record = run.record()
        if record.get('status') != 'done':
          continue
        wd = where(run)
        own = read_metrics(run.workdir)
        m = own if wd == run.workdir else read_metrics(wd)
        values = {}
        for metric in sweep.metrics:
          v = final(m, metric.split).get(metric.key)
          if isinstance(v, (int, float)):
            values[metric.column] = float(v)
        if not values:
          continue
        seeds[run.seed] = {'workdir': wd, 'values': values,
                           'steps': final(own, 'train').get('step'),
                           'params': num_params(run.workdir),
                           'wall_s': record.get('wall_s'),
                           'train_curve': curve(m, 'train', 'loss'),
                           'eval_curve': curve(m, 'eval', sweep.metrics[0].key)}
      lines.append({'row': row.name + suffix, 'base_name': row.name, 'group': row.group,
                    'changes': changes_text(row) + (f'; average of the last '
                                                    f'{row.average_last} checkpoints'
                                                    if suffix else ''),
                    'seeds': seeds, 'n_runs': len(by_row[row.name])})
  return lines


def summarize(sweep: sweeps.Sweep, lines: list[dict]) -> list[dict]:
  """Adds mean / std / n per metric and marks the best mean of each column."""
  for line in lines:
    seeds = line['seeds'].values()
    line['stats'] = {}
    for metric in sweep.metrics:
      vals = [s['values'][metric.column] for s in seeds if metric.column in s['values']]
      line['stats'][metric.column] = {
          'mean': float(np.mean(vals)) if vals else math.nan,
          'std': float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
          'n': len(vals), 'best': False, 'values': vals}
    first = lambda k: next((s[k] for s in seeds if s.get(k) is not None), None)  # pylint: disable=cell-var-from-loop
    line['params'], line['steps'] = first('params'), first('steps')
    walls = [s['wall_s'] for s in seeds if s.get('wall_s') is not None]
    line['wall_s'] = float(np.mean(walls)) if walls else None
  for metric in sweep.metrics:
    means = [(l['stats'][metric.column]['mean'], i) for i, l in enumerate(lines)
             if l['stats'][metric.column]['n']]
    if means:
      pick = max if metric.mode == 'max' else min
      best = pick(m for m, _ in means)
      for m, i in means:
        lines[i]['stats'][metric.column]['best'] = m == best
  return lines


def _read_lines(path: str) -> Optional[list[str]]:
  try:
    with open(path, encoding='utf-8') as f:
      return f.read().split('\n')[:-1]
  except OSError:
    return None


def significance(sweep: sweeps.Sweep, lines: list[dict], n_samples: int = 1000) -> None:
  """line['significance'] = {'seed', 'delta', 'p_value', 'bleu', 'base_bleu'} for every row
  that shares a finished seed with the base row (the first such seed), from the decodes of
  sweep.significance_split, by sacreBLEU's paired bootstrap resampling."""
  if sweep.significance != 'bleu':
    return
  from sacrebleu.metrics import BLEU  # pylint: disable=g-import-not-at-top
  from sacrebleu.significance import PairedTest  # pylint: disable=g-import-not-at-top
  base = next((l for l in lines if l['row'] == sweep.base_row), None)
  if base is None:
    return
  for line in lines:
    if line is base:
      continue
    common = sorted(set(line['seeds']) & set(base['seeds']))
    for seed in common:
      b_dir, r_dir = base['seeds'][seed]['workdir'], line['seeds'][seed]['workdir']
      split = sweep.significance_split
      refs = _read_lines(os.path.join(b_dir, f'references.{split}.txt'))
      b_hyp = _read_lines(os.path.join(b_dir, f'hypotheses.{split}.txt'))
      r_hyp = _read_lines(os.path.join(r_dir, f'hypotheses.{split}.txt'))
      if refs is None or b_hyp is None or r_hyp is None or not len(refs) == len(b_hyp) == len(
          r_hyp):
        continue
      test = PairedTest([(sweep.base_row, b_hyp), (line['row'], r_hyp)], {'BLEU': BLEU()},
                        [refs], test_type='bs', n_samples=n_samples)
      _, scores = test()
      b, r = scores['BLEU']
      line['significance'] = {'seed': seed, 'bleu': r.score, 'base_bleu': b.score,
                              'delta': r.score - b.score, 'p_value': r.p_value}
      break


# --------------------------------------------------------------------------- formatting


def _num(v: float) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return '-'
  a = abs(v)
  return f'{v:.2f}' if a >= 10 else f'{v:.3f}' if a >= 0.1 else f'{v:.4g}'


def cell(stat: dict) -> str:
  if not stat['n']:
    return '-'
  text = _num(stat['mean'])
  if stat['n'] > 1:
    text += f' ± {_num(stat["std"])}'
  return f'{text} (n={stat["n"]})'


def _sig_text(line: dict) -> str:
  s = line.get('significance')
  if not s:
    return '-'
  return f'{s["delta"]:+.2f} (p={s["p_value"]:.3f})'


def _wall(v) -> str:
  return '-' if v is None else f'{v / 60:.1f} min'


def table_rows(sweep: sweeps.Sweep, lines: list[dict], bold=lambda t: f'**{t}**') -> list[list]:
  header = ['group', 'row', 'changes', 'params', 'steps', 'wall']
  header += [m.column for m in sweep.metrics]
  if sweep.significance:
    header.append(f'Δ BLEU vs {sweep.base_row} (p)')
  body = []
  for l in lines:
    cells = [l['group'] or '-', l['row'], l['changes'],
             f'{l["params"]:,}' if l['params'] else '-', str(l['steps'] or '-'), _wall(l['wall_s'])]
    for m in sweep.metrics:
      st = l['stats'][m.column]
      cells.append(bold(cell(st)) if st['best'] else cell(st))
    if sweep.significance:
      cells.append(_sig_text(l))
    body.append(cells)
  return [header] + body


def markdown(sweep: sweeps.Sweep, lines: list[dict]) -> str:
  rows = table_rows(sweep, lines)
  out = [f'# {sweep.title or short_config(sweep.config)}', '',
         f'Base experiment `{short_config(sweep.config)}`, seeds {list(sweep.seeds)}; mean ± std over the '
         'finished seeds (n), the best of each column in bold.', '']
  out.append('| ' + ' | '.join(rows[0]) + ' |')
  out.append('|' + '|'.join('---' if i < 3 else '---:' for i in range(len(rows[0]))) + '|')
  out += ['| ' + ' | '.join(c.replace('|', '\\|') for c in r) + ' |' for r in rows[1:]]
  return '\n'.join(out) + '\n'


def latex(sweep: sweeps.Sweep, lines: list[dict]) -> str:
  esc = lambda t: (t.replace('\\', r'\textbackslash{}').replace('_', r'\_').replace('%', r'\%')
                   .replace('&', r'\&').replace('#', r'\#').replace('±', r'$\pm$')
                   .replace('Δ', r'$\Delta$'))
  rows = table_rows(sweep, lines, bold=lambda t: '\x00' + t + '\x01')
  fmt = 'lll' + 'r' * (len(rows[0]) - 3)
  out = [r'\begin{tabular}{' + fmt + '}', r'\hline',
         ' & '.join(esc(c) for c in rows[0]) + r' \\', r'\hline']
  for r in rows[1:]:
    out.append(' & '.join(esc(c).replace('\x00', r'\textbf{').replace('\x01', '}') for c in r)
               + r' \\')
  out += [r'\hline', r'\end{tabular}']
  return '\n'.join(out) + '\n'


def csv_text(sweep: sweeps.Sweep, lines: list[dict]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf)
  header = ['group', 'row', 'changes', 'params', 'steps', 'wall_s']
  for m in sweep.metrics:
    header += [f'{m.column} mean', f'{m.column} std', f'{m.column} n', f'{m.column} best']
  if sweep.significance:
    header += ['delta_bleu', 'p_value', 'significance_seed']
  w.writerow(header)
  for l in lines:
    r = [l['group'], l['row'], l['changes'], l['params'] or '', l['steps'] or '',
         '' if l['wall_s'] is None else f'{l["wall_s"]:.1f}']
    for m in sweep.metrics:
      st = l['stats'][m.column]
      r += [repr(st['mean']) if st['n'] else '', repr(st['std']) if st['n'] > 1 else '',
            st['n'], int(st['best'])]
    if sweep.significance:
      s = l.get('significance') or {}
      r += [s.get('delta', ''), s.get('p_value', ''), s.get('seed', '')]
    w.writerow(r)
  return buf.getvalue()


def json_data(sweep: sweeps.Sweep, lines: list[dict]) -> dict:
  def clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v
  return {'config': sweep.config, 'seeds': list(sweep.seeds),
          'metrics': [{'column': m.column, 'key': m.key, 'split': m.split, 'mode': m.mode}
                      for m in sweep.metrics],
          'rows': [{'row': l['row'], 'group': l['group'], 'changes': l['changes'],
                    'params': l['params'], 'steps': l['steps'], 'wall_s': l['wall_s'],
                    'stats': {k: {kk: clean(vv) for kk, vv in st.items()}
                              for k, st in l['stats'].items()},
                    'per_seed': {str(s): d['values'] for s, d in l['seeds'].items()},
                    'significance': l.get('significance')} for l in lines]}


# --------------------------------------------------------------------------- plots


def plots(sweep: sweeps.Sweep, lines: list[dict], directory: str) -> dict:
  """Writes curves.{png,svg} and metrics.{png,svg}; returns {panel title: [line labels]}."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  drawn = {}
  key = sweep.metrics[0].key
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, name, title in ((axes[0], 'train_curve', 'train loss'),
                          (axes[1], 'eval_curve', f'eval {key}')):
    labels = []
    for l in lines:
      curves = [s[name] for s in l['seeds'].values() if s[name]]
      if not curves:
        continue
      steps = sorted(set.intersection(*(set(c) for c in curves)))
      if not steps:
        continue
      vals = np.array([[c[s] for s in steps] for c in curves])
      line, = ax.plot(steps, vals.mean(0), marker='o', markersize=3, label=l['row'])
      if len(curves) > 1:
        ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2, color=line.get_color())
      labels.append(l['row'])
    ax.set_xlabel('step')
    ax.set_title(title)
    if labels:
      ax.legend(fontsize=7)
    drawn[title] = labels
  fig.tight_layout()
  for ext in ('png', 'svg'):
    fig.savefig(os.path.join(directory, f'curves.{ext}'), dpi=120)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(sweep.metrics), figsize=(5 * len(sweep.metrics), 4),
                           squeeze=False)
  for ax, metric in zip(axes[0], sweep.metrics):
    shown = [l for l in lines if l['stats'][metric.column]['n']]
    x = np.arange(len(shown))
    means = [l['stats'][metric.column]['mean'] for l in shown]
    stds = [np.nan_to_num(l['stats'][metric.column]['std']) for l in shown]
    ax.errorbar(x, means, yerr=stds, fmt='o', capsize=3)
    ax.set_xticks(x, [l['row'] for l in shown], rotation=45, ha='right', fontsize=7)
    ax.set_title(f'{metric.column} ({"higher" if metric.mode == "max" else "lower"} is better)')
    drawn[metric.column] = [l['row'] for l in shown]
  fig.tight_layout()
  for ext in ('png', 'svg'):
    fig.savefig(os.path.join(directory, f'metrics.{ext}'), dpi=120)
  plt.close(fig)
  return drawn


# --------------------------------------------------------------------------- all of it


def write(sweep: sweeps.Sweep, runs: list, root: str, say=print, partial: bool = False) -> list:
  """Writes ROOT/results.* and ROOT/plots; returns the summarized lines."""
  lines = summarize(sweep, collect(sweep, runs))
  if not any(l['seeds'] for l in lines):
    say('no finished runs yet: no table')
    return lines
  significance(sweep, lines)
  files = {'results.md': markdown(sweep, lines), 'results.csv': csv_text(sweep, lines),
           'results.tex': latex(sweep, lines),
           'results.json': json.dumps(json_data(sweep, lines), indent=1) + '\n'}
  for name, text in files.items():
    paths.write_text(os.path.join(root, name), text)
  try:
    plots(sweep, lines, os.path.join(root, 'plots'))
    plotted = f', plots in {os.path.join(root, "plots")}'
  except ImportError:
    plotted = ' (no plots: pip install -e ".[plots]" for matplotlib)'
  say(files['results.md'].rstrip())
  say(f'wrote {os.path.join(root, "results.md")} (.csv, .tex, .json){plotted}'
      + (' -- partial: not every run has finished' if partial else ''))
  return lines
