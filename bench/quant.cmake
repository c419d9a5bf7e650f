# Quantized kernels and quantizers: bandwidth (triad, read sweep), decode matvec from DRAM
# (cycling > 1 GiB of weights) and from cache, prefill matmul, Eigen f32 baselines, and the
# reconstruction quality of each method. Included from bench/CMakeLists.txt.
find_package(benchmark REQUIRED)
forge_executable(bench_quant ${CMAKE_CURRENT_LIST_DIR}/quant_bench.cpp)
target_link_libraries(bench_quant PRIVATE benchmark::benchmark)
# Eigen 3.4's AVX-512 GEMM/GEMV trips GCC 12's -Wmaybe-uninitialized (an intrinsic's
# deliberately undefined operand); the baselines here are the only Eigen products we build.
target_compile_options(bench_quant PRIVATE -Wno-maybe-uninitialized)
# Whole-model decode tokens/s and weight memory, f32 vs int8 vs int4 vs NF4 (100m and 1b).
forge_executable(bench_quant_model ${CMAKE_CURRENT_LIST_DIR}/quant_model_bench.cpp)
