#!/usr/bin/env bash
# The one command for the first GPU machine (issue 17 §3). In under 8 minutes it
#   1. checks the machine (nvidia-smi, nvcc, torch sees CUDA);
#   2. builds the package with the CUDA module required (FASTCERT_CUDA=ON) and checks _core_cuda sees a GPU;
#   3. runs every GPU test: python_tests/native/test_cuda_kernels.py, the Triton IBP tests, and every test
#      of the suite whose id names cuda/gpu/triton (the DEVICES-parametrized ones);
#   4. runs the compute-sanitizer passes (scripts/cuda_sanitize.sh: memcheck, racecheck, synccheck);
#   5. runs the GPU benchmarks: end-to-end ResNet-110 certification at n = 100,000
#      (benchmarks/bench_gpu_certify.py) and IBP CNN-7 Triton vs torch (benchmarks/bench_ibp.py -k gpu);
#   6. appends their rows, with the device and the date, to benchmarks/RESULTS.md.
# Any failure stops it with "gpu_check: FAILED at step <name>"; a step that would run past the 8-minute
# budget is killed and named the same way. Timing method: scripts/METHOD.md.
# Usage: scripts/gpu_check.sh            (GPU_CHECK_BUDGET=seconds to change the 480 s budget)
set -Eeuo pipefail
cd "$(dirname "$0")/.."

BUDGET=${GPU_CHECK_BUDGET:-480}
STEP="start"
OUT=build/gpu_check
mkdir -p "$OUT"
# (reported once, by the main shell: command substitutions inherit the trap under set -E)
trap 'rc=$?; if [ "$BASHPID" = "$$" ]; then
  echo "gpu_check: FAILED at step \"$STEP\" (exit $rc, line $LINENO, ${SECONDS}s elapsed); logs in $OUT/" >&2; fi
exit $rc' ERR

# step NAME LIMIT CMD...: run CMD with its output in $OUT/NAME.log (and on screen), killed after LIMIT
# seconds or when the overall budget runs out, whichever comes first
step() {
  STEP=$1
  local limit=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -le 0 ]; then
    echo "gpu_check: out of time before step \"$STEP\" (${SECONDS}s of ${BUDGET}s)" >&2
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== [${SECONDS}s] $STEP (limit ${limit}s)"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$STEP.log"
}

# ---- 1. the machine
step preflight 30 bash -c 'set -euo pipefail
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  command -v nvcc > /dev/null || { echo "nvcc not found: the CUDA module cannot be built" >&2; exit 1; }
  nvcc --version | tail -1
  python3 -c "import torch, sys; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda);
sys.exit(0 if torch.cuda.is_available() else \"torch sees no CUDA device (CPU wheel?)\")"
  python3 -c "import pytest_benchmark" || { echo "pytest-benchmark missing (pip install -e .[test])" >&2; exit 1; }'
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
DATE=$(date -u +%Y-%m-%d)

# ---- 2. build (CUDA module required: a silent CPU-only build would make every GPU test skip)
step build 200 pip install --no-build-isolation -e . -q --config-settings=cmake.define.FASTCERT_CUDA=ON
step build-check 30 python3 -c "
from fastcert import _native
info = _native.build_info()
print(info)
assert _native.HAVE_CUDA, 'fastcert._core_cuda was not built'
assert info['cuda_devices'] > 0, 'the CUDA module sees no device'
assert info['torch_cuda'], 'torch sees no CUDA device'
assert info['triton'], 'triton is not importable (needed by the IBP GPU path)'"

# ---- 3. every GPU test (no skips allowed for want of a GPU: -rs lists any, and the check below fails)
step gpu-tests 120 python3 -m pytest -q -p no:cacheprovider -rs -x \
  python_tests/native/test_cuda_kernels.py python_tests/ibp/test_ibp_triton.py python_tests/ibp/test_interval_triton.py
if grep -E "SKIPPED.*(no CUDA|CUDA GPU|_core_cuda)" "$OUT/gpu-tests.log"; then
  STEP=gpu-tests; echo "gpu_check: GPU tests were skipped on a GPU machine" >&2; false
fi
step gpu-tests-suite 90 python3 -m pytest -q -p no:cacheprovider -rs -x -m "not slow" \
  -k "cuda or gpu or triton" python_tests

# ---- 4. compute-sanitizer
step sanitize 120 scripts/cuda_sanitize.sh

# ---- 5. GPU benchmarks (pytest-benchmark; JSON kept for step 6)
step bench-certify 150 python3 -m pytest -q -p no:cacheprovider benchmarks/bench_gpu_certify.py \
  --benchmark-enable --benchmark-group-by=group --benchmark-json="$OUT/bench_gpu_certify.json"
step bench-ibp 90 python3 -m pytest -q -p no:cacheprovider benchmarks/bench_ibp.py -k gpu \
  --benchmark-enable --benchmark-group-by=group --benchmark-json="$OUT/bench_ibp_gpu.json"

# ---- 6. rows with device and date into benchmarks/RESULTS.md
step results 20 python3 - "$DEVICE" "$NGPU" "$DATE" "$OUT/bench_gpu_certify.json" "$OUT/bench_ibp_gpu.json" <<'EOF'
import json
import sys

device, ngpu, date, *files = sys.argv[1:]
rows = []
for path in files:
    for b in json.load(open(path))["benchmarks"]:
        s = b["stats"]
        rows.append((b["group"] or "", b["name"], s["min"], s["median"], s["rounds"]))
if not rows:
    sys.exit("no benchmark rows were recorded")
lines = ["", f"### GPU run: {device} (x{ngpu}), {date} (scripts/gpu_check.sh)", "",
         "Best and median of pytest-benchmark rounds (scripts/METHOD.md).", "",
         "| group | benchmark | best | median | rounds |", "|---|---|---|---|---|"]
lines += [f"| {g} | {n} | {mn * 1e3:.2f} ms | {md * 1e3:.2f} ms | {r} |" for g, n, mn, md, r in rows]
with open("benchmarks/RESULTS.md", "a") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

STEP=done
echo "== gpu_check: all steps passed in ${SECONDS}s on $DEVICE ($DATE); rows appended to benchmarks/RESULTS.md"
