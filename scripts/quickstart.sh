#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine: dependencies, configure, build, then the
# quickstart — the built-in model from base to a signed, verified release (README.md).
# Usage: scripts/quickstart.sh [OUTPUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build"
out=${1:-$root/out/quickstart/$(date -u +%Y%m%dT%H%M%SZ)}
"$root/scripts/setup.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)" --target example_quickstart
"$build/examples/quickstart" "$out"
