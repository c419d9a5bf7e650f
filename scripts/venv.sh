#!/usr/bin/env bash
# Makes the virtual environment of test-time reference tools (the library never needs
# Python): pip's safetensors, tokenizers, gguf and numpy, used by the interop tests.
# Usage: scripts/venv.sh DIR   (prints nothing on success; DIR/bin/python is the interpreter)
set -euo pipefail
dir=${1:-.venv}
req="$(cd "$(dirname "$0")" && pwd)/requirements-test.txt"
stamp="$dir/.forge-requirements"
if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then exit 0; fi
/usr/bin/python3 -m venv "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
