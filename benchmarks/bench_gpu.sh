#!/usr/bin/env bash
# Every GPU check of this repo in one run, for a bare CUDA machine with no registry access:
# the `gpu`-marked tests, the attention backends' CUDA check and the ours-vs-kornia GPU table.
#
# Usage (repo root):  WHEELS=dir LOFTR_SHARED_DATA=dir OUT=dir bash benchmarks/bench_gpu.sh
#   WHEELS             wheels to install first (the four loftr packages and kornia + kornia_rs for
#                      the machine's Python), e.g. made on another machine with
#                      `pip wheel --no-deps -w dir packages/*` and `pip download --python-version`.
#                      Unset: use what is installed.
#   LOFTR_SHARED_DATA  the shared data folder (default ../shared/data)
#   OUT                where the logs go (default /tmp/loftr-gpu)
# Each step has its own time limit, so one that hangs does not take the others with it.
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
echo "== gpu tests"
timeout "${TESTS_S:-150}" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider packages 2>&1 | tee "$OUT/gpu_tests.txt" || status=1
echo "== attention backends on CUDA"
timeout "${ATTENTION_S:-90}" "$PY" benchmarks/attention_gpu_check.py --require-cuda 2>&1 | tee "$OUT/attention_gpu.txt" || status=1
echo "== ours vs kornia"
timeout "${BENCH_S:-330}" "$PY" benchmarks/bench_gpu.py --markdown ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.txt" || status=1
exit $status
