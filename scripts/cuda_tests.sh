#!/usr/bin/env bash
# Builds forge's CUDA tests and benchmarks, runs them on this machine's GPU and writes the
# logs and result tables to OUT_DIR. Needs nvcc, cuBLAS, CMake and a GPU; not forge's CPU
# dependencies (tests/cuda is configured as a project of its own).
# Usage: scripts/cuda_tests.sh OUT_DIR [BUILD_DIR]
# With FORGE_CUDA_SANITIZE=1 the smaller test programs also run under compute-sanitizer
# (memcheck for out-of-bounds and misaligned accesses, racecheck for shared-memory races).
# FORGE_CUDA_ARCHS sets the GPU targets (CMake CUDA_ARCHITECTURES syntax, default "90a;80");
# FORGE_CUDA_ARCHS=80-virtual builds compute_80 PTX only, which the driver compiles at load
# time, so a Hopper GPU runs the sm_80 code paths. FORGE_CUDA_BENCH=0 skips the benchmarks.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out=${1:?usage: scripts/cuda_tests.sh OUT_DIR [BUILD_DIR]}
build=${2:-$root/build-cuda}
mkdir -p "$out"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv
  nvcc --version | tail -n 2
  cmake --version | head -n 1
} >"$out/device.txt" 2>&1
cat "$out/device.txt"

# The trainer test reads the llama_a fixture: FORGE_FIXTURES names the fixtures root.
fixtures=${FORGE_FIXTURES:-$root/../shared/fixtures}
export FORGE_FIXTURES="$fixtures" FORGE_LORA_STEPS_REF="$build/lora_steps_reference.safetensors"
if ! cmake -S "$root/tests/cuda" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
     -DFORGE_CUDA_RUN_TESTS=ON -DFORGE_FIXTURES="$fixtures" \
     -DFORGE_CUDA_ARCHS="${FORGE_CUDA_ARCHS:-90a;80}" >"$out/build.log" 2>&1 ||
   ! cmake --build "$build" -j"$(nproc)" >>"$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log"
  echo "BUILD FAILED"
  exit 2
fi

status=0
(cd "$build" && ctest -L cuda -V --timeout 300) >"$out/tests.log" 2>&1 || status=1
grep -E "(PASS|FAIL|result) |checks passed|tests passed|Failed|FAIL:" "$out/tests.log"

if [[ "${FORGE_CUDA_SANITIZE:-0}" == 1 ]] && command -v compute-sanitizer >/dev/null; then
  : >"$out/sanitizer.log"
  for t in w4a16 layers quantized lora attention losses adamw lora_trainer; do
    timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$build/forge_cuda_$t" \
      >>"$out/sanitizer.log" 2>&1 || status=1
  done
  timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 "$build/forge_cuda_attention" \
    >>"$out/sanitizer.log" 2>&1 || status=1
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log"
fi

[[ "${FORGE_CUDA_BENCH:-1}" == 0 ]] && exit $status
for b in w4a16_bench kernels_bench; do
  if [[ -x "$build/bench/forge_cuda_$b" ]]; then
    "$build/bench/forge_cuda_$b" "$out/$b.md" >"$out/$b.log" 2>&1 || status=1
    cat "$out/$b.md" 2>/dev/null || tail -n 20 "$out/$b.log"
  fi
done
exit $status
