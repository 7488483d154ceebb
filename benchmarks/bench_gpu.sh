#!/usr/bin/env bash
# Every GPU check of this repo in one run, for a bare CUDA machine with no registry access:
# the `gpu`-marked tests, the attention backends' CUDA check, the ours-vs-kornia latency table
# with its fast modes and the issue-17 target lines (bench_gpu.py), the matmul peaks against the
# stages' TFLOP/s (gpu_limits.py), pairs/s on an image list (throughput_bench.py) and training
# step time, eager vs compiled, per attention backend (train_bench.py).
#
# Usage (repo root):  WHEELS=dir LOFTR_SHARED_DATA=dir OUT=dir bash benchmarks/bench_gpu.sh
#   WHEELS             wheels to install first (the four loftr packages and kornia + kornia_rs for
#                      the machine's Python), e.g. made on another machine with
#                      `pip wheel --no-deps -w dir packages/*` and `pip download --python-version`.
#                      Unset: use what is installed.
#   LOFTR_SHARED_DATA  the shared data folder (default ../shared/data)
#   OUT                where the logs go (default /tmp/loftr-gpu)
#   STEPS              which steps to run (default "tests attention bench compiled limits
#                      throughput train")
#   *_S, *_ARGS        each step's time limit in seconds and extra arguments (below)
# Each step has its own time limit, so one that hangs does not take the others with it. The
# limits add up to about 12 minutes, more than one 10-minute call of the device tool: run it in
# two, STEPS="tests attention bench compiled" (about 8 min), then STEPS="limits throughput
# train" (about 4 min), on the same warm machine. The data folder must travel with the call: copy megadepth_sample/ and
# phototourism_sample/ into an ignored folder of the checkout and pass it as LOFTR_SHARED_DATA.
set -uo pipefail
OUT=${OUT:-/tmp/loftr-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/loftr-site "$WHEELS"/*.whl || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/loftr-site${PYTHONPATH:+:$PYTHONPATH}
fi
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/env.txt"
"$PY" -c "import torch, kornia, loftr_core; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'kornia', kornia.__version__, 'loftr_core', loftr_core.__version__)" 2>&1 | tee -a "$OUT/env.txt"
STEPS=${STEPS:-tests attention bench compiled limits throughput train}
step() {  # name, limit (s), command...: run it unless STEPS leaves it out
  local name=$1 limit=$2
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
}
step tests "${TESTS_S:-60}" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider packages
step attention "${ATTENTION_S:-45}" "$PY" benchmarks/attention_gpu_check.py --require-cuda
# shellcheck disable=SC2086  # the *_ARGS are word lists
step bench "${BENCH_S:-180}" "$PY" benchmarks/bench_gpu.py --markdown --no-compile ${BENCH_ARGS:---runs 10}
# shellcheck disable=SC2086  # the compiled modes (tens of seconds of compilation each) at 640x480
step compiled "${COMPILED_S:-200}" "$PY" benchmarks/bench_gpu.py --markdown --sizes 640x480 \
  --only compile bf16+compile tf32+bf16+nhwc+compile tf32+bf16+graphs ${COMPILED_ARGS:---runs 10}
# shellcheck disable=SC2086
step limits "${LIMITS_S:-30}" "$PY" benchmarks/gpu_limits.py --markdown ${LIMITS_ARGS:-}
# shellcheck disable=SC2086
step throughput "${THROUGHPUT_S:-45}" "$PY" benchmarks/throughput_bench.py --markdown ${THROUGHPUT_ARGS:-}
# shellcheck disable=SC2086
step train "${TRAIN_S:-150}" "$PY" benchmarks/train_bench.py --markdown ${TRAIN_ARGS:---steps 8}
exit $status
