#pragma once
// The SwiGLU gate of the Llama MLP (Shazeer 2020, "GLU Variants Improve Transformer"):
//   h = silu(g) ⊙ u,   silu(g) = g·σ(g)
// backward:
//   dg = dh ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))),   du = dh ⊙ silu(g)
// Shapes: g, u, h, dh, dg, du all [n] (any flattened [rows, intermediate]).

#include <cmath>
#include <cstdint>

#include "forge/backend/backend.hpp"

// xsimd's AVX-512 exp trips GCC 12's -Wmaybe-uninitialized inside the intrinsics headers
// (a false positive on masked intrinsics with an undefined pass-through operand).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace forge::backend {

/// h = silu(g)·u, scalar reference.
template <class T>
void swiglu_forward(scalar, std::int64_t n, const T* g, const T* u, T* h) {
  for (std::int64_t i = 0; i < n; ++i) h[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
}

/// dg, du from dh, scalar reference (dg, du overwritten).
template <class T>
void swiglu_backward(scalar, std::int64_t n, const T* g, const T* u, const T* dh, T* dg, T* du) {
  for (std::int64_t i = 0; i < n; ++i) {
    const T sg = T(1) / (T(1) + std::exp(-g[i]));
    dg[i] = dh[i] * u[i] * sg * (T(1) + g[i] * (T(1) - sg));
    du[i] = dh[i] * g[i] * sg;
  }
}

/// h = silu(g)·u with xsimd's vectorised exp, OpenMP over blocks.
template <class T, class Arch>
void swiglu_forward(simd<Arch>, std::int64_t n, const T* g, const T* u, T* h) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const std::int64_t nv = n / W * W;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::int64_t i = 0; i < nv; i += W) {
    const batch vg = batch::load_unaligned(g + i);
    (vg / (batch(T(1)) + xsimd::exp(-vg)) * batch::load_unaligned(u + i)).store_unaligned(h + i);
  }
  for (std::int64_t i = nv; i < n; ++i) h[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
}

/// dg, du from dh with xsimd, OpenMP over blocks.
template <class T, class Arch>
void swiglu_backward(simd<Arch>, std::int64_t n, const T* g, const T* u, const T* dh, T* dg,
                     T* du) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const std::int64_t nv = n / W * W;
  const batch one(T(1));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::int64_t i = 0; i < nv; i += W) {
    const batch vg = batch::load_unaligned(g + i), vu = batch::load_unaligned(u + i);
    const batch vd = batch::load_unaligned(dh + i);
    const batch sg = one / (one + xsimd::exp(-vg));
    (vd * vu * sg * (one + vg * (one - sg))).store_unaligned(dg + i);
    (vd * vg * sg).store_unaligned(du + i);
  }
  for (std::int64_t i = nv; i < n; ++i) {
    const T sg = T(1) / (T(1) + std::exp(-g[i]));
    dg[i] = dh[i] * u[i] * sg * (T(1) + g[i] * (T(1) - sg));
    du[i] = dh[i] * g[i] * sg;
  }
}

}  // namespace forge::backend

#pragma GCC diagnostic pop
