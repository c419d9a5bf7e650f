#pragma once
// Dense matrix products for linear layers, row-major throughout. The three shapes a linear
// layer y = x·Wᵀ needs (x [M,K], W [N,K], y [M,N]):
//   gemm_nt: C[M,N] (+)= A[M,K]·B[N,K]ᵀ   forward        y  = x·Wᵀ
//   gemm_nn: C[M,K] (+)= A[M,N]·B[N,K]    input grad     dx = dy·W
//   gemm_tn: C[N,K] (+)= A[M,N]ᵀ·B[M,K]   weight grad    dW = dyᵀ·x
// `accumulate` adds into C instead of overwriting it. scalar: plain triple loops (the
// reference); simd<Arch>: Eigen's blocked GEMM over mapped memory (OpenMP-threaded when the
// program is compiled with OpenMP), which picks GEMV itself when M = 1 (decoding).

#include <algorithm>
#include <cstdint>

// Eigen's AVX-512 GEBP kernel trips GCC 12's -Wmaybe-uninitialized inside the intrinsics
// headers (a known false positive on masked intrinsics); silence it for Eigen's code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>

#include "forge/backend/backend.hpp"
#include "forge/backend/detail/vec.hpp"

namespace forge::backend {

/// C[M,N] (+)= A[M,K]·B[N,K]ᵀ, scalar reference.
template <class T>
void gemm_nt(scalar, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T* C,
             bool accumulate) {
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      T s = 0;
      for (std::int64_t k = 0; k < K; ++k) s += A[m * K + k] * B[n * K + k];
      C[m * N + n] = accumulate ? C[m * N + n] + s : s;
    }
}

/// C[M,K] (+)= A[M,N]·B[N,K], scalar reference.
template <class T>
void gemm_nn(scalar, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T* C,
             bool accumulate) {
  for (std::int64_t m = 0; m < M; ++m) {
    T* c = C + m * K;
    if (!accumulate)
      for (std::int64_t k = 0; k < K; ++k) c[k] = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      const T a = A[m * N + n];
      for (std::int64_t k = 0; k < K; ++k) c[k] += a * B[n * K + k];
    }
  }
}

/// C[N,K] (+)= A[M,N]ᵀ·B[M,K], scalar reference.
template <class T>
void gemm_tn(scalar, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T* C,
             bool accumulate) {
  if (!accumulate)
    for (std::int64_t i = 0; i < N * K; ++i) C[i] = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      const T a = A[m * N + n];
      for (std::int64_t k = 0; k < K; ++k) C[n * K + k] += a * B[m * K + k];
    }
}

namespace detail {
template <class T>
using rowmajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using cmap = Eigen::Map<const rowmajor<T>>;
template <class T>
using mmap = Eigen::Map<rowmajor<T>>;

// c (+)= a·b through Eigen's blocked GEMM (packed, so the summation order does not depend on
// where the buffers lie in memory; it does depend on the thread count).
template <class Dst, class Lhs, class Rhs>
void product(Dst&& c, const Lhs& a, const Rhs& b, bool accumulate) {
  if (accumulate)
    c.noalias() += a * b;
  else
    c.noalias() = a * b;
}

// Below ~1M multiply-adds a product runs on one thread with our own loops: forking threads,
// which Eigen does from 50k, costs more than it saves (badly so on a loaded machine), and
// Eigen's unpacked (lazy) products vectorise reductions from the first *aligned* element, so
// their rounding would change with buffer addresses — and a resumed run, whose buffers lie
// elsewhere, would drift from the uninterrupted one. These loops use unaligned loads in a
// fixed order: the same inputs give the same bits wherever they are.
constexpr std::int64_t small_product = std::int64_t(1) << 20;
}  // namespace detail

/// C[M,N] (+)= A[M,K]·B[N,K]ᵀ through Eigen.
template <class T, class Arch>
void gemm_nt(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  if (M <= 4 && N >= 1024) {
    // Decoding (a few rows): Eigen's GEMV runs on one thread and is bound by streaming W,
    // so split W's rows across OpenMP threads instead.
#pragma omp parallel for schedule(static)
    for (std::int64_t n0 = 0; n0 < N; n0 += 256) {
      const std::int64_t nb = std::min<std::int64_t>(256, N - n0);
      detail::cmap<T> a(A, M, K), b(B + n0 * K, nb, K);
      Eigen::Map<detail::rowmajor<T>, 0, Eigen::OuterStride<>> c(C + n0, M, nb,
                                                                 Eigen::OuterStride<>(N));
      if (accumulate)
        c.noalias() += a * b.transpose();
      else
        c.noalias() = a * b.transpose();
    }
    return;
  }
  if (M * N * K < detail::small_product) {
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n) {
        const T d = detail::dot<Arch>(A + m * K, B + n * K, K);
        C[m * N + n] = accumulate ? C[m * N + n] + d : d;
      }
    return;
  }
  detail::product(detail::mmap<T>(C, M, N), detail::cmap<T>(A, M, K),
                  detail::cmap<T>(B, N, K).transpose(), accumulate);
}

/// C[M,K] (+)= A[M,N]·B[N,K] through Eigen.
template <class T, class Arch>
void gemm_nn(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  if (M * N * K < detail::small_product) {
    if (!accumulate) std::fill_n(C, M * K, T(0));
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n)
        detail::axpy<Arch>(A[m * N + n], B + n * K, C + m * K, K);
    return;
  }
  detail::product(detail::mmap<T>(C, M, K), detail::cmap<T>(A, M, N), detail::cmap<T>(B, N, K),
                  accumulate);
}

/// C[N,K] (+)= A[M,N]ᵀ·B[M,K] through Eigen.
template <class T, class Arch>
void gemm_tn(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  if (M * N * K < detail::small_product) {
    if (!accumulate) std::fill_n(C, N * K, T(0));
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n)
        detail::axpy<Arch>(A[m * N + n], B + m * K, C + n * K, K);
    return;
  }
  detail::product(detail::mmap<T>(C, N, K), detail::cmap<T>(A, M, N).transpose(),
                  detail::cmap<T>(B, M, K), accumulate);
}

}  // namespace forge::backend

#pragma GCC diagnostic pop
