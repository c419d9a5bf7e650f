#!/usr/bin/env bash
# The whole test run from a fresh Debian 12 machine: dependencies, reference-tool venv,
# configure, build, ctest. Usage: scripts/test.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build=${1:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/venv.sh" "$root/.venv"
# The CUDA tests and benchmarks are compiled wherever nvcc exists (they run on a GPU machine:
# scripts/cuda_tests.sh); a machine without the CUDA toolkit builds everything else.
cuda=()
nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; }
if [ -n "$nvcc" ]; then
  cuda=(-DFORGE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
else
  echo "forge tests: nvcc not found, the CUDA tests are not compiled"
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFORGE_PYTHON="$root/.venv/bin/python" "${cuda[@]}"
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)"
