#pragma once
// W8A16 matmul: int8 per-output-channel weights times f16 activations, for decode and small
// batches:   y[m, r] = s_r · Σ_k q[r, k] · x[m, k]
// Host format: forge's int8_channel (quant/int8.hpp): codes rows·cols int8, row-major; one
// f32 scale per row. cols % 16 == 0.
// Kernel: one warp per row, each lane streams 16 bytes (16 weights) per step, 4 steps in
// flight; int8 → f32 conversion and f32 products; the row scale is applied once at the end.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/memory.cuh"

namespace forge::cuda {

/// An int8 per-channel matrix resident on the device (host layout kept).
struct int8_matrix {
  std::int64_t rows = 0, cols = 0;
  device_buffer<std::int8_t> codes{};  ///< rows·cols
  device_buffer<float> scales{};       ///< rows
  /// Bytes the kernel streams per product.
  std::size_t weight_bytes() const { return codes.bytes() + scales.bytes(); }
};

namespace detail {

template <int M>
__global__ void __launch_bounds__(128)
    int8_gemv_kernel(int n, int k, const uint4* __restrict__ codes,
                     const float* __restrict__ scales, const __half* __restrict__ x,
                     std::int64_t ldx, __half* __restrict__ y, std::int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (row >= n) return;
  constexpr int U = 4;
  const int chunks = k >> 4;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    uint4 w[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      w[u] = c < chunks ? __ldcs(codes + std::int64_t(row) * chunks + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      const std::uint32_t ws[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
      float q[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) q[j] = float(std::int8_t((ws[j >> 2] >> (8 * (j & 3))) & 0xffu));
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + m * ldx + (c << 4));
        float d = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint4 xv = __ldg(xp + h);
          const __half2* xh = reinterpret_cast<const __half2*>(&xv);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 xf = __half22float2(xh[j]);
            d = fmaf(q[8 * h + 2 * j], xf.x, d);
            d = fmaf(q[8 * h + 2 * j + 1], xf.y, d);
          }
        }
        acc[m] += d;
      }
    }
  }
  const float s = scales[row];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) y[m * ldy + row] = __float2half(v * s);
  }
}

template <int M>
void int8_launch(const int8_matrix& w, const __half* x, std::int64_t ldx, __half* y,
                 std::int64_t ldy, cudaStream_t s) {
  int8_gemv_kernel<M><<<unsigned((w.rows + 3) / 4), 128, 0, s>>>(
      int(w.rows), int(w.cols), reinterpret_cast<const uint4*>(w.codes.data()), w.scales.data(), x,
      ldx, y, ldy);
  FORGE_CUDA_CHECK_LAUNCH("int8_gemv_kernel");
}

}  // namespace detail

/// Uploads an int8 per-channel matrix (host layout). Synchronous.
inline int8_matrix int8_upload(context& ctx, std::int64_t rows, std::int64_t cols,
                               const std::int8_t* codes, const float* scales) {
  require(rows > 0 && cols > 0 && cols % 16 == 0 && cols < (std::int64_t(1) << 30),
          {.what = "bad int8 matrix extents",
           .place = "int8_upload",
           .expected = "rows > 0, cols a positive multiple of 16",
           .found = std::to_string(rows) + "x" + std::to_string(cols)});
  int8_matrix m;
  m.rows = rows;
  m.cols = cols;
  m.codes = device_buffer<std::int8_t>(codes, std::size_t(rows * cols), &ctx.pool());
  m.scales = device_buffer<float>(scales, std::size_t(rows), &ctx.pool());
  return m;
}

/// y[batch, rows] = x[batch, cols] · Wᵀ on ctx's stream (f16 x and y, row strides ldx, ldy;
/// ldx a multiple of 8). Batches run in pieces of 4.
inline void int8_matmul(context& ctx, const int8_matrix& w, std::int64_t batch, const __half* x,
                        std::int64_t ldx, __half* y, std::int64_t ldy) {
  require(batch >= 0 && ldx >= w.cols && ldy >= w.rows && ldx % 8 == 0,
          {.what = "bad int8 operand extents",
           .place = "int8_matmul",
           .expected = "ldx >= cols (multiple of 8), ldy >= rows",
           .found = "ldx " + std::to_string(ldx) + ", ldy " + std::to_string(ldy)});
  for (std::int64_t b = 0; b < batch;) {
    const std::int64_t left = batch - b;
    switch (left >= 4 ? 4 : int(left)) {
      case 1:
        detail::int8_launch<1>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      case 2:
        detail::int8_launch<2>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      case 3:
        detail::int8_launch<3>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      default:
        detail::int8_launch<4>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
    }
    b += left >= 4 ? 4 : left;
  }
}

}  // namespace forge::cuda
