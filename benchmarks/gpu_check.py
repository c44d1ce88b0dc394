"""One GPU check in four stages, each in its own process, each writing OUTDIR/<stage>.json.

Run it through benchmarks/gpu_check.sh (which finds the Python, installs carried wheels and
sets PYTHONPATH); its header says how to prepare the data and wheels and launch it on the
device machine.

  tests  the single-device test subset (SINGLE_DEVICE_TESTS) with pytest on the GPU backend:
         passed / failed / error / skipped counts, the failing test ids, wall time.
  mfu    experiments/decoder_lm.py:1b in bf16: the trainer's own jitted step
         (lmjax.steps.prepare) on a fixed random batch (batch reduced for one GPU, recorded),
         compile time, median step time, tokens/s and MFU of the analytic FLOPs
         (6·N·tokens + 12·L·T·D·tokens, N = non-embedding params + the logits matmul) against
         790 TFLOP/s dense bf16 (and against a measured bf16 matmul).
  lstm   experiments/ptb_lstm.py:medium as benchmarks/lstm_lm.py builds it (f32, bf16, and
         f32 with the autodiff recurrent backward), against benchmarks/torch_lstm_lm.py
         (nn.LSTM, cuDNN) run as its own process on the GPU, and against the same LM step
         written around jax.experimental.rnn.lstm (JAX's cuDNN LSTM): tokens/s each.
  mt     Multi30k en->de, experiments/multi30k_transformer.py:small through `python -m
         lmjax.main`, stopped by SIGTERM (a checkpoint is saved) when its time is up or after
         the config's 3,000 steps, then beam-4 BLEU of the last checkpoint on
         test_2016_flickr with `python -m lmjax.translate`: steps/s, tokens/s, BLEU.

A stage that fails records status 'failed' and a one-line error in its JSON (a stage whose
process dies or runs past its share of --budget is recorded by the orchestrator) and the next
stage runs; summary.json lists every stage's status and headline numbers, and the exit status
is 1 if any stage failed. Parts that cannot run (cuDNN on a CPU, torch not installed) are
recorded as 'skipped: reason' and do not fail the stage.

--dry-run runs every stage at a tiny size on the CPU backend (decoder_lm.py:tiny,
ptb_lstm.py:tiny, multi30k_transformer.py:tiny on a generated synthetic parallel corpus, one
test), compiled with --xla_backend_optimization_level=0 (its timings are no benchmark);
tests/test_gpu_check.py runs it.
"""

import argparse
import importlib.util
import json
import os
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
STAGES = ('tests', 'mfu', 'lstm', 'mt')
PEAK_BF16_TFLOPS = 790.0  # H200 dense bf16 (device notes: 769-798 measured with PyTorch)
CPU_BF16_TFLOPS = 0.39  # 2 CPU cores, bf16 with f32 accumulation (DESIGN.md)

# Quick test files that need one device (no mesh, no multi-process, no lmjax.main runs).
SINGLE_DEVICE_TESTS = (
    'tests/test_attention.py', 'tests/test_layers.py', 'tests/test_cross_entropy.py',
    'tests/test_custom_vjp.py', 'tests/test_matmul_vjp.py', 'tests/test_rnn.py',
    'tests/test_rnn_seq2seq.py', 'tests/test_beam_search.py', 'tests/test_decoding.py',
    'tests/test_translate_lengths.py', 'tests/test_bert.py', 'tests/test_bleu.py',
    'tests/test_optim.py', 'tests/test_bptt.py')
DRY_RUN_TESTS = ('tests/test_cross_entropy.py::test_values_and_gradients_match_autodiff',)
# Asserts the CPU backend (its GPU branch is a monkeypatch), so it cannot pass on a GPU.
DESELECT = 'not test_custom_vjp_auto_follows_the_backend'

# Seconds: each stage's cap and the least it is worth starting with (real run; the mt stage
# takes what is left of --budget). TRANSLATE_S is kept back from training for the BLEU pass.
STAGE_CAP_S = {'tests': 120, 'mfu': 130, 'lstm': 100, 'mt': None}
STAGE_MIN_S = {'tests': 30, 'mfu': 45, 'lstm': 30, 'mt': 120}
TRANSLATE_S = 75
MT_DATA_FILES = ('train', 'val', 'test_2016_flickr')


class StageError(Exception):
  """A stage's one-line failure."""


def write_json(path: str, obj: dict) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def backend_info() -> dict:
  import jax
  d = jax.devices()[0]
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'device_kind': d.device_kind, 'device_count': jax.device_count()}


def peak_memory_gib() -> float | None:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return round(peak / 2**30, 2) if peak else None


# --- the trainer's own step on a fixed random batch --------------------------------------------


def TrainerStep(config, vocab_size: int):
  """benchmarks/transformer_lm.py's TrainStep: the trainer's own step on a random batch."""
  from transformer_lm import TrainStep  # this script's directory is on sys.path
  return TrainStep(config, vocab_size)


def time_steps(trainer, steps: int, repeats: int) -> dict:
  from transformer_lm import time_runs  # this script's directory is on sys.path
  per_step = [t / steps for t in time_runs(lambda: trainer.run(steps), repeats)]
  step_s = statistics.median(per_step)
  return {'compile_s': round(trainer.compile_s, 2), 'step_s': round(step_s, 5),
          'step_s_all': [round(s, 5) for s in per_step],
          'tokens_per_s': round(trainer.tokens_per_step / step_s, 1),
          'loss_after_warmup': round(trainer.loss, 3)}


# --- stage: tests ---------------------------------------------------------------------------


def stage_tests(rec: dict, args) -> None:
  import xml.etree.ElementTree as ET
  files = DRY_RUN_TESTS if args.dry_run else SINGLE_DEVICE_TESTS
  junit = os.path.join(args.scratch, 'junit.xml')
  cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', DESELECT,
         f'--junitxml={junit}', *files]
  if args.test_workers > 0:
    cmd[4:4] = ['-n', str(args.test_workers), '--dist', 'loadfile']
  env = dict(os.environ, JAX_PLATFORMS=args.platform,
             JAX_DEFAULT_MATMUL_PRECISION=args.matmul_precision)
  env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'  # several workers share the GPU
  rec.update(files=list(files), deselected=DESELECT, workers=args.test_workers,
             matmul_precision=args.matmul_precision, command=' '.join(cmd[1:]))
  t0 = time.perf_counter()
  p = subprocess.Popen(cmd, cwd=REPO, env=env)
  try:
    p.wait(timeout=max(args.deadline - time.time() - 20, 1))
  except subprocess.TimeoutExpired:  # Ctrl-C: pytest stops and still writes the junit file
    rec['interrupted'] = 'at the stage\'s time limit (SIGINT)'
    p.send_signal(signal.SIGINT)
    try:
      p.wait(timeout=15)
    except subprocess.TimeoutExpired:
      kill_tree(p.pid)  # with its xdist workers
      p.wait()
  rec['wall_s'] = round(time.perf_counter() - t0, 1)
  rec['pytest_exit'] = p.returncode
  if not os.path.exists(junit):
    raise StageError(f'pytest exited {p.returncode} without writing {junit}')
  root = ET.parse(junit).getroot()
  suite = root if root.tag == 'testsuite' else root.find('testsuite')
  n = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
  bad = [f'{c.get("classname")}::{c.get("name")}' for c in suite.iter('testcase')
         if c.find('failure') is not None or c.find('error') is not None]
  rec.update(passed=n['tests'] - n['failures'] - n['errors'] - n['skipped'],
             failed=n['failures'], errors=n['errors'], skipped=n['skipped'],
             failing_tests=bad[:50])
  if n['failures'] or n['errors'] or p.returncode or 'interrupted' in rec:
    raise StageError(f'{n["failures"]} failed and {n["errors"]} errors of {n["tests"]} tests '
                     f'(pytest exit {p.returncode}{", interrupted" * ("interrupted" in rec)})')


# --- stage: mfu -------------------------------------------------------------------------------


def analytic_flops_per_token(params: dict, config) -> tuple[int, float]:
  """(N, 6·N + 12·L·T·D): N = the parameters less the input embedding and learned positions,
  plus the logits matmul when it reuses the embedding (tied)."""
  import numpy as np
  import jax
  m = config.model
  n = sum(int(np.prod(x.shape)) for k, v in params.items()
          if k not in ('embedding', 'pos_embedding') for x in jax.tree.leaves(v))
  if m.tie_embeddings:
    n += m.d_model * config.data.vocab_size
  return n, 6.0 * n + 12.0 * m.num_layers * config.seq_len * m.d_model


def stage_mfu(rec: dict, args) -> None:
  from lmjax import config_base
  from transformer_lm import matmul_ceiling
  variant = 'tiny' if args.dry_run else '1b'
  c = config_base.load_experiment('decoder_lm.py', variant)
  if not args.dry_run:
    c.batch_size = args.mfu_batch
  if args.mfu_remat:
    c.model.remat = args.mfu_remat
  rec.update(backend_info(), config=f'experiments/decoder_lm.py:{variant}',
             batch_size=c.batch_size, seq_len=c.seq_len, dtype=c.model.dtype,
             remat=c.model.remat, scan_layers=c.model.scan_layers)
  tr = TrainerStep(c, c.data.vocab_size)
  n, per_token = analytic_flops_per_token(tr.state['params'], c)
  rec.update(params=tr.num_params, params_for_flops=n, tokens_per_step=tr.tokens_per_step,
             flop_per_token=per_token)
  rec.update(time_steps(tr, args.mfu_steps, args.repeats))
  flops = per_token * tr.tokens_per_step
  achieved = flops / rec['step_s'] / 1e12
  ceiling = matmul_ceiling('bfloat16', n=1024 if args.dry_run else 8192, repeats=5) / 1e3
  # Dry run: a shared CPU's measured ceiling swings with the load, so the peak is at least
  # DESIGN.md's 2-core bf16 figure and the MFU stays a fraction.
  peak = max(ceiling, CPU_BF16_TFLOPS) if args.dry_run else args.peak_tflops
  rec.update(tflop_per_step_analytic=round(flops / 1e12, 4),
             tflop_per_step_xla=round(tr.xla_flops / 1e12, 4),
             xla_note='cost_analysis counts a scanned layer stack once, remat included',
             achieved_tflops=round(achieved, 3),
             peak_tflops=round(peak, 3),
             peak_source=('max(measured bf16 matmul, 0.39 TFLOP/s) (dry run)' if args.dry_run
                          else 'H200 dense bf16 (--peak_tflops)'),
             mfu=float(f'{achieved / peak:.4g}'), mfu_target=0.5,
             matmul_tflops_measured=round(ceiling, 3),
             mfu_vs_measured_matmul=float(f'{achieved / ceiling:.4g}'),
             peak_memory_gib=peak_memory_gib())


# --- stage: lstm ------------------------------------------------------------------------------


def lstm_shape(c, vocab: int) -> dict:
  m = c.model
  return {'vocab': vocab, 'units': m.hidden_size, 'layers': m.num_layers, 'bptt': c.seq_len,
          'batch': c.batch_size, 'dropout': m.dropout, 'init_scale': m.init_scale,
          'lr': c.optimizer.learning_rate, 'clip': c.optimizer.grad_clip_norm}


def torch_peer(args) -> None:
  """benchmarks/torch_lstm_lm.py's own main (--json; --tiny in a dry run) on args.device: its
  modules and tensors are made there through torch's default device (cuda: nn.LSTM runs on
  cuDNN)."""
  import torch_lstm_lm as peer  # first: it sets OMP_WAIT_POLICY before torch starts
  import torch
  if args.device == 'cuda' and not torch.cuda.is_available():
    raise StageError(f'torch {torch.__version__}: no CUDA device')
  torch.set_default_device(args.device)
  cuda = args.device == 'cuda'
  print(json.dumps({'device': args.device,
                    'cudnn': torch.backends.cudnn.version() if cuda else None,
                    'gpu': torch.cuda.get_device_name() if cuda else None}), flush=True)
  peer.main(['--json', '--steps', str(args.lstm_steps), '--repeats', str(args.repeats)] +
            ['--tiny'] * args.dry_run)


def run_torch_peer(args, shape: dict) -> dict:
  if importlib.util.find_spec('torch') is None:
    return {'status': 'skipped: torch is not installed'}
  device = 'cpu' if args.dry_run else 'cuda'
  cmd = [sys.executable, os.path.abspath(__file__), '--torch_peer', '--device', device,
         '--lstm_steps', str(args.lstm_steps), '--repeats', str(args.repeats)] + [
             '--dry-run'] * args.dry_run
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                       timeout=max(min(120, args.deadline - time.time() - 40), 10))
  except subprocess.TimeoutExpired as e:
    return {'status': 'failed', 'error': f'torch peer: timed out after {e.timeout:.0f}s'}
  sys.stdout.write(p.stdout + p.stderr)
  rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith('{')]
  result = {k: v for r in rows for k, v in r.items()}
  if p.returncode or 'tokens_per_s' not in result:
    tail = (p.stderr.strip().splitlines() or ['no output'])[-1]
    return {'status': 'failed', 'error': f'torch peer exited {p.returncode}: {tail}'}
  dims = result.get('dims', {})
  same = all(dims.get(k) == shape[k] for k in ('vocab', 'units', 'layers', 'bptt', 'batch'))
  return dict(result, status='ok', script='benchmarks/torch_lstm_lm.py', same_shape=same)


def cudnn_lm_step(shape: dict, cudnn: bool):
  """(step, state, batch): the PTB LM step around jax.experimental.rnn.lstm (cuDNN); with
  cudnn=False its CPU reference lstm_ref on the same flat weights. Embedding -> dropout ->
  LSTM (no dropout between layers) -> dropout -> Linear; NLL summed over time and averaged over
  the batch; global-norm clip; SGD; the state carried (truncated BPTT)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.experimental import rnn
  from lmjax.losses import cross_entropy
  v, d, nl = shape['vocab'], shape['units'], shape['layers']
  b, t, p_drop, s = shape['batch'], shape['bptt'], shape['dropout'], shape['init_scale']
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  n_w = rnn.get_num_params_in_lstm(d, d, nl, False)
  uni = lambda k, sh: jax.random.uniform(k, sh, jnp.float32, -s, s)
  params = {'embedding': uni(keys[0], (v, d)), 'lstm': uni(keys[1], (n_w,)),
            'out_w': uni(keys[2], (d, v)), 'out_b': uni(keys[3], (v,))}
  tx = optax.chain(optax.clip_by_global_norm(shape['clip']), optax.sgd(shape['lr']))
  seq_lengths = jnp.full((b,), t, jnp.int32)

  def lstm(x, h, c, w):  # [B, T, D], [L, B, D] x2, [n_w]
    if cudnn:
      return rnn.lstm(x, h, c, w, seq_lengths, input_size=d, hidden_size=d, num_layers=nl,
                      dropout=0.0, bidirectional=False)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(w, d, d, nl, False)
    return rnn.lstm_ref(x, h, c, w_ih, w_hh, b_ih, b_hh, seq_lengths, d, d, nl, 0.0, False)

  def drop(x, rng):
    if not p_drop:
      return x
    return jnp.where(jax.random.bernoulli(rng, 1.0 - p_drop, x.shape), x / (1.0 - p_drop), 0.0)

  def loss_fn(p, batch, h, c, rng):
    r1, r2 = jax.random.split(rng)
    x = drop(p['embedding'][batch['inputs']], r1)  # [B, T, D]
    y, h, c = lstm(x, h, c, p['lstm'])  # [B, T, D]
    logits = drop(y, r2) @ p['out_w'] + p['out_b']  # [B, T, V]
    return cross_entropy(logits, batch['targets']).sum() / b, (h, c)

  def step(state, batch):
    rng, sub = jax.random.split(state['rng'])
    (loss, (h, c)), g = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], batch, state['h'], state['c'], sub)
    updates, opt_state = tx.update(g, state['opt_state'], state['params'])
    new = {'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
           'h': jax.lax.stop_gradient(h), 'c': jax.lax.stop_gradient(c), 'rng': rng}
    return new, {'loss': loss / t}  # per token, as the trainer logs it

  zeros = jnp.zeros((nl, b, d), jnp.float32)
  state = {'params': params, 'opt_state': tx.init(params), 'h': zeros, 'c': zeros + 0.0,
           'rng': jax.random.PRNGKey(1)}
  data = np.random.default_rng(0).integers(0, v, size=(b, t + 1)).astype(np.int32)
  batch = {'inputs': jnp.asarray(data[:, :-1]), 'targets': jnp.asarray(data[:, 1:])}
  return jax.jit(step, donate_argnums=0), state, batch


class CudnnTrainer:
  """cudnn_lm_step compiled, warmed up, with TrainStep's run()."""

  def __init__(self, shape: dict, cudnn: bool):
    step, self.state, self.batch = cudnn_lm_step(shape, cudnn)
    self.tokens_per_step = shape['batch'] * shape['bptt']
    t0 = time.perf_counter()
    self.step = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.loss = self.run(2)

  def run(self, steps: int) -> float:
    from transformer_lm import TrainStep
    return TrainStep.run(self, steps)


def stage_lstm(rec: dict, args, save) -> None:
  import lstm_lm
  from lmjax import config_base
  variant = 'tiny' if args.dry_run else 'medium'
  vocab = 512 if args.dry_run else lstm_lm.VOCAB  # torch_lstm_lm.py --tiny's vocabulary
  base = config_base.load_experiment('ptb_lstm.py', variant)
  shape = lstm_shape(base, vocab)
  rec.update(config=f'experiments/ptb_lstm.py:{variant}', shape=shape,
             tokens_per_step=shape['batch'] * shape['bptt'])
  # PyTorch first, in its own process, before this one's JAX backend holds the GPU.
  rec['torch'] = run_torch_peer(args, shape)
  save()
  rec.update(backend_info())
  rec['lmjax'], failures = [], []
  for name in args.lstm_variants.split(','):
    dtype, _, backward = name.partition('-')
    if variant == 'medium':  # the benchmark's own config
      c = lstm_lm.experiment_config(dtype, fast_backward=backward != 'autodiff')
    else:
      c = config_base.load_experiment('ptb_lstm.py', variant)
      c.model.dtype, c.model.custom_vjp = dtype, 'off' if backward == 'autodiff' else 'on'
    row = {'variant': name, 'dtype': dtype, 'custom_vjp': c.model.custom_vjp}
    try:
      row.update(time_steps(TrainerStep(c, vocab), args.lstm_steps, args.repeats), status='ok')
    except Exception as e:  # pylint: disable=broad-except
      row.update(status='failed', error=one_line(e))
      failures.append(f'lmjax {name}: {row["error"]}')
    rec['lmjax'].append(row)
    save()
  # Optional ("if feasible"): a failure here is a warning in the JSON, not a failed stage.
  cudnn = not args.dry_run
  row = {'impl': 'jax.experimental.rnn.lstm (cuDNN)', 'dtype': 'float32', 'status': 'ok',
         'note': 'no dropout between the LSTM layers; TF32 allowed, as cuDNN defaults'}
  if not cudnn:
    row = {'impl': 'jax.experimental.rnn.lstm_ref (the same step, CPU reference)',
           'status': 'skipped: cuDNN needs a CUDA GPU; timed the reference LSTM instead'}
  try:
    row.update(time_steps(CudnnTrainer(shape, cudnn), args.lstm_steps, args.repeats))
  except Exception as e:  # pylint: disable=broad-except
    row.update(status='failed', error=one_line(e))
    rec['warnings'] = [f'jax.experimental.rnn: {row["error"]}']
  rec['jax_cudnn'] = row
  rec['tokens_per_s'] = {r['variant']: r['tokens_per_s'] for r in rec['lmjax']
                         if 'tokens_per_s' in r}
  for name, r in (('torch', rec['torch']), ('jax_cudnn', row)):
    if 'tokens_per_s' in r:
      rec['tokens_per_s'][name] = r['tokens_per_s']
  ref = rec['tokens_per_s'].get('torch')
  rec['ratio_vs_torch'] = {k: round(v / ref, 3) for k, v in rec['tokens_per_s'].items()
                           if ref and k != 'torch'}
  if rec['torch']['status'] == 'failed':
    failures.append(f'torch: {rec["torch"]["error"]}')
  if failures:
    raise StageError('; '.join(failures))


# --- stage: mt --------------------------------------------------------------------------------


def write_synthetic_corpus(data: str) -> None:
  """Multi30k-shaped files (train/val/test_2016_flickr .en/.de) from lmjax.data.synthetic."""
  from lmjax.data import synthetic
  os.makedirs(data, exist_ok=True)
  for split, n, seed in (('train', 500, 0), ('val', 16, 1), ('test_2016_flickr', 16, 2)):
    pairs = synthetic.generate_pairs(n, seed)
    for i, lang in enumerate(('en', 'de')):
      with open(os.path.join(data, f'{split}.{lang}'), 'w') as f:
        f.write(''.join(p[i] + '\n' for p in pairs))


STEP_RE = re.compile(r'^step (\d+)/(\d+)\s+loss (\S+).*tokens/s ([\d,]+)')
BLEU_RE = re.compile(r'^BLEU (\S+)\s+(\S+)')
CHRF_RE = re.compile(r'^chrF (\S+)')
DECODE_RE = re.compile(r'(\d+) sentences in ([\d.]+)s')
LAST_STEP_RE = re.compile(r'finished step (\d+)|^done: .*\(step (\d+)\)')


def train_until(cmd: list, seconds: float, hard_s: float) -> dict:
  """Runs lmjax.main, timestamping its step lines. Once `seconds` have passed and two step
  lines came (the loop runs, so SIGTERM checkpoints), sends SIGTERM and waits for the exit."""
  # In this stage's process group: the orchestrator's kill at the time limit reaches it too.
  p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
  lines = queue.Queue()
  reader = threading.Thread(target=lambda: [lines.put(x) for x in p.stdout] + [lines.put(None)],
                            daemon=True)
  reader.start()
  t0, logged, tail, stopped, last = time.time(), [], [], None, None
  while True:
    try:
      line = lines.get(timeout=0.5)
    except queue.Empty:
      line = ''
    if line is None:
      break
    if line:
      sys.stdout.write(line)
      tail = (tail + [line.rstrip()])[-20:]
      m = LAST_STEP_RE.search(line)
      if m:
        last = int(m.group(1) or m.group(2))
      m = STEP_RE.match(line)
      if m:  # (seconds, step, of steps, loss, target tokens/s)
        logged.append((time.time() - t0, int(m.group(1)), int(m.group(2)), float(m.group(3)),
                       float(m.group(4).replace(',', ''))))
    now = time.time() - t0
    if (stopped is None and len(logged) >= 2 and now >= seconds
        and logged[-1][1] < logged[-1][2]):  # not past the loop (SIGTERM would kill)
      p.send_signal(signal.SIGTERM)
      stopped = now
    if now >= hard_s:
      p.kill()
      p.wait()
      raise StageError(f'lmjax.main still running after {hard_s:.0f}s; killed '
                       f'({len(logged)} step lines seen)')
  rc = p.wait()
  if rc:
    raise StageError(f'lmjax.main exited {rc}: {tail[-1] if tail else "no output"}')
  if len(logged) < 2:
    raise StageError(f'lmjax.main logged {len(logged)} step lines; need 2 to time steps')
  (ta, sa, _, _, _), (tb, sb, _, loss, _) = logged[0], logged[-1]
  return {'train_wall_s': round(time.time() - t0, 1),
          'sigterm_at_s': stopped and round(stopped, 1), 'completed': stopped is None,
          'first_log_s': round(ta, 1), 'steps': last or sb,
          'steps_per_s': round((sb - sa) / max(tb - ta, 1e-9), 2),
          'target_tokens_per_s': round(statistics.median(r[4] for r in logged[1:]), 1),
          'final_train_loss': loss}


def stage_mt(rec: dict, args) -> None:
  data = args.data
  if args.dry_run and not data:
    data = os.path.join(args.scratch, 'mt_data')
    write_synthetic_corpus(data)
  data = os.path.abspath(data or os.path.join(REPO, 'gpu_data', 'multi30k'))
  missing = [f'{s}.{lang}' for s in MT_DATA_FILES for lang in ('en', 'de')
             if not os.path.isfile(os.path.join(data, f'{s}.{lang}'))]
  if missing:
    raise StageError(f'--data {data}: missing {", ".join(missing)} (copy the raw Multi30k '
                     'files there: see benchmarks/gpu_check.sh)')
  variant = 'tiny' if args.dry_run else 'small'
  steps = 100_000 if args.dry_run else 3000  # the dry run is stopped by time
  workdir = os.path.join(args.scratch, 'mt_workdir')
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'lmjax.main',
         f'--config=experiments/multi30k_transformer.py:{variant}', f'--workdir={workdir}',
         '--config.data.source=text', f'--config.data.train={data}/train',
         f'--config.data.eval={data}/val', '--config.decode.beam_size=0',
         f'--config.num_train_steps={steps}', f'--config.eval_every={steps}',
         f'--config.checkpoint.every={steps}', f'--config.log_every={args.mt_log_every}']
  left = args.deadline - time.time()
  seconds = min(args.mt_seconds, left - TRANSLATE_S)
  rec.update(config=f'experiments/multi30k_transformer.py:{variant}', data=data,
             num_train_steps=steps, train_budget_s=round(seconds, 1), command=' '.join(cmd[1:]))
  if left - TRANSLATE_S < 10:
    raise StageError(f'{left:.0f}s of --budget left: too little to train and translate')
  rec.update(train_until(cmd, seconds, left - 30))
  beam = 2 if args.dry_run else 4
  cmd = [sys.executable, '-m', 'lmjax.translate', f'--workdir={workdir}',
         f'--input={data}/{MT_DATA_FILES[2]}.en', f'--reference={data}/{MT_DATA_FILES[2]}.de',
         f'--beam_size={beam}', '--alpha=0.6', '--batch_size=100']
  t0 = time.perf_counter()
  p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                     timeout=max(args.deadline - time.time() - 5, 10))
  sys.stdout.write(p.stderr)
  rec.update(translate_wall_s=round(time.perf_counter() - t0, 1), beam_size=beam,
             test_split=MT_DATA_FILES[2])
  err = p.stderr.splitlines()
  for line in err:
    bleu, chrf, decode = BLEU_RE.match(line), CHRF_RE.match(line), DECODE_RE.search(line)
    if bleu:
      rec.update(bleu=float(bleu.group(1)), bleu_signature=bleu.group(2))
    elif chrf:
      rec['chrf'] = float(chrf.group(1))
    elif decode:
      rec['decode_sentences_per_s'] = round(int(decode.group(1)) /
                                            max(float(decode.group(2)), 1e-9), 1)
  if p.returncode or 'bleu' not in rec:
    raise StageError(f'lmjax.translate exited {p.returncode}: {err[-1] if err else "no output"}')


# --- orchestration ----------------------------------------------------------------------------


def one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'.strip()[:500]


def run_stage_here(args) -> int:
  """One stage in this process: its JSON is written as parts finish, and at the end."""
  name = args.stage
  rec = {'stage': name, 'status': 'running', 'dry_run': args.dry_run, 'platform': args.platform}
  save = lambda: write_json(args.json, rec)
  t0 = time.perf_counter()
  try:
    if name == 'lstm':
      stage_lstm(rec, args, save)
    else:
      {'tests': stage_tests, 'mfu': stage_mfu, 'mt': stage_mt}[name](rec, args)
    rec['status'] = 'ok'
  except Exception as e:  # pylint: disable=broad-except
    rec.update(status='failed', error=one_line(e))
    traceback.print_exc()
  rec['stage_wall_s'] = round(time.perf_counter() - t0, 1)
  save()
  return 0 if rec['status'] == 'ok' else 1


HEADLINE = {'tests': ('passed', 'failed', 'errors', 'wall_s'),
            'mfu': ('batch_size', 'compile_s', 'step_s', 'tokens_per_s', 'mfu',
                    'peak_memory_gib'),
            'lstm': ('tokens_per_s', 'ratio_vs_torch', 'warnings'),
            'mt': ('steps', 'steps_per_s', 'target_tokens_per_s', 'bleu', 'completed')}


def child_env(args) -> dict:
  env = dict(os.environ, JAX_PLATFORMS=args.platform, PYTHONUNBUFFERED='1')
  # One device, as on the GPU (tests/conftest.py simulates 8 CPU devices for the suite).
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  if args.dry_run:  # half the CPU compile time; the dry run's timings are not benchmarks
    flags.append('--xla_backend_optimization_level=0')
  env['XLA_FLAGS'] = ' '.join(flags)
  env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in env.get('PYTHONPATH', '').split(
      os.pathsep) if p])
  return env


def orchestrate(args) -> int:
  os.makedirs(args.outdir, exist_ok=True)
  t_start = time.time()
  deadline = t_start + args.budget
  log = os.path.join(args.outdir, 'log.txt')
  names = [s for s in args.stages.split(',') if s]
  summary = {'dry_run': args.dry_run, 'platform': args.platform, 'budget_s': args.budget,
             'python': sys.executable, 'order': names, 'stages': {}}
  env = child_env(args)
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    run_stages(args, names, deadline, summary, env, log)
  except KeyboardInterrupt:
    summary['interrupted'] = True
    for name in names:
      summary['stages'].setdefault(name, {'status': 'failed',
                                          'error': 'interrupted before it finished'})
  summary['failed'] = [n for n, r in summary['stages'].items() if r['status'] != 'ok']
  summary['ok'] = not summary['failed']
  summary['wall_s'] = round(time.time() - t_start, 1)
  write_json(os.path.join(args.outdir, 'summary.json'), summary)
  print(json.dumps(summary), flush=True)
  return 0 if summary['ok'] else 1


def _interrupt(signum, frame):  # pylint: disable=unused-argument
  raise KeyboardInterrupt(signal.Signals(signum).name)


def run_stages(args, names, deadline, summary, env, log) -> None:
  for i, name in enumerate(names):
    path = os.path.join(args.outdir, f'{name}.json')
    rec = {'stage': name, 'status': 'failed'}
    later = sum(STAGE_MIN_S.get(s, 0) for s in names[i + 1:])
    timeout = deadline - time.time() - (0 if args.dry_run else later)
    if not args.dry_run and STAGE_CAP_S.get(name):
      timeout = min(timeout, STAGE_CAP_S[name])
    if name not in STAGES:
      rec['error'] = f'unknown stage {name!r} (one of {", ".join(STAGES)})'
    elif timeout < 10:
      rec['error'] = f'not started: {timeout:.0f}s of --budget={args.budget:.0f} left for it'
    else:
      rec = run_stage_process(args, name, path, timeout, env, log)
    write_json(path, rec)
    print(f'gpu_check: {name}: {rec["status"]}' + (f' ({rec["error"]})' if 'error' in rec
                                                    else ''), flush=True)
    summary['stages'][name] = {k: rec[k] for k in ('status', 'error', 'stage_wall_s',
                                                   'stage_cpu_s',
                                                   *HEADLINE.get(name, ())) if k in rec}


def run_stage_process(args, name, path, timeout, env, log) -> dict:
  """The stage in a child process (its own session, killed with its children on timeout)."""
  cmd = [sys.executable, os.path.abspath(__file__), '--stage', name, '--json', path,
         '--deadline', str(time.time() + timeout), *args.passthrough]
  if os.path.exists(path):
    os.remove(path)
  t0, cpu0 = time.perf_counter(), _children_cpu_s()
  with open(log, 'a') as f:
    f.write(f'\n===== {name}: {" ".join(cmd)}\n')
    f.flush()
    # No new session: the device tool's kill at its own limit reaches the stage processes.
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
      rc, why = p.wait(timeout=timeout), ''
    except subprocess.TimeoutExpired:
      kill_tree(p.pid)
      rc, why = p.wait(), f'timed out after {timeout:.0f}s (its share of --budget); killed'
    except BaseException:  # SIGTERM or Ctrl-C of this script: the stage goes with it
      kill_tree(p.pid)
      p.wait()
      raise
  rec = {}
  if os.path.exists(path):
    with open(path) as f:
      rec = json.load(f)
  if why or rec.get('status') not in ('ok', 'failed'):
    rec.update(stage=name, status='failed',
               error=why or f'stage process exited {rc} before finishing ({log_tail(log)})',
               stage_wall_s=round(time.perf_counter() - t0, 1))
  rec['stage_cpu_s'] = round(_children_cpu_s() - cpu0, 1)  # user + sys, its processes
  return rec


def kill_tree(pid: int) -> None:
  """SIGKILL to pid and every process below it (read from /proc), the deepest first."""
  children = {}
  for d in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{d}/stat') as f:
        ppid = int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    children.setdefault(ppid, []).append(int(d))
  tree, todo = [], [pid]
  while todo:
    tree.append(todo.pop())
    todo += children.get(tree[-1], [])
  for p in reversed(tree):
    try:
      os.kill(p, signal.SIGKILL)
    except ProcessLookupError:
      pass


def _children_cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def log_tail(log: str) -> str:
  with open(log, errors='replace') as f:
    lines = [x.strip() for x in f.read().splitlines()[-200:] if x.strip()]
  return lines[-1][:300] if lines else 'no output'


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('outdir', nargs='?', help='where the JSON files go')
  ap.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                  help='tiny sizes on the CPU backend')
  ap.add_argument('--stages', default=','.join(STAGES), help='comma list, in order')
  ap.add_argument('--data', default='',
                  help='Multi30k raw folder (train/val/test_2016_flickr .en/.de); default '
                       'gpu_data/multi30k, in a dry run a generated synthetic corpus')
  ap.add_argument('--budget', type=float, default=None,
                  help='seconds for all stages (default 450; dry run 600)')
  ap.add_argument('--scratch', default='', help='workdirs (default: a temporary folder)')
  ap.add_argument('--keep_scratch', action='store_true')
  ap.add_argument('--platform', default=None, help='JAX_PLATFORMS (default cuda; dry run cpu)')
  ap.add_argument('--test_workers', type=int, default=None,
                  help='pytest-xdist workers for the tests stage (default 6; dry run 0)')
  ap.add_argument('--matmul_precision', default='highest',
                  help='JAX_DEFAULT_MATMUL_PRECISION for the tests (f32 tolerances, no TF32)')
  ap.add_argument('--mfu_batch', type=int, default=16, help='decoder_lm 1b batch (x 2048)')
  ap.add_argument('--mfu_remat', default='', help='override the config\'s model.remat')
  ap.add_argument('--mfu_steps', type=int, default=None,
                  help='steps per timed repeat (default 3; dry run 2)')
  ap.add_argument('--peak_tflops', type=float, default=PEAK_BF16_TFLOPS)
  ap.add_argument('--lstm_variants', default=None,
                  help='comma list of float32, bfloat16, float32-autodiff (default all three; '
                       'dry run float32)')
  ap.add_argument('--lstm_steps', type=int, default=None, help='default 10; dry run 2')
  ap.add_argument('--repeats', type=int, default=None, help='timed repeats (default 5; dry 2)')
  ap.add_argument('--mt_seconds', type=float, default=None,
                  help='Multi30k training seconds from the process start (default 180; dry 5)')
  ap.add_argument('--mt_log_every', type=int, default=None, help='default 100; dry run 2')
  # internal: one stage in this process, or the PyTorch peer
  ap.add_argument('--stage', choices=STAGES, help=argparse.SUPPRESS)
  ap.add_argument('--json', help=argparse.SUPPRESS)
  ap.add_argument('--deadline', type=float, help=argparse.SUPPRESS)
  ap.add_argument('--torch_peer', action='store_true', help=argparse.SUPPRESS)
  ap.add_argument('--device', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  dry = args.dry_run
  defaults = {'budget': (450, 600), 'platform': ('cuda', 'cpu'), 'test_workers': (6, 0),
              'lstm_variants': ('float32,bfloat16,float32-autodiff', 'float32'),
              'lstm_steps': (10, 2), 'mfu_steps': (3, 2), 'repeats': (5, 2),
              'mt_seconds': (180, 5), 'mt_log_every': (100, 2)}  # (real run, dry run)
  for k, (real, dry_value) in defaults.items():
    if getattr(args, k) is None:
      setattr(args, k, dry_value if dry else real)
  if args.torch_peer:
    torch_peer(args)
    return 0
  if args.stage:
    return run_stage_here(args)
  if not args.outdir:
    ap.error('OUTDIR is required')
  # What each stage process gets: every option but the output folder and the stage list.
  args.passthrough = [f'--{k}={getattr(args, k)}' for k in (
      'platform', 'test_workers', 'matmul_precision', 'mfu_batch', 'mfu_steps', 'peak_tflops',
      'lstm_variants', 'lstm_steps', 'repeats', 'mt_seconds', 'mt_log_every')]
  args.passthrough += ['--dry-run'] * dry + [f'--mfu_remat={args.mfu_remat}'] * bool(
      args.mfu_remat) + [f'--data={os.path.abspath(args.data)}'] * bool(args.data)
  args.outdir = os.path.abspath(args.outdir)
  own_scratch = not args.scratch
  args.scratch = os.path.abspath(args.scratch or tempfile.mkdtemp(prefix='gpu_check_'))
  os.makedirs(args.scratch, exist_ok=True)
  args.passthrough.append(f'--scratch={args.scratch}')
  try:
    return orchestrate(args)
  finally:
    if own_scratch and not args.keep_scratch:
      shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
