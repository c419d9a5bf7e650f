# bench_adapt: LoRA vs QLoRA vs full fine-tuning training throughput and peak memory on a
# ~100M-parameter model (docs/performance.md).
forge_executable(bench_adapt ${CMAKE_CURRENT_LIST_DIR}/adapt_bench.cpp)
