# bench_model: prefill/decode/training throughput of the Llama-family model core, the
# machine's Eigen SGEMM rate and memory bandwidth (see docs/performance.md).
forge_executable(bench_model ${CMAKE_CURRENT_LIST_DIR}/model.cpp)
target_link_libraries(bench_model PRIVATE benchmark::benchmark)
