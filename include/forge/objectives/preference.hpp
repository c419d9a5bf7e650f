#pragma once
// Preference objectives: sequence log-probabilities of completions under a causal LM, their
// backward through the model, and the offline preference losses exactly as TRL defines them.
//
// Sequence log-probability of a completion y after a prompt x (prompt tokens masked):
//   ℓ(y|x) = Σ_{t ∈ completion} log softmax(z_{t−1})[y_t]            (summed, "logps")
//   ℓ̄(y|x) = ℓ(y|x) / |y|                                              (average variant)
// Backward: ∂ℓ/∂z_{t−1} = onehot(y_t) − softmax(z_{t−1}) for completion positions, 0 elsewhere;
// a loss's dL/dℓ_b scales row b's terms (sequence_logprobs_backward), and the model backward
// (model::backward) takes it from there.
//
// Losses over B pairs, with policy π and reference ρ summed log-probs of chosen (c) and
// rejected (r) completions, u = (π_c − ρ_c) − (π_r − ρ_r), h = β·u, mean over pairs:
//   sigmoid (DPO, Rafailov et al. 2023 eq. 7), with label smoothing ε (cDPO, Mitchell 2023):
//        L = −(1−ε)·log σ(h) − ε·log σ(−h)
//   robust (Chowdhury et al. 2024, eq. 6):  L = (−(1−ε)·log σ(h) + ε·log σ(−h)) / (1 − 2ε)
//   hinge  (SLiC, Zhao et al. 2023):        L = max(0, 1 − h)
//   ipo    (Azar et al. 2023, eq. 17), per-token averaged log-ratios as TRL does:
//        ū = (π_c − ρ_c)/|y_c| − (π_r − ρ_r)/|y_r|,   L = (ū − 1/(2β))²
//   simpo  (Meng et al. 2024, eq. 6; no reference), averaged log-probs, γ the target margin:
//        s = π̄_c − π̄_r − γ/β,   L = −(1−ε)·log σ(βs) − ε·log σ(−βs)  [+ α·NLL(chosen)]
//   orpo   (Hong et al. 2024, eqs. 4–7; no reference), averaged log-probs a = π̄:
//        lo = (a_c − a_r) − (log(1−e^{a_c}) − log(1−e^{a_r})),
//        L = NLL(chosen) − β·mean log σ(lo),   NLL = −Σ_b π_c,b / Σ_b |y_c,b|
// Rewards reported as TRL logs them: β·(π − ρ) (summed log-ratios, IPO included) for the
// reference methods, β·π̄ for simpo and orpo.
//   kto    (Ethayarajh et al. 2024, eq. 7), unpaired completions with labels:
//        z = clamp(mean_k(π_KL,k − ρ_KL,k), 0)   (a constant: no gradient flows through it)
//        desirable:    L_i = w_d·(1 − σ(β·((π_i − ρ_i) − z)))
//        undesirable:  L_i = w_u·(1 − σ(β·(z − (π_i − ρ_i))))
//        L = mean_i L_i;  the KL rows pair each prompt with another example's completion.
// TRL sources read for these definitions (huggingface/trl at f2cd577):
//   trl/trainer/dpo_trainer.py  _compute_loss, lines 1380–1480 (sigmoid, hinge, ipo with its
//     length normalisation, robust; label-smoothed sigmoid = cDPO of earlier TRL versions)
//   trl/trainer/kto_trainer.py  _compute_loss, lines 1552–1590 (KL clamp, detached; losses),
//     line 1106 (KL completions: the batch's completions rotated by one)
//   trl/experimental/cpo/cpo_trainer.py  cpo_loss lines 700–748 (simpo), 836–889 (average
//     log-probs for simpo, loss = mean + cpo_alpha·NLL)
//   trl/experimental/orpo/orpo_trainer.py  odds_ratio_loss lines 690–705, loss = NLL − mean
//     (line 851)
// Every loss returns its value, dL/dπ (w.r.t. the SUMMED log-probs the model produces; the
// average variants apply the 1/|y| chain rule here) and the per-example rewards.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/model/forward.hpp"

namespace forge::objectives {

// ---------------------------------------------------------------- sequences and log-probs

/// A prompt and one completion, as token ids.
struct completion_sequence {
  std::span<const std::int32_t> prompt{};
  std::span<const std::int32_t> completion{};
};

/// Right-padded rows of prompt + completion; targets[b·seq + t] is the token that logits at
/// (b, t) must predict when it belongs to the completion, else -100.
struct sequence_batch {
  std::int64_t batch = 0, seq = 0;
  std::vector<std::int64_t> input_ids{}, attention_mask{}, targets{};
  std::vector<std::int64_t> completion_tokens{};  ///< [batch] |y_b|
  /// Real (non-padding) tokens of the batch.
  std::int64_t tokens() const {
    std::int64_t n = 0;
    for (auto v : attention_mask) n += v;
    return n;
  }
};

/// Builds one batch from `rows` (pad token `pad_id`). forge::error for an empty prompt or
/// completion (a completion needs a preceding token to be predicted from).
inline sequence_batch make_sequence_batch(std::span<const completion_sequence> rows,
                                          std::int32_t pad_id) {
  sequence_batch b;
  b.batch = std::int64_t(rows.size());
  require(b.batch > 0, {.what = "no sequences", .place = "make_sequence_batch"});
  for (std::size_t r = 0; r < rows.size(); ++r) {
    require(!rows[r].prompt.empty() && !rows[r].completion.empty(),
            {.what = "empty prompt or completion",
             .place = "row " + std::to_string(r),
             .expected = "at least one prompt and one completion token",
             .found = std::to_string(rows[r].prompt.size()) + " prompt, " +
                      std::to_string(rows[r].completion.size()) + " completion tokens"});
    b.seq = std::max<std::int64_t>(b.seq,
                                   std::int64_t(rows[r].prompt.size() + rows[r].completion.size()));
  }
  const auto n = std::size_t(b.batch * b.seq);
  b.input_ids.assign(n, pad_id);
  b.attention_mask.assign(n, 0);
  b.targets.assign(n, backend::ignore_index);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto P = std::int64_t(rows[r].prompt.size()), C = std::int64_t(rows[r].completion.size());
    auto* ids = b.input_ids.data() + std::int64_t(r) * b.seq;
    for (std::int64_t t = 0; t < P; ++t) ids[t] = rows[r].prompt[std::size_t(t)];
    for (std::int64_t t = 0; t < C; ++t) ids[P + t] = rows[r].completion[std::size_t(t)];
    for (std::int64_t t = 0; t < P + C; ++t) b.attention_mask[std::int64_t(r) * b.seq + t] = 1;
    // logits at P−1+k predict completion token k
    for (std::int64_t k = 0; k < C; ++k)
      b.targets[std::int64_t(r) * b.seq + P - 1 + k] = rows[r].completion[std::size_t(k)];
    b.completion_tokens.push_back(C);
  }
  return b;
}

/// Per-position log softmax(z_t)[target_t] (0 where the target is -100), in double, from
/// the logits of the last forward over `b` (logits_for::all). [batch·seq]
template <class T>
std::vector<double> token_logprobs(const model::workspace<T>& ws, const sequence_batch& b) {
  const auto z = ws.logits();
  const std::int64_t V = ws.vocab_;
  require(ws.logit_rows() == b.batch * b.seq,
          {.what = "logits do not match the sequence batch",
           .place = "token_logprobs",
           .expected = std::to_string(b.batch * b.seq) + " rows of logits (logits_for::all)",
           .found = std::to_string(ws.logit_rows())});
  std::vector<double> out(std::size_t(b.batch * b.seq), 0.0);
  for (std::int64_t t = 0; t < b.batch * b.seq; ++t) {
    const std::int64_t y = b.targets[std::size_t(t)];
    if (y == backend::ignore_index) continue;
    const T* row = z.data() + t * V;
    double mx = double(row[0]);
    for (std::int64_t i = 1; i < V; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (std::int64_t i = 0; i < V; ++i) s += std::exp(double(row[i]) - mx);
    out[std::size_t(t)] = double(row[y]) - mx - std::log(s);
  }
  return out;
}

/// Summed completion log-probs per row [batch] from per-position values.
inline std::vector<double> sum_rows(const sequence_batch& b, std::span<const double> tok) {
  std::vector<double> out(std::size_t(b.batch), 0.0);
  for (std::int64_t r = 0; r < b.batch; ++r)
    for (std::int64_t t = 0; t < b.seq; ++t) out[std::size_t(r)] += tok[std::size_t(r * b.seq + t)];
  return out;
}

/// Runs the model over `b` and returns the summed completion log-probs ℓ_b [batch]. With
/// `for_backward` the activations are kept for sequence_logprobs_backward + model::backward.
template <class T, class Bk>
std::vector<double> sequence_logprobs(Bk be, model::causal_lm<T>& m, model::workspace<T>& ws,
                                      const sequence_batch& b, bool for_backward = false,
                                      bool recompute = false) {
  model::forward(be, m, ws,
                 {.batch = b.batch,
                  .seq = b.seq,
                  .input_ids = b.input_ids,
                  .attention_mask = b.attention_mask},
                 {.for_backward = for_backward, .recompute = recompute});
  const auto tok = token_logprobs(ws, b);
  return sum_rows(b, tok);
}

/// Writes ws.dlogits() for the loss L with per-position gradient g_t = dL/dlog p_t:
/// dz_t = g_t·(onehot(y_t) − softmax(z_t)) at completion positions, 0 elsewhere.
template <class T>
void token_logprobs_backward(model::workspace<T>& ws, const sequence_batch& b,
                             std::span<const double> g) {
  require(std::int64_t(g.size()) == b.batch * b.seq, {.what = "gradient size",
                                                      .place = "token_logprobs_backward",
                                                      .expected = std::to_string(b.batch * b.seq),
                                                      .found = std::to_string(g.size())});
  const std::int64_t V = ws.vocab_;
  const auto z = ws.logits();
  auto dz = ws.dlogits();
  require(!dz.empty(), {.what = "backward needs a forward with for_backward = true",
                        .place = "token_logprobs_backward"});
  for (std::int64_t t = 0; t < b.batch * b.seq; ++t) {
    T* d = dz.data() + t * V;
    const std::int64_t y = b.targets[std::size_t(t)];
    if (y == backend::ignore_index || g[std::size_t(t)] == 0.0) {
      std::fill(d, d + V, T(0));
      continue;
    }
    const T* row = z.data() + t * V;
    double mx = double(row[0]);
    for (std::int64_t i = 1; i < V; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (std::int64_t i = 0; i < V; ++i) s += std::exp(double(row[i]) - mx);
    const double lse = mx + std::log(s), gt = g[std::size_t(t)];
    for (std::int64_t i = 0; i < V; ++i) d[i] = T(-gt * std::exp(double(row[i]) - lse));
    d[y] += T(gt);
  }
}

/// ws.dlogits() for dL/dℓ_b = g[b] (one value per row of `b`).
template <class T>
void sequence_logprobs_backward(model::workspace<T>& ws, const sequence_batch& b,
                                std::span<const double> g) {
  require(std::int64_t(g.size()) == b.batch, {.what = "gradient size",
                                              .place = "sequence_logprobs_backward",
                                              .expected = std::to_string(b.batch),
                                              .found = std::to_string(g.size())});
  std::vector<double> per(std::size_t(b.batch * b.seq), 0.0);
  for (std::int64_t r = 0; r < b.batch; ++r)
    for (std::int64_t t = 0; t < b.seq; ++t) per[std::size_t(r * b.seq + t)] = g[std::size_t(r)];
  token_logprobs_backward(ws, b, per);
}

// ---------------------------------------------------------------- pairwise losses

/// Which pairwise loss (TRL's loss_type names; cDPO is sigmoid with label_smoothing > 0).
enum class pair_loss { sigmoid, robust, hinge, ipo, simpo, orpo };

/// The name TRL uses for a loss.
inline std::string_view name_of(pair_loss k) {
  switch (k) {
    case pair_loss::sigmoid:
      return "sigmoid";
    case pair_loss::robust:
      return "robust";
    case pair_loss::hinge:
      return "hinge";
    case pair_loss::ipo:
      return "ipo";
    case pair_loss::simpo:
      return "simpo";
    case pair_loss::orpo:
      return "orpo";
  }
  return "?";
}

/// True when the loss uses a reference model (all but simpo and orpo).
inline bool needs_reference(pair_loss k) {
  return k != pair_loss::simpo && k != pair_loss::orpo;
}

/// Pairwise-loss hyperparameters (TRL's defaults: β 0.1, ε 0, γ 0.5 for SimPO).
struct pair_loss_options {
  pair_loss kind = pair_loss::sigmoid;
  double beta = 0.1;             ///< β (λ of ORPO)
  double label_smoothing = 0.0;  ///< ε: sigmoid (cDPO), robust, simpo; in [0, 0.5)
  double simpo_gamma = 0.5;      ///< γ, SimPO's target reward margin
  double sft_weight = 0.0;  ///< α: weight of NLL(chosen) added (cpo_alpha / rpo_alpha); not orpo
};

/// Summed policy / reference log-probs and completion lengths of B pairs. The reference
/// spans may be empty for simpo and orpo.
struct pair_logps {
  std::span<const double> policy_chosen{}, policy_rejected{};
  std::span<const double> ref_chosen{}, ref_rejected{};
  std::span<const std::int64_t> chosen_tokens{}, rejected_tokens{};
};

/// A loss over a batch: its mean value, dL/dπ per pair (w.r.t. the summed log-probs) and
/// the rewards (for margins and preference accuracy).
struct pair_loss_result {
  double loss = 0;
  std::vector<double> d_chosen{}, d_rejected{};
  std::vector<double> chosen_rewards{}, rejected_rewards{};
  /// Mean of chosen − rejected reward.
  double margin() const {
    double s = 0;
    for (std::size_t i = 0; i < chosen_rewards.size(); ++i)
      s += chosen_rewards[i] - rejected_rewards[i];
    return chosen_rewards.empty() ? 0.0 : s / double(chosen_rewards.size());
  }
  /// Fraction of pairs whose chosen reward is above the rejected one.
  double accuracy() const {
    double s = 0;
    for (std::size_t i = 0; i < chosen_rewards.size(); ++i)
      s += chosen_rewards[i] > rejected_rewards[i];
    return chosen_rewards.empty() ? 0.0 : s / double(chosen_rewards.size());
  }
};

namespace detail {
/// log σ(x) = −softplus(−x), stable for large |x|.
inline double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}
inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}
/// log(1 − eˣ) for x < 0 (Mächler 2012's log1mexp).
inline double log1mexp(double x) {
  return x > -0.6931471805599453 ? std::log(-std::expm1(x)) : std::log1p(-std::exp(x));
}
inline void require_finite(double v, const char* what, std::size_t i) {
  if (!std::isfinite(v))
    throw error({.what = "log-probability is not finite",
                 .place = std::string(what) + " of pair " + std::to_string(i),
                 .expected = "a finite log-probability",
                 .found = str(v)});
}
}  // namespace detail

/// The loss of `o.kind` over the pairs in `lp` (see the header comment for each formula).
/// forge::error on mismatched sizes, a non-finite log-prob (naming the pair), lengths < 1,
/// a missing reference where the loss needs one, or out-of-range hyperparameters.
inline pair_loss_result preference_loss(const pair_loss_options& o, const pair_logps& lp) {
  const std::size_t B = lp.policy_chosen.size();
  const bool ref = needs_reference(o.kind);
  require(B > 0 && lp.policy_rejected.size() == B && lp.chosen_tokens.size() == B &&
              lp.rejected_tokens.size() == B &&
              (!ref || (lp.ref_chosen.size() == B && lp.ref_rejected.size() == B)),
          {.what = "preference-loss inputs differ in size",
           .place = std::string("preference_loss (") + std::string(name_of(o.kind)) + ")",
           .expected = std::to_string(B) + " pairs in every input" +
                       (ref ? std::string(" (reference included)") : std::string()),
           .found = std::to_string(lp.policy_rejected.size()) + " rejected, " +
                    std::to_string(lp.ref_chosen.size()) + " reference"});
  require(
      o.beta > 0 && std::isfinite(o.beta),
      {.what = "beta must be positive", .place = "pair_loss_options.beta", .found = str(o.beta)});
  require(o.label_smoothing >= 0 && o.label_smoothing < 0.5,
          {.what = "label_smoothing out of range",
           .place = "pair_loss_options.label_smoothing",
           .expected = "in [0, 0.5)",
           .found = str(o.label_smoothing)});
  pair_loss_result r;
  r.d_chosen.assign(B, 0.0), r.d_rejected.assign(B, 0.0);
  r.chosen_rewards.assign(B, 0.0), r.rejected_rewards.assign(B, 0.0);
  const double beta = o.beta, eps = o.label_smoothing, inv_b = 1.0 / double(B);
  double total = 0;
  std::int64_t chosen_tokens_total = 0;
  for (std::size_t i = 0; i < B; ++i) {
    require(lp.chosen_tokens[i] >= 1 && lp.rejected_tokens[i] >= 1,
            {.what = "empty completion",
             .place = "pair " + std::to_string(i),
             .expected = ">= 1 completion token",
             .found = std::to_string(std::min(lp.chosen_tokens[i], lp.rejected_tokens[i]))});
    chosen_tokens_total += lp.chosen_tokens[i];
  }
  for (std::size_t i = 0; i < B; ++i) {
    const double pc = lp.policy_chosen[i], pr = lp.policy_rejected[i];
    detail::require_finite(pc, "policy chosen", i);
    detail::require_finite(pr, "policy rejected", i);
    double rc = 0, rr = 0;
    if (ref) {
      rc = lp.ref_chosen[i], rr = lp.ref_rejected[i];
      detail::require_finite(rc, "reference chosen", i);
      detail::require_finite(rr, "reference rejected", i);
    }
    const double nc = double(lp.chosen_tokens[i]), nr = double(lp.rejected_tokens[i]);
    double l = 0, dc = 0, dr = 0;  // dL_i/dπ_c, dL_i/dπ_r (per pair, before the 1/B mean)
    switch (o.kind) {
      case pair_loss::sigmoid:
      case pair_loss::robust:
      case pair_loss::hinge: {
        const double u = (pc - rc) - (pr - rr), h = beta * u;
        double du = 0;
        if (o.kind == pair_loss::sigmoid) {
          l = -(1 - eps) * detail::log_sigmoid(h) - eps * detail::log_sigmoid(-h);
          du = beta * (-(1 - eps) * (1 - detail::sigmoid(h)) + eps * detail::sigmoid(h));
        } else if (o.kind == pair_loss::robust) {
          l = (-(1 - eps) * detail::log_sigmoid(h) + eps * detail::log_sigmoid(-h)) / (1 - 2 * eps);
          du = beta * (-(1 - eps) * (1 - detail::sigmoid(h)) - eps * detail::sigmoid(h)) /
               (1 - 2 * eps);
        } else {
          l = h < 1 ? 1 - h : 0.0;
          du = h < 1 ? -beta : 0.0;
        }
        dc = du, dr = -du;
        r.chosen_rewards[i] = beta * (pc - rc), r.rejected_rewards[i] = beta * (pr - rr);
        break;
      }
      case pair_loss::ipo: {
        const double u = (pc - rc) / nc - (pr - rr) / nr, d = u - 1 / (2 * beta);
        l = d * d;
        dc = 2 * d / nc, dr = -2 * d / nr;
        r.chosen_rewards[i] = beta * (pc - rc), r.rejected_rewards[i] = beta * (pr - rr);
        break;
      }
      case pair_loss::simpo: {
        const double s = pc / nc - pr / nr - o.simpo_gamma / beta, h = beta * s;
        l = -(1 - eps) * detail::log_sigmoid(h) - eps * detail::log_sigmoid(-h);
        const double ds = beta * (-(1 - eps) * (1 - detail::sigmoid(h)) + eps * detail::sigmoid(h));
        dc = ds / nc, dr = -ds / nr;
        // α·NLL(chosen) with NLL = −Σ π_c / Σ|y_c| (a batch mean; added un-scaled by 1/B below)
        r.chosen_rewards[i] = beta * pc / nc, r.rejected_rewards[i] = beta * pr / nr;
        break;
      }
      case pair_loss::orpo: {
        const double ac = pc / nc, ar = pr / nr;
        require(ac < 0 && ar < 0, {.what = "ORPO needs log-probabilities below 0",
                                   .place = "pair " + std::to_string(i),
                                   .expected = "average log-probs < 0",
                                   .found = str(std::max(ac, ar))});
        const double lo = (ac - ar) - (detail::log1mexp(ac) - detail::log1mexp(ar));
        l = -beta * detail::log_sigmoid(lo);
        const double dlo = -beta * (1 - detail::sigmoid(lo));
        // d lo / d a_c = 1/(1 − e^{a_c}),  d lo / d a_r = −1/(1 − e^{a_r})
        dc = dlo / (-std::expm1(ac)) / nc, dr = -dlo / (-std::expm1(ar)) / nr;
        r.chosen_rewards[i] = beta * ac, r.rejected_rewards[i] = beta * ar;
        break;
      }
    }
    total += l;
    r.d_chosen[i] = dc * inv_b, r.d_rejected[i] = dr * inv_b;
  }
  r.loss = total * inv_b;
  // The batch NLL of the chosen completions: ORPO always; the others with α > 0 (SimPO:
  // CPO's cpo_alpha; the reference losses: TRL's rpo_alpha, dpo_trainer.py "RPO", which
  // adds α·NLL(chosen) averaged over the chosen tokens of the batch).
  const double nll_w = o.kind == pair_loss::orpo ? 1.0 : o.sft_weight;
  if (nll_w != 0) {
    double s = 0;
    for (std::size_t i = 0; i < B; ++i) s += lp.policy_chosen[i];
    r.loss += nll_w * (-s / double(chosen_tokens_total));
    for (std::size_t i = 0; i < B; ++i) r.d_chosen[i] += -nll_w / double(chosen_tokens_total);
  }
  return r;
}

// ---------------------------------------------------------------- KTO

/// KTO hyperparameters (TRL's defaults).
struct kto_options {
  double beta = 0.1;
  double desirable_weight = 1.0;    ///< w_d
  double undesirable_weight = 1.0;  ///< w_u
};

/// Unpaired completions: policy / reference summed log-probs, labels, and the KL rows'
/// log-probs (each prompt with another example's completion; see kto_kl_partner).
struct kto_logps {
  std::span<const double> policy{}, reference{};
  std::span<const unsigned char> desirable{};  ///< 1 desirable, 0 undesirable
  std::span<const double> policy_kl{}, reference_kl{};
};

/// KTO loss result: mean loss, dL/dπ per example, rewards β(π − ρ) and the KL estimate z.
struct kto_loss_result {
  double loss = 0, kl = 0;
  std::vector<double> d_policy{}, rewards{};
};

/// The KTO loss (header comment). forge::error on sizes, non-finite values or bad options.
inline kto_loss_result kto_loss(const kto_options& o, const kto_logps& lp) {
  const std::size_t N = lp.policy.size();
  require(N > 0 && lp.reference.size() == N && lp.desirable.size() == N &&
              lp.policy_kl.size() == lp.reference_kl.size() && !lp.policy_kl.empty(),
          {.what = "KTO inputs differ in size",
           .place = "kto_loss",
           .expected = std::to_string(N) + " examples and equal, non-empty KL rows",
           .found = std::to_string(lp.reference.size()) + " reference, " +
                    std::to_string(lp.policy_kl.size()) + "/" +
                    std::to_string(lp.reference_kl.size()) + " KL"});
  require(o.beta > 0 && std::isfinite(o.beta),
          {.what = "beta must be positive", .place = "kto_options.beta", .found = str(o.beta)});
  kto_loss_result r;
  double kl = 0;
  for (std::size_t k = 0; k < lp.policy_kl.size(); ++k) {
    detail::require_finite(lp.policy_kl[k], "policy KL row", k);
    detail::require_finite(lp.reference_kl[k], "reference KL row", k);
    kl += lp.policy_kl[k] - lp.reference_kl[k];
  }
  r.kl = std::max(0.0, kl / double(lp.policy_kl.size()));
  r.d_policy.assign(N, 0.0), r.rewards.assign(N, 0.0);
  double total = 0;
  for (std::size_t i = 0; i < N; ++i) {
    detail::require_finite(lp.policy[i], "policy", i);
    detail::require_finite(lp.reference[i], "reference", i);
    const double x = lp.policy[i] - lp.reference[i];
    r.rewards[i] = o.beta * x;
    if (lp.desirable[i]) {
      const double s = detail::sigmoid(o.beta * (x - r.kl));
      total += o.desirable_weight * (1 - s);
      r.d_policy[i] = -o.desirable_weight * o.beta * s * (1 - s) / double(N);
    } else {
      const double s = detail::sigmoid(o.beta * (r.kl - x));
      total += o.undesirable_weight * (1 - s);
      r.d_policy[i] = o.undesirable_weight * o.beta * s * (1 - s) / double(N);
    }
  }
  r.loss = total / double(N);
  return r;
}

/// The KL partner of unpaired example i among n (TRL rotates a batch's completions by one:
/// example i's prompt is paired with example (i − 1 mod n)'s completion).
inline std::size_t kto_kl_partner(std::size_t i, std::size_t n) {
  return (i + n - 1) % n;
}

}  // namespace forge::objectives
