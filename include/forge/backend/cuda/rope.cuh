#pragma once
// Rotary position embeddings on the GPU, the "rotate half" layout of backend/rope.hpp
// (RoFormer §3.4; transformers' apply_rotary_pos_emb): with x1 = x[0:D/2], x2 = x[D/2:D],
//   y1 = x1·c − x2·s,   y2 = x2·c + x1·s;   backward: dx1 = dy1·c + dy2·s, dx2 = dy2·c − dy1·s
// Shapes: x [rows, heads, D] in T, in place; cos, sin [rows, D/2] f32. One thread per pair.

#include <cuda_runtime.h>

#include <cstdint>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

namespace detail {
template <class T>
__global__ void rope_kernel(std::int64_t rows, std::int64_t heads, std::int64_t D, T* x,
                            const float* __restrict__ cos, const float* __restrict__ sin,
                            float sign) {
  const std::int64_t h2 = D / 2;
  const std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (idx >= rows * heads * h2) return;
  const std::int64_t i = idx % h2, th = idx / h2, t = th / heads;
  T* v = x + th * D;
  const float a = to_f32(v[i]), b = to_f32(v[i + h2]);
  const float c = cos[t * h2 + i], s = sign * sin[t * h2 + i];
  v[i] = from_f32<T>(a * c - b * s);
  v[i + h2] = from_f32<T>(b * c + a * s);
}
}  // namespace detail

/// Applies the rotation to x in place on ctx's stream.
template <class T>
void rope_forward(context& ctx, std::int64_t rows, std::int64_t heads, std::int64_t D, T* x,
                  const float* cos, const float* sin) {
  const std::int64_t total = rows * heads * (D / 2);
  if (total <= 0) return;
  detail::rope_kernel<T>
      <<<unsigned((total + 255) / 256), 256, 0, ctx.stream()>>>(rows, heads, D, x, cos, sin, 1.0f);
  FORGE_CUDA_CHECK_LAUNCH("rope_kernel");
}

/// Maps the gradient through the rotation in place (the inverse rotation) on ctx's stream.
template <class T>
void rope_backward(context& ctx, std::int64_t rows, std::int64_t heads, std::int64_t D, T* dx,
                   const float* cos, const float* sin) {
  const std::int64_t total = rows * heads * (D / 2);
  if (total <= 0) return;
  detail::rope_kernel<T><<<unsigned((total + 255) / 256), 256, 0, ctx.stream()>>>(
      rows, heads, D, dx, cos, sin, -1.0f);
  FORGE_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace forge::cuda
