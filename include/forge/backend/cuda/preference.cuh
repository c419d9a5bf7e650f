#pragma once
// Reductions for preference training on the GPU: per-sequence log-likelihoods from logits,
// their gradient, and the pairwise preference losses on them.
//
// sequence_logprobs:  ℓ_b = Σ_{t: y_bt ≠ −100} log softmax(z_bt)[y_bt]   (logits [B·T, V])
//   backward: dz_bt = g_b · (onehot(y_bt) − softmax(z_bt)) for kept tokens, 0 otherwise.
// preference_loss, with policy/reference log-likelihoods of the chosen (c) and rejected (r)
// answers and u = (π_c − ρ_c) − (π_r − ρ_r), h = β·u, mean over the B pairs:
//   dpo   (Rafailov et al. 2023, eq. 7; label smoothing ε as in cDPO):
//         L = −(1 − ε)·log σ(h) − ε·log σ(−h)
//   ipo   (Azar et al. 2023, eq. 17):  L = (u − 1/(2β))²
//   hinge (SLiC, Zhao et al. 2023):    L = max(0, 1 − h)
// Gradients are with respect to π_c and π_r (the reference is frozen): dπ_c = −dπ_r = ∂L/∂u / B.
// Sums run in a fixed order (no atomics), so results are reproducible.

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/cross_entropy.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// Which pairwise preference loss.
enum class preference_kind { dpo, ipo, hinge };

/// Preference-loss hyperparameters.
struct preference_options {
  preference_kind kind = preference_kind::dpo;
  float beta = 0.1f;             ///< β, the strength of the implicit KL constraint
  float label_smoothing = 0.0f;  ///< ε of cDPO (dpo only)
};

namespace detail {

template <class T>
__global__ void token_logprob_kernel(std::int64_t vocab, const T* __restrict__ logits,
                                     const std::int64_t* __restrict__ targets,
                                     float* __restrict__ out) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const std::int64_t y = targets[t];
  if (y < 0 || y >= vocab) {  // ignored (or out of range: reported by the launcher)
    if (threadIdx.x == 0) out[t] = 0.0f;
    return;
  }
  const float lse = row_logsumexp(logits + t * vocab, vocab, scratch);
  if (threadIdx.x == 0) out[t] = to_f32(logits[t * vocab + y]) - lse;
}

__global__ void sequence_sum_kernel(std::int64_t batch, std::int64_t len,
                                    const float* __restrict__ tok, float* __restrict__ seq) {
  const std::int64_t b = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  double s = 0.0;
  for (std::int64_t t = 0; t < len; ++t) s += double(tok[b * len + t]);
  seq[b] = float(s);
}

template <class T>
__global__ void sequence_logprobs_backward_kernel(std::int64_t len, std::int64_t vocab,
                                                  const T* __restrict__ logits,
                                                  const std::int64_t* __restrict__ targets,
                                                  const float* __restrict__ g,
                                                  T* __restrict__ dlogits) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const std::int64_t y = targets[t];
  const T* z = logits + t * vocab;
  T* dz = dlogits + t * vocab;
  if (y < 0 || y >= vocab) {
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) dz[i] = from_f32<T>(0.0f);
    return;
  }
  const float lse = row_logsumexp(z, vocab, scratch);
  const float gb = g[t / len];
  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    dz[i] = from_f32<T>(gb * ((i == y ? 1.0f : 0.0f) - expf(to_f32(z[i]) - lse)));
}

__global__ void preference_loss_kernel(std::int64_t batch, preference_options o,
                                       const float* __restrict__ pc, const float* __restrict__ pr,
                                       const float* __restrict__ rc, const float* __restrict__ rr,
                                       float* __restrict__ loss, float* __restrict__ dpc,
                                       float* __restrict__ dpr) {
  __shared__ double part[256];
  double total = 0.0;
  for (std::int64_t b = threadIdx.x; b < batch; b += blockDim.x) {
    const double u = (double(pc[b]) - double(rc[b])) - (double(pr[b]) - double(rr[b]));
    const double h = double(o.beta) * u;
    double l = 0.0, du = 0.0;
    switch (o.kind) {
      case preference_kind::dpo: {
        const double eps = o.label_smoothing;
        // log σ(h) = −softplus(−h), computed stably.
        const double sp_neg = h > 0 ? log1p(exp(-h)) : -h + log1p(exp(h));  // softplus(−h)
        const double sp_pos = sp_neg + h;                                   // softplus(h)
        l = (1.0 - eps) * sp_neg + eps * sp_pos;
        const double sig = 1.0 / (1.0 + exp(-h));
        du = double(o.beta) * (-(1.0 - eps) * (1.0 - sig) + eps * sig);
        break;
      }
      case preference_kind::ipo: {
        const double d = u - 1.0 / (2.0 * double(o.beta));
        l = d * d;
        du = 2.0 * d;
        break;
      }
      case preference_kind::hinge:
        l = h < 1.0 ? 1.0 - h : 0.0;
        du = h < 1.0 ? -double(o.beta) : 0.0;
        break;
    }
    total += l;
    if (dpc) dpc[b] = float(du / double(batch));
    if (dpr) dpr[b] = float(-du / double(batch));
  }
  part[threadIdx.x] = total;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (int(threadIdx.x) < off) part[threadIdx.x] += part[threadIdx.x + off];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = float(part[0] / double(batch));
}

}  // namespace detail

/// logp[b] = Σ_t log softmax(logits[b, t])[y_bt] over kept tokens, on ctx's stream. logits
/// [batch·len, vocab], targets [batch·len] (−100 = ignored), logp [batch] f32; tok [batch·len]
/// f32 is workspace.
template <class T>
void sequence_logprobs(context& ctx, std::int64_t batch, std::int64_t len, std::int64_t vocab,
                       const T* logits, const std::int64_t* targets, float* tok, float* logp) {
  if (batch <= 0 || len <= 0) return;
  detail::token_logprob_kernel<T>
      <<<unsigned(batch * len), vocab >= 8192 ? 1024u : 256u, 0, ctx.stream()>>>(vocab, logits,
                                                                                 targets, tok);
  FORGE_CUDA_CHECK_LAUNCH("token_logprob_kernel");
  detail::sequence_sum_kernel<<<unsigned((batch + 127) / 128), 128, 0, ctx.stream()>>>(batch, len,
                                                                                       tok, logp);
  FORGE_CUDA_CHECK_LAUNCH("sequence_sum_kernel");
}

/// dlogits = g[b]·(onehot − softmax) for kept tokens (0 elsewhere), the gradient of
/// Σ_b g[b]·logp[b]; on ctx's stream.
template <class T>
void sequence_logprobs_backward(context& ctx, std::int64_t batch, std::int64_t len,
                                std::int64_t vocab, const T* logits, const std::int64_t* targets,
                                const float* g, T* dlogits) {
  if (batch <= 0 || len <= 0) return;
  detail::sequence_logprobs_backward_kernel<T>
      <<<unsigned(batch * len), vocab >= 8192 ? 1024u : 256u, 0, ctx.stream()>>>(
          len, vocab, logits, targets, g, dlogits);
  FORGE_CUDA_CHECK_LAUNCH("sequence_logprobs_backward_kernel");
}

/// Mean preference loss over `batch` pairs into *loss (device f32), with dπ_c, dπ_r (device,
/// [batch], may be null), on ctx's stream.
inline void preference_loss(context& ctx, std::int64_t batch, const preference_options& o,
                            const float* policy_chosen, const float* policy_rejected,
                            const float* ref_chosen, const float* ref_rejected, float* loss,
                            float* d_chosen, float* d_rejected) {
  require(batch > 0 && o.beta > 0.0f && o.label_smoothing >= 0.0f && o.label_smoothing < 0.5f,
          {.what = "bad preference-loss arguments",
           .place = "preference_loss",
           .expected = "batch > 0, beta > 0, 0 <= label_smoothing < 0.5",
           .found = "batch " + std::to_string(batch) + ", beta " + std::to_string(o.beta) +
                    ", label_smoothing " + std::to_string(o.label_smoothing)});
  detail::preference_loss_kernel<<<1, 256, 0, ctx.stream()>>>(
      batch, o, policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss, d_chosen,
      d_rejected);
  FORGE_CUDA_CHECK_LAUNCH("preference_loss_kernel");
}

}  // namespace forge::cuda
