"""--keep_host_memory sets glibc's mallopt only when jax's backend will be CPU.

Each case is a real entry-point process (cli.run, as `python -m lmjax.main` uses it) whose libc
mallopt is replaced by a recorder, so no GPU is needed to check that a GPU/TPU platform skips it.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENTRY = '''
import ctypes, json, sys, types
if sys.argv[1] == 'import_jax_then_cpu':  # jax imported (reading $JAX_PLATFORMS), then set
  import jax
  jax.config.update('jax_platforms', 'cpu')
calls = []
def mallopt(param, value):
  calls.append([param, value])
  return 1
ctypes.CDLL = lambda *a, **k: types.SimpleNamespace(mallopt=mallopt)
from lmjax import cli
def main(argv):
  print(json.dumps({'calls': calls, 'jax_imported': 'jax' in sys.modules,
                    'said': cli.HOST_MEMORY}))
sys.argv = ['entry'] + sys.argv[2:]
cli.run(main)
'''

# glibc malloc.h: M_ARENA_MAX=-8 -> 1, M_MMAP_MAX=-4 -> 0, M_TRIM_THRESHOLD=-1 -> 2**31-1
KEEP = [[-8, 1], [-4, 0], [-1, 2**31 - 1]]


def mallopt_calls(case, platforms, *flags, pythonpath=()):
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'JAX_PLATFORM_NAME')}
  env['PYTHONPATH'] = os.pathsep.join([REPO, *pythonpath])
  if platforms is not None:
    env['JAX_PLATFORMS'] = platforms
  proc = subprocess.run([sys.executable, '-c', ENTRY, case, *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  # (out['said']: what training's start-up line will say about it)
  return out['calls'], out['jax_imported'], out['said']


@pytest.mark.parametrize('platforms,applied', [
    ('cpu', True), ('CPU', True), ('cpu,cuda', True),
    ('cuda', False), ('gpu', False), ('tpu', False), ('cuda,cpu', False)])
def test_applied_only_for_a_cpu_platform(platforms, applied):
  calls, jax_imported, said = mallopt_calls('plain', platforms)
  assert calls == (KEEP if applied else [])
  assert said == ('glibc malloc keeps freed memory (--keep_host_memory)' if applied else
                      'glibc malloc at its defaults (not a CPU backend)')
  assert not jax_imported  # decided without importing jax, let alone starting a backend


def test_no_keep_host_memory_flag_skips_it_on_cpu():
  calls, _, said = mallopt_calls('plain', 'cpu', '--nokeep_host_memory')
  assert calls == [] and said == 'glibc malloc at its defaults (--nokeep_host_memory)'


def test_jax_config_overrides_the_environment_once_jax_is_imported():
  assert mallopt_calls('import_jax_then_cpu', 'cuda')[0] == KEEP


def test_unset_platforms_with_an_accelerator_plugin_installed_skips_it(tmp_path):
  """JAX_PLATFORMS unset: jax would take the plugin's device, so no mallopt."""
  plugin = tmp_path / 'jax_plugins' / 'fake_gpu'
  plugin.mkdir(parents=True)
  (plugin / '__init__.py').write_text('')
  assert mallopt_calls('plain', None, pythonpath=[str(tmp_path)])[0] == []
