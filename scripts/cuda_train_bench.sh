#!/usr/bin/env bash
# GPU LoRA/QLoRA training throughput and memory (forge_cuda_lora_train_bench) beside the
# PyTorch + PEFT baseline (bench/cuda/lora_train_baseline.py) in one sitting on one GPU, so
# the ratios compare like with like. Needs a build of tests/cuda (scripts/cuda_tests.sh or
# cmake -S tests/cuda) and a python3 with torch, transformers and peft.
# Usage: scripts/cuda_train_bench.sh OUT_DIR [BUILD_DIR]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out=${1:?usage: scripts/cuda_train_bench.sh OUT_DIR [BUILD_DIR]}
build=${2:-$root/build-cuda}
bench="$build/bench/forge_cuda_lora_train_bench"
py=${FORGE_CUDA_PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
table="$out/lora_train.md"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  echo
  echo "| run | batch x seq | median step ms | min..max ms | tokens/s | MiB taken (forge: pool; PyTorch: peak reserved) | MiB (forge: device in use; PyTorch: peak allocated) | activation arena MiB | loss first -> last | note |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$table"
status=0
for run in "small lora" "small dpo" "1b lora" "1b qlora"; do
  # shellcheck disable=SC2086
  "$bench" $run 8 512 ${FORGE_BENCH_STEPS:-10} 2>&1 | tee -a "$table" || status=1
done
for flags in "--model small" "--model small --adapter-bf16" "--model small --compile" \
  "--model small --compile --adapter-bf16" "--model 1b"; do
  # shellcheck disable=SC2086
  "$py" "$root/bench/cuda/lora_train_baseline.py" $flags \
    --steps ${FORGE_BENCH_STEPS:-10} 2>>"$out/baseline_err.log" | tee -a "$table" ||
    { status=1; tail -n 5 "$out/baseline_err.log"; }
done
exit $status
