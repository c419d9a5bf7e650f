#pragma once
// AdamW (Loshchilov & Hutter 2019, decoupled weight decay), in the order PyTorch's AdamW
// applies it, for step t ≥ 1:
//   p ← p·(1 − lr·λ)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)
// with g = grad_scale · grad. Shapes: param, m, v [n] f32 (master weights and moments);
// grad [n] in G (f32, f16 or bf16). One thread per element, grid-stride.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// AdamW hyperparameters; defaults are PyTorch's.
struct adamw_options {
  float lr = 1e-3f;            ///< learning rate
  float beta1 = 0.9f;          ///< first-moment decay
  float beta2 = 0.999f;        ///< second-moment decay
  float eps = 1e-8f;           ///< added to the bias-corrected root of v
  float weight_decay = 1e-2f;  ///< decoupled decay λ
};

namespace detail {
template <class G>
__global__ void adamw_kernel(std::int64_t n, float* __restrict__ p, const G* __restrict__ grad,
                             float* __restrict__ m, float* __restrict__ v, float lr, float beta1,
                             float beta2, float eps, float decay, float step_size,
                             float inv_sqrt_bias2, float grad_scale) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = grad_scale * to_f32(grad[i]);
    float pi = p[i] * (1.0f - lr * decay);
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    pi -= step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + eps);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}
}  // namespace detail

/// One AdamW step (t = step, counted from 1) on ctx's stream.
template <class G>
void adamw_step(context& ctx, std::int64_t n, float* param, const G* grad, float* m, float* v,
                std::int64_t step, const adamw_options& o, float grad_scale = 1.0f) {
  require(step >= 1, {.what = "AdamW step counts from 1",
                      .place = "adamw_step",
                      .expected = "step >= 1",
                      .found = std::to_string(step)});
  if (n <= 0) return;
  const double bias1 = 1.0 - std::pow(double(o.beta1), double(step));
  const double bias2 = 1.0 - std::pow(double(o.beta2), double(step));
  const std::int64_t blocks = (n + 255) / 256;
  detail::adamw_kernel<G><<<unsigned(blocks < 65536 ? blocks : 65536), 256, 0, ctx.stream()>>>(
      n, param, grad, m, v, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay,
      float(double(o.lr) / bias1), float(1.0 / std::sqrt(bias2)), grad_scale);
  FORGE_CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace forge::cuda
