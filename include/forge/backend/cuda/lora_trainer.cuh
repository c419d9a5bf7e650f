#pragma once
// LoRA and QLoRA supervised fine-tuning of a whole Llama-family model on one GPU: the model of
// model/forward.hpp (transformers' LlamaForCausalLM) with PEFT's LoRA on the seven linear
// layers of every decoder layer (Hu et al. 2021; QLoRA: Dettmers et al. 2023).
//
//   x⁰ = E[ids];  per layer:  h = rmsnorm(x)·w₁;  q,k,v = lora(h);  rope(q, k)
//                 x' = x + lora_o(attention(q, k, v));  h' = rmsnorm(x')·w₂
//                 x⁺ = x' + lora_down(silu(lora_gate(h')) ⊙ lora_up(h'))
//   z = rmsnorm(x^L)·w_f · W_lmᵀ;   L = mean over kept tokens of CE(z_t, y_t), y_t = −100 ignored
//   lora(x) = x·Wᵀ + s·(x·Aᵀ)·Bᵀ,   s = alpha / rank
//
// The base (embedding, norms, projections, head) is frozen: backward computes input
// gradients through it and gradients of the LoRA A and B only. Storage type T (bf16 or f32)
// holds the base weights, activations and the LoRA copies used in products; LoRA master
// weights, their gradients and AdamW moments are f32. Every product is a cuBLAS call with f32
// accumulation. With base_storage::nf4 the projections are kept in NF4 (flat blocks of 64,
// f32 absmax) and expanded to T just before each product, as bitsandbytes does for training.
//
// Layout choices (why they are fast): q/k/v share one [q+k+v, hidden] weight and gate/up one
// [2·intermediate, hidden] weight, so each group is one base product; the LoRA A matrices of a
// group are stacked ([3r, hidden], [2r, hidden]) for one down-projection product. Attention
// works on copies in attention_gemm.cuh's layouts, written by the rope kernel (causal blocks
// of the query side). The vocabulary head and cross-entropy run in row chunks with the
// gradient written over the logits, so the [tokens, vocab] logits never exist whole. Saved per
// layer for backward: the layer input, the two normalised inputs and their inverse RMS,
// q/k/v, the attention output, the gate/up product and the LoRA intermediates x·Aᵀ; the SwiGLU
// product and the attention probabilities are recomputed. Each step shape is captured once as
// a CUDA graph and replayed (hundreds of launches, many of them short LoRA products).
//
// Preference training (DPO, Rafailov et al. 2023) reuses the same passes: the cross-entropy
// rows carry per-token weights, and per-sequence sums of log p give the policy's and the
// reference's (the base with adapters off) sequence log-probabilities.
//
// Full fine-tuning (options.full) runs the same passes with the adapters off and adds the
// weight gradients of every base tensor: dW = dYᵀ·X for each product (f32 accumulation into
// f32 gradients), dw of each RMSNorm, the head's dW_lm = dZᵀ·h_f per logits chunk and the
// embedding's dE[id_t] += dx⁰_t (one thread per feature walks the tokens in order: no atomics,
// reproducible). f32 masters in the layout of the T weights (q|k|v and gate|up stacked as the
// products read them) are updated by AdamW tensor by tensor and cast back into the T copies.
//
// Host use (plain arrays, no forge CPU types): fill llama_host_weights with f32 pointers in
// Hugging Face layout, construct, then per step call train_step (or forward_backward + step),
// or dpo_step for preference pairs.

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "forge/backend/cuda/adamw.cuh"
#include "forge/backend/cuda/attention_gemm.cuh"
#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/cross_entropy.cuh"
#include "forge/backend/cuda/gemm.cuh"
#include "forge/backend/cuda/llama_host.hpp"
#include "forge/backend/cuda/memory.cuh"
#include "forge/backend/cuda/nf4.cuh"
#include "forge/backend/cuda/numeric.cuh"
#include "forge/backend/cuda/rmsnorm.cuh"
#include "forge/core/rng.hpp"

namespace forge::cuda {

/// Options of lora_trainer; rank and alpha as PEFT's LoraConfig (r, lora_alpha).
struct lora_trainer_options {
  std::int64_t rank = 16;  ///< adapter rank r
  float alpha = 32.0f;     ///< scale s = alpha / r
  base_storage base = base_storage::dense;
  std::int64_t max_batch = 1;  ///< sequences per step, at most
  std::int64_t max_seq = 1;    ///< tokens per sequence, at most
  bool graphs = true;          ///< replay each step shape as a CUDA graph
  /// Causal blocks of attention (attention_gemm.cuh); 0 picks
  /// causal_attention_dims::auto_blocks(seq). The sequence length must be a multiple.
  std::int64_t attention_blocks = 0;
  /// Full fine-tuning: every base weight (embedding, norms, projections, head) trains, with
  /// f32 masters, gradients and AdamW moments; the LoRA adapters stay off. Needs a dense base.
  bool full = false;
};

/// Options of a DPO step (Rafailov et al. 2023, eq. 7), with conservative-DPO label smoothing
/// ε as TRL's "sigmoid" loss: ℓ = −(1−ε)·log σ(h) − ε·log σ(−h), h = β·(Δ_chosen − Δ_rejected),
/// Δ = log π(y|x) − log π_ref(y|x) summed over the completion's tokens.
struct dpo_options {
  float beta = 0.1f;             ///< β
  float label_smoothing = 0.0f;  ///< ε in [0, 0.5)
};

namespace detail {

template <class T>
__global__ void cast_kernel(std::int64_t n, const float* __restrict__ in, T* __restrict__ out) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(in[i]);
}

inline unsigned grid_1d(std::int64_t n) {
  const std::int64_t b = (n + 255) / 256;
  return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

template <class T>
void cast(context& ctx, std::int64_t n, const float* in, T* out) {
  if (n <= 0) return;
  cast_kernel<T><<<grid_1d(n), 256, 0, ctx.stream()>>>(n, in, out);
  FORGE_CUDA_CHECK_LAUNCH("cast_kernel");
}

// x[t, :] = E[ids[t], :]
template <class T>
__global__ void embed_kernel(std::int64_t n, std::int64_t hidden, const std::int64_t* ids,
                             const T* __restrict__ embed, T* __restrict__ x) {
  for (std::int64_t e = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; e < n;
       e += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t t = e / hidden;
    x[e] = embed[ids[t] * hidden + e % hidden];
  }
}

// Eight consecutive values, moved with 16-byte accesses (two for f32). The layout kernels
// below work on such groups with 32-bit index arithmetic: the trainer checks that every index
// fits, and 64-bit division costs several times the memory time of these kernels.
template <class T>
struct alignas(8 * sizeof(T)) vec8 {
  T v[8];
};
template <class T>
__device__ __forceinline__ vec8<T> load8(const T* p) {
  return *reinterpret_cast<const vec8<T>*>(p);
}
template <class T>
__device__ __forceinline__ void store8(T* p, const vec8<T>& x) {
  *reinterpret_cast<vec8<T>*>(p) = x;
}

// The query-side row of causal_attention_dims::q_row in 32-bit arithmetic (the trainer checks
// that every row index fits).
struct q_layout {
  int seq, heads, kv_heads, g, T, blocks;
  explicit q_layout(const causal_attention_dims& a)
      : seq(int(a.seq)),
        heads(int(a.heads)),
        kv_heads(int(a.kv_heads)),
        g(int(a.heads / a.kv_heads)),
        T(int(a.seq / a.blocks)),
        blocks(int(a.blocks)) {}
  __device__ int row(int b, int h, int s) const {
    return (((b * kv_heads + h / g) * blocks + s / T) * g + h % g) * T + s % T;
  }
};

// Token-major [tokens, (H + 2·Hkv)·D] → query-side q (attention_gemm.cuh layout) and head-major
// k, v [b, Hkv, s, D], with the rotation applied to q and k; Backward maps gradients back (the
// inverse rotation) from dq, dk, dv to token-major. One thread per 8 rotation pairs.
template <class T, bool Backward>
__global__ void qkv_rope_kernel(int total, q_layout lay, int D, T* tm, T* q, T* k, T* v,
                                const float* __restrict__ cos, const float* __restrict__ sin) {
  const int seq = lay.seq, heads = lay.heads, kv_heads = lay.kv_heads;
  const int h2 = D / 2, c8 = h2 / 8, nh = heads + 2 * kv_heads;
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += gridDim.x * blockDim.x) {
    const int i0 = (idx % c8) * 8, rest = idx / c8, hd = rest % nh, t = rest / nh;
    const int b = t / seq, s = t % seq;
    T* tok = tm + (std::int64_t(t) * nh + hd) * D;
    T* head;
    bool rotate = true;
    if (hd < heads) {
      head = q + std::int64_t(lay.row(b, hd, s)) * D;
    } else if (hd < heads + kv_heads) {
      head = k + ((std::int64_t(b) * kv_heads + hd - heads) * seq + s) * D;
    } else {
      head = v + ((std::int64_t(b) * kv_heads + hd - heads - kv_heads) * seq + s) * D;
      rotate = false;
    }
    const T* src = Backward ? head : tok;
    T* dst = Backward ? tok : head;
    const vec8<T> x1 = load8(src + i0), x2 = load8(src + i0 + h2);
    if (!rotate) {
      store8(dst + i0, x1);
      store8(dst + i0 + h2, x2);
      continue;
    }
    const float4* cp = reinterpret_cast<const float4*>(cos + std::int64_t(s) * h2 + i0);
    const float4* sp = reinterpret_cast<const float4*>(sin + std::int64_t(s) * h2 + i0);
    const float4 c0 = cp[0], c1 = cp[1], s0 = sp[0], s1 = sp[1];
    const float co[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
    const float si[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
    vec8<T> y1, y2;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float a = to_f32(x1.v[j]), c = to_f32(x2.v[j]);
      const float sn = Backward ? -si[j] : si[j];
      y1.v[j] = from_f32<T>(a * co[j] - c * sn);
      y2.v[j] = from_f32<T>(c * co[j] + a * sn);
    }
    store8(dst + i0, y1);
    store8(dst + i0 + h2, y2);
  }
}

// Query-side layout ↔ token-major [b·s, H·D], 8 features per thread (D % 8 == 0).
template <class T, bool ToTokens>
__global__ void heads_kernel(int total, q_layout lay, int D, const T* __restrict__ in,
                             T* __restrict__ out) {
  const int d8 = D / 8, seq = lay.seq, heads = lay.heads;
  for (int e8 = blockIdx.x * blockDim.x + threadIdx.x; e8 < total; e8 += gridDim.x * blockDim.x) {
    const int d = (e8 % d8) * 8, h = (e8 / d8) % heads, t = e8 / (d8 * heads);
    const std::int64_t tm = std::int64_t(e8) * 8;
    const std::int64_t hm = std::int64_t(lay.row(t / seq, h, t % seq)) * D + d;
    if (ToTokens)
      store8(out + tm, load8(in + hm));
    else
      store8(out + hm, load8(in + tm));
  }
}

// act[t, j] = silu(gu[t, j]) · gu[t, I + j]  (gate and up side by side in one row); 8 features
// per thread (I % 8 == 0).
template <class T>
__global__ void swiglu_fused_kernel(int total, int I, const T* __restrict__ gu,
                                    T* __restrict__ act) {
  const int i8 = I / 8;
  for (int e8 = blockIdx.x * blockDim.x + threadIdx.x; e8 < total; e8 += gridDim.x * blockDim.x) {
    const int t = e8 / i8, j = (e8 % i8) * 8;
    const vec8<T> g = load8(gu + std::int64_t(t) * 2 * I + j);
    const vec8<T> u = load8(gu + std::int64_t(t) * 2 * I + I + j);
    vec8<T> h;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const float gv = to_f32(g.v[m]);
      h.v[m] = from_f32<T>(gv / (1.0f + __expf(-gv)) * to_f32(u.v[m]));
    }
    store8(act + std::int64_t(e8) * 8, h);
  }
}

// d_gu from d_act: dg = dact·u·σ(g)·(1 + g·(1 − σ(g))),  du = dact·silu(g)
template <class T>
__global__ void swiglu_fused_backward_kernel(int total, int I, const T* __restrict__ gu,
                                             const T* __restrict__ dact, T* __restrict__ dgu) {
  const int i8 = I / 8;
  for (int e8 = blockIdx.x * blockDim.x + threadIdx.x; e8 < total; e8 += gridDim.x * blockDim.x) {
    const int t = e8 / i8, j = (e8 % i8) * 8;
    const std::int64_t row = std::int64_t(t) * 2 * I;
    const vec8<T> g = load8(gu + row + j), u = load8(gu + row + I + j);
    const vec8<T> d = load8(dact + std::int64_t(e8) * 8);
    vec8<T> dg, du;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const float gv = to_f32(g.v[m]), uv = to_f32(u.v[m]), dv = to_f32(d.v[m]);
      const float sg = 1.0f / (1.0f + __expf(-gv));
      dg.v[m] = from_f32<T>(dv * uv * sg * (1.0f + gv * (1.0f - sg)));
      du.v[m] = from_f32<T>(dv * gv * sg);
    }
    store8(dgu + row + j, dg);
    store8(dgu + row + I + j, du);
  }
}

// Cross-entropy of one row per block, gradient written over the logits:
//   ℓ_t = logsumexp(z_t) − z_t[y_t] = −log p_t(y_t);   z_t ← (softmax(z_t) − onehot(y_t)) · w_t
// with w_t = dL/dℓ_t (1/kept for the mean cross-entropy; per-sequence for preference losses).
// Ignored rows (y = −100) get ℓ = 0 and a zero gradient. z[y] is read before the block's
// first barrier and every other element is read and then written by the same thread, so the
// overwrite is safe.
template <class T>
__global__ void ce_inplace_kernel(std::int64_t vocab, T* z, const std::int64_t* __restrict__ y,
                                  const float* __restrict__ row_weight, bool write_grad,
                                  float* __restrict__ row_loss) {
  __shared__ float scratch[32];
  __shared__ float zy;
  const std::int64_t t = blockIdx.x, target = y[t];
  const float w = row_weight[t];
  T* zr = z + t * vocab;
  if (target == ce_ignore_index) {
    if (write_grad)
      for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) zr[i] = from_f32<T>(0.0f);
    if (threadIdx.x == 0) row_loss[t] = 0.0f;
    return;
  }
  if (threadIdx.x == 0) zy = to_f32(zr[target]);
  const float lse = row_logsumexp(zr, vocab, scratch);
  if (threadIdx.x == 0) row_loss[t] = lse - zy;
  if (write_grad)
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
      zr[i] = from_f32<T>((expf(to_f32(zr[i]) - lse) - (i == target ? 1.0f : 0.0f)) * w);
}

// loss = Σ_t w_t·ℓ_t, summed in double in a fixed order by one block.
__global__ void loss_sum_kernel(std::int64_t rows, const float* __restrict__ row_loss,
                                const float* __restrict__ row_weight, double* loss) {
  __shared__ double part[256];
  double s = 0.0;
  for (std::int64_t t = threadIdx.x; t < rows; t += blockDim.x)
    s += double(row_loss[t]) * double(row_weight[t]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = part[0];
}

// logp[b] = −Σ_s ℓ_{b·seq+s} (ignored rows hold 0): one block per sequence, fixed order.
__global__ void sequence_logp_kernel(std::int64_t seq, const float* __restrict__ row_loss,
                                     double* __restrict__ logp) {
  __shared__ double part[256];
  double s = 0.0;
  for (std::int64_t t = threadIdx.x; t < seq; t += blockDim.x)
    s += double(row_loss[blockIdx.x * seq + t]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) logp[blockIdx.x] = -part[0];
}

// Σ x² over n values in double, one block in a fixed order (a run repeats bit for bit).
__global__ void sum_squares_kernel(std::int64_t n, const float* __restrict__ x, double* out) {
  __shared__ double part[256];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += double(x[i]) * double(x[i]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// dE[ids[t], i] += dx[t, i]: one thread per feature i walks the tokens in order (a token id
// repeated in the batch adds in a fixed order; no atomics).
template <class T>
__global__ void embed_backward_kernel(std::int64_t tokens, std::int64_t hidden,
                                      const std::int64_t* __restrict__ ids,
                                      const T* __restrict__ dx, float* __restrict__ dE) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (i >= hidden) return;
  for (std::int64_t t = 0; t < tokens; ++t) dE[ids[t] * hidden + i] += to_f32(dx[t * hidden + i]);
}

// parts[b] = Σ x² over chunk b (chunks: offset, count pairs), one block per chunk in a fixed
// order; the chunks are then summed in order by sum_doubles_kernel.
__global__ void chunk_sum_squares_kernel(const std::int64_t* __restrict__ chunks,
                                         const float* __restrict__ x, double* __restrict__ parts) {
  __shared__ double part[256];
  const std::int64_t off = chunks[2 * blockIdx.x], n = chunks[2 * blockIdx.x + 1];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    s += double(x[off + i]) * double(x[off + i]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) parts[blockIdx.x] = part[0];
}

__global__ void sum_doubles_kernel(std::int64_t n, const double* __restrict__ x, double* out) {
  __shared__ double part[256];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// Counts bytes on a first pass and hands out arena pieces on the second.
struct arena_plan {
  arena* a = nullptr;
  std::size_t bytes = 0;
  template <class U>
  U* take(std::size_t n) {
    bytes += (n * sizeof(U) + 255) / 256 * 256;
    return a ? a->allocate<U>(n) : nullptr;
  }
};

}  // namespace detail

/// LoRA (or QLoRA) fine-tuning state of one Llama model on one GPU: frozen base weights,
/// LoRA masters/gradients/AdamW moments, and the activation arena for max_batch × max_seq
/// tokens. All work is queued on the context's stream. T is __nv_bfloat16 (training) or float
/// (reference precision).
template <class T>
class lora_trainer {
 public:
  /// Uploads the base weights (converted to T, or quantized to NF4) and allocates everything
  /// a step needs; LoRA A and B start at zero (set them with set_lora or init_lora).
  lora_trainer(context& ctx, const llama_dims& d, const llama_host_weights& w,
               const lora_trainer_options& o)
      : ctx_(ctx), d_(d), o_(o), scale_(o.alpha / float(o.rank)) {
    validate(w);
    const std::int64_t H = d.hidden, I = d.intermediate, V = d.vocab;
    nq_ = d.heads * d.head_dim;
    nkv_ = d.kv_heads * d.head_dim;
    nqkv_ = nq_ + 2 * nkv_;
    embed_ = upload(w.embed, V * H);
    final_norm_ = upload(w.final_norm, H);
    // A full fine-tuning of a tied head trains one tensor: the head reads the embedding.
    tied_ = o.full && w.lm_head == w.embed;
    if (!tied_) lm_head_ = upload(w.lm_head, V * H);
    head_ = tied_ ? embed_.data() : lm_head_.data();
    layers_.resize(std::size_t(d.layers));
    std::int64_t largest = 0;
    for (std::int64_t l = 0; l < d.layers; ++l) {
      const auto& src = w.layers[std::size_t(l)];
      auto& dst = layers_[std::size_t(l)];
      dst.input_norm = upload(src.input_norm, H);
      dst.post_norm = upload(src.post_norm, H);
      const float* qkv[3] = {src.q, src.k, src.v};
      const std::int64_t qkv_rows[3] = {nq_, nkv_, nkv_};
      dst.base[0] = upload_base(3, qkv, qkv_rows, H);
      const float* op[1] = {src.o};
      const std::int64_t o_rows[1] = {H};
      dst.base[1] = upload_base(1, op, o_rows, nq_);
      const float* gu[2] = {src.gate, src.up};
      const std::int64_t gu_rows[2] = {I, I};
      dst.base[2] = upload_base(2, gu, gu_rows, H);
      const float* dn[1] = {src.down};
      const std::int64_t dn_rows[1] = {H};
      dst.base[3] = upload_base(1, dn, dn_rows, I);
      largest = std::max({largest, nqkv_ * H, H * nq_, 2 * I * H, H * I});
    }
    if (o_.base == base_storage::nf4) wbuf_ = ctx_.alloc<T>(std::size_t(largest));

    // LoRA parameters: f32 masters, gradients and moments in one flat buffer each.
    per_layer_ = 0;
    for (auto p : llama_projs) per_layer_ += o.rank * (in_features(p) + out_features(p));
    const auto n = std::size_t(per_layer_ * d.layers);
    master_ = ctx_.alloc<float>(n);
    grad_ = ctx_.alloc<float>(n);
    m_ = ctx_.alloc<float>(n);
    v_ = ctx_.alloc<float>(n);
    if constexpr (!std::is_same_v<T, float>) copy_ = ctx_.alloc<T>(n);
    for (auto* b : {&master_, &grad_, &m_, &v_})
      FORGE_CUDA_CHECK(cudaMemsetAsync(b->data(), 0, n * sizeof(float), ctx_.stream()));
    refresh_copies();

    rope_tables();
    plan_activations();
    if (o_.full) plan_full(w);
    ctx_.synchronize();
  }

  lora_trainer(const lora_trainer&) = delete;
  lora_trainer& operator=(const lora_trainer&) = delete;
  ~lora_trainer() {
    for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g);
  }

  /// The model extents.
  const llama_dims& dims() const { return d_; }
  /// The options given at construction.
  const lora_trainer_options& options() const { return o_; }
  /// Trainable parameters (all A and B entries).
  std::int64_t lora_parameter_count() const { return per_layer_ * d_.layers; }
  /// Input features of a projection.
  std::int64_t in_features(llama_proj p) const {
    return p == llama_proj::o      ? d_.heads * d_.head_dim
           : p == llama_proj::down ? d_.intermediate
                                   : d_.hidden;
  }
  /// Output features of a projection.
  std::int64_t out_features(llama_proj p) const {
    switch (p) {
      case llama_proj::q:
        return d_.heads * d_.head_dim;
      case llama_proj::k:
      case llama_proj::v:
        return d_.kv_heads * d_.head_dim;
      case llama_proj::gate:
      case llama_proj::up:
        return d_.intermediate;
      default:
        return d_.hidden;
    }
  }

  /// Sets LoRA A [rank, in] and B [out, rank] (host f32) of one projection.
  void set_lora(std::int64_t layer, llama_proj p, const float* A, const float* B) {
    write_lora(layer, p, A, B);
    refresh_copies();
  }
  /// PEFT's default initialisation: A ~ U(−1/√in, 1/√in) (kaiming_uniform with a = √5),
  /// B = 0, drawn from forge::philox(seed).
  void init_lora(std::uint64_t seed) {
    philox rng(seed);
    for (std::int64_t l = 0; l < d_.layers; ++l)
      for (auto p : llama_projs) {
        std::vector<float> A(std::size_t(o_.rank * in_features(p)));
        std::vector<float> B(std::size_t(o_.rank * out_features(p)), 0.0f);
        const float bound = 1.0f / std::sqrt(float(in_features(p)));
        for (auto& a : A) a = float(rng.uniform(-bound, bound));
        write_lora(l, p, A.data(), B.data());
      }
    refresh_copies();
  }
  /// Copies LoRA A and B (f32 masters) of one projection to the host.
  void get_lora(std::int64_t layer, llama_proj p, float* A, float* B) const {
    download(master_, layer, p, A, B);
  }
  /// Copies the accumulated gradients dL/dA, dL/dB of one projection to the host.
  void get_lora_grad(std::int64_t layer, llama_proj p, float* dA, float* dB) const {
    download(grad_, layer, p, dA, dB);
  }

  /// Zeroes the LoRA gradients (forward_backward accumulates into them).
  void zero_grad() {
    auto& g = o_.full ? fgrad_ : grad_;
    FORGE_CUDA_CHECK(cudaMemsetAsync(g.data(), 0, g.bytes(), ctx_.stream()));
  }

  /// Targets of causal language modelling (transformers' labels = input_ids): position t of a
  /// sequence predicts token t + 1; the last position of each sequence is ignored (−100).
  static std::vector<std::int64_t> causal_targets(std::int64_t batch, std::int64_t seq,
                                                  const std::int64_t* ids) {
    std::vector<std::int64_t> y(std::size_t(batch * seq));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t s = 0; s < seq; ++s)
        y[std::size_t(b * seq + s)] = s + 1 < seq ? ids[b * seq + s + 1] : ce_ignore_index;
    return y;
  }

  /// Forward and backward of one batch (host ids and targets [batch, seq]; targets −100 are
  /// ignored): accumulates dL/dA, dL/dB of the mean cross-entropy over kept targets and
  /// returns that loss (waits for the step).
  double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                          const std::int64_t* targets) {
    return run(batch, seq, ids, targets, true, nullptr, nullptr, nullptr, true);
  }

  /// Forward and backward with a weight per token row (host [batch·seq]): accumulates the
  /// gradients of L = Σ_t w_t·CE_t and returns L. How accumulated micro-batches are normalised
  /// by the trained tokens of the whole optimizer step (w_t = 1/N_step on kept rows).
  double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                          const std::int64_t* targets, const float* row_weights) {
    require(row_weights != nullptr, {.what = "row weights missing",
                                     .place = "lora_trainer::forward_backward",
                                     .expected = "batch·seq weights",
                                     .found = "null"});
    return run(batch, seq, ids, targets, true, nullptr, row_weights, nullptr, true);
  }

  /// The global L2 norm of the accumulated LoRA gradients (summed in double, fixed order),
  /// as torch.nn.utils.clip_grad_norm_ measures it. Waits for the queued work.
  double grad_norm() {
    if (norm_.data() == nullptr) norm_ = ctx_.alloc<double>(1);
    if (o_.full) return full_grad_norm();
    detail::sum_squares_kernel<<<1, 256, 0, ctx_.stream()>>>(lora_parameter_count(), grad_.data(),
                                                             norm_.data());
    FORGE_CUDA_CHECK_LAUNCH("sum_squares_kernel");
    double s = 0.0;
    FORGE_CUDA_CHECK(
        cudaMemcpyAsync(&s, norm_.data(), sizeof s, cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.synchronize();
    return std::sqrt(s);
  }

  /// Copies AdamW's first (second = false) or second moments of one projection's A and B to
  /// the host (for checkpoints).
  void get_moments(std::int64_t layer, llama_proj p, bool second, float* A, float* B) const {
    download(second ? v_ : m_, layer, p, A, B);
  }
  /// Sets AdamW's moments of one projection (resuming from a checkpoint).
  void set_moments(std::int64_t layer, llama_proj p, bool second, const float* A, const float* B) {
    write(second ? v_ : m_, layer, p, A, B);
  }
  /// Sets the AdamW step count (resuming from a checkpoint; the next step is steps + 1).
  void set_steps(std::int64_t steps) {
    require(steps >= 0, {.what = "negative step count",
                         .place = "lora_trainer::set_steps",
                         .expected = ">= 0",
                         .found = std::to_string(steps)});
    steps_ = steps;
  }

  /// Forward only: logits [batch·seq, vocab] (f32, host) and, when targets are given, the
  /// mean cross-entropy (0 otherwise). Gradients are untouched.
  double forward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                 const std::int64_t* targets, float* logits) {
    return run(batch, seq, ids, targets, false, logits, nullptr, nullptr, true);
  }

  /// One AdamW step on every LoRA parameter from the accumulated gradients (step count kept
  /// here, from 1), then refreshes the T copies used by the products. Queued, not awaited.
  /// grad_scale multiplies the gradients first (global-norm clipping's coefficient).
  void step(const adamw_options& opt, float grad_scale = 1.0f) {
    phase("adamw");
    ++steps_;
    if (o_.full) {
      // Tensor by tensor: frozen weights keep their values, moments and decay.
      for (const auto& f : ft_) {
        if (!f.trainable || f.n == 0) continue;
        adamw_step<float>(ctx_, f.n, fmaster_.data() + f.offset, fgrad_.data() + f.offset,
                          fm_.data() + f.offset, fv_.data() + f.offset, steps_, opt, grad_scale);
        detail::cast<T>(ctx_, f.n, fmaster_.data() + f.offset, f.copy);
      }
      return;
    }
    adamw_step<float>(ctx_, lora_parameter_count(), master_.data(), grad_.data(), m_.data(),
                      v_.data(), steps_, opt, grad_scale);
    refresh_copies();
  }

  /// zero_grad, forward_backward and step: one optimisation step; returns the loss.
  double train_step(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                    const std::int64_t* targets, const adamw_options& opt) {
    zero_grad();
    const double loss = forward_backward(batch, seq, ids, targets);
    step(opt);
    return loss;
  }

  /// Σ log p(target) over each sequence's kept targets (host out[batch]); with_lora = false
  /// evaluates the base alone (adapters off: the reference model of LoRA preference training).
  void sequence_logprobs(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                         const std::int64_t* targets, bool with_lora, double* out) {
    require(targets != nullptr, {.what = "sequence log-probabilities need targets",
                                 .place = "lora_trainer::sequence_logprobs",
                                 .expected = "a targets array",
                                 .found = "null"});
    run(batch, seq, ids, targets, false, nullptr, nullptr, out, with_lora);
  }

  /// DPO on `pairs` preference pairs, each a chosen and a rejected sequence [pairs, seq]
  /// (prompt + completion; targets −100 outside the completion), with the base (adapters off)
  /// as the reference model, as PEFT-based DPO does. Accumulates the LoRA gradients of the
  /// mean loss over pairs and returns that loss. Needs max_batch ≥ 2·pairs. Runs the reference
  /// forward, the policy forward (for the per-pair weights) and the policy forward + backward
  /// with per-token weights w_t = −∂L/∂log π(sequence).
  double dpo_forward_backward(std::int64_t pairs, std::int64_t seq, const std::int64_t* chosen_ids,
                              const std::int64_t* chosen_targets, const std::int64_t* rejected_ids,
                              const std::int64_t* rejected_targets, const dpo_options& o) {
    require(!o_.full, {.what = "DPO's reference is the base with the adapters off",
                       .place = "lora_trainer::dpo_forward_backward",
                       .expected = "a LoRA trainer",
                       .found = "a full fine-tuning trainer"});
    require(pairs > 0 && 2 * pairs <= o_.max_batch && o.label_smoothing >= 0.0f &&
                o.label_smoothing < 0.5f,
            {.what = "bad DPO batch",
             .place = "lora_trainer::dpo_forward_backward",
             .expected = "1 <= pairs <= max_batch / 2 = " + std::to_string(o_.max_batch / 2) +
                         ", label_smoothing in [0, 0.5)",
             .found = "pairs " + std::to_string(pairs) + ", label_smoothing " +
                      std::to_string(o.label_smoothing)});
    const std::size_t n = std::size_t(pairs * seq);
    std::vector<std::int64_t> ids(2 * n), targets(2 * n);
    std::copy(chosen_ids, chosen_ids + n, ids.begin());
    std::copy(rejected_ids, rejected_ids + n, ids.begin() + std::ptrdiff_t(n));
    std::copy(chosen_targets, chosen_targets + n, targets.begin());
    std::copy(rejected_targets, rejected_targets + n, targets.begin() + std::ptrdiff_t(n));
    std::vector<double> ref(std::size_t(2 * pairs)), pol(std::size_t(2 * pairs));
    sequence_logprobs(2 * pairs, seq, ids.data(), targets.data(), false, ref.data());
    sequence_logprobs(2 * pairs, seq, ids.data(), targets.data(), true, pol.data());
    std::vector<float> w(2 * n, 0.0f);
    const double eps = o.label_smoothing, beta = o.beta;
    double loss = 0;
    for (std::int64_t i = 0; i < pairs; ++i) {
      const auto c = std::size_t(i), r = std::size_t(pairs + i);
      const double h = beta * ((pol[c] - ref[c]) - (pol[r] - ref[r]));
      auto log_sigmoid = [](double x) {
        return -(std::max(-x, 0.0) + std::log1p(std::exp(-std::abs(x))));
      };
      auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
      loss += (-(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)) / double(pairs);
      const double g = (-(1 - eps) * sigmoid(-h) + eps * sigmoid(h)) / double(pairs);  // dL/dh
      // log π(sequence) = −Σ ℓ_t, so dL/dℓ_t = −dL/dlog π = ∓β·g for chosen/rejected rows.
      for (std::int64_t t = 0; t < seq; ++t) {
        w[c * std::size_t(seq) + std::size_t(t)] = float(-beta * g);
        w[r * std::size_t(seq) + std::size_t(t)] = float(beta * g);
      }
    }
    run(2 * pairs, seq, ids.data(), targets.data(), true, nullptr, w.data(), nullptr, true);
    return loss;
  }

  /// zero_grad, dpo_forward_backward and an AdamW step; returns the DPO loss.
  double dpo_step(std::int64_t pairs, std::int64_t seq, const std::int64_t* chosen_ids,
                  const std::int64_t* chosen_targets, const std::int64_t* rejected_ids,
                  const std::int64_t* rejected_targets, const dpo_options& o,
                  const adamw_options& opt) {
    zero_grad();
    const double loss = dpo_forward_backward(pairs, seq, chosen_ids, chosen_targets, rejected_ids,
                                             rejected_targets, o);
    step(opt);
    return loss;
  }

  /// Elements of a weight tensor (lm_head of a tied full fine-tuning: 0, the embedding trains).
  std::int64_t tensor_size(llama_tensor t) const {
    const std::int64_t H = d_.hidden, I = d_.intermediate, V = d_.vocab;
    switch (t) {
      case llama_tensor::embed:
        return V * H;
      case llama_tensor::lm_head:
        return tied_ ? 0 : V * H;
      case llama_tensor::final_norm:
      case llama_tensor::input_norm:
      case llama_tensor::post_norm:
        return H;
      case llama_tensor::q:
      case llama_tensor::o:
        return nq_ * H;
      case llama_tensor::k:
      case llama_tensor::v:
        return nkv_ * H;
      default:  // gate, up, down
        return I * H;
    }
  }
  /// Whether the head is the embedding (a tied full fine-tuning).
  bool tied_head() const { return tied_; }
  /// Full fine-tuning: sets a weight's f32 master (host, tensor_size(t) values, Hugging Face
  /// layout) and its T copy.
  void set_weight(llama_tensor t, std::int64_t layer, const float* host) {
    full_write(fmaster_, t, layer, host);
    const auto& f = ft(t, layer);
    detail::cast<T>(ctx_, f.n, fmaster_.data() + f.offset, f.copy);
    ctx_.synchronize();
  }
  /// Full fine-tuning: copies a weight's f32 master to the host.
  void get_weight(llama_tensor t, std::int64_t layer, float* host) const {
    full_read(fmaster_, t, layer, host);
  }
  /// Full fine-tuning: copies a weight's accumulated gradient to the host.
  void get_weight_grad(llama_tensor t, std::int64_t layer, float* host) const {
    full_read(fgrad_, t, layer, host);
  }
  /// Full fine-tuning: copies AdamW's first (second = false) or second moments of a weight.
  void get_weight_moments(llama_tensor t, std::int64_t layer, bool second, float* host) const {
    full_read(second ? fv_ : fm_, t, layer, host);
  }
  /// Full fine-tuning: sets AdamW's moments of a weight (resuming from a checkpoint).
  void set_weight_moments(llama_tensor t, std::int64_t layer, bool second, const float* host) {
    full_write(second ? fv_ : fm_, t, layer, host);
  }
  /// Full fine-tuning: freezes (false) or trains (true, the default) a weight. A frozen weight
  /// keeps its value; its gradient is computed but left out of grad_norm and step.
  void set_trainable(llama_tensor t, std::int64_t layer, bool on) {
    full_check(t, layer, "lora_trainer::set_trainable");
    ft_[std::size_t(full_index(t, layer))].trainable = on;
    chunks_.clear();
  }
  /// Full fine-tuning: trainable weight values.
  std::int64_t full_parameter_count() const {
    std::int64_t n = 0;
    for (const auto& f : ft_) n += f.trainable ? f.n : 0;
    return n;
  }

  /// Turns replaying steps as CUDA graphs on or off (options().graphs).
  void use_graphs(bool on) { o_.graphs = on; }
  /// AdamW steps taken.
  std::int64_t steps() const { return steps_; }
  /// Called on the host as each phase of a step is queued, with the phase's name ("fwd.qkv",
  /// "bwd.attention", "adamw" …); a profiler records a CUDA event on the context's stream
  /// there and attributes the time to the next event to that phase. Empty by default.
  void set_phase_hook(std::function<void(const char* phase)> hook) { hook_ = std::move(hook); }
  /// Bytes of the activation arena (planned for max_batch × max_seq).
  std::size_t activation_bytes() const { return acts_ ? acts_->capacity() : 0; }

 private:
  struct base_weight {
    device_buffer<T> dense{};
    nf4_matrix nf4{};
  };
  struct layer_weights {
    device_buffer<T> input_norm{}, post_norm{};
    base_weight base[4]{};  // qkv [nqkv, H], o [H, nq], gate|up [2I, H], down [H, I]
  };
  struct layer_acts {
    T *x, *h1, *t_qkv, *q, *k, *v, *o, *t_o, *x_mid, *h2, *t_gu, *gu, *t_d;
    float *r1, *r2;
  };

  void validate(const llama_host_weights& w) const {
    const auto& d = d_;
    require(d.vocab > 0 && d.hidden > 0 && d.intermediate > 0 && d.layers > 0 && d.heads > 0 &&
                d.kv_heads > 0 && d.heads % d.kv_heads == 0 && d.head_dim > 0 &&
                d.head_dim % 2 == 0,
            {.what = "bad model extents",
             .place = "lora_trainer",
             .expected = "positive extents, heads a multiple of kv_heads, even head_dim",
             .found = "vocab " + std::to_string(d.vocab) + ", hidden " + std::to_string(d.hidden) +
                      ", heads " + std::to_string(d.heads) + "/" + std::to_string(d.kv_heads) +
                      ", head_dim " + std::to_string(d.head_dim)});
    require(d.head_dim % 16 == 0 && d.intermediate % 8 == 0,
            {.what = "model extents the layout kernels do not take",
             .place = "lora_trainer",
             .expected = "head_dim a multiple of 16 and intermediate a multiple of 8",
             .found = "head_dim " + std::to_string(d.head_dim) + ", intermediate " +
                      std::to_string(d.intermediate)});
    require(!o_.full || o_.base == base_storage::dense,
            {.what = "full fine-tuning needs a dense base",
             .place = "lora_trainer_options.full",
             .expected = "base_storage::dense",
             .found = "base_storage::nf4"});
    require(o_.rank > 0 && o_.max_batch > 0 && o_.max_seq > 0,
            {.what = "bad trainer options",
             .place = "lora_trainer",
             .expected = "rank, max_batch and max_seq positive",
             .found = "rank " + std::to_string(o_.rank) + ", max_batch " +
                      std::to_string(o_.max_batch) + ", max_seq " + std::to_string(o_.max_seq)});
    const std::int64_t tokens = o_.max_batch * o_.max_seq;
    const std::int64_t widest =
        std::max({(d.heads + 2 * d.kv_heads) * d.head_dim, 2 * d.intermediate, d.vocab});
    require(tokens > 0 && tokens * widest < (std::int64_t(1) << 31),
            {.what = "step too large for 32-bit element indices",
             .place = "lora_trainer_options",
             .expected = "max_batch · max_seq · (widest activation row) below 2^31",
             .found = std::to_string(tokens) + " tokens × " + std::to_string(widest)});
    require(std::int64_t(w.layers.size()) == d.layers,
            {.what = "layer weights do not match the model extents",
             .place = "llama_host_weights::layers",
             .expected = std::to_string(d.layers) + " layers",
             .found = std::to_string(w.layers.size())});
    auto need = [](const float* p, const std::string& name) {
      require(
          p != nullptr,
          {.what = "missing weight", .place = name, .expected = "a host pointer", .found = "null"});
    };
    need(w.embed, "embed");
    need(w.final_norm, "final_norm");
    need(w.lm_head, "lm_head");
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      const auto& L = w.layers[l];
      const std::string at = "layers." + std::to_string(l) + ".";
      need(L.input_norm, at + "input_norm");
      need(L.post_norm, at + "post_norm");
      const float* ps[7] = {L.q, L.k, L.v, L.o, L.gate, L.up, L.down};
      for (auto p : llama_projs) need(ps[int(p)], at + llama_proj_name(p));
    }
    if (o_.base == base_storage::nf4) {
      const std::int64_t H = d.hidden, I = d.intermediate, nq = d.heads * d.head_dim;
      require((H * nq) % 64 == 0 && (H * I) % 64 == 0 && (d.kv_heads * d.head_dim * H) % 64 == 0,
              {.what = "projection sizes are not whole NF4 blocks",
               .place = "lora_trainer (base_storage::nf4)",
               .expected = "every projection's weight count a multiple of 64",
               .found = "hidden " + std::to_string(H) + ", intermediate " + std::to_string(I)});
    }
  }

  void check_layer(std::int64_t layer, const char* where) const {
    require(layer >= 0 && layer < d_.layers,
            {.what = "layer index out of range",
             .place = where,
             .expected = "in [0, " + std::to_string(d_.layers) + ")",
             .found = std::to_string(layer)});
  }

  // f32 host → T device (through an f32 staging buffer converted on the device).
  device_buffer<T> upload(const float* host, std::int64_t n) {
    device_buffer<T> out = ctx_.alloc<T>(std::size_t(n));
    device_buffer<float> stage(host, std::size_t(n), &ctx_.pool());
    detail::cast<T>(ctx_, n, stage.data(), out.data());
    ctx_.synchronize();  // the staging block goes back to the pool
    return out;
  }
  // Parts stacked by rows into one [Σ rows, cols] weight, dense T or NF4.
  base_weight upload_base(int parts, const float* const* host, const std::int64_t* rows,
                          std::int64_t cols) {
    std::int64_t total = 0;
    for (int i = 0; i < parts; ++i) total += rows[i];
    device_buffer<float> stage(std::size_t(total * cols), &ctx_.pool());
    std::int64_t at = 0;
    for (int i = 0; i < parts; ++i) {
      // On the context's stream: a plain cudaMemcpy from pageable memory may still be in
      // flight when the (non-blocking) stream's conversion kernel reads the staging buffer.
      FORGE_CUDA_CHECK(cudaMemcpyAsync(stage.data() + at * cols, host[i],
                                       std::size_t(rows[i] * cols) * sizeof(float),
                                       cudaMemcpyHostToDevice, ctx_.stream()));
      at += rows[i];
    }
    base_weight w;
    if (o_.base == base_storage::nf4) {
      w.nf4 = nf4_quantize(ctx_, total, cols, stage.data());
    } else {
      w.dense = ctx_.alloc<T>(std::size_t(total * cols));
      detail::cast<T>(ctx_, total * cols, stage.data(), w.dense.data());
    }
    ctx_.synchronize();
    return w;
  }
  // The product operand of a base weight: itself, or its NF4 expansion into the scratch.
  const T* weight(std::int64_t layer, int which) {
    auto& w = layers_[std::size_t(layer)].base[which];
    if (o_.base == base_storage::dense) return w.dense.data();
    nf4_dequantize<T>(ctx_, w.nf4, wbuf_.data());
    return wbuf_.data();
  }

  // Flat LoRA layout per layer: A_q A_k A_v | A_gate A_up | A_o | A_down | B_q … B_down.
  std::int64_t a_offset(std::int64_t layer, llama_proj p) const {
    const std::int64_t r = o_.rank, H = d_.hidden;
    const std::int64_t base = layer * per_layer_;
    switch (p) {
      case llama_proj::q:
        return base;
      case llama_proj::k:
        return base + r * H;
      case llama_proj::v:
        return base + 2 * r * H;
      case llama_proj::gate:
        return base + 3 * r * H;
      case llama_proj::up:
        return base + 4 * r * H;
      case llama_proj::o:
        return base + 5 * r * H;
      default:
        return base + 5 * r * H + r * nq_;
    }
  }
  std::int64_t b_offset(std::int64_t layer, llama_proj p) const {
    const std::int64_t r = o_.rank;
    std::int64_t at = layer * per_layer_ + r * (5 * d_.hidden + nq_ + d_.intermediate);
    for (auto q : llama_projs) {
      if (q == p) return at;
      at += r * out_features(q);
    }
    return at;
  }
  void write_lora(std::int64_t layer, llama_proj p, const float* A, const float* B) {
    write(master_, layer, p, A, B);
  }
  void write(device_buffer<float>& buf, std::int64_t layer, llama_proj p, const float* A,
             const float* B) {
    check_layer(layer, "lora_trainer::set_lora");
    const auto r = o_.rank;
    ctx_.synchronize();  // queued steps may still update the masters
    // Stream-ordered (see upload_base), then awaited: the caller may free A and B.
    FORGE_CUDA_CHECK(cudaMemcpyAsync(buf.data() + a_offset(layer, p), A,
                                     std::size_t(r * in_features(p)) * sizeof(float),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    FORGE_CUDA_CHECK(cudaMemcpyAsync(buf.data() + b_offset(layer, p), B,
                                     std::size_t(r * out_features(p)) * sizeof(float),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    ctx_.synchronize();
  }
  void download(const device_buffer<float>& buf, std::int64_t layer, llama_proj p, float* A,
                float* B) const {
    check_layer(layer, "lora_trainer::get_lora");
    ctx_.synchronize();
    FORGE_CUDA_CHECK(cudaMemcpy(A, buf.data() + a_offset(layer, p),
                                std::size_t(o_.rank * in_features(p)) * sizeof(float),
                                cudaMemcpyDeviceToHost));
    FORGE_CUDA_CHECK(cudaMemcpy(B, buf.data() + b_offset(layer, p),
                                std::size_t(o_.rank * out_features(p)) * sizeof(float),
                                cudaMemcpyDeviceToHost));
  }
  void refresh_copies() {
    if constexpr (!std::is_same_v<T, float>)
      detail::cast<T>(ctx_, lora_parameter_count(), master_.data(), copy_.data());
  }
  const T* lora(std::int64_t offset) const {
    if constexpr (std::is_same_v<T, float>)
      return master_.data() + offset;
    else
      return copy_.data() + offset;
  }
  const T* A(std::int64_t l, llama_proj p) const { return lora(a_offset(l, p)); }
  const T* B(std::int64_t l, llama_proj p) const { return lora(b_offset(l, p)); }
  float* dA(std::int64_t l, llama_proj p) { return grad_.data() + a_offset(l, p); }
  float* dB(std::int64_t l, llama_proj p) { return grad_.data() + b_offset(l, p); }

  // cos/sin [max_seq, D/2] as transformers computes them in f32: inv_freq_i = 1/θ^(2i/D),
  // angle = position · inv_freq_i (both rounded to f32), then cos and sin of that f32 angle.
  void rope_tables() {
    const std::int64_t h2 = d_.head_dim / 2, S = o_.max_seq;
    std::vector<float> c(std::size_t(S * h2)), s(std::size_t(S * h2));
    for (std::int64_t i = 0; i < h2; ++i) {
      const float e = float(2 * i) / float(d_.head_dim);
      const float inv = 1.0f / std::pow(d_.rope_theta, e);
      for (std::int64_t p = 0; p < S; ++p) {
        const float a = float(p) * inv;
        c[std::size_t(p * h2 + i)] = float(std::cos(double(a)));
        s[std::size_t(p * h2 + i)] = float(std::sin(double(a)));
      }
    }
    cos_ = device_buffer<float>(c.data(), c.size(), &ctx_.pool());
    sin_ = device_buffer<float>(s.data(), s.size(), &ctx_.pool());
  }

  template <class Plan>
  void carve(Plan& a) {
    const std::int64_t M = o_.max_batch * o_.max_seq, H = d_.hidden, I = d_.intermediate;
    const std::int64_t r = o_.rank;
    const auto m = std::size_t(M);
    saved_.resize(std::size_t(d_.layers));
    for (auto& L : saved_) {
      L.x = a.template take<T>(m * H);
      L.r1 = a.template take<float>(m);
      L.h1 = a.template take<T>(m * H);
      L.t_qkv = a.template take<T>(m * 3 * r);
      L.q = a.template take<T>(m * nq_);
      L.k = a.template take<T>(m * nkv_);
      L.v = a.template take<T>(m * nkv_);
      L.o = a.template take<T>(m * nq_);
      L.t_o = a.template take<T>(m * r);
      L.x_mid = a.template take<T>(m * H);
      L.r2 = a.template take<float>(m);
      L.h2 = a.template take<T>(m * H);
      L.t_gu = a.template take<T>(m * 2 * r);
      L.gu = a.template take<T>(m * 2 * I);
      L.t_d = a.template take<T>(m * r);
    }
    x_final_ = a.template take<T>(m * H);
    rf_ = a.template take<float>(m);
    hf_ = a.template take<T>(m * H);
    dhf_ = a.template take<T>(m * H);
    qkv_ = a.template take<T>(m * nqkv_);
    att_ = a.template take<T>(m * nq_);
    act_ = a.template take<T>(m * I);
    dact_ = a.template take<T>(m * I);
    datt_ = a.template take<T>(m * nq_);
    dgu_ = a.template take<T>(m * 2 * I);
    dx_ = a.template take<T>(m * H);
    dh_ = a.template take<T>(m * H);
    dq_ = a.template take<T>(m * nq_);
    dk_ = a.template take<T>(m * nkv_);
    dv_ = a.template take<T>(m * nkv_);
    dt_ = a.template take<T>(m * 3 * r);
    const auto sc = std::size_t(o_.max_batch * d_.heads * o_.max_seq * o_.max_seq);
    scores_ = a.template take<float>(sc);
    probs_ = a.template take<T>(sc);
    // Vocabulary head in chunks of about 64 MiB of logits.
    chunk_ = std::max<std::int64_t>(
        1,
        std::min<std::int64_t>(M, (std::int64_t(64) << 20) / (d_.vocab * std::int64_t(sizeof(T)))));
    logits_ = a.template take<T>(std::size_t(chunk_ * d_.vocab));
    row_loss_ = a.template take<float>(m);
    ids_ = a.template take<std::int64_t>(m);
    targets_ = a.template take<std::int64_t>(m);
    loss_ = a.template take<double>(1);
    row_w_ = a.template take<float>(m);
    seq_logp_ = a.template take<double>(std::size_t(o_.max_batch));
  }
  void plan_activations() {
    detail::arena_plan count;
    carve(count);
    acts_ = std::make_unique<arena>(count.bytes + 4096, &ctx_.pool());
    detail::arena_plan real{acts_.get()};
    carve(real);
  }

  // y[:, 0:out] (row stride ldy) += s · t · Bᵀ, t [M, r] with row stride ldt.
  void lora_up(std::int64_t M, std::int64_t out, const T* t, std::int64_t ldt, const T* Bm, T* y,
               std::int64_t ldy) {
    gemm<T, T>(ctx_, false, true, M, out, o_.rank, scale_, t, ldt, Bm, o_.rank, 1.0f, y, ldy);
  }
  // dB += s · dyᵀ · t;  dt = s · dy · B  (dy [M, out] stride ldy; t, dt stride ldt)
  void lora_back(std::int64_t M, std::int64_t out, const T* dy, std::int64_t ldy, const T* t,
                 std::int64_t ldt, const T* Bm, float* dBm, T* dt) {
    const std::int64_t r = o_.rank;
    gemm<T, float>(ctx_, true, false, out, r, M, scale_, dy, ldy, t, ldt, 1.0f, dBm, r);
    gemm<T, T>(ctx_, false, false, M, r, out, scale_, dy, ldy, Bm, r, 0.0f, dt, ldt);
  }

  // One step: forward; cross-entropy rows if targets; backward if asked. row_weights (host,
  // [batch·seq], may be null: 1/kept on kept rows) weight each row's −log p in the loss and
  // its gradient; seq_logp (host out, may be null) receives each sequence's Σ log p over kept
  // targets; with_lora = false runs the base alone (a reference model; forward only).
  double run(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
             const std::int64_t* targets, bool backward, float* logits_out,
             const float* row_weights, double* seq_logp, bool with_lora) {
    require(batch > 0 && seq > 0 && batch <= o_.max_batch && seq <= o_.max_seq,
            {.what = "batch larger than the trainer was planned for",
             .place = "lora_trainer",
             .expected = "batch in [1, " + std::to_string(o_.max_batch) + "], seq in [1, " +
                         std::to_string(o_.max_seq) + "]",
             .found = "batch " + std::to_string(batch) + ", seq " + std::to_string(seq)});
    const std::int64_t M = batch * seq, V = d_.vocab;
    std::int64_t kept = 0;
    for (std::int64_t t = 0; t < M; ++t) {
      require(ids[t] >= 0 && ids[t] < V, {.what = "token id out of range",
                                          .place = "input_ids[" + std::to_string(t) + "]",
                                          .expected = "in [0, " + std::to_string(V) + ")",
                                          .found = std::to_string(ids[t])});
      if (targets) {
        require(targets[t] == ce_ignore_index || (targets[t] >= 0 && targets[t] < V),
                {.what = "target token out of range",
                 .place = "targets[" + std::to_string(t) + "]",
                 .expected = "in [0, " + std::to_string(V) + ") or -100",
                 .found = std::to_string(targets[t])});
        kept += targets[t] != ce_ignore_index;
      }
    }
    require(targets || !backward, {.what = "training needs targets",
                                   .place = "lora_trainer::forward_backward",
                                   .expected = "a targets array",
                                   .found = "null"});
    require(seq % attention_blocks(seq) == 0,
            {.what = "sequence length not a multiple of the attention blocks",
             .place = "lora_trainer (attention_blocks)",
             .expected = "seq a multiple of " + std::to_string(attention_blocks(seq)),
             .found = "seq " + std::to_string(seq)});
    require(with_lora || !backward || o_.full, {.what = "backward needs the adapters on",
                                                .place = "lora_trainer",
                                                .expected = "with_lora when backward",
                                                .found = "a backward of the base alone"});
    cudaStream_t st = ctx_.stream();
    FORGE_CUDA_CHECK(cudaMemcpyAsync(ids_, ids, std::size_t(M) * sizeof(std::int64_t),
                                     cudaMemcpyHostToDevice, st));
    if (targets)
      FORGE_CUDA_CHECK(cudaMemcpyAsync(targets_, targets, std::size_t(M) * sizeof(std::int64_t),
                                       cudaMemcpyHostToDevice, st));
    // Row weights live on the device so a captured step serves any batch of the same shape.
    if (targets) {
      row_w_host_.assign(std::size_t(M), 0.0f);
      for (std::int64_t t = 0; t < M; ++t)
        row_w_host_[std::size_t(t)] =
            row_weights ? row_weights[t]
                        : (targets[t] != ce_ignore_index ? float(1.0 / double(kept)) : 0.0f);
      FORGE_CUDA_CHECK(cudaMemcpyAsync(row_w_, row_w_host_.data(), std::size_t(M) * sizeof(float),
                                       cudaMemcpyHostToDevice, st));
    }
    lora_on_ = with_lora && !o_.full;
    // A step is hundreds of launches, many of them short LoRA products: replaying it as one
    // CUDA graph removes the host launch cost between them. Logits copied out mid-step and a
    // phase hook (host calls between launches) run the same work launched directly.
    if (logits_out || hook_ || !o_.graphs || (!with_lora && !o_.full)) {
      enqueue(batch, seq, targets != nullptr, backward, logits_out);
    } else {
      const auto key = std::make_tuple(batch, seq, targets != nullptr, backward);
      auto it = graphs_.find(key);
      if (it == graphs_.end()) {
        cudaGraph_t g = nullptr;
        FORGE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        try {
          enqueue(batch, seq, targets != nullptr, backward, nullptr);
        } catch (...) {
          cudaStreamEndCapture(st, &g);
          if (g) cudaGraphDestroy(g);
          throw;
        }
        FORGE_CUDA_CHECK(cudaStreamEndCapture(st, &g));
        cudaGraphExec_t ge = nullptr;
        const cudaError_t made = cudaGraphInstantiate(&ge, g, 0);
        cudaGraphDestroy(g);
        FORGE_CUDA_CHECK(made);
        it = graphs_.emplace(key, ge).first;
      }
      FORGE_CUDA_CHECK(cudaGraphLaunch(it->second, st));
    }
    double loss = 0.0;
    // A copy to pageable memory blocks the host until the step is done.
    if (targets)
      FORGE_CUDA_CHECK(cudaMemcpyAsync(&loss, loss_, sizeof loss, cudaMemcpyDeviceToHost, st));
    if (targets && seq_logp)
      FORGE_CUDA_CHECK(cudaMemcpyAsync(seq_logp, seq_logp_, std::size_t(batch) * sizeof(double),
                                       cudaMemcpyDeviceToHost, st));
    ctx_.synchronize();
    return loss;
  }

  // Queues one step's device work (forward; cross-entropy if has_targets; backward if asked).
  void enqueue(std::int64_t batch, std::int64_t seq, bool has_targets, bool backward,
               float* logits_out) {
    const std::int64_t M = batch * seq, H = d_.hidden, I = d_.intermediate, V = d_.vocab;
    const std::int64_t r = o_.rank, D = d_.head_dim;
    cudaStream_t st = ctx_.stream();
    causal_attention_dims ad{.batch = batch,
                             .seq = seq,
                             .heads = d_.heads,
                             .kv_heads = d_.kv_heads,
                             .head_dim = D,
                             .scale = float(1.0 / std::sqrt(double(D))),
                             .blocks = attention_blocks(seq)};
    const int rope_total = int(M * (d_.heads + 2 * d_.kv_heads) * (D / 16));
    const int heads_total = int(M * nq_ / 8), mlp_total = int(M * I / 8);

    // ---- forward
    detail::embed_kernel<T>
        <<<detail::grid_1d(M * H), 256, 0, st>>>(M * H, H, ids_, embed_.data(), saved_[0].x);
    FORGE_CUDA_CHECK_LAUNCH("embed_kernel");
    for (std::int64_t l = 0; l < d_.layers; ++l) {
      auto& L = saved_[std::size_t(l)];
      auto& W = layers_[std::size_t(l)];
      T* x_next = l + 1 < d_.layers ? saved_[std::size_t(l + 1)].x : x_final_;
      phase("fwd.qkv");
      rmsnorm_forward<T>(ctx_, M, H, L.x, W.input_norm.data(), d_.rms_eps, L.h1, L.r1);
      gemm<T, T>(ctx_, false, true, M, nqkv_, H, 1.0f, L.h1, H, weight(l, 0), H, 0.0f, qkv_, nqkv_);
      if (lora_on_) {
        gemm<T, T>(ctx_, false, true, M, 3 * r, H, 1.0f, L.h1, H, A(l, llama_proj::q), H, 0.0f,
                   L.t_qkv, 3 * r);
        lora_up(M, nq_, L.t_qkv, 3 * r, B(l, llama_proj::q), qkv_, nqkv_);
        lora_up(M, nkv_, L.t_qkv + r, 3 * r, B(l, llama_proj::k), qkv_ + nq_, nqkv_);
        lora_up(M, nkv_, L.t_qkv + 2 * r, 3 * r, B(l, llama_proj::v), qkv_ + nq_ + nkv_, nqkv_);
      }
      phase("fwd.rope");
      detail::qkv_rope_kernel<T, false><<<detail::grid_1d(rope_total), 256, 0, st>>>(
          rope_total, detail::q_layout(ad), int(D), qkv_, L.q, L.k, L.v, cos_.data(), sin_.data());
      FORGE_CUDA_CHECK_LAUNCH("qkv_rope_kernel");
      phase("fwd.attention");
      causal_attention_forward<T>(ctx_, ad, L.q, L.k, L.v, att_, scores_, probs_);
      phase("fwd.o");
      detail::heads_kernel<T, true><<<detail::grid_1d(heads_total), 256, 0, st>>>(
          heads_total, detail::q_layout(ad), int(D), att_, L.o);
      FORGE_CUDA_CHECK_LAUNCH("heads_kernel");
      // x' = x + o·W_oᵀ + s·(o·A_oᵀ)·B_oᵀ
      FORGE_CUDA_CHECK(cudaMemcpyAsync(L.x_mid, L.x, std::size_t(M * H) * sizeof(T),
                                       cudaMemcpyDeviceToDevice, st));
      gemm<T, T>(ctx_, false, true, M, H, nq_, 1.0f, L.o, nq_, weight(l, 1), nq_, 1.0f, L.x_mid, H);
      if (lora_on_) {
        gemm<T, T>(ctx_, false, true, M, r, nq_, 1.0f, L.o, nq_, A(l, llama_proj::o), nq_, 0.0f,
                   L.t_o, r);
        lora_up(M, H, L.t_o, r, B(l, llama_proj::o), L.x_mid, H);
      }
      phase("fwd.gate_up");
      rmsnorm_forward<T>(ctx_, M, H, L.x_mid, W.post_norm.data(), d_.rms_eps, L.h2, L.r2);
      gemm<T, T>(ctx_, false, true, M, 2 * I, H, 1.0f, L.h2, H, weight(l, 2), H, 0.0f, L.gu, 2 * I);
      if (lora_on_) {
        gemm<T, T>(ctx_, false, true, M, 2 * r, H, 1.0f, L.h2, H, A(l, llama_proj::gate), H, 0.0f,
                   L.t_gu, 2 * r);
        lora_up(M, I, L.t_gu, 2 * r, B(l, llama_proj::gate), L.gu, 2 * I);
        lora_up(M, I, L.t_gu + r, 2 * r, B(l, llama_proj::up), L.gu + I, 2 * I);
      }
      phase("fwd.swiglu");
      detail::swiglu_fused_kernel<T>
          <<<detail::grid_1d(mlp_total), 256, 0, st>>>(mlp_total, int(I), L.gu, act_);
      FORGE_CUDA_CHECK_LAUNCH("swiglu_fused_kernel");
      phase("fwd.down");
      FORGE_CUDA_CHECK(cudaMemcpyAsync(x_next, L.x_mid, std::size_t(M * H) * sizeof(T),
                                       cudaMemcpyDeviceToDevice, st));
      gemm<T, T>(ctx_, false, true, M, H, I, 1.0f, act_, I, weight(l, 3), I, 1.0f, x_next, H);
      if (lora_on_) {
        gemm<T, T>(ctx_, false, true, M, r, I, 1.0f, act_, I, A(l, llama_proj::down), I, 0.0f,
                   L.t_d, r);
        lora_up(M, H, L.t_d, r, B(l, llama_proj::down), x_next, H);
      }
    }
    phase("head");
    rmsnorm_forward<T>(ctx_, M, H, x_final_, final_norm_.data(), d_.rms_eps, hf_, rf_);

    // ---- vocabulary head and cross-entropy, in row chunks; dL/dhf follows each chunk
    for (std::int64_t r0 = 0; r0 < M; r0 += chunk_) {
      const std::int64_t rows = std::min(chunk_, M - r0);
      gemm<T, T>(ctx_, false, true, rows, V, H, 1.0f, hf_ + r0 * H, H, head_, H, 0.0f, logits_, V);
      if (logits_out) copy_logits(rows, logits_out + r0 * V);
      if (!has_targets) continue;
      detail::ce_inplace_kernel<T><<<unsigned(rows), V >= 8192 ? 1024u : 256u, 0, st>>>(
          V, logits_, targets_ + r0, row_w_ + r0, backward, row_loss_ + r0);
      FORGE_CUDA_CHECK_LAUNCH("ce_inplace_kernel");
      if (backward)
        gemm<T, T>(ctx_, false, false, rows, H, V, 1.0f, logits_, V, head_, H, 0.0f, dhf_ + r0 * H,
                   H);
      // dW_lm += dZᵀ·h_f (into the embedding's gradient when tied)
      if (backward && o_.full)
        gemm<T, float>(ctx_, true, false, V, H, rows, 1.0f, logits_, V, hf_ + r0 * H, H, 1.0f,
                       fgrad(tied_ ? llama_tensor::embed : llama_tensor::lm_head, 0), H);
    }
    if (has_targets) {
      detail::loss_sum_kernel<<<1, 256, 0, st>>>(M, row_loss_, row_w_, loss_);
      FORGE_CUDA_CHECK_LAUNCH("loss_sum_kernel");
      detail::sequence_logp_kernel<<<unsigned(batch), 256, 0, st>>>(seq, row_loss_, seq_logp_);
      FORGE_CUDA_CHECK_LAUNCH("sequence_logp_kernel");
    }
    if (backward) backward_pass(M, ad, rope_total, heads_total, mlp_total);
  }

  std::int64_t attention_blocks(std::int64_t seq) const {
    return o_.attention_blocks > 0 ? o_.attention_blocks : causal_attention_dims::auto_blocks(seq);
  }

  void copy_logits(std::int64_t rows, float* out) {
    const std::size_t n = std::size_t(rows * d_.vocab);
    std::vector<T> h(n);
    FORGE_CUDA_CHECK(
        cudaMemcpyAsync(h.data(), logits_, n * sizeof(T), cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.synchronize();
    for (std::size_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<T, float>)
        out[i] = h[i];
      else
        out[i] = __bfloat162float(h[i]);
    }
  }

  void backward_pass(std::int64_t M, const causal_attention_dims& ad, int rope_total,
                     int heads_total, int mlp_total) {
    const std::int64_t H = d_.hidden, I = d_.intermediate, r = o_.rank, D = d_.head_dim;
    const bool full = o_.full, lo = lora_on_;
    using W_ = llama_tensor;
    cudaStream_t st = ctx_.stream();
    rmsnorm_backward<T>(ctx_, M, H, x_final_, final_norm_.data(), rf_, dhf_, dx_,
                        full ? fgrad(W_::final_norm, 0) : nullptr, false);
    for (std::int64_t l = d_.layers - 1; l >= 0; --l) {
      auto& L = saved_[std::size_t(l)];
      auto& W = layers_[std::size_t(l)];
      phase("bwd.down");
      // MLP: dx is dL/dx⁺, which is also the gradient of the down projection's output.
      detail::swiglu_fused_kernel<T>
          <<<detail::grid_1d(mlp_total), 256, 0, st>>>(mlp_total, int(I), L.gu, act_);
      FORGE_CUDA_CHECK_LAUNCH("swiglu_fused_kernel");
      if (lo) {
        lora_back(M, H, dx_, H, L.t_d, r, B(l, llama_proj::down), dB(l, llama_proj::down), dt_);
        gemm<T, float>(ctx_, true, false, r, I, M, 1.0f, dt_, r, act_, I, 1.0f,
                       dA(l, llama_proj::down), I);
      }
      // dW_down += dxᵀ·act
      if (full)
        gemm<T, float>(ctx_, true, false, H, I, M, 1.0f, dx_, H, act_, I, 1.0f, fgrad(W_::down, l),
                       I);
      gemm<T, T>(ctx_, false, false, M, I, H, 1.0f, dx_, H, weight(l, 3), I, 0.0f, dact_, I);
      if (lo)
        gemm<T, T>(ctx_, false, false, M, I, r, 1.0f, dt_, r, A(l, llama_proj::down), I, 1.0f,
                   dact_, I);
      phase("bwd.swiglu");
      detail::swiglu_fused_backward_kernel<T>
          <<<detail::grid_1d(mlp_total), 256, 0, st>>>(mlp_total, int(I), L.gu, dact_, dgu_);
      FORGE_CUDA_CHECK_LAUNCH("swiglu_fused_backward_kernel");
      phase("bwd.gate_up");
      if (lo) {
        lora_back(M, I, dgu_, 2 * I, L.t_gu, 2 * r, B(l, llama_proj::gate), dB(l, llama_proj::gate),
                  dt_);
        lora_back(M, I, dgu_ + I, 2 * I, L.t_gu + r, 2 * r, B(l, llama_proj::up),
                  dB(l, llama_proj::up), dt_ + r);
        gemm<T, float>(ctx_, true, false, 2 * r, H, M, 1.0f, dt_, 2 * r, L.h2, H, 1.0f,
                       dA(l, llama_proj::gate), H);
      }
      // dW_gate|up += d(gate|up)ᵀ·h₂ (the two weights are stacked as the product reads them)
      if (full)
        gemm<T, float>(ctx_, true, false, 2 * I, H, M, 1.0f, dgu_, 2 * I, L.h2, H, 1.0f,
                       fgrad(W_::gate, l), H);
      gemm<T, T>(ctx_, false, false, M, H, 2 * I, 1.0f, dgu_, 2 * I, weight(l, 2), H, 0.0f, dh_, H);
      if (lo)
        gemm<T, T>(ctx_, false, false, M, H, 2 * r, 1.0f, dt_, 2 * r, A(l, llama_proj::gate), H,
                   1.0f, dh_, H);
      rmsnorm_backward<T>(ctx_, M, H, L.x_mid, W.post_norm.data(), L.r2, dh_, dx_,
                          full ? fgrad(W_::post_norm, l) : nullptr, true);
      phase("bwd.o");
      // Attention: dx is now dL/dx', the gradient of the output projection's output too.
      if (lo) {
        lora_back(M, H, dx_, H, L.t_o, r, B(l, llama_proj::o), dB(l, llama_proj::o), dt_);
        gemm<T, float>(ctx_, true, false, r, nq_, M, 1.0f, dt_, r, L.o, nq_, 1.0f,
                       dA(l, llama_proj::o), nq_);
      }
      if (full)
        gemm<T, float>(ctx_, true, false, H, nq_, M, 1.0f, dx_, H, L.o, nq_, 1.0f, fgrad(W_::o, l),
                       nq_);
      gemm<T, T>(ctx_, false, false, M, nq_, H, 1.0f, dx_, H, weight(l, 1), nq_, 0.0f, datt_, nq_);
      if (lo)
        gemm<T, T>(ctx_, false, false, M, nq_, r, 1.0f, dt_, r, A(l, llama_proj::o), nq_, 1.0f,
                   datt_, nq_);
      detail::heads_kernel<T, false><<<detail::grid_1d(heads_total), 256, 0, st>>>(
          heads_total, detail::q_layout(ad), int(D), datt_, att_);
      FORGE_CUDA_CHECK_LAUNCH("heads_kernel");
      phase("bwd.attention");
      causal_attention_backward<T>(ctx_, ad, L.q, L.k, L.v, att_, dq_, dk_, dv_, scores_, probs_);
      phase("bwd.rope");
      detail::qkv_rope_kernel<T, true><<<detail::grid_1d(rope_total), 256, 0, st>>>(
          rope_total, detail::q_layout(ad), int(D), qkv_, dq_, dk_, dv_, cos_.data(), sin_.data());
      FORGE_CUDA_CHECK_LAUNCH("qkv_rope_kernel");
      phase("bwd.qkv");
      if (lo) {
        lora_back(M, nq_, qkv_, nqkv_, L.t_qkv, 3 * r, B(l, llama_proj::q), dB(l, llama_proj::q),
                  dt_);
        lora_back(M, nkv_, qkv_ + nq_, nqkv_, L.t_qkv + r, 3 * r, B(l, llama_proj::k),
                  dB(l, llama_proj::k), dt_ + r);
        lora_back(M, nkv_, qkv_ + nq_ + nkv_, nqkv_, L.t_qkv + 2 * r, 3 * r, B(l, llama_proj::v),
                  dB(l, llama_proj::v), dt_ + 2 * r);
        gemm<T, float>(ctx_, true, false, 3 * r, H, M, 1.0f, dt_, 3 * r, L.h1, H, 1.0f,
                       dA(l, llama_proj::q), H);
      }
      // dW_q|k|v += d(q|k|v)ᵀ·h₁ (stacked)
      if (full)
        gemm<T, float>(ctx_, true, false, nqkv_, H, M, 1.0f, qkv_, nqkv_, L.h1, H, 1.0f,
                       fgrad(W_::q, l), H);
      gemm<T, T>(ctx_, false, false, M, H, nqkv_, 1.0f, qkv_, nqkv_, weight(l, 0), H, 0.0f, dh_, H);
      if (lo)
        gemm<T, T>(ctx_, false, false, M, H, 3 * r, 1.0f, dt_, 3 * r, A(l, llama_proj::q), H, 1.0f,
                   dh_, H);
      rmsnorm_backward<T>(ctx_, M, H, L.x, W.input_norm.data(), L.r1, dh_, dx_,
                          full ? fgrad(W_::input_norm, l) : nullptr, true);
    }
    if (full) {
      phase("bwd.embed");
      // dx is dL/dx⁰: the embedding rows of the batch's tokens.
      detail::embed_backward_kernel<T>
          <<<unsigned((H + 255) / 256), 256, 0, st>>>(M, H, ids_, dx_, fgrad(W_::embed, 0));
      FORGE_CUDA_CHECK_LAUNCH("embed_backward_kernel");
    }
  }

  // ---- full fine-tuning state: one f32 segment per weight tensor, in the order
  // embed, final_norm, lm_head, then per layer input_norm, post_norm, q, k, v, o, gate, up,
  // down (q|k|v and gate|up adjacent, as the stacked products read them).
  struct full_tensor {
    std::int64_t offset = 0, n = 0;
    T* copy = nullptr;  // the T weight the products read
    bool trainable = true;
  };
  static std::int64_t full_index(llama_tensor t, std::int64_t layer) {
    return per_layer(t) ? 3 + layer * 9 + (int(t) - int(llama_tensor::input_norm)) : int(t);
  }
  void full_check(llama_tensor t, std::int64_t layer, const char* where) const {
    require(o_.full, {.what = "weights are trained only by a full fine-tuning trainer",
                      .place = where,
                      .expected = "lora_trainer_options.full",
                      .found = "a LoRA trainer"});
    if (per_layer(t)) check_layer(layer, where);
    require(ft_[std::size_t(full_index(t, layer))].n > 0,
            {.what = "the head is tied to the embedding",
             .place = where,
             .expected = "llama_tensor::embed",
             .found = "llama_tensor::lm_head"});
  }
  const full_tensor& ft(llama_tensor t, std::int64_t layer) const {
    return ft_[std::size_t(full_index(t, layer))];
  }
  float* fgrad(llama_tensor t, std::int64_t layer) { return fgrad_.data() + ft(t, layer).offset; }
  void plan_full(const llama_host_weights& w) {
    const std::int64_t H = d_.hidden, I = d_.intermediate;
    ft_.assign(std::size_t(3 + 9 * d_.layers), {});
    std::vector<const float*> host(ft_.size(), nullptr);
    std::int64_t at = 0;
    auto add = [&](llama_tensor t, std::int64_t layer, T* copy, const float* h) {
      const auto i = std::size_t(full_index(t, layer));
      ft_[i] = {.offset = at, .n = tensor_size(t), .copy = copy, .trainable = true};
      host[i] = h;
      at += ft_[i].n;
    };
    using W_ = llama_tensor;
    add(W_::embed, 0, embed_.data(), w.embed);
    add(W_::final_norm, 0, final_norm_.data(), w.final_norm);
    add(W_::lm_head, 0, tied_ ? nullptr : lm_head_.data(), w.lm_head);
    for (std::int64_t l = 0; l < d_.layers; ++l) {
      auto& L = layers_[std::size_t(l)];
      const auto& src = w.layers[std::size_t(l)];
      T* qkv = L.base[0].dense.data();
      T* gu = L.base[2].dense.data();
      add(W_::input_norm, l, L.input_norm.data(), src.input_norm);
      add(W_::post_norm, l, L.post_norm.data(), src.post_norm);
      add(W_::q, l, qkv, src.q);
      add(W_::k, l, qkv + nq_ * H, src.k);
      add(W_::v, l, qkv + (nq_ + nkv_) * H, src.v);
      add(W_::o, l, L.base[1].dense.data(), src.o);
      add(W_::gate, l, gu, src.gate);
      add(W_::up, l, gu + I * H, src.up);
      add(W_::down, l, L.base[3].dense.data(), src.down);
    }
    const auto n = std::size_t(at);
    fmaster_ = ctx_.alloc<float>(n);
    fgrad_ = ctx_.alloc<float>(n);
    fm_ = ctx_.alloc<float>(n);
    fv_ = ctx_.alloc<float>(n);
    for (auto* b : {&fgrad_, &fm_, &fv_})
      FORGE_CUDA_CHECK(cudaMemsetAsync(b->data(), 0, n * sizeof(float), ctx_.stream()));
    for (std::size_t i = 0; i < ft_.size(); ++i)
      if (ft_[i].n > 0)
        FORGE_CUDA_CHECK(cudaMemcpyAsync(fmaster_.data() + ft_[i].offset, host[i],
                                         std::size_t(ft_[i].n) * sizeof(float),
                                         cudaMemcpyHostToDevice, ctx_.stream()));
    ctx_.synchronize();
  }
  void full_write(device_buffer<float>& buf, llama_tensor t, std::int64_t layer,
                  const float* host) {
    full_check(t, layer, "lora_trainer::set_weight");
    const auto& f = ft(t, layer);
    ctx_.synchronize();  // queued steps may still update the buffer
    FORGE_CUDA_CHECK(cudaMemcpyAsync(buf.data() + f.offset, host, std::size_t(f.n) * sizeof(float),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    ctx_.synchronize();
  }
  void full_read(const device_buffer<float>& buf, llama_tensor t, std::int64_t layer,
                 float* host) const {
    full_check(t, layer, "lora_trainer::get_weight");
    const auto& f = ft(t, layer);
    ctx_.synchronize();
    FORGE_CUDA_CHECK(cudaMemcpy(host, buf.data() + f.offset, std::size_t(f.n) * sizeof(float),
                                cudaMemcpyDeviceToHost));
  }
  // Σ g² over the trainable weights: fixed chunks of 2^20 values, one block each, then the
  // chunks in order (reproducible, and parallel enough for a billion parameters).
  double full_grad_norm() {
    if (chunks_.empty()) {
      constexpr std::int64_t piece = std::int64_t(1) << 20;
      for (const auto& f : ft_)
        if (f.trainable)
          for (std::int64_t i = 0; i < f.n; i += piece)
            chunks_.push_back(f.offset + i), chunks_.push_back(std::min(piece, f.n - i));
      if (chunks_.empty()) chunks_ = {0, 0};
      chunk_dev_ = device_buffer<std::int64_t>(chunks_.data(), chunks_.size(), &ctx_.pool());
      parts_ = ctx_.alloc<double>(chunks_.size() / 2);
    }
    const auto nchunks = std::int64_t(chunks_.size() / 2);
    detail::chunk_sum_squares_kernel<<<unsigned(nchunks), 256, 0, ctx_.stream()>>>(
        chunk_dev_.data(), fgrad_.data(), parts_.data());
    FORGE_CUDA_CHECK_LAUNCH("chunk_sum_squares_kernel");
    detail::sum_doubles_kernel<<<1, 256, 0, ctx_.stream()>>>(nchunks, parts_.data(), norm_.data());
    FORGE_CUDA_CHECK_LAUNCH("sum_doubles_kernel");
    double s = 0.0;
    FORGE_CUDA_CHECK(
        cudaMemcpyAsync(&s, norm_.data(), sizeof s, cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.synchronize();
    return std::sqrt(s);
  }

  void phase(const char* name) {
    if (hook_) hook_(name);
  }

  context& ctx_;
  std::function<void(const char*)> hook_{};
  bool lora_on_ = true;
  std::vector<float> row_w_host_{};
  llama_dims d_;
  lora_trainer_options o_;
  float scale_ = 1.0f;
  std::int64_t nq_ = 0, nkv_ = 0, nqkv_ = 0, per_layer_ = 0, chunk_ = 1, steps_ = 0;
  device_buffer<T> embed_{}, final_norm_{}, lm_head_{}, wbuf_{};
  const T* head_ = nullptr;  // the head's weight: lm_head_, or the embedding when tied
  bool tied_ = false;
  std::vector<full_tensor> ft_{};
  device_buffer<float> fmaster_{}, fgrad_{}, fm_{}, fv_{};
  std::vector<std::int64_t> chunks_{};  // grad_norm's (offset, count) pieces
  device_buffer<std::int64_t> chunk_dev_{};
  device_buffer<double> parts_{};
  std::vector<layer_weights> layers_{};
  device_buffer<float> master_{}, grad_{}, m_{}, v_{}, cos_{}, sin_{};
  device_buffer<double> norm_{};  // grad_norm's result
  device_buffer<T> copy_{};
  std::unique_ptr<arena> acts_{};
  std::vector<layer_acts> saved_{};
  T *x_final_ = nullptr, *hf_ = nullptr, *dhf_ = nullptr, *qkv_ = nullptr, *att_ = nullptr;
  T *act_ = nullptr, *dact_ = nullptr, *datt_ = nullptr, *dgu_ = nullptr, *dx_ = nullptr,
    *dh_ = nullptr;
  T *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr, *dt_ = nullptr, *probs_ = nullptr;
  T* logits_ = nullptr;
  float *rf_ = nullptr, *scores_ = nullptr, *row_loss_ = nullptr;
  std::int64_t *ids_ = nullptr, *targets_ = nullptr;
  float* row_w_ = nullptr;
  double *loss_ = nullptr, *seq_logp_ = nullptr;
  std::map<std::tuple<std::int64_t, std::int64_t, bool, bool>, cudaGraphExec_t> graphs_{};
};

}  // namespace forge::cuda
