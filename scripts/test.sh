#!/usr/bin/env bash
# The whole test run from a fresh Debian 12 machine: dependencies, reference-tool venv,
# configure, build, ctest. Usage: scripts/test.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build=${1:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/venv.sh" "$root/.venv"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFORGE_PYTHON="$root/.venv/bin/python"
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)"
