#pragma once
// Packing: short SFT examples are concatenated into rows of exactly `row_length` tokens so
// no compute is spent on padding, without letting examples see each other.
//
// Policy: greedy sequential (order-preserving, deterministic): examples fill the current row
// in input order; one that does not fit closes the row (padded) and starts the next.
// For each row:
//   input_ids     the examples back to back, then pad_id up to row_length
//   position_ids  restart at 0 at every example (and at the padding), so rotary positions
//                 are those the example has when trained alone
//   seq_starts    cu_seqlens of variable-length attention: the start of every segment and
//                 finally row_length ([0, n1, n1+n2, ..., row_length]); the padding, if any,
//                 is the last segment. Attention is causal within a segment and blocked
//                 across segments (block_causal_mask spells it out).
//   labels        the examples' labels, except that the first position of every segment is
//                 ignore_index: the loss shifts labels by one (position t predicts t+1), so
//                 the label at a segment's start would be predicted from the previous
//                 segment's last token. In an unpacked example that label is never a target,
//                 so the packed loss equals the sum of the unpacked losses.
//   padding       pad_id, label ignore_index.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/data/sft.hpp"

namespace forge::data {

/// One packed row; all vectors but seq_starts and ids have row_length entries.
struct packed_row {
  std::vector<std::int32_t> input_ids{};
  std::vector<std::int32_t> labels{};
  std::vector<std::int32_t> position_ids{};
  std::vector<std::int32_t> seq_starts{};  ///< segment starts, then row_length
  std::vector<std::string> ids{};          ///< ids of the packed examples, in order
};

/// Packing parameters.
struct packing_options {
  std::size_t row_length = 2048;  ///< tokens per row
  std::int32_t pad_id = 0;        ///< token used for padding
};

/// Streaming greedy sequential packer: add() examples, collect the rows it completes, then
/// finish() for the last partial row.
class packer {
 public:
  explicit packer(packing_options o) : o_(o) {
    require(o.row_length > 0, {.what = "packing row length must be positive",
                               .file = "",
                               .place = "",
                               .expected = "> 0",
                               .found = "0"});
    start_row();
  }

  /// Adds an example; returns the row it closed, if it did not fit in the current one.
  std::optional<packed_row> add(const sft_example& ex) {
    require(ex.input_ids.size() == ex.labels.size(),
            {.what = "example has input_ids and labels of different lengths",
             .file = ex.id,
             .place = "",
             .expected = std::to_string(ex.input_ids.size()),
             .found = std::to_string(ex.labels.size())});
    require(!ex.input_ids.empty() && ex.input_ids.size() <= o_.row_length,
            {.what = "example does not fit in a packing row (truncate when encoding)",
             .file = ex.id,
             .place = "",
             .expected = "1.." + std::to_string(o_.row_length) + " tokens",
             .found = std::to_string(ex.input_ids.size())});
    std::optional<packed_row> closed;
    if (cur_.input_ids.size() + ex.input_ids.size() > o_.row_length) {
      closed = close_row();
      start_row();
    }
    cur_.seq_starts.push_back(static_cast<std::int32_t>(cur_.input_ids.size()));
    for (std::size_t t = 0; t < ex.input_ids.size(); ++t) {
      cur_.input_ids.push_back(ex.input_ids[t]);
      cur_.labels.push_back(t == 0 ? ignore_index : ex.labels[t]);
      cur_.position_ids.push_back(static_cast<std::int32_t>(t));
    }
    cur_.ids.push_back(ex.id);
    return closed;
  }

  /// The last, partially filled row (nothing if no example is pending).
  std::optional<packed_row> finish() {
    if (cur_.ids.empty()) return std::nullopt;
    auto r = close_row();
    start_row();
    return r;
  }

 private:
  void start_row() {
    cur_ = packed_row{};
    cur_.input_ids.reserve(o_.row_length);
  }
  packed_row close_row() {
    const std::size_t used = cur_.input_ids.size();
    if (used < o_.row_length) {
      cur_.seq_starts.push_back(static_cast<std::int32_t>(used));
      for (std::size_t t = used; t < o_.row_length; ++t) {
        cur_.input_ids.push_back(o_.pad_id);
        cur_.labels.push_back(ignore_index);
        cur_.position_ids.push_back(static_cast<std::int32_t>(t - used));
      }
    }
    cur_.seq_starts.push_back(static_cast<std::int32_t>(o_.row_length));
    return std::move(cur_);
  }
  packing_options o_;
  packed_row cur_;
};

/// Packs a whole sequence of examples (greedy sequential).
inline std::vector<packed_row> pack_examples(const std::vector<sft_example>& examples,
                                             packing_options o) {
  packer p(o);
  std::vector<packed_row> rows;
  for (const auto& e : examples)
    if (auto r = p.add(e)) rows.push_back(std::move(*r));
  if (auto r = p.finish()) rows.push_back(std::move(*r));
  return rows;
}

/// The segment index of every position of a row (0 for the first example, 1 for the next,
/// ...; trailing padding is a segment of its own): what model_input::segment_ids takes so
/// attention stays inside each packed example.
inline std::vector<std::int32_t> segment_ids(const packed_row& row) {
  std::vector<std::int32_t> seg(row.input_ids.size(), 0);
  for (std::size_t s = 0; s + 1 < row.seq_starts.size(); ++s)
    for (auto t = row.seq_starts[s]; t < row.seq_starts[s + 1] && std::size_t(t) < seg.size(); ++t)
      seg[std::size_t(t)] = static_cast<std::int32_t>(s);
  return seg;
}

/// The attention mask a row's seq_starts imply, row-major n x n with n = row_length:
/// mask[i*n + j] = 1 when j <= i and i, j lie in the same segment (block-diagonal causal).
inline std::vector<std::uint8_t> block_causal_mask(const std::vector<std::int32_t>& seq_starts) {
  require(seq_starts.size() >= 2 && seq_starts.front() == 0,
          {.what = "seq_starts must begin at 0 and end at the row length",
           .file = "",
           .place = "",
           .expected = "[0, ..., n]",
           .found = std::to_string(seq_starts.size()) + " entries"});
  const auto n = static_cast<std::size_t>(seq_starts.back());
  std::vector<std::uint8_t> m(n * n, 0);
  for (std::size_t s = 0; s + 1 < seq_starts.size(); ++s) {
    const auto a = static_cast<std::size_t>(seq_starts[s]);
    const auto b = static_cast<std::size_t>(seq_starts[s + 1]);
    for (std::size_t i = a; i < b; ++i)
      for (std::size_t j = a; j <= i; ++j) m[i * n + j] = 1;
  }
  return m;
}

}  // namespace forge::data
