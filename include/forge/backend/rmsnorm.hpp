#pragma once
// RMSNorm (Zhang & Sennrich 2019), as transformers' LlamaRMSNorm computes it:
//   r_t = 1 / sqrt(mean_i x_ti² + eps),   y_ti = w_i · x_ti · r_t
// backward, with x̂ = x·r and g = dy ⊙ w:
//   dx_t = r_t · (g_t − x̂_t · mean_i(g_ti · x̂_ti)),   dw_i += Σ_t dy_ti · x̂_ti
// Shapes: x, y, dy, dx [rows, n]; w, dw [n]; rstd [rows] (saved by forward for backward).

#include <cmath>
#include <cstdint>

#include "forge/backend/backend.hpp"
#include "forge/backend/detail/vec.hpp"

// xsimd's AVX-512 reductions trip GCC 12's -Wmaybe-uninitialized inside the intrinsics
// headers (a false positive on masked intrinsics with an undefined pass-through operand).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace forge::backend {

/// RMSNorm forward, scalar reference; writes rstd (may be null).
template <class T>
void rmsnorm_forward(scalar, std::int64_t rows, std::int64_t n, const T* x, const T* w, T eps, T* y,
                     T* rstd) {
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * n;
    T ss = 0;
    for (std::int64_t i = 0; i < n; ++i) ss += xt[i] * xt[i];
    const T r = T(1) / std::sqrt(ss / T(n) + eps);
    for (std::int64_t i = 0; i < n; ++i) y[t * n + i] = w[i] * (xt[i] * r);
    if (rstd) rstd[t] = r;
  }
}

/// RMSNorm backward, scalar reference: dx = (or +=, if accumulate) and dw += (if dw).
template <class T>
void rmsnorm_backward(scalar, std::int64_t rows, std::int64_t n, const T* x, const T* w,
                      const T* rstd, const T* dy, T* dx, T* dw, bool accumulate) {
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * n;
    const T* dyt = dy + t * n;
    const T r = rstd[t];
    T m = 0;
    for (std::int64_t i = 0; i < n; ++i) m += dyt[i] * w[i] * xt[i] * r;
    m /= T(n);
    for (std::int64_t i = 0; i < n; ++i) {
      const T v = r * (dyt[i] * w[i] - xt[i] * r * m);
      dx[t * n + i] = accumulate ? dx[t * n + i] + v : v;
      if (dw) dw[i] += dyt[i] * xt[i] * r;
    }
  }
}

/// RMSNorm forward, xsimd + OpenMP across rows.
template <class T, class Arch>
void rmsnorm_forward(simd<Arch>, std::int64_t rows, std::int64_t n, const T* x, const T* w, T eps,
                     T* y, T* rstd) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
#pragma omp parallel for schedule(static) if (rows * n > 32768)
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * n;
    T* yt = y + t * n;
    const T r = T(1) / std::sqrt(detail::dot<Arch>(xt, xt, n) / T(n) + eps);
    const batch vr(r);
    std::int64_t i = 0;
    for (; i + W <= n; i += W)
      (batch::load_unaligned(w + i) * (batch::load_unaligned(xt + i) * vr)).store_unaligned(yt + i);
    for (; i < n; ++i) yt[i] = w[i] * (xt[i] * r);
    if (rstd) rstd[t] = r;
  }
}

/// RMSNorm backward, xsimd + OpenMP across rows (dw reduced per thread, then summed).
template <class T, class Arch>
void rmsnorm_backward(simd<Arch>, std::int64_t rows, std::int64_t n, const T* x, const T* w,
                      const T* rstd, const T* dy, T* dx, T* dw, bool accumulate) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  // dx rows are independent; dw is a sum over rows, done serially after (cheap: rows·n).
#pragma omp parallel for schedule(static) if (rows * n > 32768)
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * n;
    const T* dyt = dy + t * n;
    T* dxt = dx + t * n;
    const T r = rstd[t];
    T m = 0;
    {
      batch acc(T(0));
      std::int64_t i = 0;
      for (; i + W <= n; i += W)
        acc = xsimd::fma(batch::load_unaligned(dyt + i) * batch::load_unaligned(w + i),
                         batch::load_unaligned(xt + i), acc);
      m = xsimd::hadd(acc);
      for (; i < n; ++i) m += dyt[i] * w[i] * xt[i];
    }
    m = m * r / T(n);
    const batch vr(r), vrm(r * r * m);
    std::int64_t i = 0;
    for (; i + W <= n; i += W) {
      batch v = vr * batch::load_unaligned(dyt + i) * batch::load_unaligned(w + i) -
                vrm * batch::load_unaligned(xt + i);
      if (accumulate) v += batch::load_unaligned(dxt + i);
      v.store_unaligned(dxt + i);
    }
    for (; i < n; ++i) {
      const T v = r * dyt[i] * w[i] - r * r * m * xt[i];
      dxt[i] = accumulate ? dxt[i] + v : v;
    }
  }
  if (dw)
    for (std::int64_t t = 0; t < rows; ++t) {
      const T r = rstd[t];
      const T* xt = x + t * n;
      const T* dyt = dy + t * n;
      for (std::int64_t i = 0; i < n; ++i) dw[i] += dyt[i] * xt[i] * r;
    }
}

}  // namespace forge::backend

#pragma GCC diagnostic pop
