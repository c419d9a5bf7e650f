# bench_align: DPO training tokens/s and peak memory with a cached vs a live reference, on a
# dense and an NF4 base (docs/align.md). Included from bench/CMakeLists.txt.
forge_executable(bench_align ${CMAKE_CURRENT_LIST_DIR}/align_bench.cpp)
