# bench_align: DPO training tokens/s and peak memory with a cached vs a live reference, on a
# dense and an NF4 base (docs/align.md). Included from bench/CMakeLists.txt.
forge_executable(bench_align ${CMAKE_CURRENT_LIST_DIR}/align_bench.cpp)
# bench_align_safety: the Align stage end to end on a built-in byte-level model (docs/align.md).
forge_executable(bench_align_safety ${CMAKE_CURRENT_LIST_DIR}/align_safety.cpp)
