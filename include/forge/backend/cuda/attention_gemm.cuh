#pragma once
// Causal grouped-query attention for training through cuBLAS products on a materialised score
// matrix: the definition of backend/attention.hpp (transformers' eager attention) without
// sliding window or key mask,
//   s_ij = scale · q_i·k_j (j ≤ i),   p_i = softmax_j(s_i),   o_i = Σ_j p_ij v_j
// backward (the softmax Jacobian, as in FlashAttention's derivation, Dao et al. 2022 §B.2):
//   dv_j = Σ_i p_ij do_i,  dp_ij = do_i·v_j,  ds_ij = p_ij (dp_ij − Σ_l p_il dp_il),
//   dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i
// Layouts, head-major (row-major): q, o, dq, do [batch, heads, seq, D]; k, v, dk, dv
// [batch, kv_heads, seq, D]. Query heads h = kvh·g + j (g = heads / kv_heads) share key/value
// head kvh, so the g query heads of one group are one contiguous [g·seq, D] matrix and each
// product is one strided-batched call over batch·kv_heads groups; the key-side sums over a
// group's query heads come out of the product itself (no atomics, reproducible).
//
// Scores [batch·heads, seq, seq] are f32 (the product accumulates and stores in f32); p is
// rounded to T before its product with v, as FlashAttention does. The masked upper triangle
// is computed and discarded: at seq 512 the score products are a few percent of a layer's
// arithmetic. Backward recomputes p from q and k (one product and one softmax) instead of
// keeping [seq, seq] per layer. Scratch: `scores` (f32) and `probs` (T), each
// batch·heads·seq² elements, shared by all layers.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/gemm.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// The extents of one causal attention call on head-major tensors.
struct causal_attention_dims {
  std::int64_t batch = 1, seq = 1, heads = 1, kv_heads = 1, head_dim = 64;
  float scale = 0.125f;  ///< usually 1/sqrt(head_dim)
  /// Elements of each of the two score scratch buffers.
  std::int64_t score_elements() const { return batch * heads * seq * seq; }
};

namespace detail {

// One warp per row r of [rows, seq]; the query index is r % seq. Writes p (zeros above the
// diagonal).
template <class T>
__global__ void causal_softmax_kernel(std::int64_t rows, std::int64_t seq,
                                      const float* __restrict__ s, T* __restrict__ p) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const std::int64_t i = r % seq;
  const float* sr = s + r * seq;
  T* pr = p + r * seq;
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
  for (std::int64_t j = lane; j < seq; j += 32)
    pr[j] = from_f32<T>(j <= i ? __expf(sr[j] - gmx) * inv : 0.0f);
}

// ds = p ⊙ (dp − Σ_j p·dp), one warp per row; ds may alias p (each element is read before
// the same lane writes it, after the row sum is complete).
template <class T>
__global__ void causal_softmax_backward_kernel(std::int64_t rows, std::int64_t seq, const T* p,
                                               const float* __restrict__ dp, T* ds) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const std::int64_t i = r % seq;
  const T* pr = p + r * seq;
  const float* dpr = dp + r * seq;
  float d = 0.0f;
  for (std::int64_t j = lane; j <= i; j += 32) d = fmaf(to_f32(pr[j]), dpr[j], d);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
  T* dsr = ds + r * seq;
  for (std::int64_t j = lane; j < seq; j += 32)
    dsr[j] = from_f32<T>(j <= i ? to_f32(pr[j]) * (dpr[j] - d) : 0.0f);
}

inline void check_causal_dims(const causal_attention_dims& a, const char* where) {
  require(a.batch > 0 && a.seq > 0 && a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0 &&
              a.heads % a.kv_heads == 0,
          {.what = "bad attention extents",
           .place = where,
           .expected = "positive extents, heads a multiple of kv_heads",
           .found = "batch " + std::to_string(a.batch) + ", seq " + std::to_string(a.seq) +
                    ", heads " + std::to_string(a.heads) + "/" + std::to_string(a.kv_heads) +
                    ", head_dim " + std::to_string(a.head_dim)});
}

// scores = scale · Q_g · K_gᵀ for every group, then p = causal softmax(scores).
template <class T>
void causal_probs(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                  float* scores, T* probs) {
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim;
  gemm_strided_batched<T, float>(ctx, false, true, g * S, S, D, a.scale, q, D, g * S * D, k, D,
                                 S * D, 0.0f, scores, S, g * S * S, a.batch * a.kv_heads);
  const std::int64_t rows = a.batch * a.heads * S;
  causal_softmax_kernel<T>
      <<<unsigned((rows + 7) / 8), 256, 0, ctx.stream()>>>(rows, S, scores, probs);
  FORGE_CUDA_CHECK_LAUNCH("causal_softmax_kernel");
}

}  // namespace detail

/// o = softmax(scale·q·kᵀ, causal)·v on ctx's stream; scores/probs are scratch of
/// a.score_elements() elements each.
template <class T>
void causal_attention_forward(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                              const T* v, T* o, float* scores, T* probs) {
  detail::check_causal_dims(a, "causal_attention_forward");
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim;
  detail::causal_probs(ctx, a, q, k, scores, probs);
  gemm_strided_batched<T, T>(ctx, false, false, g * S, D, S, 1.0f, probs, S, g * S * S, v, D, S * D,
                             0.0f, o, D, g * S * D, a.batch * a.kv_heads);
}

/// dq, dk, dv (overwritten) from dout on ctx's stream, recomputing p from q and k.
template <class T>
void causal_attention_backward(context& ctx, const causal_attention_dims& a, const T* q, const T* k,
                               const T* v, const T* dout, T* dq, T* dk, T* dv, float* scores,
                               T* probs) {
  detail::check_causal_dims(a, "causal_attention_backward");
  const std::int64_t g = a.heads / a.kv_heads, S = a.seq, D = a.head_dim, n = a.batch * a.kv_heads;
  detail::causal_probs(ctx, a, q, k, scores, probs);
  // dv = pᵀ·do over the group's g·S query rows.
  gemm_strided_batched<T, T>(ctx, true, false, S, D, g * S, 1.0f, probs, S, g * S * S, dout, D,
                             g * S * D, 0.0f, dv, D, S * D, n);
  // dp = do·vᵀ into the f32 score buffer, then ds = p ⊙ (dp − rowsum(p ⊙ dp)) over p.
  gemm_strided_batched<T, float>(ctx, false, true, g * S, S, D, 1.0f, dout, D, g * S * D, v, D,
                                 S * D, 0.0f, scores, S, g * S * S, n);
  const std::int64_t rows = a.batch * a.heads * S;
  detail::causal_softmax_backward_kernel<T>
      <<<unsigned((rows + 7) / 8), 256, 0, ctx.stream()>>>(rows, S, probs, scores, probs);
  FORGE_CUDA_CHECK_LAUNCH("causal_softmax_backward_kernel");
  gemm_strided_batched<T, T>(ctx, false, false, g * S, D, S, a.scale, probs, S, g * S * S, k, D,
                             S * D, 0.0f, dq, D, g * S * D, n);
  gemm_strided_batched<T, T>(ctx, true, false, S, D, g * S, a.scale, probs, S, g * S * S, q, D,
                             g * S * D, 0.0f, dk, D, S * D, n);
}

}  // namespace forge::cuda
