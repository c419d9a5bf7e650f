#!/usr/bin/env bash
# Makes the virtual environment of test-time reference tools (the library never needs
# Python): pip's safetensors, tokenizers, gguf, numpy and llama-cpp-python, used by the interop tests.
# Usage: scripts/venv.sh DIR   (prints nothing on success; DIR/bin/python is the interpreter)
set -euo pipefail
dir=${1:-.venv}
req="$(cd "$(dirname "$0")" && pwd)/requirements-test.txt"
stamp="$dir/.forge-requirements"
if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then exit 0; fi
/usr/bin/python3 -m venv "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# llama-cpp-python ships only an sdist: pip builds llama.cpp with cmake. Build just the
# library for this CPU (no tests, examples, tools or server): about 11 minutes on 2 cores.
CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF" \
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
