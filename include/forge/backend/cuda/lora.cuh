#pragma once
// LoRA (Hu et al. 2021) forward and backward on the GPU, through cuBLAS products on one
// stream:  with s = alpha / rank, A [rank, K], B [N, rank], t = x·Aᵀ [M, rank]:
//   y = base + s · t · Bᵀ           (base = x·Wᵀ, or any base product already in y)
// backward, from dy [M, N]:
//   dB += s · dyᵀ · t,   dt = s · dy · B,   dA += dtᵀ · x,   dx = dy·W + dt·A  (W frozen)
// The adapter term is accumulated straight into the base output (beta = 1), so the f16/bf16
// result is rounded once. x, W, A, B, y, t, dt in T (f16, bf16 or f32); dA, dB f32.

#include <cstdint>

#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/gemm.cuh"

namespace forge::cuda {

/// The extents of one LoRA-adapted linear layer: y[M, N] = x[M, K]·Wᵀ + s·(x·Aᵀ)·Bᵀ.
struct lora_shape {
  std::int64_t m = 1;     ///< rows of x (tokens)
  std::int64_t n = 1;     ///< output features
  std::int64_t k = 1;     ///< input features
  std::int64_t rank = 8;  ///< adapter rank r
  float scale = 2.0f;     ///< s = alpha / rank
};

/// Adds the adapter term to y (which holds the base product already): t = x·Aᵀ (saved for
/// backward), y += s·t·Bᵀ. Use after a W4A16/NF4/int8 base product, or see lora_forward.
template <class T>
void lora_add(context& ctx, const lora_shape& sh, const T* x, const T* A, const T* B, T* t, T* y) {
  gemm<T, T>(ctx, false, true, sh.m, sh.rank, sh.k, 1.0f, x, sh.k, A, sh.k, 0.0f, t, sh.rank);
  gemm<T, T>(ctx, false, true, sh.m, sh.n, sh.rank, sh.scale, t, sh.rank, B, sh.rank, 1.0f, y,
             sh.n);
}

/// y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with a dense base W [N, K]; t [M, rank] is saved for backward.
template <class T>
void lora_forward(context& ctx, const lora_shape& sh, const T* x, const T* W, const T* A,
                  const T* B, T* t, T* y) {
  gemm<T, T>(ctx, false, true, sh.m, sh.n, sh.k, 1.0f, x, sh.k, W, sh.k, 0.0f, y, sh.n);
  lora_add(ctx, sh, x, A, B, t, y);
}

/// Gradients of lora_forward: dA, dB accumulated (f32); dt [M, rank] is workspace; dx
/// overwritten (skipped if null; W may then be null too).
template <class T>
void lora_backward(context& ctx, const lora_shape& sh, const T* x, const T* W, const T* A,
                   const T* B, const T* t, const T* dy, T* dt, float* dA, float* dB, T* dx) {
  gemm<T, float>(ctx, true, false, sh.n, sh.rank, sh.m, sh.scale, dy, sh.n, t, sh.rank, 1.0f, dB,
                 sh.rank);
  gemm<T, T>(ctx, false, false, sh.m, sh.rank, sh.n, sh.scale, dy, sh.n, B, sh.rank, 0.0f, dt,
             sh.rank);
  gemm<T, float>(ctx, true, false, sh.rank, sh.k, sh.m, 1.0f, dt, sh.rank, x, sh.k, 1.0f, dA, sh.k);
  if (dx) {
    gemm<T, T>(ctx, false, false, sh.m, sh.k, sh.n, 1.0f, dy, sh.n, W, sh.k, 0.0f, dx, sh.k);
    gemm<T, T>(ctx, false, false, sh.m, sh.k, sh.rank, 1.0f, dt, sh.rank, A, sh.k, 1.0f, dx, sh.k);
  }
}

}  // namespace forge::cuda
