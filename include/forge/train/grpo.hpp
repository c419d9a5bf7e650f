#pragma once
// GRPO (Shao et al. 2024, DeepSeekMath §4.1): online training with a verifiable reward. Each
// step takes `prompts_per_step` prompts, samples a group of G completions per prompt from the
// current policy (seeded sampling, model::generate), scores them with a reward callable, and
// normalises the rewards within each group:
//   A_i = (r_i − mean(r_group)) / (std(r_group) + 1e-4)       (std with Bessel's correction)
// The policy then takes `num_iterations` (μ) gradient steps on the clipped objective with a
// KL penalty to the reference, per completion token t (TRL's loss_type "grpo"):
//   ρ_t = exp(log π(y_t) − log π_old(y_t)),
//   ℓ_t = −min(ρ_t·A, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A) + β·k3_t,
//   k3_t = exp(log π_ref(y_t) − log π(y_t)) − (log π_ref(y_t) − log π(y_t)) − 1   (Schulman's k3)
//   L = mean over completions of (Σ_t ℓ_t / |y|)
// π_old is the policy that sampled (so ρ = 1 on the first of the μ steps); the reference is
// the model as given, with LoRA adapters switched off (train::adapters_disabled).
// Gradient per token: dℓ_t/dlog π_t = −A·ρ_t where the unclipped term is the minimum (0
// where the clipped one is), plus β·(1 − exp(log π_ref − log π)).
// TRL source read (huggingface/trl at f2cd577): trl/trainer/grpo_trainer.py,
// _generate_and_score_completions lines 2680–2730 (group mean/std, 1e-4), _compute_loss lines
// 3040–3125 (ratio, k3 KL, two-sided clip, per-sequence token mean then batch mean).
// Determinism: the prompts of step s are drawn from a Philox(seed, s) shuffle, and sampling
// uses seed (seed, s, prompt slot); so a run is a function of (model, data, options).

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/rng.hpp"
#include "forge/model/generate.hpp"
#include "forge/objectives/preference.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/parameters.hpp"
#include "forge/train/preference_trainer.hpp"
#include "forge/train/schedule.hpp"

namespace forge::train {

/// A verifiable reward: prompt index and generated tokens (the stop token included) → reward.
using reward_function =
    std::function<double(std::size_t prompt, std::span<const std::int64_t> completion)>;

/// GRPO settings (defaults: TRL's GRPOConfig, with β = 0.04 of the original GRPO).
struct grpo_options {
  std::int64_t max_steps = 100;
  std::int64_t prompts_per_step = 4;
  std::int64_t num_generations = 8;  ///< G, completions per prompt (≥ 2)
  std::int64_t num_iterations = 1;   ///< μ, gradient steps per generated batch
  std::int64_t max_new_tokens = 32;
  double temperature = 1.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  double beta = 0.04;         ///< KL coefficient (0: no reference needed)
  double epsilon_low = 0.2;   ///< ε, lower clip
  double epsilon_high = 0.2;  ///< upper clip
  bool scale_rewards = true;  ///< divide by the group std (else only centre)
  double max_grad_norm = 1.0;
  adamw_options optim{.lr = 1e-6};
  schedule sched{};
  std::vector<std::int64_t> eos_token_ids{};  ///< stop tokens (empty: the model's)
  std::int32_t pad_id = 0;
  std::uint64_t seed = 0;
};

/// One GRPO step's statistics.
struct grpo_log_entry {
  std::int64_t step = 0;
  double reward = 0;         ///< mean reward of the sampled completions
  double reward_std = 0;     ///< mean within-group reward std
  double kl = 0;             ///< mean k3 KL per completion token (first iteration)
  double loss = 0;           ///< objective of the first iteration
  double clip_fraction = 0;  ///< share of tokens whose ratio was clipped (all iterations)
  std::int64_t tokens = 0;   ///< completion tokens generated
  double grad_norm = 0;      ///< gradient norm before clipping (first iteration)
};

/// What a GRPO run did.
struct grpo_result {
  std::vector<grpo_log_entry> log{};
  double seconds = 0;
};

/// Group-normalised advantages of rewards laid out as groups of `g` (see header comment).
inline std::vector<double> group_advantages(std::span<const double> rewards, std::size_t g,
                                            bool scale) {
  require(g >= 2 && rewards.size() % g == 0, {.what = "rewards must come in groups of at least 2",
                                              .place = "group_advantages",
                                              .expected = "a multiple of " + std::to_string(g),
                                              .found = std::to_string(rewards.size())});
  std::vector<double> a(rewards.size());
  for (std::size_t s = 0; s < rewards.size(); s += g) {
    double mean = 0;
    for (std::size_t i = 0; i < g; ++i) mean += rewards[s + i];
    mean /= double(g);
    double var = 0;
    for (std::size_t i = 0; i < g; ++i) var += (rewards[s + i] - mean) * (rewards[s + i] - mean);
    const double sd = std::sqrt(var / double(g - 1));
    for (std::size_t i = 0; i < g; ++i)
      a[s + i] = scale ? (rewards[s + i] - mean) / (sd + 1e-4) : rewards[s + i] - mean;
  }
  return a;
}

/// The per-token GRPO loss of one batch and its gradient dL/dlog π_t ([batch·seq], zero off
/// the completions): logp, old, ref per position, advantages per row. Returns L; adds the
/// clipped-token count to *clipped and the mean k3 to *kl.
inline double grpo_token_loss(const objectives::sequence_batch& b, std::span<const double> logp,
                              std::span<const double> old, std::span<const double> ref,
                              std::span<const double> adv, const grpo_options& o,
                              std::vector<double>& grad, std::int64_t* clipped, double* kl) {
  grad.assign(logp.size(), 0.0);
  double total = 0, kl_sum = 0;
  std::int64_t kl_n = 0;
  for (std::int64_t r = 0; r < b.batch; ++r) {
    const double n = double(b.completion_tokens[std::size_t(r)]);
    double row = 0;
    for (std::int64_t t = 0; t < b.seq; ++t) {
      const auto i = std::size_t(r * b.seq + t);
      if (b.targets[i] == backend::ignore_index) continue;
      const double A = adv[std::size_t(r)], rho = std::exp(logp[i] - old[i]);
      const double rc = std::clamp(rho, 1 - o.epsilon_low, 1 + o.epsilon_high);
      const double unclipped = rho * A, clipped_v = rc * A;
      double l = -std::min(unclipped, clipped_v);
      double g = unclipped <= clipped_v ? -A * rho : 0.0;
      if (unclipped > clipped_v && clipped) ++*clipped;
      if (o.beta != 0) {
        const double d = ref[i] - logp[i], k3 = std::exp(d) - d - 1;
        l += o.beta * k3;
        g += o.beta * (1 - std::exp(d));
        kl_sum += k3, ++kl_n;
      }
      row += l;
      grad[i] = g / n / double(b.batch);
    }
    total += row / n;
  }
  if (kl) *kl = kl_n ? kl_sum / double(kl_n) : 0.0;
  return total / double(b.batch);
}

/// Trains `params` of `m` with GRPO on `prompts` (token ids) scored by `reward`. `lora` is
/// needed when β > 0 (the reference is the base with adapters off). forge::error for G < 2,
/// no prompts, a non-finite reward or loss.
template <class T, class Bk>
grpo_result train_grpo(Bk be, model::causal_lm<T>& m, std::vector<trainable<T>> params,
                       adapters::lora_set<T>* lora,
                       std::span<const std::vector<std::int64_t>> prompts,
                       const reward_function& reward, const grpo_options& o) {
  require(!prompts.empty(), {.what = "no prompts", .place = "train_grpo"});
  require(o.num_generations >= 2 && o.prompts_per_step >= 1 && o.num_iterations >= 1 &&
              o.max_new_tokens >= 1,
          {.what = "GRPO needs num_generations >= 2 and positive prompts_per_step, "
                   "num_iterations and max_new_tokens",
           .place = "grpo_options",
           .found = "G = " + std::to_string(o.num_generations)});
  require(o.beta == 0 || (lora && !lora->modules.empty()),
          {.what = "a KL penalty (beta > 0) needs LoRA adapters: the reference is the base "
                   "with adapters off",
           .place = "grpo_options.beta",
           .found = str(o.beta)});
  require(bool(reward), {.what = "no reward function", .place = "train_grpo"});
  adamw<T> opt(std::move(params), o.optim);
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  grpo_result res;
  const auto t0 = std::chrono::steady_clock::now();
  if (lora) lora->train(false);
  const std::size_t G = std::size_t(o.num_generations), P = prompts.size();
  model::workspace<T> ws, ws_ref;
  std::vector<std::size_t> perm(P);
  for (std::int64_t step = 0; step < o.max_steps; ++step) {
    // This step's prompts: a fresh Philox(seed, step) shuffle, first prompts_per_step.
    for (std::size_t i = 0; i < P; ++i) perm[i] = i;
    philox g(o.seed, std::uint64_t(step));
    for (std::size_t i = P; i > 1; --i) std::swap(perm[i - 1], perm[g.below(std::uint32_t(i))]);
    std::vector<std::size_t> pick;
    for (std::int64_t i = 0; i < o.prompts_per_step; ++i) pick.push_back(perm[std::size_t(i) % P]);
    // Sample G completions per prompt.
    std::vector<std::vector<std::int64_t>> completions;
    std::vector<double> rewards;
    std::vector<std::vector<std::int32_t>> prompt32, comp32;
    grpo_log_entry e{.step = step + 1};
    for (std::size_t q = 0; q < pick.size(); ++q) {
      std::vector<std::vector<std::int64_t>> rows(G, prompts[pick[q]]);
      const auto gen =
          model::generate(be, m, rows,
                          {.max_new_tokens = o.max_new_tokens,
                           .do_sample = true,
                           .temperature = o.temperature,
                           .top_k = o.top_k,
                           .top_p = o.top_p,
                           .seed = philox(o.seed, std::uint64_t(step)).fork(q + 1).next_u64(),
                           .eos_token_ids = o.eos_token_ids});
      for (std::size_t i = 0; i < G; ++i) {
        const double r = reward(pick[q], gen.tokens[i]);
        require(std::isfinite(r), {.what = "reward is not finite",
                                   .place = "prompt " + std::to_string(pick[q]),
                                   .found = str(r)});
        rewards.push_back(r);
        e.tokens += std::int64_t(gen.tokens[i].size());
        prompt32.emplace_back(prompts[pick[q]].begin(), prompts[pick[q]].end());
        comp32.emplace_back(gen.tokens[i].begin(), gen.tokens[i].end());
      }
    }
    const auto adv = group_advantages(rewards, G, o.scale_rewards);
    for (auto r : rewards) e.reward += r;
    e.reward /= double(rewards.size());
    for (std::size_t s = 0; s < rewards.size(); s += G) {
      double mean = 0, var = 0;
      for (std::size_t i = 0; i < G; ++i) mean += rewards[s + i];
      mean /= double(G);
      for (std::size_t i = 0; i < G; ++i) var += (rewards[s + i] - mean) * (rewards[s + i] - mean);
      e.reward_std += std::sqrt(var / double(G - 1)) / double(pick.size());
    }
    std::vector<objectives::completion_sequence> rows;
    for (std::size_t i = 0; i < prompt32.size(); ++i) rows.push_back({prompt32[i], comp32[i]});
    const auto b = objectives::make_sequence_batch(rows, o.pad_id);
    std::vector<double> ref(std::size_t(b.batch * b.seq), 0.0), old;
    if (o.beta != 0) {
      adapters_disabled<T> off(m, lora);
      model::forward(be, m, ws_ref,
                     {.batch = b.batch,
                      .seq = b.seq,
                      .input_ids = b.input_ids,
                      .attention_mask = b.attention_mask});
      ref = objectives::token_logprobs(ws_ref, b);
    }
    std::int64_t clipped = 0, counted = 0;
    for (std::int64_t it = 0; it < o.num_iterations; ++it) {
      zero_grads(opt.params());
      model::forward(be, m, ws,
                     {.batch = b.batch,
                      .seq = b.seq,
                      .input_ids = b.input_ids,
                      .attention_mask = b.attention_mask},
                     {.for_backward = true});
      const auto logp = objectives::token_logprobs(ws, b);
      if (it == 0) old = logp;  // the sampling policy (detached)
      std::vector<double> grad;
      double kl = 0;
      const double l = grpo_token_loss(b, logp, old, ref, adv, o, grad, &clipped, &kl);
      require(std::isfinite(l), {.what = "GRPO loss is not finite; stopped",
                                 .place = "step " + std::to_string(step + 1),
                                 .found = str(l)});
      if (it == 0) e.loss = l, e.kl = kl;
      for (auto t : b.targets) counted += t != backend::ignore_index;
      objectives::token_logprobs_backward(ws, b, grad);
      model::backward(be, m, ws);
      const double gn = clip_grad_norm(opt.params(), o.max_grad_norm);
      if (it == 0) e.grad_norm = gn;
      opt.step(o.optim.lr * sched.factor(step));
    }
    e.clip_fraction = counted ? double(clipped) / double(counted) : 0.0;
    res.log.push_back(e);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace forge::train
