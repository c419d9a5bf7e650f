#pragma once
// Causal scaled dot-product attention with grouped key/value heads on the GPU, the
// definition of backend/attention.hpp (transformers' eager attention):
//   s_ij = scale · q_i·k_j for allowed j,  p_i = softmax_j(s_i),  o_i = Σ_j p_ij v_j
// key slot j is allowed for query i when j ≤ q_offset + i, key_mask[b, j] ≠ 0 (if given) and,
// with a window w > 0, q_offset + i − j < w; a query with no allowed key gets o_i = 0.
// Layouts (row-major): q, o, dq, do [batch, q_len, heads, D]; k, v, dk, dv
// [batch, kv_stride, kv_heads, D], slots [0, kv_len) used; key_mask [batch, kv_stride] or
// null; lse [batch, heads, q_len] f32 (saved by forward). D = 64 or 128. T is f32, f16 or bf16;
// arithmetic in f32.
//
// Tiled like FlashAttention (Dao et al. 2022, Algorithm 1): keys and values stream through
// shared memory 32 at a time and each query keeps a running maximum, normaliser and output
// (the online softmax), so the [q_len, kv_len] score matrix never exists in memory; forward
// saves only lse_i = m_i + log l_i. Backward (FlashAttention Algorithm 2, split in two
// kernels so that no two blocks write the same gradient, which keeps results reproducible):
//   p_ij = exp(s_ij − lse_i),  D_i = do_i·o_i,  ds_ij = p_ij (do_i·v_j − D_i)
//   dq_i = scale Σ_j ds_ij k_j;   dv_j = Σ_i p_ij do_i,   dk_j = scale Σ_i ds_ij q_i
// (the key-side sums run over every query head of the key/value head's group).
// One warp per query (or key) row; lane j scores key (or query) j of the tile, and the
// weighted sums broadcast p_j by shuffle while each lane owns D/32 output features. These run
// on the CUDA cores; the tensor-core version is future work.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// The extents and options of one attention call (as backend/attention.hpp's attention_shape).
struct attention_dims {
  std::int64_t batch = 1, q_len = 1, kv_len = 1, kv_stride = 1;
  std::int64_t heads = 1, kv_heads = 1, head_dim = 64;
  std::int64_t q_offset = 0;  ///< cache slot of query 0
  std::int64_t window = 0;    ///< sliding window in slots, 0 = none
  float scale = 0.125f;       ///< usually 1/sqrt(head_dim)
};

namespace detail {

constexpr int att_tile = 32;

__device__ __forceinline__ bool att_allowed(const attention_dims& a, const unsigned char* mask,
                                            std::int64_t b, std::int64_t i, std::int64_t j) {
  const std::int64_t qi = a.q_offset + i;
  return j < a.kv_len && j <= qi && (!mask || mask[b * a.kv_stride + j]) &&
         (a.window <= 0 || qi - j < a.window);
}

// Loads rows [r0, r0 + 32) of a [*, row_stride] strided T array (D features each) into a
// padded f32 tile (stride D + 1: lane j reading row j hits 32 different banks).
template <int D, class T>
__device__ void att_load_tile(float (*tile)[D + 1], const T* base, std::int64_t row_stride,
                              std::int64_t r0, std::int64_t rows) {
  for (int idx = threadIdx.x; idx < att_tile * D; idx += blockDim.x) {
    const int r = idx / D, e = idx % D;
    tile[r][e] = r0 + r < rows ? to_f32(base[(r0 + r) * row_stride + e]) : 0.0f;
  }
}

template <int D, class T>
__global__ void __launch_bounds__(128)
    attention_forward_kernel(attention_dims a, const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, const unsigned char* __restrict__ mask,
                             T* __restrict__ o, float* __restrict__ lse) {
  constexpr int E = D / 32;
  __shared__ float ks[att_tile][D + 1], vs[att_tile][D + 1];
  __shared__ float qs[4][D];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / (a.heads / a.kv_heads);
  const std::int64_t i0 = std::int64_t(blockIdx.x) * 4, i = i0 + warp;
  const bool active = i < a.q_len;
  const std::int64_t qrow = ((b * a.q_len + (active ? i : 0)) * a.heads + h) * D;
  for (int e = lane; e < D; e += 32) qs[warp][e] = active ? to_f32(q[qrow + e]) : 0.0f;
  float m = -INFINITY, l = 0.0f, acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  const std::int64_t last_q = i0 + 3 < a.q_len ? i0 + 3 : a.q_len - 1;
  const std::int64_t kv_end =
      a.q_offset + last_q + 1 < a.kv_len ? a.q_offset + last_q + 1 : a.kv_len;
  const T* kb = k + (b * a.kv_stride * a.kv_heads + kvh) * D;
  const T* vb = v + (b * a.kv_stride * a.kv_heads + kvh) * D;
  for (std::int64_t j0 = 0; j0 < kv_end; j0 += att_tile) {
    __syncthreads();
    att_load_tile<D>(ks, kb, a.kv_heads * D, j0, a.kv_len);
    att_load_tile<D>(vs, vb, a.kv_heads * D, j0, a.kv_len);
    __syncthreads();
    if (!active) continue;
    const std::int64_t j = j0 + lane;
    float s = -INFINITY;
    if (att_allowed(a, mask, b, i, j)) {
      float d = 0.0f;
#pragma unroll 16
      for (int e = 0; e < D; ++e) d = fmaf(qs[warp][e], ks[lane][e], d);
      s = d * a.scale;
    }
    float tmax = s;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
    const float m_new = fmaxf(m, tmax);
    if (m_new == -INFINITY) continue;  // nothing allowed yet
    const float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
    const float corr = m == -INFINITY ? 0.0f : __expf(m - m_new);
    float psum = p;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
    l = l * corr + psum;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= corr;
    for (int jj = 0; jj < att_tile; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] = fmaf(pj, vs[jj][lane + 32 * e], acc[e]);
    }
    m = m_new;
  }
  if (!active) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int e = 0; e < E; ++e) o[qrow + lane + 32 * e] = from_f32<T>(acc[e] * inv);
  if (lane == 0) lse[(b * a.heads + h) * a.q_len + i] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// dq for one query row per warp; D_i computed from do and o in the prologue.
template <int D, class T>
__global__ void __launch_bounds__(128)
    attention_backward_dq_kernel(attention_dims a, const T* __restrict__ q, const T* __restrict__ k,
                                 const T* __restrict__ v, const unsigned char* __restrict__ mask,
                                 const T* __restrict__ o, const float* __restrict__ lse,
                                 const T* __restrict__ dout, T* __restrict__ dq,
                                 float* __restrict__ delta) {
  constexpr int E = D / 32;
  __shared__ float ks[att_tile][D + 1], vs[att_tile][D + 1];
  __shared__ float qs[4][D], dos[4][D];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / (a.heads / a.kv_heads);
  const std::int64_t i0 = std::int64_t(blockIdx.x) * 4, i = i0 + warp;
  const bool active = i < a.q_len;
  const std::int64_t qrow = ((b * a.q_len + (active ? i : 0)) * a.heads + h) * D;
  float di = 0.0f;
  for (int e = lane; e < D; e += 32) {
    qs[warp][e] = active ? to_f32(q[qrow + e]) : 0.0f;
    dos[warp][e] = active ? to_f32(dout[qrow + e]) : 0.0f;
    di += active ? dos[warp][e] * to_f32(o[qrow + e]) : 0.0f;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) di += __shfl_xor_sync(0xffffffffu, di, off);
  const float li = active ? lse[(b * a.heads + h) * a.q_len + i] : -INFINITY;
  if (active && lane == 0) delta[(b * a.heads + h) * a.q_len + i] = di;
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  const std::int64_t last_q = i0 + 3 < a.q_len ? i0 + 3 : a.q_len - 1;
  const std::int64_t kv_end =
      a.q_offset + last_q + 1 < a.kv_len ? a.q_offset + last_q + 1 : a.kv_len;
  const T* kb = k + (b * a.kv_stride * a.kv_heads + kvh) * D;
  const T* vb = v + (b * a.kv_stride * a.kv_heads + kvh) * D;
  for (std::int64_t j0 = 0; j0 < kv_end; j0 += att_tile) {
    __syncthreads();
    att_load_tile<D>(ks, kb, a.kv_heads * D, j0, a.kv_len);
    att_load_tile<D>(vs, vb, a.kv_heads * D, j0, a.kv_len);
    __syncthreads();
    if (!active || li == -INFINITY) continue;
    const std::int64_t j = j0 + lane;
    float ds = 0.0f;
    if (att_allowed(a, mask, b, i, j)) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll 16
      for (int e = 0; e < D; ++e) {
        s = fmaf(qs[warp][e], ks[lane][e], s);
        dp = fmaf(dos[warp][e], vs[lane][e], dp);
      }
      const float p = __expf(s * a.scale - li);
      ds = p * (dp - di);
    }
    for (int jj = 0; jj < att_tile; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] = fmaf(dsj, ks[jj][lane + 32 * e], acc[e]);
    }
  }
  if (!active) return;
#pragma unroll
  for (int e = 0; e < E; ++e) dq[qrow + lane + 32 * e] = from_f32<T>(acc[e] * a.scale);
}

// dk, dv for one key row per warp, summing over every query of every head in the group.
template <int D, class T>
__global__ void __launch_bounds__(128)
    attention_backward_dkdv_kernel(attention_dims a, const T* __restrict__ q,
                                   const T* __restrict__ k, const T* __restrict__ v,
                                   const unsigned char* __restrict__ mask,
                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                   const T* __restrict__ dout, T* __restrict__ dk,
                                   T* __restrict__ dv) {
  constexpr int E = D / 32;
  __shared__ float qt[att_tile][D + 1], dot[att_tile][D + 1];
  __shared__ float kj[4][D], vj[4][D];
  __shared__ float lse_t[att_tile], delta_t[att_tile];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t b = blockIdx.z, kvh = blockIdx.y, group = a.heads / a.kv_heads;
  const std::int64_t j = std::int64_t(blockIdx.x) * 4 + warp;
  const bool active = j < a.kv_len;
  const std::int64_t krow = ((b * a.kv_stride + (active ? j : 0)) * a.kv_heads + kvh) * D;
  for (int e = lane; e < D; e += 32) {
    kj[warp][e] = active ? to_f32(k[krow + e]) : 0.0f;
    vj[warp][e] = active ? to_f32(v[krow + e]) : 0.0f;
  }
  float dka[E], dva[E];
#pragma unroll
  for (int e = 0; e < E; ++e) dka[e] = dva[e] = 0.0f;
  // The first query that can see key j0 = blockIdx.x·4: q_offset + i ≥ j0.
  const std::int64_t j_first = std::int64_t(blockIdx.x) * 4;
  std::int64_t i_start = j_first - a.q_offset;
  i_start = i_start < 0 ? 0 : i_start / att_tile * att_tile;
  for (std::int64_t hh = 0; hh < group; ++hh) {
    const std::int64_t h = kvh * group + hh;
    for (std::int64_t i0 = i_start; i0 < a.q_len; i0 += att_tile) {
      __syncthreads();
      att_load_tile<D>(qt, q + (b * a.q_len * a.heads + h) * D, a.heads * D, i0, a.q_len);
      att_load_tile<D>(dot, dout + (b * a.q_len * a.heads + h) * D, a.heads * D, i0, a.q_len);
      if (threadIdx.x < att_tile) {
        const std::int64_t ii = i0 + threadIdx.x;
        lse_t[threadIdx.x] = ii < a.q_len ? lse[(b * a.heads + h) * a.q_len + ii] : -INFINITY;
        delta_t[threadIdx.x] = ii < a.q_len ? delta[(b * a.heads + h) * a.q_len + ii] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      const std::int64_t i = i0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (i < a.q_len && lse_t[lane] != -INFINITY && att_allowed(a, mask, b, i, j)) {
        float s = 0.0f, dp = 0.0f;
#pragma unroll 16
        for (int e = 0; e < D; ++e) {
          s = fmaf(qt[lane][e], kj[warp][e], s);
          dp = fmaf(dot[lane][e], vj[warp][e], dp);
        }
        p = __expf(s * a.scale - lse_t[lane]);
        ds = p * (dp - delta_t[lane]);
      }
      for (int ii = 0; ii < att_tile; ++ii) {
        const float pi = __shfl_sync(0xffffffffu, p, ii);
        const float dsi = __shfl_sync(0xffffffffu, ds, ii);
#pragma unroll
        for (int e = 0; e < E; ++e) {
          dva[e] = fmaf(pi, dot[ii][lane + 32 * e], dva[e]);
          dka[e] = fmaf(dsi, qt[ii][lane + 32 * e], dka[e]);
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    dk[krow + lane + 32 * e] = from_f32<T>(dka[e] * a.scale);
    dv[krow + lane + 32 * e] = from_f32<T>(dva[e]);
  }
}

inline void att_check(const attention_dims& a) {
  require(a.batch > 0 && a.q_len > 0 && a.kv_len > 0 && a.kv_stride >= a.kv_len && a.heads > 0 &&
              a.kv_heads > 0 && a.heads % a.kv_heads == 0 &&
              (a.head_dim == 64 || a.head_dim == 128) && a.batch < 65536 && a.heads < 65536,
          {.what = "unsupported attention extents",
           .place = "cuda attention",
           .expected = "positive extents, kv_stride >= kv_len, heads a multiple of kv_heads, "
                       "head_dim 64 or 128",
           .found = "heads " + std::to_string(a.heads) + ", kv_heads " +
                    std::to_string(a.kv_heads) + ", head_dim " + std::to_string(a.head_dim)});
}

}  // namespace detail

/// Attention forward on ctx's stream; lse [batch, heads, q_len] (f32) is saved for backward.
template <class T>
void attention_forward(context& ctx, const attention_dims& a, const T* q, const T* k, const T* v,
                       const unsigned char* key_mask, T* out, float* lse) {
  detail::att_check(a);
  const dim3 grid(unsigned((a.q_len + 3) / 4), unsigned(a.heads), unsigned(a.batch));
  if (a.head_dim == 64)
    detail::attention_forward_kernel<64, T>
        <<<grid, 128, 0, ctx.stream()>>>(a, q, k, v, key_mask, out, lse);
  else
    detail::attention_forward_kernel<128, T>
        <<<grid, 128, 0, ctx.stream()>>>(a, q, k, v, key_mask, out, lse);
  FORGE_CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

/// Attention backward on ctx's stream: dq, dk, dv overwritten (dk, dv slots [0, kv_len)).
/// `out` and `lse` are forward's; `delta` is workspace of batch·heads·q_len floats.
template <class T>
void attention_backward(context& ctx, const attention_dims& a, const T* q, const T* k, const T* v,
                        const unsigned char* key_mask, const T* out, const float* lse,
                        const T* dout, T* dq, T* dk, T* dv, float* delta) {
  detail::att_check(a);
  const dim3 gq(unsigned((a.q_len + 3) / 4), unsigned(a.heads), unsigned(a.batch));
  const dim3 gk(unsigned((a.kv_len + 3) / 4), unsigned(a.kv_heads), unsigned(a.batch));
  cudaStream_t s = ctx.stream();
  if (a.head_dim == 64) {
    detail::attention_backward_dq_kernel<64, T>
        <<<gq, 128, 0, s>>>(a, q, k, v, key_mask, out, lse, dout, dq, delta);
    FORGE_CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
    detail::attention_backward_dkdv_kernel<64, T>
        <<<gk, 128, 0, s>>>(a, q, k, v, key_mask, lse, delta, dout, dk, dv);
  } else {
    detail::attention_backward_dq_kernel<128, T>
        <<<gq, 128, 0, s>>>(a, q, k, v, key_mask, out, lse, dout, dq, delta);
    FORGE_CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
    detail::attention_backward_dkdv_kernel<128, T>
        <<<gk, 128, 0, s>>>(a, q, k, v, key_mask, lse, delta, dout, dk, dv);
  }
  FORGE_CUDA_CHECK_LAUNCH("attention_backward_dkdv_kernel");
}

}  // namespace forge::cuda
