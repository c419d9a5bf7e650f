# CUDA support for forge's tests and benchmarks: enables the CUDA language for sm_90a (Hopper,
# wgmma-capable) and sm_80 (Ampere), finds cuBLAS, and defines forge_cuda_executable().
# Included only when FORGE_CUDA is ON, so a CPU-only build never needs nvcc. The CUDA sources
# include nothing but forge's .cuh headers and forge/core/error.hpp (no xtensor, no Hana), so
# they build without the CPU dependencies too (tests/cuda can be configured on its own).
include_guard(GLOBAL)

# FORGE_CUDA_ARCHS lists the GPU targets in CMake's CUDA_ARCHITECTURES syntax: "90a;80" (the
# default) embeds sm_90a and sm_80 machine code; "80-virtual" embeds compute_80 PTX only
# (-gencode arch=compute_80,code=compute_80), which the driver compiles for the GPU at hand, so
# a Hopper machine runs the sm_80 code paths (scripts/cuda_tests.sh, FORGE_CUDA_ARCHS).
# An explicit -DCMAKE_CUDA_ARCHITECTURES wins; a later change of FORGE_CUDA_ARCHS in the same
# build folder replaces the targets it set before.
set(FORGE_CUDA_ARCHS "90a;80" CACHE STRING "GPU targets of forge's CUDA code (CUDA_ARCHITECTURES syntax)")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR
   (DEFINED FORGE_CUDA_ARCHS_APPLIED AND NOT FORGE_CUDA_ARCHS STREQUAL FORGE_CUDA_ARCHS_APPLIED))
  set(CMAKE_CUDA_ARCHITECTURES "${FORGE_CUDA_ARCHS}" CACHE STRING "GPU targets" FORCE)
  set(FORGE_CUDA_ARCHS_APPLIED "${FORGE_CUDA_ARCHS}" CACHE INTERNAL "")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# CMake releases before 3.26 do not know nvcc's C++20 flag; teach them (newer ones agree).
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()

get_filename_component(FORGE_CUDA_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

# forge_cuda_executable(target src...): a CUDA program of this project with our warning set.
function(forge_cuda_executable target)
  add_executable(${target} ${ARGN})
  target_include_directories(${target} PRIVATE ${FORGE_CUDA_ROOT}/include)
  target_link_libraries(${target} PRIVATE CUDA::cudart CUDA::cublas)
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON
                                             CUDA_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror=all-warnings -lineinfo>
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>)
endfunction()
