#pragma once
// train_preference on one GPU for the pairwise losses (DPO, cDPO, robust DPO, IPO, hinge,
// SimPO, ORPO) and KTO: the loop of train/preference_trainer.hpp — the same pair order,
// micro-batches of [chosen…, rejected…] rows (objectives::make_sequence_batch), the loss of
// objectives::preference_loss scaled by 1/grad_accum, clipping, AdamW with the schedule, the
// evaluations, the loss curve and checkpoint — with every forward and backward on the GPU.
//
// Each loss is a function of the summed sequence log-probs π_b = −Σ_t CE_t, so one micro-batch
// is: the policy's π_b on the GPU (forward), the loss and g_b = ∂L/∂π_b on the host (the CPU's
// own objective code), then one GPU forward + backward with the token-row weights
// w_t = −g_b / grad_accum, whose gradient Σ_t w_t·∂CE_t/∂θ is the loss's. The reference (the
// model with the trained adapters off: the base the session uploaded) is the GPU's too, cached
// once before training or recomputed per micro-batch (live), as the options say. Evaluation
// (accuracy, margin, loss on train and held-out pairs) runs on the CPU backend `Bk` with the
// adapters copied back and the GPU's reference values.
//
// KTO (Ethayarajh et al. 2024) draws unpaired examples (2n: every chosen completion desirable,
// every rejected one undesirable) as train_preference does; each micro-batch also runs its KL
// rows (each prompt with the rotated partner's completion, objectives::kto_kl_partner) through
// the policy without a backward — the KL estimate is detached, as TRL computes it — and the
// reference's KL rows are cached with the rest (or computed live). objectives::kto_loss gives
// the loss and ∂L/∂π per example, backpropagated as row weights like the pairwise losses.
//
// Not on the GPU (forge::error): data parallelism, dropout, 8-bit state.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/data/preference.hpp"
#include "forge/objectives/preference.hpp"
#include "forge/train/cuda_sft.hpp"
#include "forge/train/preference_trainer.hpp"

namespace forge::train {

namespace cuda_detail {

/// Σ log p over each row's completion for the rows of `b` (GPU, adapters on or off).
inline std::vector<double> gpu_logprobs(cuda::lora_session& s, const objectives::sequence_batch& b,
                                        std::int32_t pad, bool with_lora) {
  const std::int64_t seq = padded_seq(b.seq);
  std::vector<std::int64_t> ids(std::size_t(b.batch * seq), pad),
      targets(ids.size(), data::ignore_index);
  for (std::int64_t r = 0; r < b.batch; ++r)
    for (std::int64_t t = 0; t < b.seq; ++t) {
      ids[std::size_t(r * seq + t)] = b.input_ids[std::size_t(r * b.seq + t)];
      targets[std::size_t(r * seq + t)] = b.targets[std::size_t(r * b.seq + t)];
    }
  std::vector<double> out(std::size_t(b.batch));
  s.sequence_logprobs(b.batch, seq, ids.data(), targets.data(), with_lora, out.data());
  return out;
}

/// Reference log-probs of the pairs `pick` of `xs` (adapters off), chunked to the session's
/// batch.
inline void gpu_reference(cuda::lora_session& s, std::span<const data::preference_example> xs,
                          std::span<const std::size_t> pick, std::int64_t pairs_per_call,
                          std::int32_t pad, std::vector<double>& chosen,
                          std::vector<double>& rejected) {
  chosen.clear(), rejected.clear();
  for (std::size_t i = 0; i < pick.size(); i += std::size_t(pairs_per_call)) {
    const auto part =
        pick.subspan(i, std::min<std::size_t>(std::size_t(pairs_per_call), pick.size() - i));
    const auto b = detail::pair_batch(xs, part, pad);
    const auto lp = gpu_logprobs(s, b, pad, false);
    chosen.insert(chosen.end(), lp.begin(), lp.begin() + std::ptrdiff_t(part.size()));
    rejected.insert(rejected.end(), lp.begin() + std::ptrdiff_t(part.size()), lp.end());
  }
}

/// Reference log-probs of the KTO KL rows of the unpaired examples `pick` (indices in [0, 2n)
/// of `xs`'s n pairs), adapters off, `rows_per_call` rows per GPU call.
inline std::vector<double> gpu_kl_reference(cuda::lora_session& s,
                                            std::span<const data::preference_example> xs,
                                            std::span<const std::size_t> pick,
                                            std::int64_t rows_per_call, std::int32_t pad) {
  std::vector<double> out;
  for (std::size_t i = 0; i < pick.size(); i += std::size_t(rows_per_call)) {
    std::vector<objectives::completion_sequence> rows;
    for (std::size_t j = i; j < std::min(pick.size(), i + std::size_t(rows_per_call)); ++j)
      rows.push_back(detail::kto_kl_row(xs, pick[j]));
    const auto lp = gpu_logprobs(s, objectives::make_sequence_batch(rows, pad), pad, false);
    out.insert(out.end(), lp.begin(), lp.end());
  }
  return out;
}

/// Forward + backward of the rows of `b` with ∂L/∂π_row = g[row]·scale: π = −Σ_t CE_t, so
/// each kept token row of sequence `row` weighs −g[row]·scale.
inline void backward_rows(cuda::lora_session& s, const objectives::sequence_batch& b,
                          std::span<const double> g, double scale, std::int32_t pad) {
  const std::int64_t seq = padded_seq(b.seq);
  std::vector<std::int64_t> ids(std::size_t(b.batch * seq), pad),
      targets(ids.size(), data::ignore_index);
  std::vector<float> w(ids.size(), 0.0f);
  for (std::int64_t row = 0; row < b.batch; ++row)
    for (std::int64_t t = 0; t < b.seq; ++t) {
      const auto at = std::size_t(row * seq + t);
      ids[at] = b.input_ids[std::size_t(row * b.seq + t)];
      targets[at] = b.targets[std::size_t(row * b.seq + t)];
      if (targets[at] != data::ignore_index) w[at] = float(-g[std::size_t(row)] * scale);
    }
  s.forward_backward(b.batch, seq, ids.data(), targets.data(), w.data());
}

}  // namespace cuda_detail

/// Trains the LoRA set `lora` of `m` on preference pairs `train` with a pairwise objective, on
/// GPU 0 (see the header comment). `dev.base` NF4 keeps the frozen projections in NF4 on the
/// device. On return the set holds the trained adapters.
template <class Bk>
preference_train_result train_preference_cuda(Bk be, model::causal_lm<float>& m,
                                              adapters::lora_set<float>& lora,
                                              std::span<const data::preference_example> train,
                                              std::span<const data::preference_example> val,
                                              const preference_trainer_options& o,
                                              const cuda_train_options& dev = {}) {
  static_assert(is_cpu_backend_v<Bk>, "train_preference_cuda evaluates on a CPU backend");
  const auto& obj = o.objective;
  require(!train.empty(), {.what = "no preference pairs", .place = "train_preference_cuda"});
  require(!obj.kto || train.size() >= 2,
          {.what = "KTO needs at least 2 pairs (the KL rows pair prompts with other completions)",
           .place = "train_preference_cuda",
           .found = std::to_string(train.size())});
  require(o.batch_size >= 1 && o.grad_accum >= 1 && o.max_steps >= 1,
          {.what = "batch_size, grad_accum and max_steps must be positive",
           .place = "preference_trainer_options"});
  require(o.comm == nullptr && !o.optim.eight_bit,
          {.what = "training option the GPU trainer does not take",
           .place = "preference_trainer_options",
           .expected = "one process, f32 optimizer state",
           .found = o.comm ? "a communicator" : "eight_bit optimizer state"});
  const bool live = obj.needs_reference() && o.reference == reference_mode::live;
  std::int64_t longest = 1;
  for (const auto* xs : {&train, &val})
    for (const auto& e : *xs)
      longest = std::max<std::int64_t>(
          longest, std::int64_t(e.prompt.size() + std::max(e.chosen.size(), e.rejected.size())));
  auto s = open_cuda_session(be, m, lora, dev.base, dev.storage, 2 * o.batch_size,
                             cuda_detail::padded_seq(longest));
  preference_train_result res;
  const auto t_ref0 = std::chrono::steady_clock::now();
  // The reference of every training pair, before training (adapters off).
  reference_cache cache;
  std::vector<std::size_t> all(train.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  if (obj.needs_reference() && !live) {
    cuda_detail::gpu_reference(*s.gpu, train, all, o.batch_size, o.pad_id, cache.chosen,
                               cache.rejected);
    if (obj.kto) {
      std::vector<std::size_t> all2(2 * train.size());
      for (std::size_t k = 0; k < all2.size(); ++k) all2[k] = k;
      cache.kl = cuda_detail::gpu_kl_reference(*s.gpu, train, all2, 2 * o.batch_size, o.pad_id);
    }
    res.reference_cache_bytes = cache.bytes();
  }
  res.reference_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref0).count();
  // The examples a step draws from (train_preference's): pairs, or for KTO the 2n unpaired
  // examples, less those whose cached reference is not finite.
  const reference_cache* cached = cache.chosen.empty() ? nullptr : &cache;
  const auto usable =
      detail::usable_examples(train.size(), obj.kto, cached, res.skipped_nonfinite_reference);
  res.optimizer_state_bytes = std::size_t(lora.parameter_count()) * 8;
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  trainer_state st;
  st.seed = o.seed;
  const auto ckpt = o.out_dir.empty() ? std::filesystem::path() : checkpoint_path(o.out_dir);
  if (!ckpt.empty() && o.resume && std::filesystem::exists(ckpt)) {
    st = load_cuda_checkpoint(ckpt, s, lora);
    detail::require_same_seed(st, o.seed, ckpt);
    res.resumed = true;
  }
  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);

  // The pair order of train_preference.
  epoch_order example_at(usable, o.seed);

  // Evaluation on the CPU with the GPU's reference values (train_preference's metrics).
  auto [train_eval, train_eval_cache] = detail::train_eval_pairs(train, cached);
  reference_cache val_cache;
  if (obj.needs_reference() && !val.empty()) {
    std::vector<std::size_t> vi(val.size());
    for (std::size_t i = 0; i < vi.size(); ++i) vi[i] = i;
    cuda_detail::gpu_reference(*s.gpu, val, vi, o.batch_size, o.pad_id, val_cache.chosen,
                               val_cache.rejected);
  }
  if (obj.needs_reference() && live) {
    std::vector<std::size_t> ti;
    for (std::size_t p = 0; p < train.size() && ti.size() < 64; ++p) ti.push_back(p);
    cuda_detail::gpu_reference(*s.gpu, train, ti, o.batch_size, o.pad_id, train_eval_cache.chosen,
                               train_eval_cache.rejected);
  }
  const bool ref = obj.needs_reference();
  auto run_eval = [&] {
    download_lora(s, lora);
    lora.train(false);
    eval_entry e{.step = st.step, .metrics = {}};
    const auto tr =
        evaluate_preferences(be, m, std::span<const data::preference_example>(train_eval), obj,
                             ref ? &train_eval_cache : nullptr, o.batch_size, o.pad_id);
    e.metrics["accuracy"] = tr.accuracy, e.metrics["margin"] = tr.margin;
    e.metrics["loss"] = tr.loss;
    if (!val.empty()) {
      const auto v = evaluate_preferences(be, m, val, obj, ref ? &val_cache : nullptr, o.batch_size,
                                          o.pad_id, &lora);
      e.metrics["val_accuracy"] = v.accuracy, e.metrics["val_margin"] = v.margin;
      e.metrics["val_loss"] = v.loss;
    }
    st.evals.push_back(e);
  };
  std::int64_t adam_steps = st.step;
  auto save = [&] {
    if (ckpt.empty()) return;
    save_cuda_checkpoint(ckpt, s, lora, adam_steps, st);
    write_loss_curve(o.out_dir, st.log, st.evals);
  };

  const auto t0 = std::chrono::steady_clock::now();
  const double accum_scale = 1.0 / double(o.grad_accum);
  while (st.step < o.max_steps) {
    std::vector<std::vector<std::size_t>> picks(std::size_t(o.grad_accum));
    for (auto& pick : picks)
      for (std::int64_t i = 0; i < o.batch_size; ++i)
        pick.push_back(example_at(st.examples_seen++));
    s.gpu->zero_grad();
    double loss = 0, first_bad = 0;
    std::int64_t tokens = 0, nonfinite = 0;
    for (const auto& pick : picks) {
      double l = 0;
      if (obj.kto) {
        std::vector<objectives::completion_sequence> rows, kl_rows;
        for (auto k : pick) {
          rows.push_back(detail::kto_row(train, k));
          kl_rows.push_back(detail::kto_kl_row(train, k));
        }
        const auto b = objectives::make_sequence_batch(rows, o.pad_id);
        const auto bk = objectives::make_sequence_batch(kl_rows, o.pad_id);
        std::vector<double> ref_lp, ref_kl;
        if (live) {
          const auto tr = std::chrono::steady_clock::now();
          std::vector<std::size_t> pairs;
          for (auto k : pick) pairs.push_back(k % train.size());
          std::vector<double> rc, rr;
          cuda_detail::gpu_reference(*s.gpu, train, pairs, o.batch_size, o.pad_id, rc, rr);
          for (std::size_t q = 0; q < pick.size(); ++q)
            ref_lp.push_back(pick[q] < train.size() ? rc[q] : rr[q]);
          ref_kl = cuda_detail::gpu_kl_reference(*s.gpu, train, pick, 2 * o.batch_size, o.pad_id);
          res.reference_seconds +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
        } else {
          for (auto k : pick) {
            const std::size_t p = k % train.size();
            ref_lp.push_back(k < train.size() ? cache.chosen[p] : cache.rejected[p]);
            ref_kl.push_back(cache.kl[k]);
          }
        }
        std::vector<unsigned char> lab;
        for (auto k : pick) lab.push_back(k < train.size());
        // The KL estimate is detached: the policy's KL rows run forward only.
        const auto pkl = cuda_detail::gpu_logprobs(*s.gpu, bk, o.pad_id, true);
        const auto lp = cuda_detail::gpu_logprobs(*s.gpu, b, o.pad_id, true);
        const auto r = objectives::kto_loss(obj.kto_opts, {lp, ref_lp, lab, pkl, ref_kl});
        l = r.loss;
        cuda_detail::backward_rows(*s.gpu, b, r.d_policy, accum_scale, o.pad_id);
        tokens += b.tokens() + bk.tokens();
      } else {
        const auto b = detail::pair_batch(train, pick, o.pad_id);
        const std::size_t B = pick.size();
        std::vector<double> rc, rr;
        if (ref) {
          if (live) {
            const auto tr = std::chrono::steady_clock::now();
            cuda_detail::gpu_reference(*s.gpu, train, pick, o.batch_size, o.pad_id, rc, rr);
            res.reference_seconds +=
                std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
          } else {
            for (auto k : pick) rc.push_back(cache.chosen[k]), rr.push_back(cache.rejected[k]);
          }
        }
        const auto lp = cuda_detail::gpu_logprobs(*s.gpu, b, o.pad_id, true);
        const std::vector<double> pc(lp.begin(), lp.begin() + std::ptrdiff_t(B)),
            pr(lp.begin() + std::ptrdiff_t(B), lp.end());
        const std::vector<std::int64_t> nc(b.completion_tokens.begin(),
                                           b.completion_tokens.begin() + std::ptrdiff_t(B)),
            nr(b.completion_tokens.begin() + std::ptrdiff_t(B), b.completion_tokens.end());
        const auto r = objectives::preference_loss(obj.pair, {pc, pr, rc, rr, nc, nr});
        l = r.loss;
        if (std::isfinite(l)) {
          std::vector<double> g(r.d_chosen);
          g.insert(g.end(), r.d_rejected.begin(), r.d_rejected.end());
          cuda_detail::backward_rows(*s.gpu, b, g, accum_scale, o.pad_id);
        }
        tokens += b.tokens();
      }
      if (!std::isfinite(l) && nonfinite++ == 0) first_bad = l;
      loss += l * accum_scale;
    }
    res.tokens += tokens;
    if (nonfinite > 0)
      throw error({.what = "preference loss is not finite; stopped",
                   .place = "step " + std::to_string(st.step + 1),
                   .expected = "a finite loss (last good checkpoint: " +
                               (ckpt.empty() ? std::string("none") : ckpt.string()) + ")",
                   .found = str(first_bad != 0 ? first_bad : loss)});
    const double norm = s.gpu->grad_norm();
    const double coef = o.max_grad_norm > 0 ? std::min(1.0, o.max_grad_norm / (norm + 1e-6)) : 1.0;
    const double lr = o.optim.lr * sched.factor(st.step);
    s.gpu->step({.lr = lr,
                 .weight_decay = o.optim.weight_decay,
                 .beta1 = o.optim.beta1,
                 .beta2 = o.optim.beta2,
                 .eps = o.optim.eps,
                 .grad_scale = coef});
    ++adam_steps;
    ++st.step;
    st.log.push_back({st.step, loss, lr, norm, tokens});
    const bool last = st.step == o.max_steps;
    if (last || (o.eval_every > 0 && st.step % o.eval_every == 0)) run_eval();
    const bool halt = o.halt_after > 0 && st.step >= o.halt_after;
    if (detail::checkpoint_due(st.step, o.checkpoint_every, last, halt)) save();
    if (halt) break;
  }
  download_lora(s, lora);
  lora.train(false);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.steps = st.step;
  res.log = st.log;
  res.evals = st.evals;
  return res;
}

}  // namespace forge::train
