#pragma once
// The SFT objective: masked causal-LM cross-entropy over the trained positions (labels ≠ -100,
// e.g. assistant tokens from data::encode_sft), with logits at t predicting labels at t + 1
// as transformers' ForCausalLMLoss. Examples of one micro-batch are right-padded to the
// longest; padding has attention mask 0 and label -100.
// With packing, a micro-batch is instead rows of several examples each (data::packer), with
// position ids restarting per example and segment ids that keep attention inside each
// example: the loss and gradients equal those of the same examples padded.
// Gradient accumulation normalises by the trained tokens of the whole optimizer step:
//   L = Σ_micro Σ_t CE_t / N_step,   so each micro-batch's mean loss is weighted n_micro / N_step.

#include <cstdint>
#include <span>
#include <vector>

#include "forge/data/packing.hpp"
#include "forge/data/sft.hpp"
#include "forge/model/forward.hpp"

namespace forge::objectives {

/// A micro-batch: [batch, seq] token ids, labels and attention mask (padded rows), or with
/// position and segment ids (packed rows; attention mask empty).
struct sft_batch {
  std::int64_t batch = 0, seq = 0;
  std::vector<std::int64_t> input_ids{}, labels{}, attention_mask{};
  std::vector<std::int64_t> position_ids{};  ///< packed rows only, else empty
  std::vector<std::int32_t> segment_ids{};   ///< packed rows only, else empty
  /// Number of positions whose next-token label is trained (the loss's denominator).
  std::int64_t targets() const {
    std::int64_t n = 0;
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t s = 1; s < seq; ++s) n += labels[b * seq + s] != data::ignore_index;
    return n;
  }
};

/// Right-pads the examples `pick` of `xs` into one batch (pad token `pad_id`).
inline sft_batch make_batch(std::span<const data::sft_example> xs,
                            std::span<const std::size_t> pick, std::int32_t pad_id) {
  sft_batch b;
  b.batch = std::int64_t(pick.size());
  for (auto i : pick) b.seq = std::max<std::int64_t>(b.seq, std::int64_t(xs[i].input_ids.size()));
  require(b.seq > 0, {.what = "empty SFT examples", .place = "make_batch"});
  const auto n = std::size_t(b.batch * b.seq);
  b.input_ids.assign(n, pad_id);
  b.labels.assign(n, data::ignore_index);
  b.attention_mask.assign(n, 0);
  for (std::size_t r = 0; r < pick.size(); ++r) {
    const auto& e = xs[pick[r]];
    require(e.labels.size() == e.input_ids.size(), {.what = "labels and input_ids differ in length",
                                                    .place = "example " + e.id,
                                                    .expected = std::to_string(e.input_ids.size()),
                                                    .found = std::to_string(e.labels.size())});
    for (std::size_t s = 0; s < e.input_ids.size(); ++s) {
      b.input_ids[r * b.seq + s] = e.input_ids[s];
      b.labels[r * b.seq + s] = e.labels[s];
      b.attention_mask[r * b.seq + s] = 1;
    }
  }
  return b;
}

/// Packs the examples `pick` of `xs` into rows of `row_length` tokens (greedy, in order; see
/// data::packer) and returns them as one micro-batch with position and segment ids.
inline sft_batch make_packed_batch(std::span<const data::sft_example> xs,
                                   std::span<const std::size_t> pick, std::size_t row_length,
                                   std::int32_t pad_id) {
  std::vector<data::sft_example> picked;
  for (auto i : pick) picked.push_back(xs[i]);
  const auto rows = data::pack_examples(picked, {.row_length = row_length, .pad_id = pad_id});
  sft_batch b;
  b.batch = std::int64_t(rows.size());
  b.seq = std::int64_t(row_length);
  for (const auto& r : rows) {
    b.input_ids.insert(b.input_ids.end(), r.input_ids.begin(), r.input_ids.end());
    b.labels.insert(b.labels.end(), r.labels.begin(), r.labels.end());
    b.position_ids.insert(b.position_ids.end(), r.position_ids.begin(), r.position_ids.end());
    const auto seg = data::segment_ids(r);
    b.segment_ids.insert(b.segment_ids.end(), seg.begin(), seg.end());
  }
  return b;
}

/// Forward pass and masked cross-entropy of one micro-batch; writes dlogits scaled by
/// `weight` (n_micro / N_step under accumulation) so that backward() accumulates the step's
/// gradient. Returns the micro-batch's mean loss (nats per trained token).
template <class T, class Bk>
double sft_forward_loss(Bk be, model::causal_lm<T>& m, model::workspace<T>& ws, const sft_batch& b,
                        double weight, bool for_backward = true, bool recompute = false) {
  model::forward(be, m, ws,
                 {.batch = b.batch,
                  .seq = b.seq,
                  .input_ids = b.input_ids,
                  .attention_mask = b.attention_mask,
                  .position_ids = b.position_ids,
                  .segment_ids = b.segment_ids},
                 {.for_backward = for_backward, .recompute = recompute});
  return model::causal_lm_loss(be, ws, b.labels, weight);
}

}  // namespace forge::objectives
