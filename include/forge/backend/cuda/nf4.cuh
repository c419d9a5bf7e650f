#pragma once
// NF4 dequantize-matmul for decode and small batches (QLoRA's base product):
//   y[m, r] = Σ_k x[m, k] · c[q(r, k)] · a(b(r, k)),   b = block of 64 consecutive weights
// Host format: forge's nf4 (quant/nf4.hpp, bitsandbytes' packing): codes rows·cols/2 bytes,
// flat row-major, the FIRST weight of a byte in the HIGH nibble; absmax a per block of 64 as
// f32. Double-quantized constants are expanded to f32 by the caller before upload (4 bytes per
// 64 weights instead of 1.1: the kernel then needs no second lookup). cols % 64 == 0, so a
// block never crosses a row.
//
// Kernel: one warp per row, each lane streams 16 bytes (32 weights, half a block) per step, 4
// steps in flight; a 256-entry table in shared memory maps a byte to its two f32 code values,
// so one lookup decodes two weights; products and sums in f32.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/memory.cuh"
#include "forge/backend/cuda/numeric.cuh"
#include "forge/quant/nf4_code.hpp"

namespace forge::cuda {

/// The 16 NF4 code values (QLoRA appendix E; bitsandbytes), as f32: the one table of
/// quant/nf4_code.hpp.
inline constexpr const float (&nf4_values)[16] = quant::nf4_code_values;

/// An NF4 matrix resident on the device (host packing kept; absmax as f32 per 64 weights).
struct nf4_matrix {
  std::int64_t rows = 0, cols = 0;
  device_buffer<std::uint8_t> codes{};  ///< rows·cols/2 bytes
  device_buffer<float> absmax{};        ///< rows·cols/64
  /// Bytes the kernel streams per product.
  std::size_t weight_bytes() const { return codes.bytes() + absmax.bytes(); }
};

namespace detail {

struct nf4_pair_table {
  float2 v[256];
};

template <int M>
__global__ void __launch_bounds__(128)
    nf4_gemv_kernel(int n, int k, const uint4* __restrict__ codes, const float* __restrict__ absmax,
                    nf4_pair_table table, const __half* __restrict__ x, std::int64_t ldx,
                    __half* __restrict__ y, std::int64_t ldy) {
  __shared__ float2 lut[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) lut[i] = table.v[i];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (row >= n) return;
  constexpr int U = 4;
  const int chunks = k >> 5;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    uint4 w[U];
    float am[U];  // requested with the codes, so one latency covers both
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = min(c0 + 32 * u, chunks - 1);  // past-the-end chunks are skipped below
      w[u] = __ldcs(codes + std::int64_t(row) * chunks + c);
      am[u] = absmax[(std::int64_t(row) * k + (c << 5)) >> 6];
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      const float a = am[u];
      const std::uint32_t ws[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
      float2 dq[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) dq[j] = lut[(ws[j >> 2] >> (8 * (j & 3))) & 0xffu];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + m * ldx + (c << 5));
        float d = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const uint4 xv = __ldg(xp + q);
          const __half2* xh = reinterpret_cast<const __half2*>(&xv);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 xf = __half22float2(xh[j]);
            d = fmaf(dq[4 * q + j].x, xf.x, d);
            d = fmaf(dq[4 * q + j].y, xf.y, d);
          }
        }
        acc[m] = fmaf(d, a, acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) y[m * ldy + row] = __float2half(v);
  }
}

inline nf4_pair_table nf4_table() {
  nf4_pair_table t;
  for (int b = 0; b < 256; ++b) t.v[b] = make_float2(nf4_values[b >> 4], nf4_values[b & 15]);
  return t;
}

template <int M>
void nf4_launch(const nf4_matrix& w, const __half* x, std::int64_t ldx, __half* y, std::int64_t ldy,
                cudaStream_t s) {
  nf4_gemv_kernel<M><<<unsigned((w.rows + 3) / 4), 128, 0, s>>>(
      int(w.rows), int(w.cols), reinterpret_cast<const uint4*>(w.codes.data()), w.absmax.data(),
      nf4_table(), x, ldx, y, ldy);
  FORGE_CUDA_CHECK_LAUNCH("nf4_gemv_kernel");
}

}  // namespace detail

/// Uploads an NF4 matrix (host packing, f32 absmax per 64-weight block). Synchronous.
inline nf4_matrix nf4_upload(context& ctx, std::int64_t rows, std::int64_t cols,
                             const std::uint8_t* codes, const float* absmax) {
  require(rows > 0 && cols > 0 && cols % 64 == 0 && cols < (std::int64_t(1) << 30),
          {.what = "bad NF4 matrix extents",
           .place = "nf4_upload",
           .expected = "rows > 0, cols a positive multiple of 64",
           .found = std::to_string(rows) + "x" + std::to_string(cols)});
  nf4_matrix m;
  m.rows = rows;
  m.cols = cols;
  m.codes = device_buffer<std::uint8_t>(codes, std::size_t(rows * cols / 2), &ctx.pool());
  m.absmax = device_buffer<float>(absmax, std::size_t(rows * cols / 64), &ctx.pool());
  return m;
}

/// y[batch, rows] = x[batch, cols] · Wᵀ on ctx's stream (f16 x and y, row strides ldx, ldy;
/// ldx a multiple of 8). Batches run in pieces of 4.
inline void nf4_matmul(context& ctx, const nf4_matrix& w, std::int64_t batch, const __half* x,
                       std::int64_t ldx, __half* y, std::int64_t ldy) {
  require(batch >= 0 && ldx >= w.cols && ldy >= w.rows && ldx % 8 == 0,
          {.what = "bad NF4 operand extents",
           .place = "nf4_matmul",
           .expected = "ldx >= cols (multiple of 8), ldy >= rows",
           .found = "ldx " + std::to_string(ldx) + ", ldy " + std::to_string(ldy)});
  for (std::int64_t b = 0; b < batch;) {
    const std::int64_t left = batch - b;
    switch (left >= 4 ? 4 : int(left)) {
      case 1:
        detail::nf4_launch<1>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      case 2:
        detail::nf4_launch<2>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      case 3:
        detail::nf4_launch<3>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
      default:
        detail::nf4_launch<4>(w, x + b * ldx, ldx, y + b * ldy, ldy, ctx.stream());
        break;
    }
    b += left >= 4 ? 4 : left;
  }
}

// --- Quantize and dequantize whole tensors (QLoRA training: the base is kept in NF4 and
// expanded to T just before each product; Dettmers et al. 2023 §3). Blocks of 64 run over the
// flat tensor, as bitsandbytes' quantize_4bit does, so only the element count must be a
// multiple of 64.

namespace detail {

struct nf4_table16 {
  float v[16];
};

// One thread per block of 64: absmax, then the code of each weight as quant/nf4.hpp computes
// it (the number of code midpoints below clamp(w · (1/absmax), −1, 1)), so codes match the
// CPU format bit for bit.
__global__ void nf4_quantize_kernel(std::int64_t blocks, const float* __restrict__ w,
                                    std::uint8_t* __restrict__ codes, float* __restrict__ absmax,
                                    nf4_table16 mids) {
  const std::int64_t b = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (b >= blocks) return;
  const float* x = w + b * 64;
  float a = 0.0f;
  for (int i = 0; i < 64; ++i) a = fmaxf(a, fabsf(x[i]));
  absmax[b] = a;
  const float inv = 1.0f / fmaxf(a, 1e-38f);
  auto index = [&](float v) {
    v = fminf(fmaxf(v * inv, -1.0f), 1.0f);
    unsigned q = 0;
    for (int m = 0; m < 15; ++m) q += mids.v[m] < v;
    return q;
  };
  for (int i = 0; i < 64; i += 2)
    codes[b * 32 + i / 2] = std::uint8_t(index(x[i]) << 4 | index(x[i + 1]));
}

// One thread per 8 code bytes (16 weights, all in one block of 64): an 8-byte load and the 16
// values written with 16-byte stores (a scalar store per value wrote 2 bytes per lane spread
// over 32-byte strides, a quarter of the store bandwidth).
template <class T>
__global__ void nf4_dequantize_kernel(std::int64_t groups, const uint2* __restrict__ codes,
                                      const float* __restrict__ absmax, nf4_table16 values,
                                      T* __restrict__ out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = values.v[threadIdx.x];
  __syncthreads();
  const std::int64_t g = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (g >= groups) return;
  const uint2 c = __ldcs(codes + g);
  const float a = absmax[g >> 2];
  struct alignas(16) pack {
    T v[16];
  } p;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const unsigned byte = ((j < 4 ? c.x : c.y) >> (8 * (j & 3))) & 0xffu;
    p.v[2 * j] = from_f32<T>(lut[byte >> 4] * a);
    p.v[2 * j + 1] = from_f32<T>(lut[byte & 15] * a);
  }
  uint4* o = reinterpret_cast<uint4*>(out + g * 16);
  const uint4* src = reinterpret_cast<const uint4*>(&p);
#pragma unroll
  for (int k = 0; k < int(sizeof(pack) / 16); ++k) o[k] = src[k];
}

inline nf4_table16 nf4_midpoints() {
  nf4_table16 t{};
  for (int m = 0; m < 15; ++m) t.v[m] = (nf4_values[m] + nf4_values[m + 1]) / 2.0f;
  return t;
}
inline nf4_table16 nf4_code_table() {
  nf4_table16 t{};
  for (int m = 0; m < 16; ++m) t.v[m] = nf4_values[m];
  return t;
}

}  // namespace detail

/// Quantizes a device f32 tensor of `rows`·`cols` weights (row-major, flat blocks of 64) to
/// NF4 on ctx's stream, codes and absmax as quant/nf4.hpp without double quantization.
inline nf4_matrix nf4_quantize(context& ctx, std::int64_t rows, std::int64_t cols, const float* w) {
  require(rows > 0 && cols > 0 && (rows * cols) % 64 == 0,
          {.what = "bad NF4 tensor extents",
           .place = "nf4_quantize",
           .expected = "rows·cols a positive multiple of 64",
           .found = std::to_string(rows) + "x" + std::to_string(cols)});
  nf4_matrix m;
  m.rows = rows;
  m.cols = cols;
  const std::int64_t blocks = rows * cols / 64;
  m.codes = device_buffer<std::uint8_t>(std::size_t(blocks * 32), &ctx.pool());
  m.absmax = device_buffer<float>(std::size_t(blocks), &ctx.pool());
  detail::nf4_quantize_kernel<<<unsigned((blocks + 127) / 128), 128, 0, ctx.stream()>>>(
      blocks, w, m.codes.data(), m.absmax.data(), detail::nf4_midpoints());
  FORGE_CUDA_CHECK_LAUNCH("nf4_quantize_kernel");
  return m;
}

/// Expands an NF4 tensor to T (f32 or bf16: code value × absmax, rounded once) into
/// out[rows·cols] (16-byte aligned) on ctx's stream.
template <class T>
void nf4_dequantize(context& ctx, const nf4_matrix& w, T* out) {
  require(reinterpret_cast<std::uintptr_t>(out) % 16 == 0,
          {.what = "misaligned output", .place = "nf4_dequantize", .expected = "16-byte aligned"});
  const std::int64_t groups = w.rows * w.cols / 16;
  if (groups <= 0) return;
  detail::nf4_dequantize_kernel<T><<<unsigned((groups + 255) / 256), 256, 0, ctx.stream()>>>(
      groups, reinterpret_cast<const uint2*>(w.codes.data()), w.absmax.data(),
      detail::nf4_code_table(), out);
  FORGE_CUDA_CHECK_LAUNCH("nf4_dequantize_kernel");
}

}  // namespace forge::cuda
