#pragma once
// Timing support for the CUDA benchmarks: device-side random fill, and the median time of a
// region captured in a CUDA graph (launch gaps amortised over `reps` launches per replay),
// measured with events after warm-up replays.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "forge/backend/cuda/check.cuh"

namespace forge::cuda::bench {

/// Fills n bytes with a hash of (index, seed): cheap random data that is never all zeros.
__global__ void fill_random_bytes(std::uint8_t* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 0x9e3779b1u ^ seed;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    p[i] = std::uint8_t(h >> 8);
  }
}

/// Fills n halves with values uniform in [-1, 1) from a hash of (index, seed).
__global__ void fill_random_half(__half* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 0x9e3779b1u ^ seed;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    p[i] = __float2half(float(h & 0xffffu) / 32768.0f - 1.0f);
  }
}

/// Median milliseconds of one call of `body(i)` (i = 0..reps-1 picks the input set), from a
/// graph of `reps` calls replayed `samples` times after 3 warm-up replays.
inline double graph_median_ms(cudaStream_t s, int reps, int samples,
                              const std::function<void(int)>& body) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  FORGE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < reps; ++i) body(i);
  FORGE_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  FORGE_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b;
  FORGE_CUDA_CHECK(cudaEventCreate(&a));
  FORGE_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) FORGE_CUDA_CHECK(cudaGraphLaunch(ge, s));
  std::vector<double> t;
  for (int i = 0; i < samples; ++i) {
    FORGE_CUDA_CHECK(cudaEventRecord(a, s));
    FORGE_CUDA_CHECK(cudaGraphLaunch(ge, s));
    FORGE_CUDA_CHECK(cudaEventRecord(b, s));
    FORGE_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    FORGE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// Median milliseconds of one call of `body(i)` launched directly on the stream (no graph):
/// events around `reps` back-to-back calls, `samples` times.
inline double stream_median_ms(cudaStream_t s, int reps, int samples,
                               const std::function<void(int)>& body) {
  cudaEvent_t a, b;
  FORGE_CUDA_CHECK(cudaEventCreate(&a));
  FORGE_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) body(i);
  std::vector<double> t;
  for (int k = 0; k < samples; ++k) {
    FORGE_CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i) body(i);
    FORGE_CUDA_CHECK(cudaEventRecord(b, s));
    FORGE_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    FORGE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace forge::cuda::bench
