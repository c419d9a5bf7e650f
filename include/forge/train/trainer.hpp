#pragma once
// The SFT training loop: shuffled micro-batches, gradient accumulation, global-norm clipping,
// AdamW with a warmup schedule, evaluation every N steps with early stopping, a progress bar
// (loss, tokens/s, ETA), the loss curve (CSV + SVG) and atomic checkpoints from which a run
// resumes bit-identically.
//
// Determinism: example k of the run (k = examples consumed) is example perm_e[k mod n] with
// e = k div n and perm_e a Fisher–Yates shuffle drawn from Philox(seed, e); the dropout mask
// of micro-batch j of step s is keyed by s·accumulation + j. So the data position and the
// random streams are functions of (seed, step), and a checkpoint holding the step, the
// trainable values and the optimizer moments resumes exactly where it stopped.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/progress.hpp"
#include "forge/core/rng.hpp"
#include "forge/dist/communicator.hpp"
#include "forge/dist/gradient_buckets.hpp"
#include "forge/dist/zero1.hpp"
#include "forge/objectives/sft.hpp"
#include "forge/train/checkpoint.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/schedule.hpp"

namespace forge::train {

/// The order the trainers visit their examples in: position k of the run is entry
/// perm_e[k mod n] of `items`, perm_e the Fisher–Yates shuffle drawn from Philox(seed, e) for
/// epoch e = k / n. Every trainer (CPU and GPU, SFT and preference) uses this one order, so
/// runs agree example for example and a resumed run continues where it stopped.
class epoch_order {
 public:
  /// The examples 0..n-1.
  epoch_order(std::size_t n, std::uint64_t seed) : items_(n), perm_(n), seed_(seed) {
    for (std::size_t i = 0; i < n; ++i) items_[i] = i;
  }
  /// The example indices `items` (e.g. those left after skips), in that base order.
  epoch_order(std::vector<std::size_t> items, std::uint64_t seed)
      : items_(std::move(items)), perm_(items_.size()), seed_(seed) {}
  /// The example at run position k (k >= 0; items not empty).
  std::size_t operator()(std::int64_t k) {
    const auto n = std::int64_t(items_.size());
    const std::int64_t e = k / n;
    if (e != epoch_) {
      perm_ = items_;
      philox g(seed_, std::uint64_t(e));
      for (std::size_t i = perm_.size(); i > 1; --i)
        std::swap(perm_[i - 1], perm_[g.below(std::uint32_t(i))]);
      epoch_ = e;
    }
    return perm_[std::size_t(k % n)];
  }

 private:
  std::vector<std::size_t> items_, perm_;
  std::uint64_t seed_;
  std::int64_t epoch_ = -1;
};

/// Early stopping on an evaluation metric; patience 0 turns it off.
struct early_stopping {
  std::string metric = "val_loss";  ///< a key of the evaluation metrics
  bool higher_is_better = false;
  std::int64_t patience = 0;  ///< evaluations without improvement before stopping
  double min_delta = 0;       ///< smallest change that counts as an improvement
};

/// Trainer settings (defaults follow transformers' TrainingArguments where it has one).
struct trainer_options {
  std::int64_t max_steps = 100;  ///< optimizer steps
  std::int64_t batch_size = 8;   ///< examples per micro-batch
  std::int64_t grad_accum = 1;   ///< micro-batches per optimizer step
  double max_grad_norm = 1.0;    ///< global-norm clipping (≤ 0: off)
  adamw_options optim{};
  schedule sched{};                   ///< total_steps 0 → max_steps
  std::int64_t eval_every = 0;        ///< 0: evaluate only at the end
  std::int64_t checkpoint_every = 0;  ///< 0: checkpoint only at the end (needs out_dir)
  std::filesystem::path out_dir{};    ///< checkpoint.safetensors, loss.csv, loss.svg
  std::uint64_t seed = 0;
  std::int32_t pad_id = 0;
  /// > 0: pack each micro-batch's examples into rows of this many tokens (no padding waste;
  /// same loss and gradients as padded batches). 0: right-pad to the longest example.
  std::size_t pack_row_length = 0;
  bool recompute = false;  ///< gradient checkpointing
  early_stopping stop{};
  bool show_progress = false;
  std::int64_t halt_after = 0;  ///< >0: checkpoint and return after this step (a pause)
  bool resume = true;           ///< continue from out_dir/checkpoint.safetensors if present
  /// Data parallelism: the process group training together (null: this process alone).
  /// Each optimizer step's grad_accum micro-batches are split into contiguous blocks, one per
  /// rank (grad_accum must be a multiple of the group size); gradients, loss and token counts
  /// are summed in rank order, so every rank takes the same optimizer step; only rank 0
  /// writes checkpoints and loss curves. The result equals one process with the same
  /// grad_accum bit for bit when each rank holds one micro-batch per step (grad_accum equal to
  /// the group size) — the sums are then the same two-term sums in the same order — and within
  /// float rounding of the accumulation order otherwise.
  dist::communicator* comm = nullptr;
  /// With comm: gradient buckets and whether they travel while backward runs (same bits
  /// either way).
  dist::reduce_options reduce{};
  /// With comm: ZeRO-1 — each rank keeps the AdamW state of its 1/N of the parameter values
  /// and updates only those; the updated values are then broadcast from their owners. Same
  /// bits as unsharded training; optimizer memory per rank about 1/N (see
  /// train_result::optimizer_state_bytes). Checkpoints stay in the unsharded format.
  bool shard_optimizer = false;
};

/// What a run did.
struct train_result {
  std::int64_t steps = 0;      ///< optimizer steps done in total
  bool resumed = false;        ///< started from a checkpoint
  bool stopped_early = false;  ///< early stopping ended the run
  std::vector<log_entry> log{};
  std::vector<eval_entry> evals{};
  std::int64_t tokens = 0;                ///< tokens processed in this process
  double seconds = 0;                     ///< wall time in this process
  dist::reduce_stats reduce{};            ///< gradient reductions of this process (comm)
  std::size_t optimizer_state_bytes = 0;  ///< AdamW state held by this process
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0.0; }
};

/// Extra evaluation metrics measured on the model (e.g. task exact match).
template <class T>
using evaluator = std::function<std::map<std::string, double>(model::causal_lm<T>&)>;

/// Mean masked cross-entropy (nats per trained token) of `xs` in batches, no gradients.
template <class T, class Bk>
double mean_loss(Bk be, model::causal_lm<T>& m, std::span<const data::sft_example> xs,
                 std::int64_t batch_size, std::int32_t pad_id) {
  model::workspace<T> ws;
  double total = 0;
  std::int64_t n = 0;
  for (std::size_t i = 0; i < xs.size(); i += std::size_t(batch_size)) {
    std::vector<std::size_t> pick;
    for (std::size_t j = i; j < std::min(xs.size(), i + std::size_t(batch_size)); ++j)
      pick.push_back(j);
    auto b = objectives::make_batch(xs, pick, pad_id);
    const auto t = b.targets();
    if (t == 0) continue;
    total += objectives::sft_forward_loss(be, m, ws, b, 1.0, false) * double(t);
    n += t;
  }
  return n ? total / double(n) : 0.0;
}

/// Checkpoint file of a run directory.
inline std::filesystem::path checkpoint_path(const std::filesystem::path& dir) {
  return dir / "checkpoint.safetensors";
}

namespace detail {

/// Sums a step's loss, token count and non-finite count over the group, in rank order.
inline void reduce_scalars(dist::communicator& c, double& loss, std::int64_t& tokens,
                           double& nonfinite) {
  double scalars[3] = {loss, double(tokens), nonfinite};
  c.all_reduce_sum(std::span<double>(scalars));
  loss = scalars[0], tokens = std::int64_t(scalars[1]), nonfinite = scalars[2];
}

/// A resumed run continues only with the seed its checkpoint `ckpt` was made with (the data
/// order and dropout masks are functions of it). Every trainer, CPU or GPU, checks this.
inline void require_same_seed(const trainer_state& st, std::uint64_t seed,
                              const std::filesystem::path& ckpt) {
  require(st.seed == seed, {.what = "checkpoint was made with another seed",
                            .file = ckpt.string(),
                            .expected = std::to_string(seed),
                            .found = std::to_string(st.seed)});
}

/// Whether a step ends with a checkpoint: the last step, a forced one (early stop, pause) or
/// every `every` steps (0: never on a cadence).
inline bool checkpoint_due(std::int64_t step, std::int64_t every, bool last, bool forced) {
  return last || forced || (every > 0 && step % every == 0);
}

/// train_sft's evaluation at the current step (the CPU and GPU loops share it): validation
/// loss, perplexity and train/validation gap on `val`, the metrics of `evaluate`, one entry
/// appended to st.evals; then early stopping. Returns whether training should stop.
template <class T, class Bk>
bool sft_evaluate(Bk be, model::causal_lm<T>& m, std::span<const data::sft_example> val,
                  const trainer_options& o, const evaluator<T>& evaluate, trainer_state& st) {
  eval_entry e{.step = st.step, .metrics = {}};
  if (!val.empty()) {
    const double vl = mean_loss(be, m, val, o.batch_size, o.pad_id);
    e.metrics["val_loss"] = vl;
    e.metrics["perplexity"] = std::exp(vl);
    if (!st.log.empty()) e.metrics["train_val_gap"] = vl - st.log.back().loss;
  }
  if (evaluate)
    for (auto& [k, v] : evaluate(m)) e.metrics[k] = v;
  st.evals.push_back(e);
  if (o.stop.patience <= 0) return false;
  auto it = e.metrics.find(o.stop.metric);
  require(it != e.metrics.end(), {.what = "early-stopping metric is not measured",
                                  .place = "early_stopping.metric",
                                  .found = o.stop.metric});
  const double v = it->second;
  const bool better = !st.has_best || (o.stop.higher_is_better ? v > st.best + o.stop.min_delta
                                                               : v < st.best - o.stop.min_delta);
  if (better) {
    st.best = v, st.has_best = true, st.bad_evals = 0;
    return false;
  }
  return ++st.bad_evals >= o.stop.patience;
}

}  // namespace detail

/// Trains `params` of `m` on `train` (SFT examples) as `o` says; `lora` (may be null) gets
/// dropout switched on while training. Validation loss and perplexity on `val` and the
/// metrics of `evaluate` are measured every eval_every steps and at the end. Throws
/// forge::error when the loss becomes NaN or infinite; the last checkpoint is kept.
template <class T, class Bk>
train_result train_sft(Bk be, model::causal_lm<T>& m, std::vector<trainable<T>> params,
                       std::type_identity_t<adapters::lora_set<T>>* lora,
                       std::span<const data::sft_example> train,
                       std::span<const data::sft_example> val, const trainer_options& o,
                       const evaluator<T>& evaluate = {}) {
  require(!train.empty(), {.what = "no training examples", .place = "train_sft"});
  require(o.batch_size >= 1 && o.grad_accum >= 1 && o.max_steps >= 1,
          {.what = "batch_size, grad_accum and max_steps must be positive",
           .place = "trainer_options"});
  const int world = o.comm ? o.comm->size() : 1, rank = o.comm ? o.comm->rank() : 0;
  const bool writer = rank == 0;
  require(o.grad_accum % world == 0,
          {.what = "grad_accum must be a multiple of the number of data-parallel ranks",
           .place = "trainer_options.grad_accum",
           .expected = "a multiple of " + std::to_string(world),
           .found = std::to_string(o.grad_accum)});
  const std::int64_t per_rank = o.grad_accum / world;
  // With a group: AdamW state sharded (ZeRO-1) or not, and the gradient buckets.
  dist::sharded_adamw<T> opt(std::move(params), o.optim,
                             world > 1 && o.shard_optimizer ? o.comm : nullptr);
  std::optional<dist::gradient_buckets<T>> buckets;
  if (world > 1) buckets.emplace(*o.comm, m, opt.params(), o.reduce);
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  trainer_state st;
  st.seed = o.seed;
  train_result res;
  res.optimizer_state_bytes = opt.state_bytes();
  const auto ckpt = o.out_dir.empty() ? std::filesystem::path() : checkpoint_path(o.out_dir);
  if (!ckpt.empty() && o.resume && std::filesystem::exists(ckpt)) {
    st = opt.load(ckpt);
    detail::require_same_seed(st, o.seed, ckpt);
    res.resumed = true;
  }
  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);

  const std::size_t n = train.size();
  epoch_order example_at(n, o.seed);

  auto run_eval = [&] {
    if (lora) lora->train(false);
    const bool stop = detail::sft_evaluate(be, m, val, o, evaluate, st);
    if (lora) lora->train(true);
    return stop;
  };
  auto save = [&] {
    if (ckpt.empty()) return;
    if (writer || opt.sharded()) opt.save(ckpt, st);  // sharded: collective, rank 0 writes
    if (writer) write_loss_curve(o.out_dir, st.log, st.evals);
  };

  std::optional<progress> bar;
  if (o.show_progress && writer) bar.emplace("train", std::uint64_t(o.max_steps - st.step));
  const auto t0 = std::chrono::steady_clock::now();
  model::workspace<T> ws;
  if (lora) lora->train(true);
  bool stopped = false;
  while (st.step < o.max_steps && !stopped) {
    // One optimizer step over grad_accum micro-batches, normalised by the step's targets.
    std::vector<objectives::sft_batch> micro;
    std::int64_t targets = 0;
    for (std::int64_t j = 0; j < o.grad_accum; ++j) {
      std::vector<std::size_t> pick;
      for (std::int64_t i = 0; i < o.batch_size; ++i)
        pick.push_back(example_at(st.examples_seen++));
      micro.push_back(o.pack_row_length > 0
                          ? objectives::make_packed_batch(train, pick, o.pack_row_length, o.pad_id)
                          : objectives::make_batch(train, pick, o.pad_id));
      targets += micro.back().targets();
    }
    // This rank's block of micro-batches. Each micro-batch's gradient is computed from zero
    // and added to the step's sum in micro-batch order, so the sum's bits do not depend on
    // how backward accumulates internally, nor on how the micro-batches are spread over ranks.
    // In a group, the backward of the rank's last micro-batch reduces the gradient buckets
    // as its layers finish.
    double loss = 0, nonfinite = 0;
    std::int64_t tokens = 0;
    std::vector<std::vector<T>> sum;
    const auto& ps = opt.params();
    std::int64_t last_mb = -1;  // this rank's last micro-batch with targets
    for (std::int64_t j = rank * per_rank; j < (rank + 1) * per_rank; ++j)
      if (micro[std::size_t(j)].targets() > 0) last_mb = j;
    for (std::int64_t j = rank * per_rank; j < (rank + 1) * per_rank; ++j) {
      const auto& mb = micro[std::size_t(j)];
      const auto t = mb.targets();
      if (t == 0) continue;
      zero_grads(ps);
      if (lora) lora->set_dropout_step(std::uint64_t(st.step * o.grad_accum + j));
      const double w = double(t) / double(targets);
      const double l = objectives::sft_forward_loss(be, m, ws, mb, w, true, o.recompute);
      if (!std::isfinite(l)) nonfinite += 1;
      loss += l * w;
      for (auto v : mb.attention_mask) tokens += v;
      if (buckets && j == last_mb) {
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
    if (buckets && last_mb < 0) {  // nothing to train on this rank in this step: add zeros
      zero_grads(ps);
      buckets->reduce(nullptr);
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
    if (nonfinite > 0) {
      if (lora) lora->train(false);
      throw error({.what = "training loss is not finite; stopped",
                   .place = "step " + std::to_string(st.step + 1),
                   .expected = "a finite loss (last good checkpoint: " +
                               (ckpt.empty() ? std::string("none") : ckpt.string()) + ")",
                   .found = str(loss)});
    }
    const double norm = clip_grad_norm(opt.params(), o.max_grad_norm);
    const double lr = o.optim.lr * sched.factor(st.step);
    opt.step(lr);
    ++st.step;
    st.log.push_back({st.step, loss, lr, norm, tokens});
    if (bar) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char b[32];
      std::snprintf(b, sizeof b, "%.4f", loss);
      bar->field("loss", b);
      std::snprintf(b, sizeof b, "%.0f", s > 0 ? double(res.tokens) / s : 0.0);
      bar->field("tok/s", b);
      bar->advance();
    }
    const bool last = st.step == o.max_steps;
    if (!last && o.eval_every > 0 && st.step % o.eval_every == 0) stopped = run_eval();
    if (last) run_eval();  // the final evaluation; nothing left to stop
    const bool halt = o.halt_after > 0 && st.step >= o.halt_after;
    if (detail::checkpoint_due(st.step, o.checkpoint_every, last, stopped || halt)) save();
    if (halt) break;
  }
  if (bar) bar->finish();
  if (lora) lora->train(false);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.steps = st.step;
  if (buckets) res.reduce = buckets->stats();
  res.stopped_early = stopped;
  res.log = st.log;
  res.evals = st.evals;
  return res;
}

}  // namespace forge::train
