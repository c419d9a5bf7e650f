#pragma once
// Dense matrix products for linear layers, row-major throughout. The three shapes a linear
// layer y = x·Wᵀ needs (x [M,K], W [N,K], y [M,N]):
//   gemm_nt: C[M,N] (+)= A[M,K]·B[N,K]ᵀ   forward        y  = x·Wᵀ
//   gemm_nn: C[M,K] (+)= A[M,N]·B[N,K]    input grad     dx = dy·W
//   gemm_tn: C[N,K] (+)= A[M,N]ᵀ·B[M,K]   weight grad    dW = dyᵀ·x
// `accumulate` adds into C instead of overwriting it. scalar: plain triple loops (the
// reference); simd<Arch>: Eigen's blocked GEMM over mapped memory (OpenMP-threaded when the
// program is compiled with OpenMP), which picks GEMV itself when M = 1 (decoding).

#include <cstdint>

// Eigen's AVX-512 GEBP kernel trips GCC 12's -Wmaybe-uninitialized inside the intrinsics
// headers (a known false positive on masked intrinsics); silence it for Eigen's code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>

#include "forge/backend/backend.hpp"

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
}  // namespace detail

/// C[M,N] (+)= A[M,K]·B[N,K]ᵀ through Eigen.
template <class T, class Arch>
void gemm_nt(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  detail::cmap<T> a(A, M, K), b(B, N, K);
  detail::mmap<T> c(C, M, N);
  if (accumulate) c.noalias() += a * b.transpose();
  else c.noalias() = a * b.transpose();
}

/// C[M,K] (+)= A[M,N]·B[N,K] through Eigen.
template <class T, class Arch>
void gemm_nn(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  detail::cmap<T> a(A, M, N), b(B, N, K);
  detail::mmap<T> c(C, M, K);
  if (accumulate) c.noalias() += a * b;
  else c.noalias() = a * b;
}

/// C[N,K] (+)= A[M,N]ᵀ·B[M,K] through Eigen.
template <class T, class Arch>
void gemm_tn(simd<Arch>, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B,
             T* C, bool accumulate) {
  detail::cmap<T> a(A, M, N), b(B, M, K);
  detail::mmap<T> c(C, N, K);
  if (accumulate) c.noalias() += a.transpose() * b;
  else c.noalias() = a.transpose() * b;
}

}  // namespace forge::backend

#pragma GCC diagnostic pop
