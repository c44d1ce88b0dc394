"""Test setup: 8 simulated CPU devices, set before JAX initialises its backend, and one XLA
compilation cache for the session.

Many tests compile the same tiny programs again, in this process and in the `python -m
lmjax...` processes they start (which inherit the environment): JAX's persistent cache in a
directory made for this session serves the repeats (measured here, under load: the
8-step synthetic_lm.py:tiny run on 8 devices took 54 s, its loop 35 s; again with the cache,
28 s and 10 s). The executables are the ones XLA compiled for the same program, so results are
bitwise those of a fresh compile; the directory is removed at exit. Set
JAX_COMPILATION_CACHE_DIR to keep one across sessions. Every test process, this one and the
children (cli_checks.xla_flags), compiles with cli_checks.XLA_TEST_FLAGS.
"""
import atexit
import os
import shutil
import tempfile

from cli_checks import XLA_TEST_FLAGS  # (imports no jax)

# (xdist workers inherit the controller's environment: each flag is added once)
_flags = os.environ.get("XLA_FLAGS", "").split()
for _flag in ("--xla_force_host_platform_device_count=8", XLA_TEST_FLAGS):
  if _flag not in _flags:
    _flags.append(_flag)
os.environ["XLA_FLAGS"] = " ".join(_flags)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="lmjax-tests-xla-cache-")
  atexit.register(shutil.rmtree, _cache, True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
