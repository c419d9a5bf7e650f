#!/usr/bin/env bash
# Checks that transformers loads checkpoints forge saved and computes the same logits.
# Needs a built tree (scripts/test.sh) and a python with torch + transformers.
# Usage: scripts/check_with_transformers.sh [BUILD_DIR] [PYTHON]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build=${1:-$root/build}
py=${2:-python3}
out="$build/scratch/export_checkpoints"
"$build/tests/interop/export_checkpoints" "$out"
"$py" "$root/tests/interop/check_transformers.py" "$out"
