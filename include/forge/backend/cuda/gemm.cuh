#pragma once
// Dense matrix products through cuBLAS (cublasGemmEx), row-major like the rest of forge:
//   C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C
// with op(X) = X or Xᵀ. Inputs f16, bf16 or f32; products accumulate in f32
// (CUBLAS_COMPUTE_32F), the output is rounded once to its own type. A row-major matrix is
// the column-major matrix of its transpose, so the call is made as Cᵀ = op(B)ᵀ · op(A)ᵀ.

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"

namespace forge::cuda {

namespace detail {
template <class T>
constexpr cudaDataType_t blas_type();
template <>
constexpr cudaDataType_t blas_type<__half>() {
  return CUDA_R_16F;
}
template <>
constexpr cudaDataType_t blas_type<__nv_bfloat16>() {
  return CUDA_R_16BF;
}
template <>
constexpr cudaDataType_t blas_type<float>() {
  return CUDA_R_32F;
}
}  // namespace detail

/// C = alpha·op(A)·op(B) + beta·C on ctx's stream, row-major with leading dimensions (row
/// strides, elements) lda, ldb, ldc. TA is the input type (A and B), TC the output type
/// (TA or float). A is [m, k] (or [k, m] if trans_a), B is [k, n] (or [n, k] if trans_b).
template <class TA, class TC>
void gemm(context& ctx, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
          float alpha, const TA* A, std::int64_t lda, const TA* B, std::int64_t ldb, float beta,
          TC* C, std::int64_t ldc) {
  const std::int64_t lim = std::int64_t(1) << 31;
  require(m >= 0 && n >= 0 && k >= 0 && m < lim && n < lim && k < lim && lda >= (trans_a ? m : k) &&
              ldb >= (trans_b ? k : n) && ldc >= n,
          {.what = "bad matrix product extents",
           .place = "cuda::gemm",
           .expected = "non-negative extents below 2^31 and row strides at least the row length",
           .found = "m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " +
                    std::to_string(k) + ", lda " + std::to_string(lda) + ", ldb " +
                    std::to_string(ldb) + ", ldc " + std::to_string(ldc)});
  if (m == 0 || n == 0) return;
  FORGE_CUDA_CHECK(cublasGemmEx(ctx.blas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m), int(k), &alpha,
                                B, detail::blas_type<TA>(), int(ldb), A, detail::blas_type<TA>(),
                                int(lda), &beta, C, detail::blas_type<TC>(), int(ldc),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/// Strided-batched C_i = alpha·op(A_i)·op(B_i) + beta·C_i for i in [0, batch), row-major as
/// gemm(), with X_i = X + i·stride_x (elements). One cuBLAS call (cublasGemmStridedBatchedEx).
template <class TA, class TC>
void gemm_strided_batched(context& ctx, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                          std::int64_t k, float alpha, const TA* A, std::int64_t lda,
                          std::int64_t stride_a, const TA* B, std::int64_t ldb,
                          std::int64_t stride_b, float beta, TC* C, std::int64_t ldc,
                          std::int64_t stride_c, std::int64_t batch) {
  const std::int64_t lim = std::int64_t(1) << 31;
  require(
      m >= 0 && n >= 0 && k >= 0 && batch >= 0 && m < lim && n < lim && k < lim && batch < lim &&
          lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n && stride_a >= 0 &&
          stride_b >= 0 && stride_c >= 0,
      {.what = "bad batched matrix product extents",
       .place = "cuda::gemm_strided_batched",
       .expected = "non-negative extents below 2^31 and row strides at least the row length",
       .found = "m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " + std::to_string(k) +
                ", batch " + std::to_string(batch) + ", lda " + std::to_string(lda) + ", ldb " +
                std::to_string(ldb) + ", ldc " + std::to_string(ldc)});
  if (m == 0 || n == 0 || batch == 0) return;
  FORGE_CUDA_CHECK(cublasGemmStridedBatchedEx(
      ctx.blas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
      int(m), int(k), &alpha, B, detail::blas_type<TA>(), int(ldb), stride_b, A,
      detail::blas_type<TA>(), int(lda), stride_a, &beta, C, detail::blas_type<TC>(), int(ldc),
      stride_c, int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace forge::cuda
