# bench_dist: data-parallel LoRA SFT throughput over MPI, run as
#   mpirun -np 1 build/bench/bench_dist   and   mpirun -np 2 build/bench/bench_dist
# (docs/distributed.md).
find_package(MPI COMPONENTS CXX)
if(MPI_CXX_FOUND)
  forge_executable(bench_dist ${CMAKE_CURRENT_LIST_DIR}/dist_bench.cpp)
  target_link_libraries(bench_dist PRIVATE MPI::MPI_CXX)
endif()
# bench_dist_pipeline: a pipeline's Align stage (DPO) through run_options::comm, run as
#   mpirun -np 1 build/bench/bench_dist_pipeline   and   mpirun -np 2 ...
if(MPI_CXX_FOUND)
  forge_executable(bench_dist_pipeline ${CMAKE_CURRENT_LIST_DIR}/dist_pipeline_bench.cpp)
  target_link_libraries(bench_dist_pipeline PRIVATE MPI::MPI_CXX)
endif()
