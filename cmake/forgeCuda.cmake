# CUDA support for forge's tests and benchmarks: enables the CUDA language for sm_90a (Hopper,
# wgmma-capable) and sm_80 (Ampere), finds cuBLAS, and defines forge_cuda_executable().
# Included only when FORGE_CUDA is ON, so a CPU-only build never needs nvcc. The CUDA sources
# include nothing but forge's .cuh headers and forge/core/error.hpp (no xtensor, no Hana), so
# they build without the CPU dependencies too (tests/cuda can be configured on its own).
include_guard(GLOBAL)

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "90a;80" CACHE STRING "GPU targets of forge's CUDA code")
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
