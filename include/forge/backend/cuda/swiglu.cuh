#pragma once
// The SwiGLU gate of the Llama MLP on the GPU (Shazeer 2020), as backend/swiglu.hpp:
//   h = silu(g) ⊙ u,  silu(g) = g·σ(g);  dg = dh ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))),  du = dh ⊙ silu(g)
// Shapes: all [n] (any flattened [rows, intermediate]) in T; arithmetic in f32.

#include <cuda_runtime.h>

#include <cstdint>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

namespace detail {
template <class T>
__global__ void swiglu_forward_kernel(std::int64_t n, const T* __restrict__ g,
                                      const T* __restrict__ u, T* __restrict__ h) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float gv = to_f32(g[i]);
    h[i] = from_f32<T>(gv / (1.0f + __expf(-gv)) * to_f32(u[i]));
  }
}
template <class T>
__global__ void swiglu_backward_kernel(std::int64_t n, const T* __restrict__ g,
                                       const T* __restrict__ u, const T* __restrict__ dh,
                                       T* __restrict__ dg, T* __restrict__ du) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float gv = to_f32(g[i]), uv = to_f32(u[i]), d = to_f32(dh[i]);
    const float sg = 1.0f / (1.0f + __expf(-gv));
    dg[i] = from_f32<T>(d * uv * sg * (1.0f + gv * (1.0f - sg)));
    du[i] = from_f32<T>(d * gv * sg);
  }
}
inline unsigned grid_for(std::int64_t n) {
  const std::int64_t b = (n + 255) / 256;
  return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);
}
}  // namespace detail

/// h = silu(g)·u on ctx's stream.
template <class T>
void swiglu_forward(context& ctx, std::int64_t n, const T* g, const T* u, T* h) {
  if (n <= 0) return;
  detail::swiglu_forward_kernel<T><<<detail::grid_for(n), 256, 0, ctx.stream()>>>(n, g, u, h);
  FORGE_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

/// dg, du (overwritten) from dh on ctx's stream.
template <class T>
void swiglu_backward(context& ctx, std::int64_t n, const T* g, const T* u, const T* dh, T* dg,
                     T* du) {
  if (n <= 0) return;
  detail::swiglu_backward_kernel<T>
      <<<detail::grid_for(n), 256, 0, ctx.stream()>>>(n, g, u, dh, dg, du);
  FORGE_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace forge::cuda
