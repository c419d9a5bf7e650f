#pragma once
// Offline preference training (DPO and its variants, SimPO, ORPO, KTO) on tokenised pairs:
// shuffled micro-batches of pairs, gradient accumulation, global-norm clipping, AdamW with a
// schedule, evaluation of preference accuracy and reward margin, the loss curve and atomic
// checkpoints from which a run resumes bit-identically — the SFT trainer's machinery
// (train/trainer.hpp) with a preference objective (objectives/preference.hpp).
//
// One micro-batch of B pairs runs as one forward over 2B rows [chosen…, rejected…] (TRL's
// concatenated forward), the loss's dL/dπ scaled by 1/grad_accum, and one backward.
// KTO unpairs the pairs as TRL's unpair_preference_dataset does: example k < n is pair k's
// chosen completion (desirable), example n + k its rejected one (undesirable); the KL row
// of example k is its prompt with the completion of example k − 1 (mod 2n), TRL's rotation.
// The KL rows run without gradient (the estimate is detached).
//
// Reference log-probs (the methods that need them):
//   cached (default)  computed once before training, one pair at a time, and kept per
//                     example (2 doubles per pair, 2 more per KTO example); a non-finite
//                     cached value drops its example from training, counted in the result
//   live              recomputed for each micro-batch from the same model with its LoRA
//                     adapters switched off, so no second copy of the weights is held
// Either way the reference is the model with the trained adapters (`lora`) switched off:
// with freshly attached adapters (B = 0) that is the model as it was given, so other
// adapters underneath (e.g. an SFT adapter from the Adapt stage) stay part of it. Cached and live
// values are equal up to float summation order (see the test).
//
// Determinism as in train_sft: pair k of the run is perm_e[k mod n] with perm_e a Philox
// (seed, e) shuffle; the LoRA dropout mask of micro-batch j of step s is keyed s·accum + j.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/progress.hpp"
#include "forge/core/rng.hpp"
#include "forge/data/preference.hpp"
#include "forge/dist/communicator.hpp"
#include "forge/dist/gradient_buckets.hpp"
#include "forge/dist/zero1.hpp"
#include "forge/objectives/preference.hpp"
#include "forge/train/checkpoint.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/loss_curve.hpp"
#include "forge/train/schedule.hpp"
#include "forge/train/trainer.hpp"

namespace forge::train {

/// Switches linear adapters of a model off for its lifetime: those of `set` (when given) or
/// every adapter; they are set aside and restored in place. No weights are copied.
template <class T>
class adapters_disabled {
 public:
  explicit adapters_disabled(model::causal_lm<T>& m, const adapters::lora_set<T>* set = nullptr) {
    for (auto [key, lin] : adapters::linear_layers(m)) {
      std::vector<std::shared_ptr<model::linear_adapter<T>>> keep;
      for (auto& a : lin->adapters) {
        const bool off = !set || std::any_of(set->modules.begin(), set->modules.end(),
                                             [&](const auto& mod) { return mod.get() == a.get(); });
        if (!off) keep.push_back(a);
      }
      saved_.push_back({lin, lin->adapters});
      lin->adapters = std::move(keep);
    }
  }
  ~adapters_disabled() {
    for (auto& [lin, a] : saved_) lin->adapters = std::move(a);
  }
  adapters_disabled(const adapters_disabled&) = delete;
  adapters_disabled& operator=(const adapters_disabled&) = delete;

 private:
  std::vector<std::pair<model::linear<T>*, std::vector<std::shared_ptr<model::linear_adapter<T>>>>>
      saved_;
};

/// Where reference log-probs come from.
enum class reference_mode { cached, live };

/// The objective of a preference run: a pairwise loss or KTO.
struct preference_objective {
  bool kto = false;  ///< KTO on the unpaired pairs, else `pair`
  objectives::pair_loss_options pair{};
  objectives::kto_options kto_opts{};
  /// True when reference log-probs are needed.
  bool needs_reference() const { return kto || objectives::needs_reference(pair.kind); }
  /// The loss's name (TRL's loss_type, "kto" for KTO).
  std::string name() const { return kto ? "kto" : std::string(objectives::name_of(pair.kind)); }
};

/// Reference log-probs per example: pair i's chosen/rejected, and for KTO the KL row of each
/// unpaired example (2n values). Empty vectors where not computed.
struct reference_cache {
  std::vector<double> chosen{}, rejected{};
  std::vector<double> kl{};  ///< KTO only: [2n] reference log-probs of the KL rows
  /// Bytes the cache holds.
  std::size_t bytes() const {
    return (chosen.size() + rejected.size() + kl.size()) * sizeof(double);
  }
};

namespace detail {

using objectives::completion_sequence;

/// Unpaired example k of n pairs (KTO): its prompt and completion.
inline completion_sequence kto_row(std::span<const data::preference_example> xs, std::size_t k) {
  const std::size_t n = xs.size();
  const auto& e = xs[k % n];
  return {e.prompt, k < n ? std::span<const std::int32_t>(e.chosen)
                          : std::span<const std::int32_t>(e.rejected)};
}
/// The KL row of unpaired example k: its prompt, example k−1's completion.
inline completion_sequence kto_kl_row(std::span<const data::preference_example> xs, std::size_t k) {
  const std::size_t n2 = 2 * xs.size();
  return {kto_row(xs, k).prompt, kto_row(xs, objectives::kto_kl_partner(k, n2)).completion};
}

/// Pair rows [chosen…, rejected…] of the pairs `pick`.
inline objectives::sequence_batch pair_batch(std::span<const data::preference_example> xs,
                                             std::span<const std::size_t> pick, std::int32_t pad) {
  std::vector<completion_sequence> rows;
  for (auto i : pick) rows.push_back({xs[i].prompt, xs[i].chosen});
  for (auto i : pick) rows.push_back({xs[i].prompt, xs[i].rejected});
  return objectives::make_sequence_batch(rows, pad);
}

/// The examples a step draws from — the n pairs, or for KTO the 2n unpaired examples — less
/// those whose cached reference (when `cache` is not null) is not finite, which are counted
/// in `skipped`. The CPU and GPU trainers share it, so both draw the same examples.
inline std::vector<std::size_t> usable_examples(std::size_t n, bool kto,
                                                const reference_cache* cache,
                                                std::size_t& skipped) {
  std::vector<std::size_t> usable;
  for (std::size_t k = 0; k < (kto ? 2 * n : n); ++k) {
    bool ok = true;
    if (cache) {
      const std::size_t p = k % n;
      const double v = kto ? (k < n ? cache->chosen[p] : cache->rejected[p])
                           : cache->chosen[p] + cache->rejected[p];
      ok = std::isfinite(v) && (!kto || std::isfinite(cache->kl[k]));
    }
    if (ok)
      usable.push_back(k);
    else
      ++skipped;
  }
  require(!usable.empty(), {.what = "no preference pair has a finite reference log-probability",
                            .place = "train_preference"});
  return usable;
}

/// The training pairs the train-set metrics are measured on: the first 64 whose cached
/// reference (when `cache` is not null) is finite, with their cache entries.
inline std::pair<std::vector<data::preference_example>, reference_cache> train_eval_pairs(
    std::span<const data::preference_example> train, const reference_cache* cache) {
  std::vector<data::preference_example> pairs;
  reference_cache sub;
  for (std::size_t p = 0; p < train.size() && pairs.size() < 64; ++p) {
    if (cache && !(std::isfinite(cache->chosen[p]) && std::isfinite(cache->rejected[p]))) continue;
    pairs.push_back(train[p]);
    if (cache) sub.chosen.push_back(cache->chosen[p]), sub.rejected.push_back(cache->rejected[p]);
  }
  return {std::move(pairs), std::move(sub)};
}

}  // namespace detail

/// Reference log-probs of pairs `pick` (and, for KTO, of the unpaired examples `kto_pick`'s
/// KL rows), computed now from `m` with the adapters of `trained` off (all adapters when it
/// is null): chosen[|pick|], rejected[|pick|], kl[|kto_pick|].
template <class T, class Bk>
reference_cache live_reference(
    Bk be, model::causal_lm<T>& m, std::span<const data::preference_example> xs,
    std::span<const std::size_t> pick, std::span<const std::size_t> kto_pick, std::int32_t pad,
    const std::type_identity_t<adapters::lora_set<T>>* trained = nullptr) {
  adapters_disabled<T> off(m, trained);
  model::workspace<T> ws;
  reference_cache c;
  if (!pick.empty()) {
    const auto lp = objectives::sequence_logprobs(be, m, ws, detail::pair_batch(xs, pick, pad));
    c.chosen.assign(lp.begin(), lp.begin() + std::ptrdiff_t(pick.size()));
    c.rejected.assign(lp.begin() + std::ptrdiff_t(pick.size()), lp.end());
  }
  if (!kto_pick.empty()) {
    std::vector<objectives::completion_sequence> rows;
    for (auto k : kto_pick) rows.push_back(detail::kto_kl_row(xs, k));
    c.kl = objectives::sequence_logprobs(be, m, ws, objectives::make_sequence_batch(rows, pad));
  }
  return c;
}

/// The reference cache of every example (one pair, or one KL row, per forward), computed
/// from `m` with the adapters of `trained` off (all when null). `kto` adds the KL rows of the 2n
/// unpaired examples. With a group `comm`, each rank computes a contiguous 1/N of the
/// entries and the blocks are then gathered, so every rank holds the whole cache; each entry
/// comes from the same one-example forward as without a group, so the values are the same.
template <class T, class Bk>
reference_cache compute_reference_cache(
    Bk be, model::causal_lm<T>& m, std::span<const data::preference_example> xs, bool kto,
    std::int32_t pad, const std::type_identity_t<adapters::lora_set<T>>* trained = nullptr,
    dist::communicator* comm = nullptr) {
  const std::size_t world = comm ? std::size_t(comm->size()) : 1,
                    rank = comm ? std::size_t(comm->rank()) : 0;
  // Entries [block(r), block(r + 1)) of `n` are rank r's.
  auto block = [world](std::size_t n, std::size_t r) { return n * r / world; };
  auto gather = [&](std::vector<double>& v) {
    if (world == 1) return;
    std::vector<std::size_t> at;
    for (std::size_t r = 0; r <= world; ++r) at.push_back(block(v.size(), r) * sizeof(double));
    comm->all_gather(std::as_writable_bytes(std::span(v)), at);
  };
  reference_cache c;
  c.chosen.assign(xs.size(), 0.0);
  c.rejected.assign(xs.size(), 0.0);
  for (std::size_t i = block(xs.size(), rank); i < block(xs.size(), rank + 1); ++i) {
    const std::size_t one[1] = {i};
    auto r = live_reference(be, m, xs, one, {}, pad, trained);
    c.chosen[i] = r.chosen[0];
    c.rejected[i] = r.rejected[0];
  }
  gather(c.chosen);
  gather(c.rejected);
  if (kto) {
    c.kl.assign(2 * xs.size(), 0.0);
    for (std::size_t k = block(c.kl.size(), rank); k < block(c.kl.size(), rank + 1); ++k) {
      const std::size_t one[1] = {k};
      c.kl[k] = live_reference(be, m, xs, {}, one, pad, trained).kl[0];
    }
    gather(c.kl);
  }
  return c;
}

/// Preference metrics over pairs: the objective's mean loss and its rewards' accuracy and
/// margin (for KTO the implicit rewards β(π − ρ) of the pairs, as TRL logs them).
struct preference_scores {
  double loss = 0;
  double accuracy = 0;  ///< fraction of pairs with chosen reward > rejected reward
  double margin = 0;    ///< mean chosen − rejected reward (nats·β)
  double chosen_reward = 0, rejected_reward = 0;
  std::size_t pairs = 0;
};

/// Scores `xs` under the current model (no gradients), in batches of `batch` pairs, with
/// reference log-probs from `cache` (indexed as xs) or, when it is null, live.
template <class T, class Bk>
preference_scores evaluate_preferences(
    Bk be, model::causal_lm<T>& m, std::span<const data::preference_example> xs,
    const preference_objective& obj, const reference_cache* cache, std::int64_t batch,
    std::int32_t pad, const std::type_identity_t<adapters::lora_set<T>>* trained = nullptr) {
  preference_scores s;
  model::workspace<T> ws;
  const auto pair_opts = obj.kto
                             ? objectives::pair_loss_options{.kind = objectives::pair_loss::sigmoid,
                                                             .beta = obj.kto_opts.beta}
                             : obj.pair;
  for (std::size_t i = 0; i < xs.size(); i += std::size_t(batch)) {
    std::vector<std::size_t> pick;
    for (std::size_t j = i; j < std::min(xs.size(), i + std::size_t(batch)); ++j) pick.push_back(j);
    const auto b = detail::pair_batch(xs, pick, pad);
    const auto lp = objectives::sequence_logprobs(be, m, ws, b);
    const std::size_t B = pick.size();
    std::vector<double> pc(lp.begin(), lp.begin() + std::ptrdiff_t(B)),
        pr(lp.begin() + std::ptrdiff_t(B), lp.end()), rc, rr;
    if (obj.needs_reference()) {
      if (cache) {
        for (auto k : pick) rc.push_back(cache->chosen[k]), rr.push_back(cache->rejected[k]);
      } else {
        auto r = live_reference(be, m, xs, pick, {}, pad, trained);
        rc = r.chosen, rr = r.rejected;
      }
    }
    std::vector<std::int64_t> nc(b.completion_tokens.begin(),
                                 b.completion_tokens.begin() + std::ptrdiff_t(B)),
        nr(b.completion_tokens.begin() + std::ptrdiff_t(B), b.completion_tokens.end());
    const auto r = objectives::preference_loss(pair_opts, {pc, pr, rc, rr, nc, nr});
    s.loss += r.loss * double(B);
    for (std::size_t k = 0; k < B; ++k) {
      s.accuracy += r.chosen_rewards[k] > r.rejected_rewards[k];
      s.margin += r.chosen_rewards[k] - r.rejected_rewards[k];
      s.chosen_reward += r.chosen_rewards[k], s.rejected_reward += r.rejected_rewards[k];
    }
    s.pairs += B;
  }
  if (s.pairs) {
    const double n = double(s.pairs);
    s.loss /= n, s.accuracy /= n, s.margin /= n, s.chosen_reward /= n, s.rejected_reward /= n;
  }
  return s;
}

/// Mean per-token KL(π ‖ π_ref) = Σ_v π(v)·(log π(v) − log π_ref(v)) in nats, over the
/// completion positions of the pairs' chosen answers, the reference being `m` with the
/// adapters of `trained` off (all when null). In batches of `batch` pairs.
template <class T, class Bk>
double reference_kl(Bk be, model::causal_lm<T>& m, std::span<const data::preference_example> xs,
                    std::int64_t batch, std::int32_t pad,
                    const std::type_identity_t<adapters::lora_set<T>>* trained = nullptr) {
  double total = 0;
  std::int64_t n = 0;
  model::workspace<T> ws;
  for (std::size_t i = 0; i < xs.size(); i += std::size_t(batch)) {
    std::vector<objectives::completion_sequence> rows;
    for (std::size_t j = i; j < std::min(xs.size(), i + std::size_t(batch)); ++j)
      rows.push_back({xs[j].prompt, xs[j].chosen});
    const auto b = objectives::make_sequence_batch(rows, pad);
    const model::model_input<T> in{.batch = b.batch,
                                   .seq = b.seq,
                                   .input_ids = b.input_ids,
                                   .attention_mask = b.attention_mask};
    const auto zp = model::forward(be, m, ws, in);
    const std::vector<T> pol(zp.begin(), zp.end());
    std::vector<T> ref;
    {
      adapters_disabled<T> off(m, trained);
      const auto zr = model::forward(be, m, ws, in);
      ref.assign(zr.begin(), zr.end());
    }
    const std::int64_t V = m.config.vocab_size;
    auto log_softmax = [V](const T* z, std::vector<double>& out) {
      double mx = double(z[0]);
      for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
      double s = 0;
      for (std::int64_t v = 0; v < V; ++v) s += std::exp(double(z[v]) - mx);
      out.resize(std::size_t(V));
      for (std::int64_t v = 0; v < V; ++v) out[std::size_t(v)] = double(z[v]) - mx - std::log(s);
    };
    std::vector<double> lp, lq;
    for (std::int64_t t = 0; t < b.batch * b.seq; ++t) {
      if (b.targets[std::size_t(t)] == backend::ignore_index) continue;
      log_softmax(pol.data() + t * V, lp);
      log_softmax(ref.data() + t * V, lq);
      double kl = 0;
      for (std::int64_t v = 0; v < V; ++v)
        kl += std::exp(lp[std::size_t(v)]) * (lp[std::size_t(v)] - lq[std::size_t(v)]);
      total += kl;
      ++n;
    }
  }
  return n ? total / double(n) : 0.0;
}

/// Preference-trainer settings (defaults: TRL's DPOConfig where it has one).
struct preference_trainer_options {
  preference_objective objective{};
  reference_mode reference = reference_mode::cached;
  std::int64_t max_steps = 100;  ///< optimizer steps
  std::int64_t batch_size = 8;   ///< pairs per micro-batch (KTO: unpaired examples)
  std::int64_t grad_accum = 1;   ///< micro-batches per optimizer step
  double max_grad_norm = 1.0;    ///< global-norm clipping (≤ 0: off)
  adamw_options optim{.lr = 1e-6};
  schedule sched{};                   ///< total_steps 0 → max_steps
  std::int64_t eval_every = 0;        ///< 0: evaluate only at the end
  std::int64_t checkpoint_every = 0;  ///< 0: checkpoint only at the end (needs out_dir)
  std::filesystem::path out_dir{};    ///< checkpoint.safetensors, loss.csv, loss.svg
  std::uint64_t seed = 0;
  std::int32_t pad_id = 0;
  bool recompute = false;  ///< gradient checkpointing
  bool show_progress = false;
  std::int64_t halt_after = 0;  ///< >0: checkpoint and return after this step (a pause)
  bool resume = true;           ///< continue from out_dir/checkpoint.safetensors if present
  /// Data parallelism, as trainer_options::comm: each step's grad_accum micro-batches are
  /// split into contiguous blocks, one per rank (grad_accum a multiple of the group size);
  /// the reference cache is computed 1/N per rank and gathered; gradients (in buckets while
  /// backward runs), loss and token counts are summed in rank order; only rank 0 writes.
  /// Bit for bit one process's result when each rank holds one micro-batch per step.
  dist::communicator* comm = nullptr;
  dist::reduce_options reduce{};  ///< with comm: gradient buckets, overlap
  bool shard_optimizer = false;   ///< with comm: ZeRO-1 (see trainer_options)
};

/// What a preference run did.
struct preference_train_result {
  std::int64_t steps = 0;
  bool resumed = false;
  std::vector<log_entry> log{};     ///< loss per step (nats), lr, grad norm, tokens
  std::vector<eval_entry> evals{};  ///< accuracy, margin, loss on train (and held-out) pairs
  std::int64_t tokens = 0;          ///< tokens through the policy in this process
  double seconds = 0;               ///< wall time of the training loop in this process
  double reference_seconds = 0;     ///< wall time spent on reference log-probs
  std::size_t skipped_nonfinite_reference = 0;  ///< pairs dropped: cached reference not finite
  std::size_t reference_cache_bytes = 0;
  dist::reduce_stats reduce{};            ///< gradient reductions of this process (comm)
  std::size_t optimizer_state_bytes = 0;  ///< AdamW state held by this process
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0.0; }
};

/// Trains `params` of `m` on preference pairs `train` with objective `o.objective`; `lora`
/// (may be null) gets dropout on while training and is what live references switch off.
/// `cache` (may be null) supplies precomputed reference log-probs (indexed as `train`);
/// otherwise cached mode computes them first. Held-out pairs `val` are scored at every
/// evaluation ("val_accuracy", "val_margin", "val_loss"; train pairs: "accuracy",
/// "margin", "loss" on at most 64 of them). forge::error when the loss is not finite, when
/// a live reference is asked for without LoRA adapters, or for KTO with fewer than 2 pairs.
template <class T, class Bk>
preference_train_result train_preference(Bk be, model::causal_lm<T>& m,
                                         std::vector<trainable<T>> params,
                                         std::type_identity_t<adapters::lora_set<T>>* lora,
                                         std::span<const data::preference_example> train,
                                         std::span<const data::preference_example> val,
                                         const preference_trainer_options& o,
                                         const reference_cache* cache = nullptr) {
  const auto& obj = o.objective;
  require(!train.empty(), {.what = "no preference pairs", .place = "train_preference"});
  require(o.batch_size >= 1 && o.grad_accum >= 1 && o.max_steps >= 1,
          {.what = "batch_size, grad_accum and max_steps must be positive",
           .place = "preference_trainer_options"});
  require(!obj.kto || train.size() >= 2,
          {.what = "KTO needs at least 2 pairs (the KL rows pair prompts with other completions)",
           .place = "train_preference",
           .found = std::to_string(train.size())});
  const bool live = obj.needs_reference() && o.reference == reference_mode::live;
  require(!live || (lora && !lora->modules.empty()),
          {.what = "a live reference needs LoRA adapters (the reference is the base with "
                   "adapters off)",
           .place = "preference_trainer_options.reference",
           .expected = "reference_mode::cached, or a LoRA set",
           .found = "live without adapters"});
  const int world = o.comm ? o.comm->size() : 1, rank = o.comm ? o.comm->rank() : 0;
  const bool writer = rank == 0;
  require(o.grad_accum % world == 0,
          {.what = "grad_accum must be a multiple of the number of data-parallel ranks",
           .place = "preference_trainer_options.grad_accum",
           .expected = "a multiple of " + std::to_string(world),
           .found = std::to_string(o.grad_accum)});
  const std::int64_t per_rank = o.grad_accum / world;
  preference_train_result res;
  const auto t_ref0 = std::chrono::steady_clock::now();
  reference_cache own;
  if (obj.needs_reference() && !live && !cache) {
    if (lora) lora->train(false);
    own = compute_reference_cache(be, m, train, obj.kto, o.pad_id, lora, o.comm);
    cache = &own;
  }
  res.reference_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref0).count();
  if (cache) {
    require(cache->chosen.size() == train.size() && cache->rejected.size() == train.size() &&
                (!obj.kto || cache->kl.size() == 2 * train.size()),
            {.what = "reference cache does not match the training pairs",
             .place = "train_preference",
             .expected = std::to_string(train.size()) + " pairs",
             .found = std::to_string(cache->chosen.size())});
    res.reference_cache_bytes = cache->bytes();
  }
  const auto usable =
      detail::usable_examples(train.size(), obj.kto, obj.needs_reference() ? cache : nullptr,
                              res.skipped_nonfinite_reference);

  dist::sharded_adamw<T> opt(std::move(params), o.optim,
                             world > 1 && o.shard_optimizer ? o.comm : nullptr);
  std::optional<dist::gradient_buckets<T>> buckets;
  if (world > 1) buckets.emplace(*o.comm, m, opt.params(), o.reduce);
  res.optimizer_state_bytes = opt.state_bytes();
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  trainer_state st;
  st.seed = o.seed;
  const auto ckpt = o.out_dir.empty() ? std::filesystem::path() : checkpoint_path(o.out_dir);
  if (!ckpt.empty() && o.resume && std::filesystem::exists(ckpt)) {
    st = opt.load(ckpt);
    detail::require_same_seed(st, o.seed, ckpt);
    res.resumed = true;
  }
  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);

  epoch_order example_at(usable, o.seed);

  // Training-set metrics on up to 64 pairs whose reference is finite.
  auto [train_eval, train_eval_cache] = detail::train_eval_pairs(train, cache);
  reference_cache val_cache;
  bool val_cached = false;
  auto run_eval = [&] {
    if (lora) lora->train(false);
    eval_entry e{.step = st.step, .metrics = {}};
    const auto tr =
        evaluate_preferences(be, m, std::span<const data::preference_example>(train_eval), obj,
                             cache ? &train_eval_cache : nullptr, o.batch_size, o.pad_id);
    e.metrics["accuracy"] = tr.accuracy, e.metrics["margin"] = tr.margin;
    e.metrics["loss"] = tr.loss;
    if (!val.empty()) {
      if (!live && obj.needs_reference() && !val_cached) {
        val_cache = compute_reference_cache(be, m, val, false, o.pad_id, lora, o.comm);
        val_cached = true;
      }
      const auto v = evaluate_preferences(be, m, val, obj, live ? nullptr : &val_cache,
                                          o.batch_size, o.pad_id, lora);
      e.metrics["val_accuracy"] = v.accuracy, e.metrics["val_margin"] = v.margin;
      e.metrics["val_loss"] = v.loss;
    }
    st.evals.push_back(e);
    if (lora) lora->train(true);
  };
  auto save = [&] {
    if (ckpt.empty()) return;
    if (writer || opt.sharded()) opt.save(ckpt, st);  // sharded: collective, rank 0 writes
    if (writer) write_loss_curve(o.out_dir, st.log, st.evals);
  };

  std::optional<progress> bar;
  if (o.show_progress && writer) bar.emplace("align", std::uint64_t(o.max_steps - st.step));
  const auto t0 = std::chrono::steady_clock::now();
  model::workspace<T> ws, ws_kl;
  if (lora) lora->train(true);
  const double accum_scale = 1.0 / double(o.grad_accum);
  while (st.step < o.max_steps) {
    // Each micro-batch's gradient is computed from zero and added to the step's sum in
    // micro-batch order (as train_sft does), so the sum does not depend on how the
    // micro-batches are spread over ranks; this rank takes micro-batches [rank·k, rank·k + k).
    const auto& ps = opt.params();
    std::vector<std::vector<T>> sum;
    double loss = 0, nonfinite = 0, first_bad = 0;
    std::int64_t tokens = 0;
    const std::int64_t first = rank * per_rank, last_mb = first + per_rank - 1;
    std::vector<std::vector<std::size_t>> picks(std::size_t(o.grad_accum));
    for (auto& pick : picks)
      for (std::int64_t i = 0; i < o.batch_size; ++i)
        pick.push_back(example_at(st.examples_seen++));
    // After this micro-batch's backward (or none, when its loss is not finite): into the sum,
    // or for the rank's last one, the group's reduction.
    auto add_gradient = [&](std::int64_t j, bool ran_backward) {
      if (buckets && j == last_mb) {
        if (ran_backward)
          buckets->backward_and_reduce(be, ws, sum.empty() ? nullptr : &sum);
        else
          buckets->reduce(sum.empty() ? nullptr : &sum);  // gradients are zero
        return;
      }
      if (!ran_backward) return;
      model::backward(be, m, ws);
      if (sum.empty()) {
        for (const auto& p : ps) sum.emplace_back(p.grad.begin(), p.grad.end());
      } else {
        for (std::size_t k = 0; k < ps.size(); ++k)
          for (std::size_t i = 0; i < ps[k].grad.size(); ++i) sum[k][i] += ps[k].grad[i];
      }
    };
    for (std::int64_t j = first; j <= last_mb; ++j) {
      const auto& pick = picks[std::size_t(j)];
      zero_grads(ps);
      if (lora) lora->set_dropout_step(std::uint64_t(st.step * o.grad_accum + j));
      double l = 0;
      if (!obj.kto) {
        const auto b = detail::pair_batch(train, pick, o.pad_id);
        const std::size_t B = pick.size();
        std::vector<double> rc, rr;
        if (obj.needs_reference()) {
          if (live) {
            const auto tr = std::chrono::steady_clock::now();
            auto r = live_reference(be, m, train, pick, {}, o.pad_id, lora);
            res.reference_seconds +=
                std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
            rc = std::move(r.chosen), rr = std::move(r.rejected);
          } else {
            for (auto k : pick) rc.push_back(cache->chosen[k]), rr.push_back(cache->rejected[k]);
          }
        }
        const auto lp = objectives::sequence_logprobs(be, m, ws, b, true, o.recompute);
        const std::vector<double> pc(lp.begin(), lp.begin() + std::ptrdiff_t(B)),
            pr(lp.begin() + std::ptrdiff_t(B), lp.end());
        const std::vector<std::int64_t> nc(b.completion_tokens.begin(),
                                           b.completion_tokens.begin() + std::ptrdiff_t(B)),
            nr(b.completion_tokens.begin() + std::ptrdiff_t(B), b.completion_tokens.end());
        const auto r = objectives::preference_loss(obj.pair, {pc, pr, rc, rr, nc, nr});
        l = r.loss;
        std::vector<double> g(r.d_chosen);
        g.insert(g.end(), r.d_rejected.begin(), r.d_rejected.end());
        for (auto& v : g) v *= accum_scale;
        if (std::isfinite(l)) objectives::sequence_logprobs_backward(ws, b, g);
        add_gradient(j, std::isfinite(l));
        tokens += b.tokens();
      } else {
        std::vector<objectives::completion_sequence> rows, kl_rows;
        for (auto k : pick) {
          rows.push_back(detail::kto_row(train, k));
          kl_rows.push_back(detail::kto_kl_row(train, k));
        }
        const auto b = objectives::make_sequence_batch(rows, o.pad_id);
        const auto bk = objectives::make_sequence_batch(kl_rows, o.pad_id);
        std::vector<double> ref, ref_kl;
        if (live) {
          const auto tr = std::chrono::steady_clock::now();
          std::vector<std::size_t> pairs;
          for (auto k : pick) pairs.push_back(k % train.size());
          auto r = live_reference(be, m, train, pairs, pick, o.pad_id, lora);
          for (std::size_t q = 0; q < pick.size(); ++q)
            ref.push_back(pick[q] < train.size() ? r.chosen[q] : r.rejected[q]);
          ref_kl = std::move(r.kl);
          res.reference_seconds +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
        } else {
          for (auto k : pick) {
            const std::size_t p = k % train.size();
            ref.push_back(k < train.size() ? cache->chosen[p] : cache->rejected[p]);
            ref_kl.push_back(cache->kl[k]);
          }
        }
        std::vector<unsigned char> lab;
        for (auto k : pick) lab.push_back(k < train.size());
        std::vector<double> pkl;
        {
          // The KL estimate is detached: the policy's KL rows run without gradient and
          // without dropout (TRL runs them under no_grad in the same mode as the policy;
          // with dropout 0, the default, the two agree).
          pkl = objectives::sequence_logprobs(be, m, ws_kl, bk);
        }
        const auto lp = objectives::sequence_logprobs(be, m, ws, b, true, o.recompute);
        const auto r = objectives::kto_loss(obj.kto_opts, {lp, ref, lab, pkl, ref_kl});
        l = r.loss;
        std::vector<double> g(r.d_policy);
        for (auto& v : g) v *= accum_scale;
        objectives::sequence_logprobs_backward(ws, b, g);
        add_gradient(j, true);
        tokens += b.tokens() + bk.tokens();
      }
      if (!std::isfinite(l) && nonfinite++ == 0) first_bad = l;
      loss += l * accum_scale;
    }
    if (!buckets) {
      for (std::size_t k = 0; k < ps.size(); ++k) {
        if (sum.empty())
          std::fill(ps[k].grad.begin(), ps[k].grad.end(), T(0));
        else
          std::copy(sum[k].begin(), sum[k].end(), ps[k].grad.begin());
      }
    }
    res.tokens += tokens;
    if (world > 1) detail::reduce_scalars(*o.comm, loss, tokens, nonfinite);
    if (nonfinite > 0) {  // every rank stops here together (this rank's bad value, or the sum)
      if (lora) lora->train(false);
      throw error({.what = "preference loss is not finite; stopped",
                   .place = "step " + std::to_string(st.step + 1),
                   .expected = "a finite loss (last good checkpoint: " +
                               (ckpt.empty() ? std::string("none") : ckpt.string()) + ")",
                   .found = str(first_bad != 0 ? first_bad : loss)});
    }
    const double norm = clip_grad_norm(opt.params(), o.max_grad_norm);
    const double lr = o.optim.lr * sched.factor(st.step);
    opt.step(lr);
    ++st.step;
    st.log.push_back({st.step, loss, lr, norm, tokens});
    if (bar) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.4f", loss);
      bar->field("loss", buf);
      bar->advance();
    }
    const bool last = st.step == o.max_steps;
    if (last || (o.eval_every > 0 && st.step % o.eval_every == 0)) run_eval();
    const bool halt = o.halt_after > 0 && st.step >= o.halt_after;
    if (detail::checkpoint_due(st.step, o.checkpoint_every, last, halt)) save();
    if (halt) break;
  }
  if (bar) bar->finish();
  if (lora) lora->train(false);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.steps = st.step;
  if (buckets) res.reduce = buckets->stats();
  res.log = st.log;
  res.evals = st.evals;
  return res;
}

}  // namespace forge::train
