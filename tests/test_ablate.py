"""lmjax.ablate: sweeps of real lmjax.main runs, their tables, significance and plots.

The end-to-end test runs experiments/ablations/tiny.py (2 rows x 2 seeds of the tiny LM),
stops the sweep with SIGTERM while runs are in flight, reruns it, and checks that only the
unfinished runs ran again, that the interrupted one resumed, and that its numbers equal an
uninterrupted run of the same command. The table arithmetic, the markings, the significance
column and the plots are checked on hand-made run directories against numpy and sacreBLEU.
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from lmjax import sweep_report, sweeps
from cli_checks import one_line_error, signal_when, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'experiments', 'ablations', 'tiny.py')


def _env():
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
              XLA_FLAGS=xla_flags(1))


def _ablate(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'lmjax.ablate', *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _record(root, name):
  path = os.path.join(root, name, 'ablate.json')
  return json.load(open(path)) if os.path.exists(path) else {}


def _train_steps(workdir):
  return [r['step'] for r in sweep_report.read_metrics(workdir) if r['split'] == 'train']


def test_a_sweep_stopped_midway_finishes_only_what_is_missing(tmp_path):
  root = str(tmp_path / 'sweep')
  names = ['base/seed0', 'base/seed1', 'ff128/seed0', 'ff128/seed1']
  def ready(_):  # the first two runs done and the next two inside their train loops
    done = [n for n in names if _record(root, n).get('status') == 'done']
    return len(done) >= 2 and any(_train_steps(os.path.join(root, n)) for n in names[2:])

  rc, out, err = signal_when([sys.executable, '-m', 'lmjax.ablate', f'--sweep={TINY}',
                              f'--root={root}', '--parallel=2'], ready, signal.SIGTERM,
                             env=_env(), cwd=REPO)
  assert rc == 0, err[-3000:]
  assert 'stopped: the interrupted runs resume' in out, out
  first = {n: _record(root, n) for n in names}
  interrupted = [n for n in names if first[n].get('status') == 'interrupted']
  assert interrupted and all(first[n]['status'] in ('done', 'interrupted') for n in names)
  # (a run stopped before its first step has nothing to resume from and starts again)
  saved = [n for n in interrupted if os.listdir(os.path.join(root, n, 'checkpoints'))]
  assert saved, interrupted

  status = _ablate(f'--sweep={TINY}', f'--root={root}', '--status')
  assert status.returncode == 0, status.stderr[-2000:]
  for n in names:
    assert f'{first[n]["status"]:<12} {n}' in status.stdout, status.stdout

  second = _ablate(f'--sweep={TINY}', f'--root={root}', '--parallel=2')
  assert second.returncode == 0, second.stderr[-3000:]
  assert f'{len(names) - len(interrupted)} of 4 runs done; running {len(interrupted)}' in \
      second.stdout, second.stdout
  for n in names:
    rec = _record(root, n)
    assert rec['status'] == 'done'
    # A run finished before the stop was not started again.
    assert rec['segments'] == first[n]['segments'] + (n in interrupted), (n, rec, first[n])
  resumed = saved[0]
  log = open(os.path.join(root, resumed, 'log.txt')).read()
  assert 'resuming from step' in log, log

  # The resumed run's numbers are an uninterrupted run's: the same command, elsewhere.
  command = [c if not c.startswith('--workdir=') else f'--workdir={tmp_path / "clean"}'
             for c in _record(root, resumed)['command']]
  clean = subprocess.run([sys.executable, '-m', 'lmjax.main', *command], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
  assert clean.returncode == 0, clean.stderr[-2000:]
  table = json.load(open(os.path.join(root, 'results.json')))
  row, seed = resumed.split('/seed')
  got = next(r for r in table['rows'] if r['row'] == row)['per_seed'][seed]
  want = sweep_report.final(sweep_report.read_metrics(str(tmp_path / 'clean')), 'eval')
  assert got == {'eval ppl': want['ppl'], 'eval bpb': want['bpb']}
  for name in ('results.md', 'results.csv', 'results.tex', 'plots/curves.png',
               'plots/metrics.svg'):
    assert os.path.getsize(os.path.join(root, name)) > 0, name

  # --reuse: a new root takes every run from finished workdirs with the same config (the
  # clean lmjax.main workdir, listed first, for the resumed run; the first root for the rest)
  # and trains nothing; its table is the first root's.
  again = str(tmp_path / 'again')
  third = _ablate(f'--sweep={TINY}', f'--root={again}', f'--reuse={tmp_path / "clean"}',
                  f'--reuse={root}')
  assert third.returncode == 0, third.stderr[-3000:]
  assert '4 of 4 runs done; running 0' in third.stdout, third.stdout
  for n in names:
    source = str(tmp_path / 'clean') if n == resumed else os.path.join(root, n)
    assert _record(again, n)['reused_from'] == source, (n, _record(again, n))
    assert _record(again, n)['status'] == 'done'
  table_again = json.load(open(os.path.join(again, 'results.json')))
  assert [r['per_seed'] for r in table_again['rows']] == [r['per_seed'] for r in table['rows']]
  # The clean workdir has no lmjax.ablate log.txt: its parameter count comes from the
  # checkpoint's saved shapes, and equals the count the trainer logged for the same config.
  assert not os.path.exists(tmp_path / 'clean' / 'log.txt')
  assert [r['params'] for r in table_again['rows']] == [r['params'] for r in table['rows']]
  assert all(r['params'] for r in table['rows'])
  # --status lists a reused run with no recorded wall time (it was not run by lmjax.ablate).
  status = _ablate(f'--sweep={TINY}', f'--root={again}', '--status')
  assert status.returncode == 0, status.stderr[-2000:]
  assert re.search(rf'done +{re.escape(resumed)} +- *\n', status.stdout), status.stdout
  # A config that differs in one field (log_every) is not a match: nothing is copied.
  from lmjax import ablate  # pylint: disable=g-import-not-at-top
  sweep = sweeps.load(TINY)
  other = str(tmp_path / 'other')
  said = []
  got = ablate.reuse(sweeps.runs(sweep, other, {'log_every': '5'}), sweep, {'log_every': '5'},
                     [root], '--sweep=tiny', say=said.append)
  assert got == [] and said == [] and not os.path.exists(other)


def test_reuse_reads_an_old_run_by_todays_defaults_and_its_epochs(tmp_path, monkeypatch):
  """A field added after a run was made (absent from its saved config) matches only its
  default; a run trained by num_epochs is finished at its last step whatever num_train_steps
  says, and one trained by num_train_steps only at that step."""
  from lmjax import ablate, checkpoint, config_base  # pylint: disable=g-import-not-at-top
  defaults = json.loads(config_base.base_config().to_json_best_effort())
  now = json.loads(config_base.base_config().to_json_best_effort())
  saved = json.loads(json.dumps(now))
  del saved['data']['clean'], saved['nan_policy']
  filled = ablate._with_defaults(saved, defaults, now)
  assert checkpoint.config_changes(filled, now) == []
  now['data']['clean']['lowercase'] = True  # today's run asks for something the old one lacked
  assert checkpoint.config_changes(ablate._with_defaults(saved, defaults, now), now) == [
      "config.data.clean.lowercase: False in the checkpoint, True now"]
  # A field neither side of the comparison has is not invented.
  del now['nan_policy']
  assert 'nan_policy' not in ablate._with_defaults(saved, defaults, now)

  class Manager:  # the newest checkpoint is step 42
    def latest_step(self):
      return 42

    def close(self):
      pass

  config = {}
  monkeypatch.setattr(checkpoint, 'manager', lambda *a, **k: Manager())
  monkeypatch.setattr(checkpoint, 'read_meta', lambda m, step: {'config': config})
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write(json.dumps({'step': 42, 'split': 'eval', 'ppl': 3.0}) + '\n')
  config.update(num_epochs=2, num_train_steps=10)
  assert ablate.finished_config(str(tmp_path), {'eval'}) == config
  config.update(num_epochs=0)
  assert ablate.finished_config(str(tmp_path), {'eval'}) is None
  config.update(num_train_steps=42)
  assert ablate.finished_config(str(tmp_path), {'eval'}) == config
  assert ablate.finished_config(str(tmp_path), {'eval', 'test'}) is None  # no test report


# --------------------------------------------------------------------------- hand-made runs


def _fake_run(root, row, seed, evals, params=1000, wall=60.0, status='done', hyps=None,
              refs=None):
  wd = os.path.join(root, row, f'seed{seed}')
  os.makedirs(wd)
  with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
    for step, (loss, ppl, bleu) in enumerate(evals, 1):
      f.write(json.dumps({'step': step * 10, 'split': 'train', 'loss': loss}) + '\n')
      f.write(json.dumps({'step': step * 10, 'split': 'eval', 'ppl': ppl, 'bleu': bleu}) + '\n')
  with open(os.path.join(wd, 'log.txt'), 'w') as f:
    f.write(f'model transformer: {params:,} parameters; mesh ...\n')
  with open(os.path.join(wd, 'ablate.json'), 'w') as f:
    json.dump({'status': status, 'wall_s': wall, 'command': []}, f)
  for kind, lines in (('hypotheses', hyps), ('references', refs)):
    if lines is not None:
      with open(os.path.join(wd, f'{kind}.eval.txt'), 'w') as f:
        f.write(''.join(l + '\n' for l in lines))
  return wd


SENTS = ['the cat sat on the mat', 'a dog ran in the park', 'birds fly over the sea',
         'the old man reads a book', 'she plays the piano well', 'we walked to the station',
         'the sun rises in the east', 'children play in the garden']


def _hand_sweep(tmp_path):
  rows = [sweeps.Row('base', {}, '(base)'), sweeps.Row('wide', {'model.d_ff': 128}, '(C)'),
          sweeps.Row('deep', {'model.num_layers': 4}, '(C)')]
  sweep = sweeps.Sweep(config='experiments/synthetic_lm.py:tiny', rows=rows, seeds=(0, 1, 2),
                       metrics=[sweeps.Metric('ppl', 'min', 'eval'),
                                sweeps.Metric('bleu', 'max', 'eval')],
                       base_row='base', significance='bleu', significance_split='eval')
  root = str(tmp_path)
  rng = np.random.default_rng(0)
  finals = {}
  for row in rows:
    for seed in sweep.seeds:
      if row.name == 'deep' and seed == 2:
        _fake_run(root, row.name, seed, [(3.0, 9.0, 1.0)], status='failed')  # not counted
        continue
      ppl, bleu = rng.uniform(5, 50), rng.uniform(0, 40)
      hyps = [s if rng.random() < 0.5 else ' '.join(s.split()[::-1]) for s in SENTS]
      _fake_run(root, row.name, seed, [(4.0, ppl * 2, bleu / 2), (3.5, ppl, bleu)],
                params=1000 + len(row.name), hyps=hyps, refs=SENTS)
      finals[row.name, seed] = (ppl, bleu)
  return sweep, root, sweeps.runs(sweep, root), finals


def test_table_means_stds_and_best_marks_match_numpy(tmp_path):
  sweep, root, runs, finals = _hand_sweep(tmp_path)
  lines = sweep_report.summarize(sweep, sweep_report.collect(sweep, runs))
  assert [l['row'] for l in lines] == ['base', 'wide', 'deep']
  for l in lines:
    for j, col in enumerate(('eval ppl', 'eval bleu')):
      vals = [finals[l['row'], s][j] for s in sweep.seeds if (l['row'], s) in finals]
      st = l['stats'][col]
      assert st['n'] == len(vals) and st['mean'] == pytest.approx(np.mean(vals))
      assert st['std'] == pytest.approx(np.std(vals, ddof=1))
    assert l['params'] == 1000 + len(l['row']) and l['steps'] == 20
  for j, (col, pick) in enumerate((('eval ppl', np.argmin), ('eval bleu', np.argmax))):
    means = [l['stats'][col]['mean'] for l in lines]
    assert [l['stats'][col]['best'] for l in lines] == [i == pick(means) for i in range(3)]
  md = sweep_report.markdown(sweep, lines)
  best_row = lines[int(np.argmin([l['stats']['eval ppl']['mean'] for l in lines]))]
  assert f'**{sweep_report.cell(best_row["stats"]["eval ppl"])}**' in md
  assert '(n=2)' in md and '(n=3)' in md
  csv_lines = sweep_report.csv_text(sweep, lines).splitlines()
  assert len(csv_lines) == 4 and csv_lines[0].startswith('group,row,changes,params')
  assert r'\pm' in sweep_report.latex(sweep, lines)


def test_significance_is_sacrebleus_paired_bootstrap_on_the_same_files(tmp_path):
  from sacrebleu.metrics import BLEU
  from sacrebleu.significance import PairedTest
  sweep, root, runs, _ = _hand_sweep(tmp_path)
  lines = sweep_report.summarize(sweep, sweep_report.collect(sweep, runs))
  sweep_report.significance(sweep, lines)
  read = lambda row, kind: open(os.path.join(root, row, 'seed0', f'{kind}.eval.txt')).read(
  ).split('\n')[:-1]
  for l in lines[1:]:
    _, scores = PairedTest([('base', read('base', 'hypotheses')),
                            (l['row'], read(l['row'], 'hypotheses'))], {'BLEU': BLEU()},
                           [read('base', 'references')], test_type='bs', n_samples=1000)()
    base, row = scores['BLEU']
    s = l['significance']
    assert s['seed'] == 0 and s['delta'] == pytest.approx(row.score - base.score)
    assert s['p_value'] == row.p_value
  assert 'significance' not in lines[0]


def test_plots_hold_one_curve_per_row(tmp_path):
  sweep, root, runs, _ = _hand_sweep(tmp_path)
  lines = sweep_report.summarize(sweep, sweep_report.collect(sweep, runs))
  drawn = sweep_report.plots(sweep, lines, os.path.join(root, 'plots'))
  assert drawn['train loss'] == drawn['eval ppl'] == ['base', 'wide', 'deep']
  for name in ('curves.png', 'curves.svg', 'metrics.png', 'metrics.svg'):
    assert os.path.getsize(os.path.join(root, 'plots', name)) > 1000


@pytest.mark.parametrize('name', sorted(
    f for f in os.listdir(os.path.join(REPO, 'experiments', 'ablations')) if f.endswith('.py')))
def test_every_shipped_sweep_passes_its_checks(name):
  path = os.path.join(REPO, 'experiments', 'ablations', name)
  sweep = sweeps.load(path)
  sweeps.check(sweep, path, data=False)
  runs = sweeps.runs(sweep, '/tmp/root')
  assert len(runs) == len(sweep.rows) * len(sweep.seeds)
  assert len({r.workdir for r in runs}) == len(runs)


def test_grid_and_random_search_rows():
  rows = sweeps.grid({'optimizer.learning_rate': [1e-3, 3e-3], 'batch_size': [16, 32]})
  assert [r.name for r in rows] == ['learning_rate=0.001,batch_size=16',
                                    'learning_rate=0.001,batch_size=32',
                                    'learning_rate=0.003,batch_size=16',
                                    'learning_rate=0.003,batch_size=32']
  space = {'optimizer.learning_rate': sweeps.LogUniform(1e-4, 1e-2),
           'model.dropout_rate': sweeps.Choice([0.0, 0.1]), 'batch_size': 32}
  a, b = sweeps.random_search(space, 20, seed=3), sweeps.random_search(space, 20, seed=3)
  assert a == b
  lrs = [r.overrides['optimizer.learning_rate'] for r in a]
  assert all(1e-4 <= x <= 1e-2 for x in lrs) and min(lrs) < 1e-3 < max(lrs)
  assert {r.overrides['model.dropout_rate'] for r in a} == {0.0, 0.1}


def test_slurm_dry_run_is_a_job_array_with_one_task_per_run(tmp_path):
  proc = _ablate(f'--sweep={TINY}', f'--root={tmp_path}/r', '--launch=slurm', '--dry-run',
                 '--launch_args=--partition=gpu --time=1:00:00')
  assert proc.returncode == 0, proc.stderr[-2000:]
  script = proc.stdout
  assert '#SBATCH --array=0-3' in script and '#SBATCH --partition=gpu' in script
  for i, name in enumerate(['base/seed0', 'base/seed1', 'ff128/seed0', 'ff128/seed1']):
    assert f'  {i}) exec python -m lmjax.main' in script and f'# {name}' in script
    assert f'--workdir={tmp_path}/r/{name}' in script
  assert not os.path.exists(f'{tmp_path}/r')


@pytest.mark.parametrize('body, needle', [
    ("Sweep(config=CFG, rows=[])", 'defines no rows'),
    ("Sweep(config=CFG, rows=[Row('a'), Row('a')])", "two rows are named 'a'"),
    ("Sweep(config=CFG, rows=[Row('a', {'model.no_such_field': 1})])",
     "row 'a': unknown config field model.no_such_field"),
    ("Sweep(config=CFG, rows=[Row('a', {'optimizer.learning_rate': -1.0})])",
     "row 'a'"),
])
def test_bad_sweeps_are_one_line_and_start_nothing(tmp_path, body, needle):
  path = tmp_path / 'bad.py'
  path.write_text('from lmjax.sweeps import Row, Sweep\n'
                  f"CFG = {os.path.join(REPO, 'experiments', 'synthetic_lm.py:tiny')!r}\n"
                  f'def get_sweep():\n  return {body}\n')
  proc = _ablate(f'--sweep={path}', f'--root={tmp_path}/root')
  one_line_error(proc, needle)
  assert not os.path.exists(tmp_path / 'root')


def test_a_root_of_another_sweep_definition_is_refused(tmp_path):
  root = tmp_path / 'root'
  wd = root / 'base' / 'seed0'
  wd.mkdir(parents=True)
  (wd / 'ablate.json').write_text(json.dumps({'status': 'done', 'command': ['--other']}))
  before = (wd / 'ablate.json').read_text()
  proc = _ablate(f'--sweep={TINY}', f'--root={root}')
  one_line_error(proc, 'run base/seed0 was made by another sweep definition', '--force')
  assert (wd / 'ablate.json').read_text() == before
  assert sorted(os.listdir(root)) == ['base']
