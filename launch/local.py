"""Run lmjax as N processes on this machine, each with M simulated CPU devices: a multi-host
run in miniature (jax.distributed over 127.0.0.1, gloo collectives).

  python launch/local.py --num_processes=2 --devices_per_process=4 [--port=0] [--timeout=600] \
      [--dry-run] -- --config=experiments/synthetic_lm.py:tiny --workdir=/tmp/lmjax_mp \
      [--config.x=y ...]

Every argument the launcher does not know (or everything after `--`) goes to
`python -m lmjax.main`, followed by --coordinator_address=127.0.0.1:PORT --num_processes=N
--process_id=i. Each process gets XLA_FLAGS=--xla_force_host_platform_device_count=M and
JAX_PLATFORMS=cpu (and this checkout on PYTHONPATH). Output lines are prefixed with [i];
Gloo's connection lines are dropped unless lmjax.main gets --verbose or --debug.
The launcher waits for all processes; when one fails it stops the others and exits with that
status; past --timeout seconds it stops them all and exits 124. --port=0 picks a free port.

With lmjax.main and a --config, the experiment is loaded first (file relative to the current
directory, variant, --config.* overrides) and its mesh and batch are fitted to N x M devices;
a bad one is one line `error: ...` naming the flag or field, exit status 2, before any process
starts. The plan goes to stderr as one `plan: ...` line.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

if common.REPO_ROOT not in sys.path:
  sys.path.insert(0, common.REPO_ROOT)
import lmjax  # pylint: disable=wrong-import-position  (jax-free: its __init__ only)


def build_parser() -> common.Parser:
  p = common.Parser(prog='launch/local.py',
                    description='Run lmjax.main as N local processes with M CPU devices each; '
                                'other arguments go to lmjax.main.')
  p.add_argument('--num_processes', type=common.positive_int, default=2)
  p.add_argument('--devices_per_process', type=common.positive_int, default=4)
  p.add_argument('--port', type=int, default=0, help='coordinator port (0: a free one)')
  p.add_argument('--timeout', type=float, default=0, help='seconds (0: no limit)')
  p.add_argument('--python', default=sys.executable)
  p.add_argument('--module', default='lmjax.main', help='module to run (default lmjax.main)')
  p.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                 help='print the commands, run nothing')
  return p


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_env(devices: int, base: dict | None = None) -> dict:
  env = dict(os.environ if base is None else base)
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = ' '.join([*flags.split(), f'--xla_force_host_platform_device_count={devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  # lmjax importable from this checkout even when it is not pip-installed.
  env['PYTHONPATH'] = os.pathsep.join(
      [common.REPO_ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  return env


def commands(args, user_args: list[str], port: int) -> list[list[str]]:
  return [[args.python, '-m', args.module, *user_args,
           *common.dist_flags(f'127.0.0.1:{port}', str(args.num_processes), str(i))]
          for i in range(args.num_processes)]


# Gloo prints a line per connection it makes to stdout, from several threads at once (so the
# lines come interleaved), and no log level controls it; lmjax.main's --verbose or --debug,
# passed through, shows them.
_GLOO_PIECES = re.compile(r'\[Gloo\]|Rank|is connected to|peer ranks|Expected number of '
                          r'connected|is :|[\d\s.:]')


def _gloo_noise(line: str) -> bool:
  """A line made only of pieces of Gloo's connection messages (or left blank by them)."""
  return not _GLOO_PIECES.sub('', line)


def _pump(i: int, stream, quiet: bool = True) -> None:
  for line in stream:
    if quiet and _gloo_noise(line):
      continue
    sys.stdout.write(f'[{i}] {line}')
    sys.stdout.flush()


def _stop(procs) -> None:
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGTERM)  # its own session: the process and its children
  deadline = time.time() + 10
  for p in procs:
    try:
      p.wait(max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait()


def check(args, user_args: list[str]) -> None:
  """Plan lmjax.main's --config (and its --config.* overrides) on N x M devices."""
  if args.module != 'lmjax.main':
    return
  config, overrides = None, []
  for i, a in enumerate(user_args):
    if a.startswith('--config='):
      config = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(user_args):
      config = user_args[i + 1]
    elif re.match(r'^--?(no)?config\.', a):
      overrides.append(a)
  if config is None:
    return  # lmjax.main says --config is required
  n = args.num_processes * args.devices_per_process
  where = (f'--num_processes={args.num_processes} x '
           f'--devices_per_process={args.devices_per_process}: {n} devices')
  common.say_plan(common.plan(config, overrides, n, where, base_dir=os.getcwd()), config)


def launch(args, user_args: list[str]) -> int:
  port = args.port or free_port()
  cmds = commands(args, user_args, port)
  env = process_env(args.devices_per_process)
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(['env', f'XLA_FLAGS={env["XLA_FLAGS"]}', 'JAX_PLATFORMS=cpu', *cmd]))
    return 0
  procs, pumps = [], []
  try:
    for i, cmd in enumerate(cmds):
      p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
      procs.append(p)
      quiet = not lmjax.native_logs_wanted(user_args)
      t = threading.Thread(target=_pump, args=(i, p.stdout, quiet), daemon=True)
      t.start()
      pumps.append(t)
    start = time.time()
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c]
      if failed:
        i, code = failed[0]
        _stop(procs)
        for t in pumps:
          t.join(5)
        print(f'error: process {i} exited with status {code}; stopped the others',
              file=sys.stderr)
        return code if code > 0 else 1
      if all(c == 0 for c in codes):
        for t in pumps:
          t.join(5)
        return 0
      if args.timeout and time.time() - start > args.timeout:
        _stop(procs)
        for t in pumps:
          t.join(5)
        print(f'error: timed out after {args.timeout:g}s; stopped all {len(procs)} processes',
              file=sys.stderr)
        return 124
      time.sleep(0.1)
  finally:
    _stop(procs)


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  tail = []
  if '--' in argv:
    k = argv.index('--')
    argv, tail = argv[:k], argv[k + 1:]
  args, extra = common.parse(build_parser(), argv, passthrough_all=True)
  if args.timeout < 0:
    common.fail(f'--timeout must be >= 0, got {args.timeout:g}')
  if not 0 <= args.port < 65536:
    common.fail(f'--port must be in [0, 65535], got {args.port}')
  check(args, extra + tail)
  sys.exit(launch(args, extra + tail))


if __name__ == '__main__':
  main()
