#pragma once
// RMSNorm on the GPU, the formula of backend/rmsnorm.hpp (transformers' LlamaRMSNorm):
//   r_t = 1 / sqrt(mean_i x_ti² + eps),   y_ti = w_i · x_ti · r_t
// backward, with x̂ = x·r and g = dy ⊙ w:
//   dx_t = r_t · (g_t − x̂_t · mean_i(g_ti · x̂_ti)),   dw_i (+)= Σ_t dy_ti · x̂_ti
// Shapes: x, y, dy, dx [rows, n] in T (f32, f16 or bf16); w [n] in T; rstd [rows] f32;
// dw [n] f32. Arithmetic in f32. dw is a column sum done by a second kernel, one thread per
// column in a fixed row order, so results are reproducible run to run (no atomics).

#include <cuda_runtime.h>

#include <cstdint>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

namespace detail {

template <class T>
__global__ void rmsnorm_forward_kernel(std::int64_t n, const T* __restrict__ x,
                                       const T* __restrict__ w, float eps, T* __restrict__ y,
                                       float* __restrict__ rstd) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const T* xt = x + t * n;
  float ss = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = to_f32(xt[i]);
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);
  const float r = rsqrtf(ss / float(n) + eps);
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    y[t * n + i] = from_f32<T>(to_f32(w[i]) * (to_f32(xt[i]) * r));
  if (rstd && threadIdx.x == 0) rstd[t] = r;
}

template <class T>
__global__ void rmsnorm_backward_dx_kernel(std::int64_t n, const T* __restrict__ x,
                                           const T* __restrict__ w, const float* __restrict__ rstd,
                                           const T* __restrict__ dy, T* __restrict__ dx,
                                           bool accumulate) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const T* xt = x + t * n;
  const T* dyt = dy + t * n;
  const float r = rstd[t];
  float m = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    m = fmaf(to_f32(dyt[i]) * to_f32(w[i]), to_f32(xt[i]), m);
  m = block_sum(m, scratch) * r / float(n);
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v = r * (to_f32(dyt[i]) * to_f32(w[i]) - to_f32(xt[i]) * r * m);
    if (accumulate) v += to_f32(dx[t * n + i]);
    dx[t * n + i] = from_f32<T>(v);
  }
}

template <class T>
__global__ void rmsnorm_backward_dw_kernel(std::int64_t rows, std::int64_t n,
                                           const T* __restrict__ x, const float* __restrict__ rstd,
                                           const T* __restrict__ dy, float* __restrict__ dw) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float s = 0.0f;
  for (std::int64_t t = 0; t < rows; ++t)
    s = fmaf(to_f32(dy[t * n + i]), to_f32(x[t * n + i]) * rstd[t], s);
  dw[i] += s;
}

inline unsigned row_threads(std::int64_t n) {
  return n >= 4096 ? 1024u : n >= 1024 ? 512u : n >= 256 ? 256u : 128u;
}

}  // namespace detail

/// RMSNorm forward on ctx's stream; rstd may be null (inference).
template <class T>
void rmsnorm_forward(context& ctx, std::int64_t rows, std::int64_t n, const T* x, const T* w,
                     float eps, T* y, float* rstd) {
  if (rows <= 0) return;
  detail::rmsnorm_forward_kernel<T>
      <<<unsigned(rows), detail::row_threads(n), 0, ctx.stream()>>>(n, x, w, eps, y, rstd);
  FORGE_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

/// RMSNorm backward on ctx's stream: dx = (or +=, if accumulate); dw += (if dw is not null).
template <class T>
void rmsnorm_backward(context& ctx, std::int64_t rows, std::int64_t n, const T* x, const T* w,
                      const float* rstd, const T* dy, T* dx, float* dw, bool accumulate) {
  if (rows <= 0) return;
  detail::rmsnorm_backward_dx_kernel<T>
      <<<unsigned(rows), detail::row_threads(n), 0, ctx.stream()>>>(n, x, w, rstd, dy, dx,
                                                                    accumulate);
  FORGE_CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
  if (dw) {
    detail::rmsnorm_backward_dw_kernel<T>
        <<<unsigned((n + 255) / 256), 256, 0, ctx.stream()>>>(rows, n, x, rstd, dy, dw);
    FORGE_CUDA_CHECK_LAUNCH("rmsnorm_backward_dw_kernel");
  }
}

}  // namespace forge::cuda
