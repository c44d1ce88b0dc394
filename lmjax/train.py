"""train_and_evaluate(config, workdir): the one train/eval loop, for every task.

Sections: run (task -> mesh -> data -> model -> sharded state -> jitted steps; lmjax/steps.py)
-> checkpoint restore or init (or warm start: config.init_from, config.model.init_embeddings)
-> loop (log, eval, checkpoint, preemption) -> final eval, test split, the task's end-of-run lines.

The loop knows only the task protocol (lmjax/tasks/base.py): it never asks which task or model
family it runs.
"""

import time
from typing import Any

import jax
import numpy as np

from lmjax import checkpoint, cli, metrics, models, paths, preemption, steps
from lmjax.errors import UserError, first_line, warnings_after_checks

def _say(*args) -> None:
  """Progress for the user, from process 0 only."""
  if jax.process_index() == 0:
    print(*args, flush=True)


def _say_report(run: steps.Run, split: str, step: int, report: dict) -> None:
  for line in run.task.format_report(split, step, report):
    _say(line)


def _garbled(tok_dir: str) -> str:
  """Why the tokenizer in tok_dir cannot be read ('' when it can)."""
  from lmjax.data import tokenizers  # pylint: disable=g-import-not-at-top
  try:
    tokenizers.load_tokenizer(tok_dir)
    return ''
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {first_line(e)}'


def _restore_tokenizer_copy(workdir: str) -> None:
  """A workdir with checkpoints whose tokenizer/ is missing or unreadable gets it back from
  the newest checkpoint's copy; unreadable files are moved aside to tokenizer_bad.TIME, not
  deleted."""
  tok_dir = paths.join(workdir, 'tokenizer')
  if not any(d.isdigit() for d in paths.listdir(paths.join(workdir, 'checkpoints'))):
    return  # no model yet: a tokenizer there is rebuilt from the data (lm_data.build_tokenizer)
  if jax.process_index() == 0:
    present = paths.exists(paths.join(tok_dir, 'tokenizer.json'))
    problem = _garbled(tok_dir) if present else ''
    if not present or problem:
      mngr = checkpoint.manager(workdir, create=False, async_save=False)
      if problem:
        aside = paths.join(workdir, f'tokenizer_bad.{time.strftime("%Y%m%d-%H%M%S")}')
        paths.move(tok_dir, aside)
      step = checkpoint.restore_tokenizer_dir(mngr, tok_dir)
      mngr.close()
      if problem and step is None:  # no copy to restore: put the files back, and say so
        paths.move(aside, tok_dir)
        raise UserError(f'--workdir {workdir}: {tok_dir} is unreadable ({problem}) and no '
                        'checkpoint holds a copy of it')
      if problem:  # the record of the text it was built from is not part of the copy
        from lmjax.data import lm as lm_data  # pylint: disable=g-import-not-at-top
        note = paths.join(aside, lm_data.TRAINING_TEXT)
        if paths.exists(note):
          paths.write_bytes(paths.join(tok_dir, lm_data.TRAINING_TEXT),
                            paths.Path(note).read_bytes())
      if step is not None:
        why = f' (it was unreadable: {problem}; moved to {aside})' if problem else ''
        _say(f'restored {tok_dir} from checkpoint step {step}{why}')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('lmjax_tokenizer_restored')


def train_and_evaluate(config: Any, workdir: str, devices: Any = None) -> dict:
  """Trains the task's num_steps steps; returns the final eval report (test nested).

  Resumes from the newest intact checkpoint in workdir (falling back past broken ones). On
  SIGTERM it finishes the step, checkpoints and returns {'preempted_at_step': step}; on Ctrl-C
  it does the same and raises preemption.Interrupted (a KeyboardInterrupt).
  """
  is_main = jax.process_index() == 0
  ck = config.checkpoint
  # Warnings about the input (changed training text, a smaller vocabulary) wait until the data
  # and the checkpoint have passed their checks: a refused run prints its error line only.
  with warnings_after_checks():
    _restore_tokenizer_copy(workdir)
    run = steps.prepare(config, workdir, devices)
    task, tok = run.task, run.task.tokenizer
    train_iter = task.train_iterator()
    eval_every = config.eval_every if config.eval_every > 0 else task.steps_per_epoch
    state_checksum = checkpoint.checksum_fn(run.state_sharding['step'])

    # --- state: restore the newest intact checkpoint, warm start, or initialise ---
    mngr = checkpoint.manager(workdir, ck.max_to_keep, ck.async_save,
                              best_metric=ck.best_metric, best_mode=ck.best_mode)
    step0 = None
    if mngr.all_steps():
      step0, state, data_state = checkpoint.restore_good(
          mngr, run.abstract_state(), state_checksum, tok.vocab_size, tok.fingerprint(),
          f'workdir {workdir}', checkpoint.meta(config, tok)['config'])
      train_iter.set_state(data_state)
    else:
      state = run.init()
      if config.init_from or config.model.get('init_embeddings'):
        from lmjax import warm_start  # pylint: disable=g-import-not-at-top
        state = warm_start.warm_start(run, state, config, _say)
  if step0 is not None:
    _say(f'resuming from step {step0}: {checkpoint.step_dir(mngr, step0)}')
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state['params']))
  _say(f'model {config.model.name}: {n_params:,} parameters; mesh {dict(run.mesh.shape)}; '
       f'vocab {tok.vocab_size}; {task.describe(train_iter)}, {task.steps_per_epoch:,} steps '
       'per epoch')
  backend = models.backend_defaults(config.model)  # and the defaults chosen for it, once
  _say(f'{backend}; {cli.HOST_MEMORY}' if cli.HOST_MEMORY else backend)

  tok_files = checkpoint.tokenizer_files(tok)

  def save(step, state, report=None):
    best = ck.best_metric
    checkpoint.save(mngr, step, state, train_iter.get_state(),
                    checkpoint.meta(config, tok, state_checksum(state)), tok_files,
                    metrics=({best: report[best]} if report and best in report else {})
                    if best else None,
                    fail_with_enospc=step == config.debug_fail_save_at_step)

  writer = metrics.MetricWriter(workdir, enabled=is_main)
  step, total = int(state['step']), task.num_steps
  step_start = step
  pending, t_last, step_last, t_start = [], time.time(), step, time.time()
  first_tokens = 0.0  # the first step's tokens, outside the first throughput window
  report, preempted, skipped_total = None, False, 0
  watch = preemption.StopWatch(ck.stop_check_every)
  compiled_before = metrics.compile_seconds()
  try:
    with run.context():
      while step < total:
        state, out = run.p_train(state, run.put(next(train_iter)))
        step += 1
        if step == step_start + 1:  # what the first step costs, and how much of it compiles
          jax.block_until_ready(out)
          first_s = time.time() - t_start
          compile_s = metrics.compile_seconds() - compiled_before
          _say(f'first step {first_s:.1f}s, of which compiling {compile_s:.1f}s '
               f'({100 * compile_s / max(first_s, 1e-9):.0f}%)')
          if step < total:  # tokens/s and eta count steps after the first, not the compile
            t_last, step_last = time.time(), step
            first_tokens = float(out['tokens']) if bool(out['finite']) else 0.0
        pending.append(out)
        log_now = step % config.log_every == 0 or step == total
        eval_now = step % eval_every == 0 or step == total
        ckpt_now = step % ck.every == 0 or step == total
        stop_now = watch.should_stop(step)
        if not (log_now or eval_now or ckpt_now or stop_now):
          continue
        # Every step is checked for a non-finite loss before anything is logged or saved.
        fetched = jax.device_get(pending)
        bad = [step - len(fetched) + 1 + i for i, o in enumerate(fetched) if not o['finite']]
        if bad and config.nan_policy == 'stop':
          checkpoint.finish(mngr, raising=False)
          last = mngr.latest_step()
          where = (f'step {last} ({checkpoint.step_dir(mngr, last)})' if last is not None
                   else 'none')
          raise UserError(f'loss or gradient norm is not finite at step {bad[0]} '
                          "(config.nan_policy='stop'): the update was not applied and the "
                          f'run stopped; last good checkpoint: {where}')
        if log_now:
          now = time.time()
          good = [o for o in fetched if o['finite']]
          loss = float(np.mean([o['loss'] for o in good])) if good else float('nan')
          tokens = float(np.sum([o['tokens'] for o in good])) - first_tokens
          tps = tokens / max(now - t_last, 1e-9)
          first_tokens = 0.0
          eta = (total - step) * (now - t_last) / max(step - step_last, 1)
          scal = {'loss': loss, 'lr': float(fetched[-1]['lr']),
                  'grad_norm': float(fetched[-1]['grad_norm']), 'tokens_per_sec': tps}
          if config.nan_policy == 'skip':
            scal['skipped'] = len(bad)
            skipped_total += len(bad)
          writer.write(step, 'train', scal)
          skip_note = f'  skipped {len(bad)} (non-finite)' if bad else ''
          _say(f'step {step}/{total}  loss {loss:.4f}  lr {scal["lr"]:.2e}  '
               f'tokens/s {tps:,.0f}  eta {eta:.0f}s{skip_note}')
          pending, t_last, step_last = [], now, step
        if eval_now:
          t_eval = time.time()
          report = run.evaluate(state['params'], 'eval')
          writer.write(step, 'eval', report)
          _say_report(run, 'eval', step, report)
          # Eval time is not training time. Shift the window rather than restart it: the
          # steps since the last log line stay in it (an epoch-end eval need not be a log step).
          t_last += time.time() - t_eval
        if ckpt_now or stop_now:
          save(step, state, report if eval_now else None)
        if stop_now:
          preempted = True
          break
  except BaseException:
    watch.close()
    checkpoint.finish(mngr, raising=False)
    writer.close()
    raise
  watch.close()
  checkpoint.finish(mngr)
  if preempted:
    writer.close()
    saved = (f'finished step {step} and saved checkpoint step {step} in '
             f'{checkpoint.step_dir(mngr, step)}')
    if watch.signal_name == 'SIGINT':  # lmjax.cli prints it and exits 130
      raise preemption.Interrupted(f'{saved}; restart the same command to resume')
    _say(f'preempted: {watch.signal_name or "SIGTERM"} received; {saved}; exiting (restart the '
         'same command to resume)')
    return {'preempted_at_step': step}

  # --- end of run: final eval (unless the last step made one), test split, the task's lines ---
  if report is None:
    report = run.evaluate(state['params'], 'eval')
    writer.write(step, 'eval', report)
    _say_report(run, 'eval', step, report)
  skip_note = f'; skipped {skipped_total} non-finite steps' if skipped_total else ''
  if not total:  # a fitted model (task.num_steps == 0)
    _say(f'done: fitted, no train steps; {task.summary(report)}')
  elif step == step_start:
    _say(f'nothing left to train: the workdir is at step {step} of {total} (raise '
         f'config.num_train_steps or num_epochs to train on); {task.summary(report)}')
  else:
    _say(f'done: {step - step_start} steps in {time.time() - t_start:.0f}s (step {step}); '
         f'{task.summary(report)}{skip_note}')
  if 'test' in task.eval_splits:
    test_report = run.evaluate(state['params'], 'test')
    writer.write(step, 'test', test_report)
    _say_report(run, 'test', step, test_report)
    report = dict(report, test=test_report)
  for line in task.finish(state['params'], workdir):
    _say(line)
  writer.close()
  return report
