"""benchmarks/gpu_check.sh --dry-run: every stage runs at a tiny size on the CPU and writes its
JSON; a failing stage is recorded, the stages after it still run, and the exit status says so."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'benchmarks', 'gpu_check.sh')


def dry_run(tmp_path, *args, timeout=300):
  out = tmp_path / 'out'
  p = subprocess.run(['bash', SCRIPT, str(out), '--dry-run', f'--scratch={tmp_path / "scratch"}',
                      *args], cwd=tmp_path, env=dict(os.environ, PYTHON=sys.executable),
                     capture_output=True, text=True, timeout=timeout)
  read = lambda name: json.loads((out / f'{name}.json').read_text())
  return p, read


def test_dry_run_records_every_stage_and_goes_on_past_a_failing_one(tmp_path):
  # An unknown stage between the real ones: recorded as failed, the stages after it still run.
  p, read = dry_run(tmp_path, '--stages=tests,mfu,no_such_stage,lstm,mt')
  assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
  summary = read('summary')
  assert summary['failed'] == ['no_such_stage'], summary
  assert not summary['ok'] and summary['dry_run']
  assert 'unknown stage' in read('no_such_stage')['error']
  for name in ('tests', 'mfu', 'lstm', 'mt'):
    rec = read(name)
    assert rec['status'] == 'ok', (name, rec)
    assert summary['stages'][name]['status'] == 'ok'

  tests = read('tests')
  assert tests['passed'] > 0 and tests['failed'] == 0 and tests['errors'] == 0
  assert tests['wall_s'] > 0

  mfu = read('mfu')
  assert mfu['backend'] == 'cpu' and mfu['config'] == 'experiments/decoder_lm.py:tiny'
  assert mfu['tokens_per_s'] > 0 and mfu['step_s'] > 0 and mfu['compile_s'] > 0
  assert 0 < mfu['mfu'] < 1
  # The analytic count: 6 N + 12 L T D per token, N without the input embedding.
  assert mfu['params_for_flops'] < mfu['params']
  assert mfu['flop_per_token'] > 6 * mfu['params_for_flops']
  assert mfu['tflop_per_step_xla'] > 0

  lstm = read('lstm')
  assert lstm['shape']['units'] == 16 and lstm['tokens_per_step'] == 32
  assert [r['variant'] for r in lstm['lmjax']] == ['float32']
  assert lstm['lmjax'][0]['tokens_per_s'] > 0
  assert lstm['jax_cudnn']['status'].startswith('skipped: cuDNN')
  assert lstm['jax_cudnn']['tokens_per_s'] > 0  # the CPU reference of the same step
  if lstm['torch']['status'] == 'ok':
    assert lstm['torch']['tokens_per_s'] > 0 and lstm['torch']['same_shape']
    assert lstm['ratio_vs_torch']['float32'] > 0
  else:
    assert lstm['torch']['status'] == 'skipped: torch is not installed'

  mt = read('mt')
  assert mt['config'] == 'experiments/multi30k_transformer.py:tiny'
  assert mt['steps'] >= 4 and mt['steps_per_s'] > 0 and mt['target_tokens_per_s'] > 0
  assert not mt['completed'] and mt['sigterm_at_s'] > 0  # stopped by time, checkpointed
  assert isinstance(mt['bleu'], float) and 0 <= mt['bleu'] <= 100
  assert mt['bleu_signature'].startswith('nrefs:1')
  assert (tmp_path / 'out' / 'log.txt').exists()


def test_a_missing_data_folder_fails_the_translation_stage(tmp_path):
  p, read = dry_run(tmp_path, '--stages=mt,no_such_stage', f'--data={tmp_path / "nowhere"}')
  assert p.returncode == 1
  rec = read('mt')
  assert rec['status'] == 'failed'
  assert 'nowhere' in rec['error'] and 'train.en' in rec['error'], rec['error']
  assert read('summary')['failed'] == ['mt', 'no_such_stage']
