"""lmjax: language modelling and machine translation in JAX/Flax."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def native_logs_wanted(argv: list) -> bool:
  """--verbose or --debug among an entry point's flags (absl's spellings); also read by
  launch/local.py for the flags it passes to its processes."""
  for arg in argv:
    name, _, value = arg.partition('=')
    if name in ('--verbose', '--debug') and value.lower() not in ('false', '0'):
      return True
  return False


# An entry point (python -m lmjax.X) hides XLA's C++ warnings (SPMD rematerialisation notes)
# unless --verbose or --debug: TSL reads TF_CPP_MIN_LOG_LEVEL once, when jaxlib loads, so it is
# set here, before anything imports jax (lmjax.cli hides the Python-side notices once the flags
# are parsed). A lower level inherited from a parent process is raised too: importing the
# libraries sets it to 1 in a launcher's environment (launch/local.py's children got that).
if _sys.argv[:1] == ['-m'] and not native_logs_wanted(_sys.argv[1:]):
  _level = _os.environ.get('TF_CPP_MIN_LOG_LEVEL', '')
  if not (_level.isdigit() and int(_level) >= 2):
    _os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
