#!/usr/bin/env bash
# The GPU check (issue 16, item 7): four stages on one NVIDIA H200 in under 8 minutes, each
# writing OUTDIR/<stage>.json, then OUTDIR/summary.json; every stage's output goes to
# OUTDIR/log.txt. Exit status 1 if any stage failed (the other stages still run).
#
#   benchmarks/gpu_check.sh OUTDIR [--dry-run] [--stages=tests,mfu,lstm,mt] [--data=DIR] ...
#
#   tests  pytest on the single-device test subset, JAX_PLATFORMS=cuda, f32 matmuls at
#          'highest' precision (the tests' CPU tolerances), 6 xdist workers
#   mfu    experiments/decoder_lm.py:1b, bf16, batch 16 x 2048 (--mfu_batch): compile time,
#          median step time, tokens/s, MFU of the analytic FLOPs against 790 TFLOP/s
#   lstm   experiments/ptb_lstm.py:medium (lmjax f32, bf16, f32 autodiff backward) against
#          benchmarks/torch_lstm_lm.py (nn.LSTM on cuDNN) and jax.experimental.rnn.lstm:
#          tokens/s each and the ratios to PyTorch
#   mt     experiments/multi30k_transformer.py:small, 180 s of training from the process start
#          (at most the config's 3,000 steps; stopped by SIGTERM, which checkpoints), then
#          beam-4 sacreBLEU on test_2016_flickr: steps/s, target tokens/s, BLEU
# --dry-run: every stage at a tiny size on the CPU backend (~95 s of CPU time; the Multi30k stage
# trains on a generated synthetic corpus unless --data is given). Other options:
# `python benchmarks/gpu_check.py --help`; benchmarks/gpu_check.py's docstring has the detail.
#
# Before a run on the device machine, once, on the CPU machine in the repository root:
#   printf '/.whl/\n/gpu_data/\n' >> .git/info/exclude     # or the same lines in .gitignore
#   mkdir -p gpu_data/multi30k
#   cp /work/shared/data/multi30k/raw/{train,val,test_2016_flickr}.{en,de} gpu_data/multi30k/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       ml-collections==1.1.0 tensorboardX==2.6.5
# (the device image has jax 0.11.2 with CUDA 13, flax, optax, orbax, sentencepiece, sacrebleu,
# absl-py, etils, tokenizers, safetensors, PyYAML, scipy and torch; ml-collections and
# tensorboardX are the lmjax dependencies it lacks; both are pure-Python wheels.) Then with
# the device tool: run(command='benchmarks/gpu_check.sh $OUT', carry=['.whl', 'gpu_data'],
# timeout_s=540). The 6 files in $OUT come back (the tool returns at most 8).
#
# PYTHON picks the interpreter (default: .venv/bin/python if there, else python3); wheels in
# GPU_CHECK_WHEELS (default .whl) are installed into a temporary --target folder when
# ml_collections or tensorboardX is missing.

set -u
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 OUTDIR [--dry-run] [options of benchmarks/gpu_check.py]" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="$1"
shift
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi

WHEELS="${GPU_CHECK_WHEELS:-$REPO/.whl}"
# find_spec, not import: tensorboardX imports torch when it is there (seconds)
if ! "$PY" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("ml_collections", "tensorboardX")))' 2>/dev/null
then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    SITE="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl \
      || echo "gpu_check.sh: installing the wheels in $WHEELS failed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check.sh: ml_collections or tensorboardX is missing and $WHEELS has no wheels" >&2
  fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

exec "$PY" "$REPO/benchmarks/gpu_check.py" "$OUTDIR" "$@"
