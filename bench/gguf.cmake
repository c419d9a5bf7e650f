# bench_gguf: forge's quantized forward on a GGUF file forge exported, timed like llama.cpp on
# the same file by bench/llama_cpp_compare.py (docs/performance.md).
forge_executable(bench_gguf ${CMAKE_CURRENT_LIST_DIR}/gguf_bench.cpp)
