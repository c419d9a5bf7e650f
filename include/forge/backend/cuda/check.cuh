#pragma once
// Error checking for CUDA runtime and cuBLAS calls: every failure becomes a forge::error that
// names the call, the source place and the runtime's own message. nvcc-only header.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "forge/core/error.hpp"

namespace forge::cuda {

/// Throws forge::error unless `status` is cudaSuccess; `call` names the failed call.
inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw error(
        {.what = std::string("CUDA call failed: ") + call,
         .file = file,
         .place = "line " + std::to_string(line),
         .expected = "cudaSuccess",
         .found = std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")"});
}

/// Throws forge::error unless `status` is CUBLAS_STATUS_SUCCESS.
inline void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw error({.what = std::string("cuBLAS call failed: ") + call,
                 .file = file,
                 .place = "line " + std::to_string(line),
                 .expected = "CUBLAS_STATUS_SUCCESS",
                 .found = std::string(cublasGetStatusName(status)) + " (" +
                          cublasGetStatusString(status) + ")"});
}

/// Throws forge::error if the last kernel launch failed (bad configuration, missing image).
inline void check_launch(const char* kernel, const char* file, int line) {
  check(cudaGetLastError(), kernel, file, line);
}

}  // namespace forge::cuda

/// Checks a CUDA runtime or cuBLAS call; throws forge::error naming it on failure.
#define FORGE_CUDA_CHECK(call) ::forge::cuda::check((call), #call, __FILE__, __LINE__)
/// Checks the launch just made; throws forge::error naming `kernel` on failure.
#define FORGE_CUDA_CHECK_LAUNCH(kernel) ::forge::cuda::check_launch(kernel, __FILE__, __LINE__)
