#!/usr/bin/env bash
# The CUDA kernels under NVIDIA compute-sanitizer (issue 10): memcheck (out-of-bounds and misaligned
# accesses, leaks), racecheck and synccheck over the CUDA tests. Needs a CUDA GPU and the package built
# with _core_cuda (e.g. `pip install --no-build-isolation .` or scripts/dev_build.sh + PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
SAN=${COMPUTE_SANITIZER:-compute-sanitizer}
for tool in memcheck racecheck synccheck; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  echo "== compute-sanitizer --tool $tool"
  "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 1 --target-processes all \
    python3 -m pytest -q -p no:cacheprovider python_tests/test_cuda_kernels.py -k "not graph"
done
