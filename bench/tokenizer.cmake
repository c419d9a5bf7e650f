# Tokenizer throughput (encode/decode MB/s and tokens/s on one core); a plain timed program.
# Included from bench/CMakeLists.txt. By default it reads the fixture tokenizer directory.
if(DEFINED FORGE_FIXTURES)
  set(forge_bench_tokenizer_dir "${FORGE_FIXTURES}/hf/llama_a/model")
else()
  set(forge_bench_tokenizer_dir "${PROJECT_SOURCE_DIR}/../shared/fixtures/hf/llama_a/model")
endif()
forge_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bench.cpp)
target_compile_definitions(bench_tokenizer PRIVATE
  FORGE_BENCH_TOKENIZER_DIR="${forge_bench_tokenizer_dir}")
