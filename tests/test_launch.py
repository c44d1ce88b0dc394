"""The launchers' dry runs print the expected commands; bad flags fail in one line.

Pods are simulated by --dry-run (no gcloud, kubectl or sbatch here): a v5p-64 slice (32 chips,
8 hosts) for the TPU VM and GKE launchers, 2 nodes x 8 GPUs for SLURM. The SLURM script is also
executed with stand-ins for scontrol/srun/python to check what each task receives; the local
launcher runs a stand-in module to check fail-fast and the timeout.
"""

import importlib.util
import os
import shlex
import subprocess
import sys
import textwrap

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'experiments/decoder_lm.py:1b'
OVERRIDES = ['--config.num_train_steps=100', '--config.model.num_layers=8']
TRAIN = f'-m lmjax.main --config={CONFIG} --workdir=gs://bucket/run1 ' + ' '.join(OVERRIDES)


def launch(script, *args, env=None, cwd=ROOT, timeout=60):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch', script), *args],
                        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_tpu_vm_dry_run_v5p_64():
  r = launch('tpu_vm.py', '--name=lmjax-1b', '--zone=us-east5-a', '--project=proj',
             '--accelerator=v5p-64', f'--config={CONFIG}', '--workdir=gs://bucket/run1',
             *OVERRIDES, '--dry-run')
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  create, *_, run, delete = lines
  assert create.startswith('gcloud compute tpus tpu-vm create lmjax-1b ')
  for part in ('--zone=us-east5-a', '--project=proj', '--accelerator-type=v5p-64',
               '--version=v2-alpha-tpuv5'):
    assert part in create.split()
  install = [l for l in lines if 'pip install' in l]
  assert len(install) == 1 and '--worker=all' in install[0]
  assert 'pip install -q -e ".[gcs]" "jax[tpu]"' in install[0]  # gs:// workdirs need gcsfs
  assert run.startswith('gcloud compute tpus tpu-vm ssh lmjax-1b ')
  assert '--worker=all' in run.split()
  command = [a for a in shlex.split(run) if a.startswith('--command=')][0]
  assert command == f'--command=cd lmjax && python3 {TRAIN}'
  assert delete == ('gcloud compute tpus tpu-vm delete lmjax-1b --zone=us-east5-a '
                    '--project=proj --quiet')
  # The experiment was loaded and fitted to the slice first: 1b is fsdp=-1, batch 256.
  assert r.stderr == ('plan: experiments/decoder_lm.py:1b on 32 devices, mesh data=1 fsdp=32 '
                      'tensor=1, batch 256 (per data-parallel shard: 8)\n')


def test_tpu_vm_queued_resource_and_stages():
  r = launch('tpu_vm.py', '--name=n', '--zone=z', '--project=p', '--accelerator=v5p-64',
             f'--config={CONFIG}', '--workdir=gs://b/r', '--queued', '--spot',
             '--stages=create,run', '--dry-run')
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines[0].startswith('gcloud compute tpus queued-resources create n --node-id=n ')
  assert '--spot' in lines[0].split() and '--runtime-version=v2-alpha-tpuv5' in lines[0]
  assert 'ACTIVE' in lines[1]
  assert len(lines) == 3 and '--worker=all' in lines[2]  # no install, no delete


def _gke(*args):
  r = launch('gke.py', '--name=lmjax-1b', '--image=us-docker.pkg.dev/p/lmjax:1',
             f'--config={CONFIG}', '--workdir=gs://bucket/run1', *OVERRIDES, *args, '--dry-run')
  assert r.returncode == 0, r.stderr
  js = yaml.safe_load(r.stdout)
  assert js['kind'] == 'JobSet' and js['apiVersion'].startswith('jobset.x-k8s.io/')
  (rjob,) = js['spec']['replicatedJobs']
  job = rjob['template']['spec']
  return js, job, job['template']['spec']


def test_gke_tpu_slice_manifest():
  js, job, pod = _gke('--accelerator=v5p-64')
  assert job['parallelism'] == job['completions'] == 8  # 32 chips, 4 per host
  assert job['completionMode'] == 'Indexed'
  assert pod['nodeSelector'] == {'cloud.google.com/gke-tpu-accelerator': 'tpu-v5p-slice',
                                 'cloud.google.com/gke-tpu-topology': '2x4x4'}
  (c,) = pod['containers']
  assert c['resources']['limits'] == {'google.com/tpu': 4}
  assert ' '.join(c['command']) == f'python {TRAIN}'
  assert 'exclusive-topology' in str(js['metadata']['annotations'])


def test_gke_install_runs_pip_with_the_gcs_extra_first():
  _, _, pod = _gke('--accelerator=v5p-64', '--install')
  (c,) = pod['containers']
  assert c['command'][:2] == ['bash', '-c']
  assert c['command'][2] == f'python -m pip install -q -e ".[gcs]" && exec python {TRAIN}'


def test_gke_gpu_manifest_has_coordinator():
  _, job, pod = _gke('--gpu_type=nvidia-h100-80gb', '--num_nodes=2', '--gpus_per_node=8')
  assert job['parallelism'] == 2
  (c,) = pod['containers']
  assert c['resources']['limits'] == {'nvidia.com/gpu': 8}
  script = c['command'][-1]
  assert f'python {TRAIN}' in script
  assert '--coordinator_address=lmjax-1b-workers-0-0.lmjax-1b:1234' in script
  assert '--num_processes=2' in script and '--process_id="$JOB_COMPLETION_INDEX"' in script


def _slurm_script(tmp_path):
  r = launch('slurm.py', '--nodes=2', '--gpus_per_node=8', f'--config={CONFIG}',
             '--workdir=gs://bucket/run1', *OVERRIDES, '--partition=gpu', '--time=01:00:00',
             '--dry-run')
  assert r.returncode == 0, r.stderr
  return r.stdout


def test_slurm_dry_run_2_nodes_8_gpus(tmp_path):
  s = _slurm_script(tmp_path)
  assert s.startswith('#!/bin/bash\n')
  for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks=16', '#SBATCH --ntasks-per-node=8',
               '#SBATCH --gpus-per-node=8', '#SBATCH --partition=gpu', '#SBATCH --time=01:00:00'):
    assert line in s.splitlines()
  assert 'COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p):' in s
  (srun,) = [l for l in s.splitlines() if l.startswith('srun ')]
  assert '--ntasks=16' in srun and '--ntasks-per-node=8' in srun
  assert f'python {TRAIN}' in srun
  for flag in ('--coordinator_address="$COORDINATOR"', '--num_processes="$SLURM_NTASKS"',
               '--process_id="$SLURM_PROCID"', 'CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"'):
    assert flag in srun


def test_slurm_script_gives_each_task_its_rank(tmp_path):
  """Run the batch script with stand-ins: each task must expand its own SLURM variables."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  stubs = {
      # Many nodes: a reader that stops early (head -n 1) would SIGPIPE it under pipefail.
      'scontrol': 'printf "gpu-node-7\\n"; seq -f "gpu-node-%g" 8 20000',
      # Two of the 16 tasks: local 3 on node 0 and local 5 on node 1.
      'srun': textwrap.dedent('''\
          while [[ "$1" == --* ]]; do shift; done
          SLURM_NTASKS=16 SLURM_PROCID=3 SLURM_LOCALID=3 "$@"
          SLURM_NTASKS=16 SLURM_PROCID=13 SLURM_LOCALID=5 "$@"'''),
      'python': 'echo "gpu=$CUDA_VISIBLE_DEVICES $*"',
  }
  for name, body in stubs.items():
    (bin_dir / name).write_text(f'#!/bin/bash\n{body}\n')
    (bin_dir / name).chmod(0o755)
  script = tmp_path / 'job.sh'
  script.write_text(_slurm_script(tmp_path))
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', SLURM_JOB_NODELIST='x')
  r = subprocess.run(['bash', str(script)], capture_output=True, text=True, env=env, timeout=30)
  assert r.returncode == 0, r.stderr
  out = r.stdout.splitlines()
  common = f'{TRAIN} --coordinator_address=gpu-node-7:12345 --num_processes=16'
  assert out == [f'gpu=3 {common} --process_id=3', f'gpu=5 {common} --process_id=13']


def test_local_dry_run():
  r = launch('local.py', '--num_processes=2', '--devices_per_process=4', '--port=4321',
             '--dry-run', '--', '--config=experiments/synthetic_lm.py:tiny', '--workdir=/tmp/w',
             '--config.seed=3',
             # the caller's other XLA flags are kept, its device count replaced
             env=dict(os.environ, XLA_FLAGS='--xla_cpu_enable_fast_math=false '
                      '--xla_force_host_platform_device_count=8'))
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert len(lines) == 2
  for i, line in enumerate(lines):
    args = shlex.split(line)
    assert ('XLA_FLAGS=--xla_cpu_enable_fast_math=false '
            '--xla_force_host_platform_device_count=4') in args, args
    assert 'JAX_PLATFORMS=cpu' in args
    assert args[args.index('-m') + 1:] == [
        'lmjax.main', '--config=experiments/synthetic_lm.py:tiny', '--workdir=/tmp/w',
        '--config.seed=3', '--coordinator_address=127.0.0.1:4321', '--num_processes=2',
        f'--process_id={i}']


STUB_MAIN = '''
import os, sys, time
pid = [a for a in sys.argv if a.startswith('--process_id=')][0].split('=')[1]
print('devices', os.environ['XLA_FLAGS'].split('=')[-1], 'id', pid, flush=True)
print(f'[Gloo] Rank {pid} is connected to 2 peer ranks. Expected number of connected peer '
      'ranks is : 2', flush=True)
if '--fail' in sys.argv and pid == '1':
  sys.exit(3)
if '--sleep' in sys.argv:
  time.sleep(60)
'''


@pytest.mark.parametrize('extra,code,message', [
    ((), 0, None),
    (('--verbose',), 0, None),
    (('--fail', '--sleep'), 3, 'error: process 1 exited with status 3; stopped the others'),
    (('--sleep', '--timeout=1'), 124, 'error: timed out after 1s; stopped all 3 processes'),
])
def test_local_runs_waits_and_stops(tmp_path, extra, code, message):
  (tmp_path / 'stub_main.py').write_text(STUB_MAIN)
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  r = launch('local.py', '--module=stub_main', '--num_processes=3', '--devices_per_process=2',
             *extra, env=env, cwd=tmp_path, timeout=40)
  assert r.returncode == code, r.stderr
  lines = sorted(r.stdout.splitlines())
  if code == 0:
    gloo = [f'[{i}] [Gloo] Rank {i} is connected to 2 peer ranks. Expected number of '
            'connected peer ranks is : 2' for i in range(3)] if '--verbose' in extra else []
    # Gloo's connection lines only with --verbose (passed through to the processes)
    assert lines == sorted([f'[{i}] devices 2 id {i}' for i in range(3)] + gloo)
  else:  # the others may be stopped before they print (a loaded machine starts them slowly)
    assert set(lines) <= {f'[{i}] devices 2 id {i}' for i in range(3)}
  if message:
    assert r.stderr.strip() == message


# The real trainer as 2 processes over jax.distributed: tests/test_multiprocess.py.


@pytest.mark.parametrize('script,args', [
    ('tpu_vm.py', ['--name=n', '--zone=z', '--project=p', '--accelerator=v5p-64',
                   f'--config={CONFIG}', '--workdir=gs://b', '--bogus=1']),
    ('tpu_vm.py', ['--name=n', '--zone=z', '--project=p', '--accelerator=v5p-63',
                   f'--config={CONFIG}', '--workdir=gs://b']),
    ('tpu_vm.py', ['--name=n', '--zone=z', '--project=p', '--accelerator=v5p-64',
                   f'--config={CONFIG}', '--workdir=/local/dir']),
    ('tpu_vm.py', ['--zone=z']),
    ('gke.py', ['--name=n', '--image=i', f'--config={CONFIG}', '--workdir=gs://b']),
    ('gke.py', ['--name=n', '--image=i', f'--config={CONFIG}', '--workdir=gs://b',
                '--gpu_type=nvidia-h100-80gb', '--num_nodes=0']),
    ('slurm.py', ['--nodes=two', f'--config={CONFIG}', '--workdir=/w']),
    ('slurm.py', ['--nodes=2', f'--config={CONFIG}', '--workdir=/w', 'stray']),
    ('local.py', ['--num_processes=0']),
    ('local.py', ['--timeout=-1']),
])
def test_bad_flags_fail_in_one_line(script, args):
  r = launch(script, *args, '--dry-run')
  assert r.returncode == 2
  assert r.stdout == ''
  assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith('error: ')


# --- the experiment is checked against the devices before anything is printed or run ---

TPU = ['--name=n', '--zone=z', '--project=p', '--accelerator=v5p-64', '--workdir=gs://b/r']
GKE_TPU = ['--name=n', '--image=i', '--accelerator=v5p-64', '--workdir=gs://b/r']
GKE_GPU = ['--name=n', '--image=i', '--gpu_type=nvidia-h100-80gb', '--num_nodes=3',
           '--workdir=gs://b/r']
SLURM = ['--nodes=2', '--gpus_per_node=8', '--workdir=/w']
LOCAL = ['--num_processes=2', '--devices_per_process=4', '--']
TINY = 'experiments/synthetic_lm.py:tiny'
BAD_EXPERIMENTS = [  # script, args, the error line (exactly)
    ('tpu_vm.py', [*TPU, '--config=experiments/nope.py'],
     f'--config=experiments/nope.py: no such file in {ROOT}'),
    ('tpu_vm.py', [*TPU, '--config=experiments/decoder_lm.py:70b'],
     "--config=experiments/decoder_lm.py:70b: unknown variant '70b' ('1b', '8b', 'tiny', 'bench')"),
    # v5p-64 is 32 chips; an 8-way FSDP mesh does not fill it.
    ('tpu_vm.py', [*TPU, f'--config={CONFIG}', '--config.mesh.fsdp=8'],
     "config.mesh {'data': 1, 'fsdp': 8, 'tensor': 1} needs 8 devices but 32 are available "
     '(--accelerator=v5p-64: 32 chips)'),
    ('gke.py', [*GKE_TPU, '--config=experiments/decoder_lm.py:70b'],
     "--config=experiments/decoder_lm.py:70b: unknown variant '70b' ('1b', '8b', 'tiny', 'bench')"),
    # 3 nodes x 8 GPUs = 24 devices: FSDP over 24 does not divide the batch of 256.
    ('gke.py', [*GKE_GPU, f'--config={CONFIG}'],
     'config.batch_size=256 is not divisible by the data-parallel size 24 (mesh data=1 x '
     'fsdp=24) (--num_nodes=3 x --gpus_per_node=8: 24 GPUs)'),
    ('slurm.py', [*SLURM, '--config=experiments/nope.py:1b'],
     f'--config=experiments/nope.py:1b: no such file in {ROOT}'),
    ('slurm.py', [*SLURM, f'--config={CONFIG}', '--config.mesh.data=2', '--config.mesh.fsdp=4'],
     "config.mesh {'data': 2, 'fsdp': 4, 'tensor': 1} needs 8 devices but 16 are available "
     '(--nodes=2 x --gpus_per_node=8: 16 GPUs)'),
    ('local.py', [*LOCAL, '--config=experiments/synthetic_lm.py:small', '--workdir=/tmp/w'],
     "--config=experiments/synthetic_lm.py:small: unknown variant 'small' (tiny)"),
    ('local.py', [*LOCAL, f'--config={TINY}', '--workdir=/tmp/w', '--config.mesh.data=3'],
     "config.mesh {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices but 8 are available "
     '(--num_processes=2 x --devices_per_process=4: 8 devices)'),
]


@pytest.mark.parametrize('script,args,error', BAD_EXPERIMENTS,
                         ids=[f'{s}-{e[:40]}' for s, _, e in BAD_EXPERIMENTS])
def test_bad_experiment_fails_in_one_line_before_the_plan(script, args, error):
  r = launch(script, '--dry-run', *args)  # first: local.py passes what follows -- to lmjax
  assert (r.returncode, r.stdout, r.stderr) == (2, '', f'error: {error}\n')


@pytest.mark.parametrize('script,args,tool', [
    ('tpu_vm.py', [*TPU, '--config=experiments/nope.py'], 'gcloud'),
    ('gke.py', [*GKE_GPU, f'--config={CONFIG}'], 'kubectl'),
    ('slurm.py', [*SLURM, f'--config={CONFIG}', '--config.mesh.data=2', '--config.mesh.fsdp=4'],
     'sbatch'),
    ('local.py', [*LOCAL, f'--config={TINY}', '--workdir=/tmp/w', '--config.mesh.data=3'],
     'python'),
])
def test_bad_experiment_runs_nothing(tmp_path, script, args, tool):
  """Without --dry-run: the cloud tool (a stand-in that records its calls) is never called."""
  bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls'
  bin_dir.mkdir()
  (bin_dir / tool).write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
  (bin_dir / tool).chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
  if script == 'local.py':
    args = [f'--python={bin_dir / tool}', *args]
  r = launch(script, *args, env=env)
  assert r.returncode == 2 and r.stdout == '', r.stderr
  assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith('error: ')
  assert not calls.exists()


def test_good_experiment_runs_the_tool(tmp_path):
  """The same stand-in is called when the experiment fits (the check does not block runs)."""
  bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls'
  bin_dir.mkdir()
  (bin_dir / 'kubectl').write_text(f'#!/bin/bash\necho "$@" >> {calls}\ncat > /dev/null\n')
  (bin_dir / 'kubectl').chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
  r = launch('gke.py', *GKE_GPU[:-2], '--num_nodes=2', '--workdir=gs://b/r', f'--config={CONFIG}',
             env=env)
  assert r.returncode == 0, r.stderr
  assert calls.read_text() == 'apply -f -\n'


def test_overrides_are_applied_before_the_mesh_is_planned():
  # data=2 x fsdp=16 fills the 32 chips only with both overrides; the plan says so.
  r = launch('tpu_vm.py', *TPU, f'--config={CONFIG}', '--config.mesh.data=2',
             '--config.mesh.fsdp=16', '--config.batch_size=64', '--dry-run')
  assert r.returncode == 0, r.stderr
  assert r.stderr == ('plan: experiments/decoder_lm.py:1b on 32 devices, mesh data=2 fsdp=16 '
                      'tensor=1, batch 64 (per data-parallel shard: 2)\n')
  run = r.stdout.splitlines()[-2]
  assert '--config.mesh.data=2 --config.mesh.fsdp=16 --config.batch_size=64' in run


def test_local_plans_the_tiny_config_on_its_devices():
  r = launch('local.py', '--dry-run', *LOCAL, f'--config={TINY}', '--workdir=/tmp/w',
             '--config.mesh.data=4', '--config.mesh.fsdp=2')
  assert r.returncode == 0, r.stderr
  assert r.stderr == (f'plan: {TINY} on 8 devices, mesh data=4 fsdp=2 tensor=1, batch 8 '
                      '(per data-parallel shard: 1)\n')
  assert len(r.stdout.splitlines()) == 2


def test_tpu_vm_delete_alone_needs_no_loadable_config():
  """Tearing a slice down must not depend on the experiment still loading."""
  r = launch('tpu_vm.py', *TPU, '--config=experiments/nope.py', '--stages=delete', '--dry-run')
  assert r.returncode == 0, r.stderr
  assert r.stdout == 'gcloud compute tpus tpu-vm delete n --zone=z --project=p --quiet\n'
  assert r.stderr == ''


# The other refusals, through launch/common.py in this process (the launchers above call it).
V5P_64 = '--accelerator=v5p-64: 32 chips'


@pytest.fixture(scope='module')
def launch_common():
  spec = importlib.util.spec_from_file_location('launch_common',
                                                os.path.join(ROOT, 'launch', 'common.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('overrides,error', [
    (['--config.batch_size=100'],
     f'config.batch_size=100 is not divisible by the data-parallel size 32 (mesh data=1 x '
     f'fsdp=32) ({V5P_64})'),
    (['--config.eval_batch_size=48'],
     f'config.eval_batch_size=48 is not divisible by the data-parallel size 32 (mesh data=1 x '
     f'fsdp=32) ({V5P_64})'),
    (['--config.grad_accum_steps=16'],
     'config.grad_accum_steps=16: config.batch_size=256 must split into 16 microbatches that '
     f'the data-parallel size 32 divides ({V5P_64})'),
    (['--config.mesh.tensor=64'],
     "config.mesh {'data': 1, 'fsdp': -1, 'tensor': 64} does not divide the 32 available "
     f'devices ({V5P_64})'),
    (['--config.mesh.data=-1'],
     "config.mesh: at most one axis may be -1, got {'data': -1, 'fsdp': -1, 'tensor': 1} "
     f'({V5P_64})'),
    (['--config.model.num_layer=8'], "--config.model.num_layer: config.model has no field "
     "'num_layer'"),
    (['--config.optimiser.learning_rate=1'],
     "--config.optimiser.learning_rate: config has no field 'optimiser'"),
    (['--config.model.num_layers=eight'],
     "--config.model.num_layers=eight: invalid literal for int() with base 10: 'eight'"),
    (['--config.logical_axis_rules=[]'],
     '--config.logical_axis_rules: a list field cannot be overridden on the command line'),
    # The model's dimensions against the mesh and the field ranges, as lmjax.main checks them.
    (['--config.mesh.fsdp=1', '--config.mesh.tensor=32'],
     "config.model.num_heads=16 is not divisible by config.mesh.tensor=32 "
     "(config.logical_axis_rules shard 'heads' over tensor): change one of them "
     f'({V5P_64})'),
    (['--config.optimizer.learning_rate=-1'],
     f'config.optimizer.learning_rate=-1.0: must be >= 0 ({V5P_64})'),
])
def test_plan_refuses_in_one_line(launch_common, capsys, overrides, error):
  with pytest.raises(SystemExit) as e:
    launch_common.plan(CONFIG, overrides, 32, V5P_64)
  assert e.value.code == 2
  out, err = capsys.readouterr()
  assert (out, err) == ('', f'error: {error}\n')


@pytest.mark.parametrize('text,error', [
    ('def get_config(arg=None):\n  return None\n',
     "get_config('') returned NoneType, not a ConfigDict"),
    ('def get_config(arg):\n  return None\n',
     "TypeError: get_config() missing 1 required positional argument: 'arg'"),
    ('def get_config(arg:\n', 'cannot load it: SyntaxError: '),
    ('import no_such_module_here\n', "cannot load it: ModuleNotFoundError: No module named "
     "'no_such_module_here'"),
])
def test_a_config_file_that_does_not_load(launch_common, capsys, tmp_path, text, error):
  (tmp_path / 'exp.py').write_text(text)
  with pytest.raises(SystemExit) as e:
    launch_common.plan('exp.py', [], 8, '8 devices', base_dir=str(tmp_path))
  assert e.value.code == 2
  out, err = capsys.readouterr()
  assert out == '' and len(err.splitlines()) == 1
  assert err.startswith(f'error: --config=exp.py: {error}')


def test_plan_applies_overrides_like_lmjax_main(launch_common):
  p = launch_common.plan(CONFIG, ['--config.mesh.data=4', '--config.model.num_layers=3',
                                  '--config.optimizer.learning_rate=0.5'], 32, V5P_64)
  assert p.mesh == {'data': 4, 'fsdp': 8, 'tensor': 1} and p.num_devices == 32
  assert p.config.model.num_layers == 3 and p.config.optimizer.learning_rate == 0.5
  assert p.config.batch_size == 256  # the 1b variant's, untouched
