#pragma once
// train_sft on one GPU: the same loop as train/trainer.hpp — the same example order (Philox
// shuffles per epoch), micro-batches from objectives::make_batch, accumulation normalised by
// the step's trained tokens, global-norm clipping, AdamW with the same schedule, evaluation
// every eval_every steps with early stopping, the loss curve and checkpoint.safetensors in the
// same format — with the forward, backward and optimizer step on the GPU
// (backend/cuda/session.hpp): of the LoRA adapters (train_sft_cuda) or of every trainable
// weight (train_sft_cuda_full, full fine-tuning). Evaluation (validation loss, the caller's
// metrics) runs on the CPU backend `Bk` with the trained values copied back, so evaluation
// numbers are the CPU's. One loop (cuda_detail::sft_loop) serves both.
//
// Differences from the CPU loop, each a forge::error rather than a silent change: no LoRA
// dropout, no DoRA, no packed rows, no data parallelism (one GPU), no 8-bit optimizer state.
// trainer_options::recompute has no effect (the GPU trainer keeps its own activation plan).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <span>
#include <vector>

#include "forge/core/progress.hpp"
#include "forge/core/rng.hpp"
#include "forge/objectives/sft.hpp"
#include "forge/train/cuda_session.hpp"
#include "forge/train/trainer.hpp"

namespace forge::train {

/// Device settings of a GPU run.
struct cuda_train_options {
  cuda::base_storage base = cuda::base_storage::dense;  ///< NF4 for QLoRA
  cuda::precision storage = cuda::precision::f32;       ///< f32 (matches the CPU) or bf16
};

namespace cuda_detail {

/// Token-row targets of a micro-batch: position t predicts label t + 1 (transformers'
/// ForCausalLMLoss shift), the last position of a row predicts nothing; rows padded to `seq`.
inline void batch_arrays(const objectives::sft_batch& b, std::int64_t seq, std::int32_t pad,
                         std::vector<std::int64_t>& ids, std::vector<std::int64_t>& targets) {
  ids.assign(std::size_t(b.batch * seq), pad);
  targets.assign(std::size_t(b.batch * seq), data::ignore_index);
  for (std::int64_t r = 0; r < b.batch; ++r)
    for (std::int64_t s = 0; s < b.seq; ++s) {
      ids[std::size_t(r * seq + s)] = b.input_ids[std::size_t(r * b.seq + s)];
      if (s + 1 < b.seq)
        targets[std::size_t(r * seq + s)] = b.labels[std::size_t(r * b.seq + s + 1)];
    }
}

/// Sequence lengths are rounded up to this so a run captures few CUDA graphs; padding after a
/// row's last token changes nothing before it (attention is causal, padding is never a target).
inline constexpr std::int64_t seq_quantum = 16;
inline std::int64_t padded_seq(std::int64_t s) {
  return (s + seq_quantum - 1) / seq_quantum * seq_quantum;
}

}  // namespace cuda_detail

/// The device side of a GPU training loop: a LoRA session with its set, or a full
/// fine-tuning session. `to_host` copies the trained values into the CPU model.
struct cuda_lora_device {
  cuda_lora_session& s;
  adapters::lora_set<float>& set;
  cuda::lora_session& gpu() { return *s.gpu; }
  void to_host() {
    download_lora(s, set);
    set.train(false);
  }
  void save(const std::filesystem::path& p, std::int64_t adam_steps, const trainer_state& st) {
    save_cuda_checkpoint(p, s, set, adam_steps, st);
  }
  trainer_state load(const std::filesystem::path& p) { return load_cuda_checkpoint(p, s, set); }
};
/// The full fine-tuning counterpart of cuda_lora_device.
struct cuda_full_device {
  cuda_full_session& s;
  cuda::full_session& gpu() { return *s.gpu; }
  void to_host() { download_weights(s); }
  void save(const std::filesystem::path& p, std::int64_t adam_steps, const trainer_state& st) {
    save_cuda_checkpoint(p, s, adam_steps, st);
  }
  trainer_state load(const std::filesystem::path& p) { return load_cuda_checkpoint(p, s); }
};

namespace cuda_detail {

inline void check_sft_options(std::span<const data::sft_example> train, const trainer_options& o) {
  require(!train.empty(), {.what = "no training examples", .place = "train_sft_cuda"});
  require(o.batch_size >= 1 && o.grad_accum >= 1 && o.max_steps >= 1,
          {.what = "batch_size, grad_accum and max_steps must be positive",
           .place = "trainer_options"});
  require(o.comm == nullptr && o.pack_row_length == 0 && !o.optim.eight_bit,
          {.what = "training option the GPU trainer does not take",
           .place = "trainer_options",
           .expected = "one process, padded (not packed) rows, f32 optimizer state",
           .found = o.comm              ? "a communicator"
                    : o.pack_row_length ? "pack_row_length " + std::to_string(o.pack_row_length)
                                        : "eight_bit optimizer state"});
}

inline std::int64_t longest_example(std::span<const data::sft_example> xs) {
  std::int64_t longest = 1;
  for (const auto& e : xs) longest = std::max<std::int64_t>(longest, e.input_ids.size());
  return longest;
}

/// train_sft's loop with the forward, backward and optimizer step on `dev` (cuda_lora_device
/// or cuda_full_device); evaluation on the CPU backend `be` after dev.to_host().
template <class Bk, class Dev>
train_result sft_loop(Bk be, model::causal_lm<float>& m, Dev& dev,
                      std::span<const data::sft_example> train,
                      std::span<const data::sft_example> val, const trainer_options& o,
                      const evaluator<float>& evaluate, train_result res) {
  auto& gpu = dev.gpu();
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  trainer_state st;
  st.seed = o.seed;
  const auto ckpt = o.out_dir.empty() ? std::filesystem::path() : checkpoint_path(o.out_dir);
  if (!ckpt.empty() && o.resume && std::filesystem::exists(ckpt)) {
    st = dev.load(ckpt);
    detail::require_same_seed(st, o.seed, ckpt);
    res.resumed = true;
  }
  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);

  // The data order of train_sft: example k is perm_e[k mod n], perm_e drawn from Philox(seed, e).
  const std::size_t n = train.size();
  epoch_order example_at(n, o.seed);

  // train_sft's evaluation and early stopping, on the CPU with the trained values copied back.
  auto run_eval = [&] {
    dev.to_host();
    return detail::sft_evaluate(be, m, val, o, evaluate, st);
  };
  std::int64_t adam_steps = st.step;
  auto save = [&] {
    if (ckpt.empty()) return;
    dev.save(ckpt, adam_steps, st);
    write_loss_curve(o.out_dir, st.log, st.evals);
  };

  std::optional<progress> bar;
  if (o.show_progress) bar.emplace("train", std::uint64_t(o.max_steps - st.step));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::int64_t> ids, targets;
  std::vector<float> w;
  bool stopped = false;
  while (st.step < o.max_steps && !stopped) {
    std::vector<objectives::sft_batch> micro;
    std::int64_t step_targets = 0;
    for (std::int64_t j = 0; j < o.grad_accum; ++j) {
      std::vector<std::size_t> pick;
      for (std::int64_t i = 0; i < o.batch_size; ++i)
        pick.push_back(example_at(st.examples_seen++));
      micro.push_back(objectives::make_batch(train, pick, o.pad_id));
      step_targets += micro.back().targets();
    }
    // L = Σ_micro Σ_t CE_t / N_step: every kept row weighs 1/N_step, so the gradients the GPU
    // accumulates over the micro-batches are the step's, as the CPU's per-micro-batch sum.
    gpu.zero_grad();
    double loss = 0;
    std::int64_t tokens = 0;
    bool nonfinite = false;
    for (const auto& mb : micro) {
      if (mb.targets() == 0) continue;
      const std::int64_t seq = padded_seq(mb.seq);
      batch_arrays(mb, seq, o.pad_id, ids, targets);
      w.assign(ids.size(), 0.0f);
      for (std::size_t t = 0; t < w.size(); ++t)
        if (targets[t] != data::ignore_index) w[t] = float(1.0 / double(step_targets));
      const double l = gpu.forward_backward(mb.batch, seq, ids.data(), targets.data(), w.data());
      nonfinite = nonfinite || !std::isfinite(l);
      loss += l;
      for (auto v : mb.attention_mask) tokens += v;
    }
    res.tokens += tokens;
    if (nonfinite)
      throw error({.what = "training loss is not finite; stopped",
                   .place = "step " + std::to_string(st.step + 1),
                   .expected = "a finite loss (last good checkpoint: " +
                               (ckpt.empty() ? std::string("none") : ckpt.string()) + ")",
                   .found = str(loss)});
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
    const double norm = gpu.grad_norm();
    const double coef = o.max_grad_norm > 0 ? std::min(1.0, o.max_grad_norm / (norm + 1e-6)) : 1.0;
    const double lr = o.optim.lr * sched.factor(st.step);
    gpu.step({.lr = lr,
              .weight_decay = o.optim.weight_decay,
              .beta1 = o.optim.beta1,
              .beta2 = o.optim.beta2,
              .eps = o.optim.eps,
              .grad_scale = coef});
    ++adam_steps;
    ++st.step;
    st.log.push_back({st.step, loss, lr, norm, tokens});
    if (bar) {
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char b[32];
      std::snprintf(b, sizeof b, "%.4f", loss);
      bar->field("loss", b);
      std::snprintf(b, sizeof b, "%.0f", sec > 0 ? double(res.tokens) / sec : 0.0);
      bar->field("tok/s", b);
      bar->advance();
    }
    const bool last = st.step == o.max_steps;
    if (!last && o.eval_every > 0 && st.step % o.eval_every == 0) stopped = run_eval();
    if (last) run_eval();
    const bool halt = o.halt_after > 0 && st.step >= o.halt_after;
    if (detail::checkpoint_due(st.step, o.checkpoint_every, last, stopped || halt)) save();
    if (halt) break;
  }
  if (bar) bar->finish();
  dev.to_host();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.steps = st.step;
  res.stopped_early = stopped;
  res.log = st.log;
  res.evals = st.evals;
  return res;
}

}  // namespace cuda_detail

/// Trains the LoRA set `lora` of `m` on `train` as train_sft does, on GPU 0 (see the header
/// comment). On return the set holds the trained adapters. `Bk` (a CPU backend) evaluates and
/// dequantizes.
template <class Bk>
train_result train_sft_cuda(Bk be, model::causal_lm<float>& m, adapters::lora_set<float>& lora,
                            std::span<const data::sft_example> train,
                            std::span<const data::sft_example> val, const trainer_options& o,
                            const cuda_train_options& dev = {},
                            const evaluator<float>& evaluate = {}) {
  static_assert(is_cpu_backend_v<Bk>, "train_sft_cuda evaluates on a CPU backend (scalar, simd)");
  cuda_detail::check_sft_options(train, o);
  auto s = open_cuda_session(be, m, lora, dev.base, dev.storage, o.batch_size,
                             cuda_detail::padded_seq(cuda_detail::longest_example(train)));
  train_result res;
  res.optimizer_state_bytes = std::size_t(lora.parameter_count()) * 8;
  cuda_lora_device d{s, lora};
  return cuda_detail::sft_loop(be, m, d, train, val, o, evaluate, std::move(res));
}

/// Full fine-tuning of `params` (train::model_parameters(m, pattern)) on `train` as train_sft
/// does, on GPU 0: every weight of `m` on the device, the trainable ones trained with f32
/// masters and AdamW moments (the same decay on every trained tensor, as the CPU's adamw).
/// `storage` f32 matches the CPU to float rounding; bf16 computes in bf16 with f32
/// accumulation. On return `m` holds the trained weights. `Bk` (a CPU backend) evaluates.
template <class Bk>
train_result train_sft_cuda_full(Bk be, model::causal_lm<float>& m,
                                 std::vector<trainable<float>> params,
                                 std::span<const data::sft_example> train,
                                 std::span<const data::sft_example> val, const trainer_options& o,
                                 cuda::precision storage = cuda::precision::f32,
                                 const evaluator<float>& evaluate = {}) {
  static_assert(is_cpu_backend_v<Bk>,
                "train_sft_cuda_full evaluates on a CPU backend (scalar, simd)");
  cuda_detail::check_sft_options(train, o);
  std::size_t count = 0;
  for (const auto& p : params) count += p.value.size();
  auto s = open_cuda_full_session(m, std::move(params), storage, o.batch_size,
                                  cuda_detail::padded_seq(cuda_detail::longest_example(train)));
  train_result res;
  res.optimizer_state_bytes = count * 8;
  cuda_full_device d{s};
  return cuda_detail::sft_loop(be, m, d, train, val, o, evaluate, std::move(res));
}

}  // namespace forge::train
