#pragma once
// The state one GPU needs to run forge kernels: the device, a stream every launch is queued
// on, the cuBLAS handle bound to that stream (with its own workspace, so products can be
// captured in CUDA graphs) and the memory pool weights and activations come from.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/memory.cuh"

namespace forge::cuda {

/// Device, stream, cuBLAS handle and memory pool for one GPU. Non-copyable; create one per
/// device and pass it by reference to launchers.
class context {
 public:
  /// Binds to `device` (its index among visible GPUs).
  explicit context(int device = 0) : device_(device) {
    FORGE_CUDA_CHECK(cudaSetDevice(device_));
    FORGE_CUDA_CHECK(cudaGetDeviceProperties(&props_, device_));
    FORGE_CUDA_CHECK(cublasCreate(&blas_));
    FORGE_CUDA_CHECK(cublasSetStream(blas_, stream_.get()));
    // cuBLAS needs an explicit workspace inside graph capture; 32 MiB covers Hopper's kernels.
    workspace_ = device_buffer<std::byte>(std::size_t(32) << 20, &pool_);
    FORGE_CUDA_CHECK(cublasSetWorkspace(blas_, workspace_.data(), workspace_.size()));
  }
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  ~context() {
    if (blas_) cublasDestroy(blas_);
  }

  int device() const { return device_; }
  const cudaDeviceProp& properties() const { return props_; }
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t blas() const { return blas_; }
  memory_pool& pool() { return pool_; }
  /// A device buffer of n elements from this context's pool.
  template <class T>
  device_buffer<T> alloc(std::size_t n) {
    return device_buffer<T>(n, &pool_);
  }
  /// Waits for all queued work; throws if any of it failed.
  void synchronize() const { stream_.synchronize(); }

 private:
  int device_ = 0;
  cudaDeviceProp props_{};
  memory_pool pool_;  // declared before the buffers that return blocks to it
  ::forge::cuda::stream stream_;
  device_buffer<std::byte> workspace_;
  cublasHandle_t blas_ = nullptr;
};

}  // namespace forge::cuda
