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
//
// The gradient of a step is a sum of per-prompt parts: each prompt's group of G completions
// is one micro-batch whose gradient is computed from zero and added to the step's sum in slot
// order. Data parallelism (grpo_options::comm) gives each rank a contiguous block of the
// step's prompt slots: it samples their groups (with the slot's seed, so the samples do not
// depend on the number of ranks), computes their gradients, and the blocks are summed in rank
// order through dist::gradient_buckets while backward runs; the per-prompt statistics
// (rewards, lengths, loss parts, KL and clip counts) are gathered by a sum over ranks in
// which each slot comes from one rank, then added in slot order, so every rank logs, checks
// and steps identically. With one prompt per rank the
// sum adds the same terms in the same order as one process: the same bits.
//
// Checkpoints (grpo_options::out_dir): the trained values, the AdamW moments and the log of
// the steps done, written atomically by rank 0 to out_dir/checkpoint.safetensors. Since a
// step's prompts and samples depend on (seed, step) alone, a resumed run continues exactly as
// an uninterrupted one, also on another number of ranks.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/rng.hpp"
#include "forge/dist/gradient_buckets.hpp"
#include "forge/model/generate.hpp"
#include "forge/objectives/preference.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/parameters.hpp"
#include "forge/train/preference_trainer.hpp"
#include "forge/train/schedule.hpp"
#include "forge/train/trainer.hpp"

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
  /// Data parallelism: the group of ranks that share each step's prompts (see the header
  /// comment), or null for one process. Every rank passes the same model, prompts and
  /// options; the steps are identical on all of them.
  dist::communicator* comm = nullptr;
  dist::reduce_options reduce{};      ///< with comm: gradient buckets, overlap with backward
  std::filesystem::path out_dir{};    ///< checkpoint.safetensors goes here (empty: none)
  std::int64_t checkpoint_every = 0;  ///< steps between checkpoints; 0: only at the end
  bool resume = true;                 ///< continue from out_dir/checkpoint.safetensors if present
  std::int64_t halt_after = 0;        ///< > 0: stop after this step with a checkpoint (pause)
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
  std::vector<grpo_log_entry> log{};  ///< every step done, a resumed run's earlier ones too
  double seconds = 0;                 ///< wall time of this call
  bool resumed = false;               ///< continued from a checkpoint
  std::int64_t steps = 0;             ///< steps done when the call returned
};

namespace detail {

// A GRPO log entry in a checkpoint's trainer state: one eval_entry per step.
inline eval_entry to_eval_entry(const grpo_log_entry& e) {
  return {.step = e.step,
          .metrics = {{"reward", e.reward},
                      {"reward_std", e.reward_std},
                      {"kl", e.kl},
                      {"loss", e.loss},
                      {"clip_fraction", e.clip_fraction},
                      {"tokens", double(e.tokens)},
                      {"grad_norm", e.grad_norm}}};
}

inline grpo_log_entry from_eval_entry(const eval_entry& e, const std::string& src) {
  auto at = [&](const char* k) {
    const auto it = e.metrics.find(k);
    require(it != e.metrics.end(), {.what = "GRPO checkpoint log entry lacks a field",
                                    .file = src,
                                    .place = "step " + std::to_string(e.step),
                                    .expected = k});
    return it->second;
  };
  return {.step = e.step,
          .reward = at("reward"),
          .reward_std = at("reward_std"),
          .kl = at("kl"),
          .loss = at("loss"),
          .clip_fraction = at("clip_fraction"),
          .tokens = std::int64_t(at("tokens")),
          .grad_norm = at("grad_norm")};
}

}  // namespace detail

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
/// `rows` (0: b.batch) is the number of completions the loss averages over — the whole
/// step's when `b` holds one prompt's group; then the returned value is this part's share of
/// the step's L, and `kl_terms` (if not null) receives {Σ k3, number of k3 terms}.
inline double grpo_token_loss(const objectives::sequence_batch& b, std::span<const double> logp,
                              std::span<const double> old, std::span<const double> ref,
                              std::span<const double> adv, const grpo_options& o,
                              std::vector<double>& grad, std::int64_t* clipped, double* kl,
                              std::int64_t rows = 0,
                              std::pair<double, double>* kl_terms = nullptr) {
  const double denominator = double(rows > 0 ? rows : b.batch);
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
      grad[i] = g / n / denominator;
    }
    total += row / n;
  }
  if (kl) *kl = kl_n ? kl_sum / double(kl_n) : 0.0;
  if (kl_terms) *kl_terms = {kl_sum, double(kl_n)};
  return total / denominator;
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
  const int world = o.comm ? o.comm->size() : 1, rank = o.comm ? o.comm->rank() : 0;
  adamw<T> opt(std::move(params), o.optim);
  std::optional<dist::gradient_buckets<T>> buckets;
  if (world > 1) buckets.emplace(*o.comm, m, opt.params(), o.reduce);
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  grpo_result res;
  const auto t0 = std::chrono::steady_clock::now();
  if (lora) lora->train(false);
  const std::size_t G = std::size_t(o.num_generations), P = prompts.size();
  const std::size_t Q = std::size_t(o.prompts_per_step);
  // This rank's block of prompt slots [lo, hi).
  const std::size_t lo = Q * std::size_t(rank) / std::size_t(world),
                    hi = Q * std::size_t(rank + 1) / std::size_t(world);
  const auto& ps = opt.params();
  // Resume: every rank reads the checkpoint; the steps before it are in its log.
  const auto ckpt = o.out_dir.empty() ? std::filesystem::path() : checkpoint_path(o.out_dir);
  std::int64_t first = 0;
  if (!ckpt.empty() && o.resume && std::filesystem::exists(ckpt)) {
    const auto st = load_checkpoint(ckpt, opt);
    require(st.seed == o.seed, {.what = "checkpoint was made with another seed",
                                .file = ckpt.string(),
                                .expected = std::to_string(o.seed),
                                .found = std::to_string(st.seed)});
    require(std::int64_t(st.evals.size()) == st.step,
            {.what = "GRPO checkpoint log does not match its step",
             .file = ckpt.string(),
             .expected = std::to_string(st.step) + " log entries",
             .found = std::to_string(st.evals.size())});
    for (const auto& e : st.evals) res.log.push_back(detail::from_eval_entry(e, ckpt.string()));
    first = st.step;
    res.resumed = true;
  }
  if (!o.out_dir.empty() && rank == 0) std::filesystem::create_directories(o.out_dir);
  auto save = [&](std::int64_t done) {
    if (ckpt.empty() || rank != 0) return;
    trainer_state st;
    st.step = done;
    st.seed = o.seed;
    for (const auto& e : res.log) st.evals.push_back(detail::to_eval_entry(e));
    save_checkpoint(ckpt, opt, st);
  };
  res.steps = first;
  model::workspace<T> ws, ws_ref;
  std::vector<std::size_t> perm(P);
  for (std::int64_t step = first; step < o.max_steps; ++step) {
    // This step's prompts: a fresh Philox(seed, step) shuffle, first prompts_per_step.
    for (std::size_t i = 0; i < P; ++i) perm[i] = i;
    philox g(o.seed, std::uint64_t(step));
    for (std::size_t i = P; i > 1; --i) std::swap(perm[i - 1], perm[g.below(std::uint32_t(i))]);
    std::vector<std::size_t> pick;
    for (std::size_t i = 0; i < Q; ++i) pick.push_back(perm[i % P]);
    // Sample G completions for each of this rank's slots (the seed depends on the slot only).
    // `sampled` holds, for every slot of the step, G rewards then G completion lengths; each
    // rank fills its own slots and the group sum fills the rest (x + 0 is exact).
    std::vector<double> sampled(Q * 2 * G, 0.0);
    std::vector<objectives::sequence_batch> batch(Q);
    std::vector<std::vector<double>> adv(Q), ref(Q), old(Q);
    for (std::size_t q = lo; q < hi; ++q) {
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
      // The rows view these token vectors, which live until the batch is made.
      const std::vector<std::int32_t> prompt32(prompts[pick[q]].begin(), prompts[pick[q]].end());
      std::vector<std::vector<std::int32_t>> comp32;
      for (std::size_t i = 0; i < G; ++i) {
        sampled[q * 2 * G + i] = reward(pick[q], gen.tokens[i]);
        sampled[q * 2 * G + G + i] = double(gen.tokens[i].size());
        comp32.emplace_back(gen.tokens[i].begin(), gen.tokens[i].end());
      }
      std::vector<objectives::completion_sequence> seqs;
      for (std::size_t i = 0; i < G; ++i) seqs.push_back({prompt32, comp32[i]});
      batch[q] = objectives::make_sequence_batch(seqs, o.pad_id);
    }
    if (world > 1) o.comm->all_reduce_sum(std::span<double>(sampled));
    grpo_log_entry e{.step = step + 1};
    std::vector<double> rewards;
    for (std::size_t q = 0; q < Q; ++q)
      for (std::size_t i = 0; i < G; ++i) {
        const double r = sampled[q * 2 * G + i];
        require(std::isfinite(r), {.what = "reward is not finite",
                                   .place = "prompt " + std::to_string(pick[q]),
                                   .found = str(r)});
        rewards.push_back(r);
        e.tokens += std::int64_t(sampled[q * 2 * G + G + i]);
      }
    const auto all_adv = group_advantages(rewards, G, o.scale_rewards);
    for (std::size_t q = lo; q < hi; ++q)
      adv[q].assign(all_adv.begin() + std::ptrdiff_t(q * G),
                    all_adv.begin() + std::ptrdiff_t((q + 1) * G));
    for (auto r : rewards) e.reward += r;
    e.reward /= double(rewards.size());
    for (std::size_t s = 0; s < rewards.size(); s += G) {
      double mean = 0, var = 0;
      for (std::size_t i = 0; i < G; ++i) mean += rewards[s + i];
      mean /= double(G);
      for (std::size_t i = 0; i < G; ++i) var += (rewards[s + i] - mean) * (rewards[s + i] - mean);
      e.reward_std += std::sqrt(var / double(G - 1)) / double(Q);
    }
    if (o.beta != 0)
      for (std::size_t q = lo; q < hi; ++q) {
        const auto& b = batch[q];
        adapters_disabled<T> off(m, lora);
        model::forward(be, m, ws_ref,
                       {.batch = b.batch,
                        .seq = b.seq,
                        .input_ids = b.input_ids,
                        .attention_mask = b.attention_mask});
        ref[q] = objectives::token_logprobs(ws_ref, b);
      }
    // Per slot and iteration: loss share, Σ k3, k3 terms, clipped tokens, counted tokens.
    constexpr std::size_t F = 5;
    double clipped_all = 0, counted_all = 0;
    for (std::int64_t it = 0; it < o.num_iterations; ++it) {
      std::vector<double> part(Q * F, 0.0);
      std::vector<std::vector<T>> sum;
      for (std::size_t q = lo; q < hi; ++q) {
        const auto& b = batch[q];
        zero_grads(ps);
        model::forward(be, m, ws,
                       {.batch = b.batch,
                        .seq = b.seq,
                        .input_ids = b.input_ids,
                        .attention_mask = b.attention_mask},
                       {.for_backward = true});
        const auto logp = objectives::token_logprobs(ws, b);
        if (it == 0) old[q] = logp;  // the sampling policy (detached)
        if (o.beta == 0) ref[q].assign(logp.size(), 0.0);
        std::vector<double> grad;
        std::int64_t clipped = 0, counted = 0;
        std::pair<double, double> kl{};
        part[q * F] = grpo_token_loss(b, logp, old[q], ref[q], adv[q], o, grad, &clipped, nullptr,
                                      std::int64_t(Q * G), &kl);
        for (auto t : b.targets) counted += t != backend::ignore_index;
        part[q * F + 1] = kl.first, part[q * F + 2] = kl.second;
        part[q * F + 3] = double(clipped), part[q * F + 4] = double(counted);
        objectives::token_logprobs_backward(ws, b, grad);
        if (buckets && q + 1 == hi) {
          buckets->backward_and_reduce(be, ws, sum.empty() ? nullptr : &sum);
          break;
        }
        model::backward(be, m, ws);
        if (sum.empty()) {
          for (const auto& p : ps) sum.emplace_back(p.grad.begin(), p.grad.end());
        } else {
          for (std::size_t k = 0; k < ps.size(); ++k)
            for (std::size_t i = 0; i < ps[k].grad.size(); ++i) sum[k][i] += ps[k].grad[i];
        }
      }
      if (buckets && lo == hi) {  // no prompt on this rank in this step: add zeros
        zero_grads(ps);
        buckets->reduce(nullptr);
      }
      if (!buckets)
        for (std::size_t k = 0; k < ps.size(); ++k) {
          if (sum.empty())
            std::fill(ps[k].grad.begin(), ps[k].grad.end(), T(0));
          else
            std::copy(sum[k].begin(), sum[k].end(), ps[k].grad.begin());
        }
      if (world > 1) o.comm->all_reduce_sum(std::span<double>(part));
      // The step's statistics, added in slot order on every rank.
      double l = 0, kl_sum = 0, kl_n = 0;
      for (std::size_t q = 0; q < Q; ++q) {
        l += part[q * F], kl_sum += part[q * F + 1], kl_n += part[q * F + 2];
        clipped_all += part[q * F + 3], counted_all += part[q * F + 4];
      }
      require(std::isfinite(l), {.what = "GRPO loss is not finite; stopped",
                                 .place = "step " + std::to_string(step + 1),
                                 .found = str(l)});
      if (it == 0) e.loss = l, e.kl = kl_n > 0 ? kl_sum / kl_n : 0.0;
      const double gn = clip_grad_norm(ps, o.max_grad_norm);
      if (it == 0) e.grad_norm = gn;
      opt.step(o.optim.lr * sched.factor(step));
    }
    e.clip_fraction = counted_all > 0 ? clipped_all / counted_all : 0.0;
    res.log.push_back(e);
    res.steps = step + 1;
    const bool last = step + 1 == o.max_steps;
    const bool halt = o.halt_after > 0 && step + 1 >= o.halt_after;
    if (last || halt || (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0))
      save(step + 1);
    if (halt) break;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace forge::train
