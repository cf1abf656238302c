#!/usr/bin/env bash
# Developer build: compile _core (and _core_cuda where nvcc exists) into build/dev and copy the modules
# into fastcert/ so that `PYTHONPATH=$PWD python ...` works from the checkout. Serialized by flock so
# that parallel workers do not trample one build tree. Usage: scripts/dev_build.sh [cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/fastcert-dev-build.lock
flock 9
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v python3)" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" "$@" > build/dev-configure.log
cmake --build build/dev -j 2
# copy then rename: a process that has the old module mapped keeps its (unlinked) inode
for so in build/dev/_core*.so; do
  cp "$so" "fastcert/.$(basename "$so").tmp" && mv -f "fastcert/.$(basename "$so").tmp" "fastcert/$(basename "$so")"
done
