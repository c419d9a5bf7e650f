#!/usr/bin/env bash
# Runs both ablation programs with one process per (variant, seed), JOBS at a time, one
# thread each, then merges their results into OUT_DIR/stage_order and OUT_DIR/methods
# (results.csv, table.md, SVG charts; docs/ablations.md).
# Usage: scripts/run_ablations.sh BUILD_DIR OUT_DIR [JOBS] [SEEDS]
set -euo pipefail
build=${1:?usage: scripts/run_ablations.sh BUILD_DIR OUT_DIR [JOBS] [SEEDS]}
out=${2:?usage: scripts/run_ablations.sh BUILD_DIR OUT_DIR [JOBS] [SEEDS]}
jobs=${3:-$(nproc)}
seeds=${4:-3}
so="$build/examples/stage_order_ablation"
ma="$build/examples/method_ablation"
mkdir -p "$out/parts"
list="$out/parts/tasks.txt"
: >"$list"
for seed in $(seq 1 "$seeds"); do
  for v in adapt-compress-align compress-adapt-align adapt-align-compress align-adapt-compress; do
    echo "$so so $v $seed $seeds" >>"$list"
  done
done
for v in lora dora qlora full_finetune rtn gptq awq dpo ipo kto simpo orpo; do
  echo "$ma ma $v 1 1" >>"$list"
done
export OMP_NUM_THREADS=1 out
# shellcheck disable=SC2016
xargs -P "$jobs" -L 1 sh -c \
  '"$0" "$out/parts/$1-$2-$3" --only "$2" --seed "$3" --seeds "$4" >"$out/parts/$1-$2-$3.log" 2>&1 || echo "FAILED: $1 $2 $3"' \
  <"$list"
"$so" "$out/stage_order" --merge "$out"/parts/so-*/
"$ma" "$out/methods" --merge "$out"/parts/ma-*/
