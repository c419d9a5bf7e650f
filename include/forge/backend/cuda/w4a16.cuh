#pragma once
// W4A16: int4-group weights times f16 activations, for decode (batch 1) and small batches.
//
//   y[m, r] = Σ_k x[m, k] · s[r, g(k)] · (q[r, k] − z[r, g(k)]),   g(k) = k / G
//
// The host format is forge's int4_group (quant/int4.hpp): codes rows·cols/2 bytes, stored
// column k of a row in byte k/2, the low nibble for even k; f32 scales (exact f16 values) and,
// if asymmetric, one zero code per group, both [rows, cols/G]; an optional act-order
// permutation (stored column k multiplies input feature perm[k]).
//
// Device layout (made once by w4a16_upload): each 32-bit word holds 8 consecutive stored
// columns k0..k7 with the nibbles interleaved as  bits 0-3 k0, 16-19 k1, 4-7 k2, 20-23 k3,
// 8-11 k4, 24-27 k5, 12-15 k6, 28-31 k7,  so that (word >> 4i) & 0x000f000f puts k(2i) and
// k(2i+1) in the two 16-bit halves. OR-ing 0x6400 into each half gives the f16 value
// 1024 + q exactly (the f16 exponent of 1024 spans unit steps), and subtracting 1024 + z
// gives q − z: two integer-exact half2 operations per 2 weights, no conversion instructions.
// Scales become f16 [rows, cols/G]; zeros become f16 1024 + z (asymmetric only).
//
// Kernel ("blocked"): one warp reads R rows; each lane loads 16 bytes (32 weights) per row per
// step, U steps in flight before any arithmetic, so a warp streams R·U·512 bytes per round with
// coalesced 16-byte loads that bypass L1 (weights are read once); x comes through the
// read-only cache where every warp of the SM reuses it. Products of 8 weights are summed in
// half2 (4 terms per lane, q − z and x exact inputs, one rounding per term), then in f32
// with the group scale. A warp shuffle reduces the lanes. Batches above 8 rows run in
// pieces of 8; prefill-sized batches should dequantize (w4a16_dequantize) and use cuBLAS.
// A persistent-grid variant for batch 1 (w4a16_gemv_persistent_kernel) is kept beside it and
// benchmarked: on the H100 it is not faster (docs/performance.md, CUDA section), so it is not the default.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/memory.cuh"

namespace forge::cuda {

/// An int4-group weight matrix resident on the device in the W4A16 kernel layout (above).
struct w4a16_matrix {
  std::int64_t rows = 0;                 ///< output features n
  std::int64_t cols = 0;                 ///< input features k
  int group = 128;                       ///< input features per scale
  device_buffer<std::uint32_t> codes{};  ///< rows·cols/8 interleaved words
  device_buffer<__half> scales{};        ///< [rows, cols/group]
  device_buffer<__half> zeros{};       ///< [rows, cols/group] holding 1024 + z; empty if symmetric
  device_buffer<std::int32_t> perm{};  ///< act-order permutation or empty
  /// Bytes the kernel streams per product: codes plus scales (plus zeros).
  std::size_t weight_bytes() const { return codes.bytes() + scales.bytes() + zeros.bytes(); }
};

namespace detail {

/// The interleaved word of 8 consecutive stored columns (see the header comment), from the
/// host format's 4 bytes.
inline std::uint32_t w4a16_interleave(const std::uint8_t* b) {
  std::uint32_t q[8];
  for (int i = 0; i < 4; ++i) {
    q[2 * i] = b[i] & 0x0fu;
    q[2 * i + 1] = b[i] >> 4;
  }
  std::uint32_t w = 0;
  for (int i = 0; i < 4; ++i) w |= (q[2 * i] << (4 * i)) | (q[2 * i + 1] << (16 + 4 * i));
  return w;
}

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/// Programmatic dependent launch (sm_90+): lets the next kernel of the stream be scheduled
/// before this one ends. A no-op on older GPUs.
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/// Waits until the kernels this one depends on have finished and their writes are visible
/// (returns at once when it was launched without programmatic dependence). sm_90+.
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Σ over one word's 8 weights of (q − z)·x in half2 (4 products per half).
__device__ __forceinline__ __half2 w4_dot8(std::uint32_t w, const __half2* x, __half2 zz) {
  __half2 a = __float2half2_rn(0.0f);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t t = ((w >> (4 * i)) & 0x000f000fu) | 0x64006400u;
    const __half2 q = *reinterpret_cast<const __half2*>(&t);
    a = __hfma2(__hsub2(q, zz), x[i], a);
  }
  return a;
}

template <int M, int R, int U>
__global__ void __launch_bounds__(128)
    w4a16_gemv_kernel(int n, int k, int log2g, const uint4* __restrict__ codes,
                      const __half* __restrict__ scales, const __half* __restrict__ zeros,
                      const __half* __restrict__ x, std::int64_t ldx, __half* __restrict__ y,
                      std::int64_t ldy) {
  const int lane = threadIdx.x & 31;
  // The next kernel in the stream may start now and stream its own weights while this one
  // finishes (programmatic dependent launch, Hopper); it waits before reading activations.
  griddep_launch_dependents();
  const int row0 = (blockIdx.x * 4 + (threadIdx.x >> 5)) * R;
  if (row0 >= n) return;
  const int chunks = k >> 5;  // 32-weight chunks per row
  const int groups = k >> log2g;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  int rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = min(row0 + r, n - 1);  // tail rows recompute row n-1

  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    // Load phase: every weight byte, scale and zero of this round is requested before any
    // arithmetic, so one memory latency covers the whole round.
    uint4 w[U][R];
    __half sc[U][R], zc[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int c = min(c0 + 32 * u, chunks - 1);  // past-the-end chunks are skipped below
        w[u][r] = load_stream(codes + std::int64_t(rows[r]) * chunks + c);
        const std::int64_t gi = std::int64_t(rows[r]) * groups + ((c << 5) >> log2g);
        sc[u][r] = scales[gi];
        zc[u][r] = zeros ? zeros[gi] : __float2half(1032.0f);
      }
    // Weights never depend on earlier kernels; activations may: wait for them here.
    griddep_wait();
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + m * ldx + (c << 5));
        uint4 xv[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) xv[j] = __ldg(xp + j);
        const __half2* xh = reinterpret_cast<const __half2*>(xv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const std::uint32_t ws[4] = {w[u][r].x, w[u][r].y, w[u][r].z, w[u][r].w};
          const __half2 zz = __halves2half2(zc[u][r], zc[u][r]);
          float d = 0.0f;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const __half2 p = w4_dot8(ws[j], xh + 4 * j, zz);
            d += __low2float(p) + __high2float(p);
          }
          acc[r][m] = fmaf(d, __half2float(sc[u][r]), acc[r][m]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && row0 + r < n) y[m * ldy + row0 + r] = __float2half(v);
    }
}

/// Batch-1 kernel with a persistent grid: as many blocks as fit on the device at once, each
/// warp walking row pairs p = warp, warp + warps, ... in rounds of U chunks per row, and
/// requesting the next round's codes and scales before computing the current one, so every
/// warp keeps loads in flight from its first round to its last (no block waves, no gap
/// between a block's end and the next block's first load).
template <int U>
__global__ void __launch_bounds__(128)
    w4a16_gemv_persistent_kernel(int n, int k, int log2g, const uint4* __restrict__ codes,
                                 const __half* __restrict__ scales,
                                 const __half* __restrict__ zeros, const __half* __restrict__ x,
                                 __half* __restrict__ y) {
  griddep_launch_dependents();
  const int lane = threadIdx.x & 31;
  const int warp = blockIdx.x * 4 + (threadIdx.x >> 5), warps = gridDim.x * 4;
  const int chunks = k >> 5, groups = k >> log2g;
  const int pairs = (n + 1) / 2, rounds = (chunks + 32 * U - 1) / (32 * U);
  int p = warp, rd = 0;
  if (p >= pairs) return;
  uint4 wa[U][2], wb[U][2];
  __half sa[U][2], za[U][2], sb[U][2], zb[U][2];
  auto load = [&](int pp, int rr, uint4(&w)[U][2], __half(&sc)[U][2], __half(&zc)[U][2]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = min(2 * pp + r, n - 1);
        const int c = min(rr * 32 * U + 32 * u + lane, chunks - 1);  // extra chunks skipped
        w[u][r] = load_stream(codes + std::int64_t(row) * chunks + c);
        const std::int64_t gi = std::int64_t(row) * groups + ((c << 5) >> log2g);
        sc[u][r] = scales[gi];
        zc[u][r] = zeros ? zeros[gi] : __float2half(1032.0f);
      }
  };
  load(p, 0, wa, sa, za);
  griddep_wait();  // weights never depend on earlier kernels; x may
  float acc0 = 0.0f, acc1 = 0.0f;
  while (true) {
    int np = p, nrd = rd + 1;
    if (nrd == rounds) {
      nrd = 0;
      np = p + warps;
    }
    const bool more = np < pairs;
    if (more) load(np, nrd, wb, sb, zb);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = rd * 32 * U + 32 * u + lane;
      if (c < chunks) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + (c << 5));
        uint4 xv[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) xv[j] = __ldg(xp + j);
        const __half2* xh = reinterpret_cast<const __half2*>(xv);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const std::uint32_t ws[4] = {wa[u][r].x, wa[u][r].y, wa[u][r].z, wa[u][r].w};
          const __half2 zz = __halves2half2(za[u][r], za[u][r]);
          float d = 0.0f;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const __half2 q = w4_dot8(ws[j], xh + 4 * j, zz);
            d += __low2float(q) + __high2float(q);
          }
          if (r == 0)
            acc0 = fmaf(d, __half2float(sa[u][r]), acc0);
          else
            acc1 = fmaf(d, __half2float(sa[u][r]), acc1);
        }
      }
    }
    if (nrd == 0) {  // the pair is complete: reduce over the warp and write its two rows
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
      }
      if (lane == 0) {
        y[2 * p] = __float2half(acc0);
        if (2 * p + 1 < n) y[2 * p + 1] = __float2half(acc1);
      }
      acc0 = acc1 = 0.0f;
    }
    if (!more) break;
    p = np;
    rd = nrd;
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        wa[u][r] = wb[u][r];
        sa[u][r] = sb[u][r];
        za[u][r] = zb[u][r];
      }
  }
}

__global__ void w4a16_gather_kernel(std::int64_t m, int k, const std::int32_t* __restrict__ perm,
                                    const __half* __restrict__ x, std::int64_t ldx,
                                    __half* __restrict__ xp) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (i >= m * k) return;
  xp[i] = x[(i / k) * ldx + perm[i % k]];
}

__global__ void w4a16_dequantize_kernel(std::int64_t n, int k, int log2g,
                                        const std::uint32_t* __restrict__ codes,
                                        const __half* __restrict__ scales,
                                        const __half* __restrict__ zeros,
                                        const std::int32_t* __restrict__ perm,
                                        __half* __restrict__ w) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;  // word index
  const int words = k >> 3;
  if (i >= n * words) return;
  const std::int64_t r = i / words;
  const int c = int(i % words) * 8;
  const std::uint32_t v = codes[i];
  const std::int64_t gi = r * (k >> log2g) + (c >> log2g);
  const float s = __half2float(scales[gi]);
  const float z = zeros ? __half2float(zeros[gi]) - 1024.0f : 8.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float q0 = float((v >> (4 * j)) & 0xfu), q1 = float((v >> (16 + 4 * j)) & 0xfu);
    const int k0 = c + 2 * j, k1 = c + 2 * j + 1;
    w[r * k + (perm ? perm[k0] : k0)] = __float2half(s * (q0 - z));
    w[r * k + (perm ? perm[k1] : k1)] = __float2half(s * (q1 - z));
  }
}

/// Launches the kernel with R rows per warp and U 16-byte loads per row in flight per lane.
template <int M, int R, int U>
void w4a16_launch_rows(const w4a16_matrix& w, const __half* x, std::int64_t ldx, __half* y,
                       std::int64_t ldy, int log2g, cudaStream_t s, bool pdl) {
  const int n = int(w.rows), k = int(w.cols);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned((n + 4 * R - 1) / (4 * R)));
  cfg.blockDim = dim3(128);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  FORGE_CUDA_CHECK(cudaLaunchKernelEx(
      &cfg, w4a16_gemv_kernel<M, R, U>, n, k, log2g, reinterpret_cast<const uint4*>(w.codes.data()),
      static_cast<const __half*>(w.scales.data()),
      static_cast<const __half*>(w.zeros.size() ? w.zeros.data() : nullptr), x, ldx, y, ldy));
}

/// Launches the persistent batch-1 kernel: one block per free slot on the device (sized once,
/// for the device current at the first call).
template <int U>
void w4a16_launch_persistent(const w4a16_matrix& w, const __half* x, __half* y, int log2g,
                             cudaStream_t s, bool pdl) {
  static const int slots = [] {
    int dev = 0, sms = 0, per_sm = 0;
    FORGE_CUDA_CHECK(cudaGetDevice(&dev));
    FORGE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    FORGE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, w4a16_gemv_persistent_kernel<U>, 128, 0));
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  const int n = int(w.rows), k = int(w.cols);
  const int pairs = (n + 1) / 2;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(std::min(slots, (pairs + 3) / 4)));
  cfg.blockDim = dim3(128);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  FORGE_CUDA_CHECK(cudaLaunchKernelEx(
      &cfg, w4a16_gemv_persistent_kernel<U>, n, k, log2g,
      reinterpret_cast<const uint4*>(w.codes.data()), static_cast<const __half*>(w.scales.data()),
      static_cast<const __half*>(w.zeros.size() ? w.zeros.data() : nullptr), x, y));
}

/// The kernel shape used for batch M, chosen from the kernel-shape table of
/// docs/performance.md, CUDA section (H100): for batch 1 two rows per warp, with 2 loads per row in
/// flight for tall matrices of short rows (n ≥ 8192, k ≤ 4096: more, shorter-lived warps) and
/// 4 otherwise; larger batches share each x load over four rows.
template <int M>
void w4a16_launch(const w4a16_matrix& w, const __half* x, std::int64_t ldx, __half* y,
                  std::int64_t ldy, int log2g, cudaStream_t s, bool pdl) {
  if constexpr (M == 1) {
    if (w.rows >= 8192 && w.cols <= 4096)
      w4a16_launch_rows<1, 2, 2>(w, x, ldx, y, ldy, log2g, s, pdl);
    else
      w4a16_launch_rows<1, 2, 4>(w, x, ldx, y, ldy, log2g, s, pdl);
  } else {
    w4a16_launch_rows<M, 4, 2>(w, x, ldx, y, ldy, log2g, s, pdl);
  }
}

inline int w4a16_log2(int g) {
  int l = 0;
  while ((1 << l) < g) ++l;
  return l;
}

}  // namespace detail

/// Uploads an int4_group matrix (host format, see the header comment) and repacks it into
/// the kernel layout. `zeros` null = symmetric (z = 8); `perm` null = identity. Synchronous.
inline w4a16_matrix w4a16_upload(context& ctx, std::int64_t rows, std::int64_t cols, int group,
                                 const std::uint8_t* codes, const float* scales,
                                 const std::uint8_t* zeros, const std::int32_t* perm) {
  require(group == 32 || group == 64 || group == 128, {.what = "unsupported int4 group size",
                                                       .place = "w4a16_upload",
                                                       .expected = "32, 64 or 128",
                                                       .found = std::to_string(group)});
  require(rows > 0 && cols > 0 && cols % group == 0 && cols < (std::int64_t(1) << 30),
          {.what = "bad int4 matrix extents",
           .place = "w4a16_upload",
           .expected = "rows > 0, cols a positive multiple of the group size",
           .found = std::to_string(rows) + "x" + std::to_string(cols)});
  w4a16_matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  const std::size_t words = std::size_t(rows) * std::size_t(cols) / 8;
  std::vector<std::uint32_t> packed(words);
  for (std::size_t i = 0; i < words; ++i) packed[i] = detail::w4a16_interleave(codes + 4 * i);
  m.codes = device_buffer<std::uint32_t>(packed.data(), words, &ctx.pool());
  const std::size_t ng = std::size_t(rows) * std::size_t(cols / group);
  std::vector<__half> hs(ng);
  for (std::size_t i = 0; i < ng; ++i) hs[i] = __float2half_rn(scales[i]);
  m.scales = device_buffer<__half>(hs.data(), ng, &ctx.pool());
  if (zeros) {
    for (std::size_t i = 0; i < ng; ++i) {
      require(zeros[i] < 16, {.what = "int4 zero point out of range",
                              .place = "w4a16_upload",
                              .expected = "0..15",
                              .found = std::to_string(zeros[i])});
      hs[i] = __float2half_rn(1024.0f + float(zeros[i]));
    }
    m.zeros = device_buffer<__half>(hs.data(), ng, &ctx.pool());
  }
  if (perm) {
    std::vector<char> seen(std::size_t(cols), 0);
    for (std::int64_t j = 0; j < cols; ++j) {
      require(perm[j] >= 0 && perm[j] < cols && !seen[std::size_t(perm[j])],
              {.what = "act-order permutation is not a permutation",
               .place = "w4a16_upload",
               .expected = "each of 0.." + std::to_string(cols - 1) + " once",
               .found = "perm[" + std::to_string(j) + "] = " + std::to_string(perm[j])});
      seen[std::size_t(perm[j])] = 1;
    }
    m.perm = device_buffer<std::int32_t>(perm, std::size_t(cols), &ctx.pool());
  }
  return m;
}

/// How a W4A16 product is queued. `overlap` (the default) launches it as a programmatic
/// dependent of the previous kernel on the stream (Hopper and later): it may start streaming
/// its weights while that kernel finishes, and waits for it before reading x. The weights must
/// therefore not be written by the kernel just before it (they never are once uploaded).
/// `serial` is an ordinary launch.
enum class w4a16_launch_mode { overlap, serial };

/// y[batch, rows] = x[batch, cols] · Wᵀ on ctx's stream; x and y f16 device arrays with row
/// strides ldx, ldy (elements; multiples of 8, 16-byte aligned base). Any batch; sized for
/// batch ≤ 8 (decode).
inline void w4a16_matmul(context& ctx, const w4a16_matrix& w, std::int64_t batch, const __half* x,
                         std::int64_t ldx, __half* y, std::int64_t ldy,
                         w4a16_launch_mode mode = w4a16_launch_mode::overlap) {
  require(batch >= 0 && ldx >= w.cols && ldy >= w.rows && ldx % 8 == 0,
          {.what = "bad W4A16 operand extents",
           .place = "w4a16_matmul",
           .expected = "ldx >= cols (multiple of 8), ldy >= rows",
           .found = "ldx " + std::to_string(ldx) + ", ldy " + std::to_string(ldy)});
  cudaStream_t s = ctx.stream();
  const int log2g = detail::w4a16_log2(w.group);
  const bool pdl = mode == w4a16_launch_mode::overlap && ctx.properties().major >= 9;
  device_buffer<__half> xg;
  if (w.perm.size() && batch > 0) {  // gather x into stored column order once per call
    const std::int64_t total = batch * w.cols;
    xg = ctx.alloc<__half>(std::size_t(total));
    detail::w4a16_gather_kernel<<<unsigned((total + 255) / 256), 256, 0, s>>>(
        batch, int(w.cols), w.perm.data(), x, ldx, xg.data());
    FORGE_CUDA_CHECK_LAUNCH("w4a16_gather_kernel");
    x = xg.data();
    ldx = w.cols;
  }
  for (std::int64_t b = 0; b < batch;) {
    const std::int64_t left = batch - b;
    const __half* xb = x + b * ldx;
    __half* yb = y + b * ldy;
    switch (left >= 8 ? 8 : int(left)) {
      case 1:
        detail::w4a16_launch<1>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 2:
        detail::w4a16_launch<2>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 3:
        detail::w4a16_launch<3>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 4:
        detail::w4a16_launch<4>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 5:
        detail::w4a16_launch<5>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 6:
        detail::w4a16_launch<6>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      case 7:
        detail::w4a16_launch<7>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
      default:
        detail::w4a16_launch<8>(w, xb, ldx, yb, ldy, log2g, s, pdl);
        break;
    }
    b += left >= 8 ? 8 : left;
  }
}

/// The dequantized weight W[rows, cols] (f16, input-feature order) on ctx's stream, for
/// prefill-sized batches through cuBLAS and for tests.
inline void w4a16_dequantize(context& ctx, const w4a16_matrix& w, __half* out) {
  const std::int64_t words = w.rows * w.cols / 8;
  detail::w4a16_dequantize_kernel<<<unsigned((words + 255) / 256), 256, 0, ctx.stream()>>>(
      w.rows, int(w.cols), detail::w4a16_log2(w.group), w.codes.data(), w.scales.data(),
      w.zeros.size() ? w.zeros.data() : nullptr, w.perm.size() ? w.perm.data() : nullptr, out);
  FORGE_CUDA_CHECK_LAUNCH("w4a16_dequantize_kernel");
}

}  // namespace forge::cuda
