#pragma once
// Small vector primitives shared by the simd<Arch> kernels: dot product, axpy and scaling
// over contiguous spans, each an xsimd main loop plus a scalar tail.

#include <cstdint>

#include <xsimd/xsimd.hpp>

// xsimd's AVX-512 reductions trip GCC 12's -Wmaybe-uninitialized inside the intrinsics
// headers (a false positive on masked intrinsics with an undefined pass-through operand).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace forge::backend::detail {

/// Σ_i a[i]·b[i] over n elements.
template <class Arch, class T>
inline T dot(const T* a, const T* b, std::int64_t n) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  std::int64_t i = 0;
  T s = 0;
  if (n >= W) {
    batch acc0(T(0)), acc1(T(0));
    for (; i + 2 * W <= n; i += 2 * W) {
      acc0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), acc0);
      acc1 = xsimd::fma(batch::load_unaligned(a + i + W), batch::load_unaligned(b + i + W), acc1);
    }
    for (; i + W <= n; i += W)
      acc0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), acc0);
    s = xsimd::hadd(acc0 + acc1);
  }
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

/// y[i] += alpha·x[i] over n elements.
template <class Arch, class T>
inline void axpy(T alpha, const T* x, T* y, std::int64_t n) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const batch va(alpha);
  std::int64_t i = 0;
  for (; i + W <= n; i += W)
    xsimd::fma(va, batch::load_unaligned(x + i), batch::load_unaligned(y + i))
        .store_unaligned(y + i);
  for (; i < n; ++i) y[i] += alpha * x[i];
}

/// y[i] = alpha·x[i] over n elements.
template <class Arch, class T>
inline void scale(T alpha, const T* x, T* y, std::int64_t n) {
  using batch = xsimd::batch<T, Arch>;
  constexpr std::int64_t W = batch::size;
  const batch va(alpha);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) (va * batch::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = alpha * x[i];
}

}  // namespace forge::backend::detail

#pragma GCC diagnostic pop
