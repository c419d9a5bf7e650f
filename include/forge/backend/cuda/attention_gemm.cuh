#pragma once
// Causal grouped-query attention for training through cuBLAS products on a materialised score
// matrix: the definition of backend/attention.hpp (transformers' eager attention) without
// sliding window or key mask,
//   s_ij = scale · q_i·k_j (j ≤ i),   p_i = softmax_j(s_i),   o_i = Σ_j p_ij v_j
// backward (the softmax Jacobian, as in FlashAttention's derivation, Dao et al. 2022 §B.2):
//   dv_j = Σ_i p_ij do_i,  dp_ij = do_i·v_j,  ds_ij = p_ij (dp_ij − Σ_l p_il dp_il),
//   dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i
//
// Layouts. Keys and values (k, v, dk, dv) are head-major [batch, kv_heads, seq, D]. The query
// side (q, o, dq, do) puts the g = heads / kv_heads query heads that share a key/value head
// together and splits the sequence into `blocks` blocks of T = seq / blocks positions:
//   [batch, kv_heads, blocks, g, T, D]     (causal_attention_dims::q_row gives the row)
// so the rows of query block qb of all g heads are one contiguous [g·T, D] matrix. Causality
// then skips whole tiles: query block qb needs keys [0, (qb + 1)·T) only, and key block kb
// receives gradients from query blocks kb … blocks−1 only, which are again contiguous rows.
// Each product is one strided-batched cuBLAS call over the batch·kv_heads groups (the key-side
// sums over a group's query heads come out of the product itself: no atomics, reproducible),
// one call per block. With 4 blocks the products and score traffic are 5/8 of the full square;
// with 1 block the layout is plain head-major [batch, heads, seq, D].
//
// Scores are f32 (the product accumulates and stores in f32); p is rounded to T before its
// product with v, as FlashAttention does. Backward recomputes p from q and k (one product and
// one softmax) instead of keeping [seq, seq] per layer. Scratch: `scores` (f32) and `probs`
// (T), each batch·heads·seq² elements, shared by all layers.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/gemm.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// The extents of one causal attention call (layouts in attention_gemm.cuh's header comment).
struct causal_attention_dims {
  std::int64_t batch = 1, seq = 1, heads = 1, kv_heads = 1, head_dim = 64;
  float scale = 0.125f;     ///< usually 1/sqrt(head_dim)
  std::int64_t blocks = 1;  ///< causal blocks of the sequence (seq % blocks == 0)

  /// Elements of each of the two score scratch buffers.
  std::int64_t score_elements() const { return batch * heads * seq * seq; }
  /// Row (of head_dim elements) of query position s of head h, sequence b, in the query-side
  /// layout [batch, kv_heads, blocks, g, T, D].
  __host__ __device__ std::int64_t q_row(std::int64_t b, std::int64_t h, std::int64_t s) const {
    const std::int64_t g = heads / kv_heads, T = seq / blocks;
    return (((b * kv_heads + h / g) * blocks + s / T) * g + h % g) * T + s % T;
  }
  /// The block count the trainer uses for a sequence length: 4 from 256 positions (5/8 of
  /// the square), 2 from 128, else 1 (small problems gain nothing from more launches).
  static std::int64_t auto_blocks(std::int64_t seq) {
    return seq >= 256 && seq % 4 == 0 ? 4 : seq >= 128 && seq % 2 == 0 ? 2 : 1;
  }
};

namespace detail {

// Query position and row extent of score row r (rows of all groups, [batch·kv_heads, g·seq]):
// the row belongs to query block qb = (r mod g·seq) / (g·T), and keys [0, (qb + 1)·T) exist.
struct score_row {
  std::int64_t i, keys;
};
__device__ __forceinline__ score_row row_of(const causal_attention_dims& a, std::int64_t r) {
  const std::int64_t g = a.heads / a.kv_heads, T = a.seq / a.blocks;
  const std::int64_t rg = r % (g * a.seq), qb = rg / (g * T);
  return {qb * T + rg % T, (qb + 1) * T};
}

// One warp per score row; writes p for the row's key extent (zeros above the diagonal).
template <class T>
__global__ void causal_softmax_kernel(causal_attention_dims a, std::int64_t rows,
                                      const float* __restrict__ s, T* __restrict__ p) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const auto [i, keys] = row_of(a, r);
  const float* sr = s + r * a.seq;
  T* pr = p + r * a.seq;
  float mx = -INFINITY, sum = 0.0f;
  for (std::int64_t j = lane; j <= i; j += 32) {
    const float v = sr[j];
    if (v > mx) {
      sum = sum * __expf(mx - v) + 1.0f;
      mx = v;
    } else {
      sum += __expf(v - mx);
    }
  }
  float gmx = mx;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) gmx = fmaxf(gmx, __shfl_xor_sync(0xffffffffu, gmx, o));
  sum = mx == -INFINITY ? 0.0f : sum * __expf(mx - gmx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = 1.0f / sum;
  for (std::int64_t j = lane; j < keys; j += 32)
    pr[j] = from_f32<T>(j <= i ? __expf(sr[j] - gmx) * inv : 0.0f);
}

// ds = p ⊙ (dp − Σ_j p·dp), one warp per row; ds may alias p (each element is read before
// the same lane writes it, after the row sum is complete).
template <class T>
__global__ void causal_softmax_backward_kernel(causal_attention_dims a, std::int64_t rows,
                                               const T* p, const float* __restrict__ dp, T* ds) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const auto [i, keys] = row_of(a, r);
  const T* pr = p + r * a.seq;
  const float* dpr = dp + r * a.seq;
  float d = 0.0f;
  for (std::int64_t j = lane; j <= i; j += 32) d = fmaf(to_f32(pr[j]), dpr[j], d);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
  T* dsr = ds + r * a.seq;
  for (std::int64_t j = lane; j < keys; j += 32)
    dsr[j] = from_f32<T>(j <= i ? to_f32(pr[j]) * (dpr[j] - d) : 0.0f);
}

// The same two kernels with the row held in registers: lane l owns keys l, l + 32, …, so all
// of a row's loads are issued before the first use (the loop versions above wait one memory
// latency per 32 keys). N = keys per lane, seq ≤ 32·N.
template <class T, int N>
__global__ void causal_softmax_reg_kernel(causal_attention_dims a, std::int64_t rows,
                                          const float* __restrict__ s, T* __restrict__ p) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const auto [i, keys] = row_of(a, r);
  const float* sr = s + r * a.seq;
  float v[N];
  float mx = -INFINITY;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const std::int64_t j = c * 32 + lane;
    v[c] = j <= i ? sr[j] : -INFINITY;
    mx = fmaxf(mx, v[c]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    v[c] = c * 32 + lane <= i ? __expf(v[c] - mx) : 0.0f;
    sum += v[c];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = 1.0f / sum;
  T* pr = p + r * a.seq;
#pragma unroll
  for (int c = 0; c < N; ++c)
    if (c * 32 + lane < keys) pr[c * 32 + lane] = from_f32<T>(v[c] * inv);
}

template <class T, int N>
__global__ void causal_softmax_backward_reg_kernel(causal_attention_dims a, std::int64_t rows,
                                                   const T* p, const float* __restrict__ dp,
                                                   T* ds) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const auto [i, keys] = row_of(a, r);
  const T* pr = p + r * a.seq;
  const float* dpr = dp + r * a.seq;
  float pv[N], dv[N];
  float d = 0.0f;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const bool in = c * 32 + lane <= i;
    pv[c] = in ? to_f32(pr[c * 32 + lane]) : 0.0f;
    dv[c] = in ? dpr[c * 32 + lane] : 0.0f;
    d = fmaf(pv[c], dv[c], d);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
  T* dsr = ds + r * a.seq;
#pragma unroll
  for (int c = 0; c < N; ++c)
    if (c * 32 + lane < keys) dsr[c * 32 + lane] = from_f32<T>(pv[c] * (dv[c] - d));
}

// Launches the register version for seq ≤ 1024, the loop version beyond.
template <class T>
void causal_softmax(context& ctx, const causal_attention_dims& a, std::int64_t rows, const float* s,
                    T* p) {
  const unsigned grid = unsigned((rows + 7) / 8);
  cudaStream_t st = ctx.stream();
  if (a.seq <= 128)
    causal_softmax_reg_kernel<T, 4><<<grid, 256, 0, st>>>(a, rows, s, p);
  else if (a.seq <= 256)
    causal_softmax_reg_kernel<T, 8><<<grid, 256, 0, st>>>(a, rows, s, p);
  else if (a.seq <= 512)
    causal_softmax_reg_kernel<T, 16><<<grid, 256, 0, st>>>(a, rows, s, p);
  else if (a.seq <= 1024)
    causal_softmax_reg_kernel<T, 32><<<grid, 256, 0, st>>>(a, rows, s, p);
  else
    causal_softmax_kernel<T><<<grid, 256, 0, st>>>(a, rows, s, p);
  FORGE_CUDA_CHECK_LAUNCH("causal_softmax_kernel");
}
template <class T>
void causal_softmax_backward(context& ctx, const causal_attention_dims& a, std::int64_t rows,
                             const T* p, const float* dp, T* ds) {
  const unsigned grid = unsigned((rows + 7) / 8);
  cudaStream_t st = ctx.stream();
  if (a.seq <= 128)
    causal_softmax_backward_reg_kernel<T, 4><<<grid, 256, 0, st>>>(a, rows, p, dp, ds);
  else if (a.seq <= 256)
    causal_softmax_backward_reg_kernel<T, 8><<<grid, 256, 0, st>>>(a, rows, p, dp, ds);
  else if (a.seq <= 512)
    causal_softmax_backward_reg_kernel<T, 16><<<grid, 256, 0, st>>>(a, rows, p, dp, ds);
  else if (a.seq <= 1024)
    causal_softmax_backward_reg_kernel<T, 32><<<grid, 256, 0, st>>>(a, rows, p, dp, ds);
  else
    causal_softmax_backward_kernel<T><<<grid, 256, 0, st>>>(a, rows, p, dp, ds);
  FORGE_CUDA_CHECK_LAUNCH("causal_softmax_backward_kernel");
}

inline void check_causal_dims(const causal_attention_dims& a, const char* where) {
  require(
      a.batch > 0 && a.seq > 0 && a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0 &&
          a.heads % a.kv_heads == 0 && a.blocks > 0 && a.seq % a.blocks == 0,
      {.what = "bad attention extents",
       .place = where,
       .expected = "positive extents, heads a multiple of kv_heads, seq a multiple of blocks",
       .found = "batch " + std::to_string(a.batch) + ", seq " + std::to_string(a.seq) + ", heads " +
                std::to_string(a.heads) + "/" + std::to_string(a.kv_heads) + ", head_dim " +
                std::to_string(a.head_dim) + ", blocks " + std::to_string(a.blocks)});
}

// For each query block: scores = scale · Q_blk · K[0:keys]ᵀ; then p = causal softmax(scores).
template <class T>
void causal_probs(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                  float* scores, T* probs) {
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim, T_ = S / a.blocks;
  const std::int64_t R = g * T_, n = a.batch * a.kv_heads;
  for (std::int64_t qb = 0; qb < a.blocks; ++qb)
    gemm_strided_batched<T, float>(ctx, false, true, R, (qb + 1) * T_, D, a.scale, q + qb * R * D,
                                   D, g * S * D, k, D, S * D, 0.0f, scores + qb * R * S, S,
                                   g * S * S, n);
  causal_softmax<T>(ctx, a, a.batch * a.heads * S, scores, probs);
}

}  // namespace detail

/// o = softmax(scale·q·kᵀ, causal)·v on ctx's stream; scores/probs are scratch of
/// a.score_elements() elements each.
template <class T>
void causal_attention_forward(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                              const T* v, T* o, float* scores, T* probs) {
  detail::check_causal_dims(a, "causal_attention_forward");
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim, T_ = S / a.blocks;
  const std::int64_t R = g * T_, n = a.batch * a.kv_heads;
  detail::causal_probs(ctx, a, q, k, scores, probs);
  for (std::int64_t qb = 0; qb < a.blocks; ++qb)
    gemm_strided_batched<T, T>(ctx, false, false, R, D, (qb + 1) * T_, 1.0f, probs + qb * R * S, S,
                               g * S * S, v, D, S * D, 0.0f, o + qb * R * D, D, g * S * D, n);
}

/// dq, dk, dv (overwritten) from dout on ctx's stream, recomputing p from q and k.
template <class T>
void causal_attention_backward(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                               const T* v, const T* dout, T* dq, T* dk, T* dv, float* scores,
                               T* probs) {
  detail::check_causal_dims(a, "causal_attention_backward");
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim, T_ = S / a.blocks;
  const std::int64_t R = g * T_, n = a.batch * a.kv_heads, nb = a.blocks;
  detail::causal_probs(ctx, a, q, k, scores, probs);
  // dv[kb] = p[rows of query blocks kb.., key block kb]ᵀ · do[those rows].
  for (std::int64_t kb = 0; kb < nb; ++kb)
    gemm_strided_batched<T, T>(ctx, true, false, T_, D, (nb - kb) * R, 1.0f,
                               probs + kb * R * S + kb * T_, S, g * S * S, dout + kb * R * D, D,
                               g * S * D, 0.0f, dv + kb * T_ * D, D, S * D, n);
  // dp = do·vᵀ (f32, over the score buffer), then ds = p ⊙ (dp − rowsum(p ⊙ dp)) over p.
  for (std::int64_t qb = 0; qb < nb; ++qb)
    gemm_strided_batched<T, float>(ctx, false, true, R, (qb + 1) * T_, D, 1.0f, dout + qb * R * D,
                                   D, g * S * D, v, D, S * D, 0.0f, scores + qb * R * S, S,
                                   g * S * S, n);
  detail::causal_softmax_backward<T>(ctx, a, a.batch * a.heads * S, probs, scores, probs);
  for (std::int64_t qb = 0; qb < nb; ++qb)
    gemm_strided_batched<T, T>(ctx, false, false, R, D, (qb + 1) * T_, a.scale, probs + qb * R * S,
                               S, g * S * S, k, D, S * D, 0.0f, dq + qb * R * D, D, g * S * D, n);
  for (std::int64_t kb = 0; kb < nb; ++kb)
    gemm_strided_batched<T, T>(ctx, true, false, T_, D, (nb - kb) * R, a.scale,
                               probs + kb * R * S + kb * T_, S, g * S * S, q + kb * R * D, D,
                               g * S * D, 0.0f, dk + kb * T_ * D, D, S * D, n);
}

}  // namespace forge::cuda
