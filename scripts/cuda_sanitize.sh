#!/usr/bin/env bash
# The CUDA kernels under NVIDIA compute-sanitizer (issue 10): memcheck (out-of-bounds and misaligned
# accesses, leaks), racecheck and synccheck over the CUDA tests. Needs a CUDA GPU and the package built
# with _core_cuda (e.g. `pip install --no-build-isolation .` or scripts/dev_build.sh + PYTHONPATH).
#
# Only fastcert's own kernels are instrumented (--kernel-name kns=fastcert, where this compute-sanitizer
# has the option): torch's kernels are not ours to check and would make the passes take many minutes.
# SANITIZE_ALL=1 instruments every kernel. SANITIZE_TESTS overrides the pytest targets.
set -euo pipefail
cd "$(dirname "$0")/.."
SAN=${COMPUTE_SANITIZER:-compute-sanitizer}
TESTS=${SANITIZE_TESTS:-python_tests/native/test_cuda_kernels.py}
command -v "$SAN" > /dev/null || { echo "cuda_sanitize: $SAN not found (set COMPUTE_SANITIZER)" >&2; exit 1; }
filter=()
if [ "${SANITIZE_ALL:-0}" != 1 ] && "$SAN" --help 2>/dev/null | grep -q -- '--kernel-name'; then
  filter=(--kernel-name kns=fastcert)
fi
for tool in memcheck racecheck synccheck; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  echo "== compute-sanitizer --tool $tool ${filter[*]:-}"
  # shellcheck disable=SC2086
  "$SAN" --tool "$tool" "${extra[@]}" "${filter[@]}" --error-exitcode 1 --target-processes all \
    python3 -m pytest -q -p no:cacheprovider $TESTS -k "not graph"
done
