#pragma once
// SFT encoding: a conversation becomes input_ids and labels, where only assistant turns are
// trained. Labels are aligned with input_ids (Hugging Face convention: the model shifts them
// inside the loss, position t predicting labels[t+1]); untrained positions hold -100.
//
// Mask rule (what TRL's assistant-only loss does in effect): for each assistant turn i,
//   prefix_i = tokens(render(messages[:i],   add_generation_prompt = true))
//   turn_i   = tokens(render(messages[:i+1], add_generation_prompt = false))
// and the tokens at [len(prefix_i), len(turn_i)) of the whole conversation's tokens are
// trained: the reply and whatever the template closes a turn with (an end-of-turn token,
// so the model learns to stop). Each prefix_i must be a prefix of turn_i, and each turn_i a
// prefix of the whole conversation's tokens; a template or tokenizer for which that fails
// (one that rewrites earlier turns, or merges tokens across a turn boundary) is an error
// naming the turn and the first differing position; there is no silent fallback.
//
// Truncation over max_length: keep_start (cut the end), keep_end (cut the beginning), or
// drop the example. An example left with no trained token is dropped too; drops are counted.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/data/tokenizer.hpp"

namespace forge::data {

/// The label of a position that is not trained (PyTorch's CrossEntropyLoss ignore_index).
inline constexpr std::int32_t ignore_index = -100;

/// What to do with an example longer than max_length tokens.
enum class truncation { keep_start, keep_end, drop };

/// SFT encoding parameters.
struct sft_options {
  std::size_t max_length = 2048;  ///< tokens per example at most
  truncation truncate = truncation::keep_start;
  bool all_assistant_turns = true;  ///< train every assistant turn, else only the last
  bool add_special_tokens = false;  ///< passed to encode(); templates write BOS themselves
};

/// One encoded example: token ids and aligned labels (ignore_index where not trained).
struct sft_example {
  std::string id{};
  std::vector<std::int32_t> input_ids{};
  std::vector<std::int32_t> labels{};
  /// Number of trained positions.
  std::size_t trained() const {
    std::size_t n = 0;
    for (auto l : labels) n += l != ignore_index;
    return n;
  }
};

/// Why encode_sft produced no example.
enum class sft_drop { none, too_long, no_trained_tokens };

namespace detail {
inline nlohmann::json messages_prefix(const std::vector<message>& ms, std::size_t n) {
  nlohmann::json a = nlohmann::json::array();
  for (std::size_t i = 0; i < n; ++i)
    a.push_back({{"role", ms[i].role}, {"content", ms[i].content}});
  return a;
}

inline void require_prefix(const std::vector<std::int32_t>& shorter,
                           const std::vector<std::int32_t>& longer, std::size_t turn,
                           const char* what, const std::string& id) {
  std::size_t k = 0;
  while (k < shorter.size() && k < longer.size() && shorter[k] == longer[k]) ++k;
  if (k == shorter.size()) return;
  throw error(
      {.what = std::string("chat template is not prefix-consistent: ") + what,
       .file = id,
       .place =
           "assistant turn at message " + std::to_string(turn) + ", token " + std::to_string(k),
       .expected = k < shorter.size() ? "token " + std::to_string(shorter[k]) : "more tokens",
       .found = k < longer.size() ? "token " + std::to_string(longer[k]) : "end of tokens"});
}
}  // namespace detail

/// Encodes a conversation; returns nothing (and sets `why`) when it is dropped.
template <Tokenizer T, ChatRenderer F>
std::optional<sft_example> encode_sft(const std::vector<message>& msgs, const T& tok,
                                      const F& render, const sft_options& o = {},
                                      sft_drop* why = nullptr, const std::string& id = "") {
  if (why) *why = sft_drop::none;
  const std::string full_text = render(detail::messages_prefix(msgs, msgs.size()), false);
  sft_example ex;
  ex.id = id;
  ex.input_ids = tok.encode(full_text, o.add_special_tokens);
  ex.labels.assign(ex.input_ids.size(), ignore_index);
  std::size_t last = msgs.size();
  for (std::size_t i = 0; i < msgs.size(); ++i)
    if (msgs[i].role == "assistant") last = i;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].role != "assistant" || (!o.all_assistant_turns && i != last)) continue;
    const auto prefix =
        tok.encode(render(detail::messages_prefix(msgs, i), true), o.add_special_tokens);
    const auto upto =
        tok.encode(render(detail::messages_prefix(msgs, i + 1), false), o.add_special_tokens);
    detail::require_prefix(prefix, upto, i, "the generation prompt is not a prefix of the turn",
                           id);
    detail::require_prefix(upto, ex.input_ids, i, "the turn is not a prefix of the conversation",
                           id);
    for (std::size_t t = prefix.size(); t < upto.size(); ++t) ex.labels[t] = ex.input_ids[t];
  }
  if (ex.input_ids.size() > o.max_length) {
    const auto cut = static_cast<std::ptrdiff_t>(ex.input_ids.size() - o.max_length);
    switch (o.truncate) {
      case truncation::drop:
        if (why) *why = sft_drop::too_long;
        return std::nullopt;
      case truncation::keep_start:
        ex.input_ids.resize(o.max_length);
        ex.labels.resize(o.max_length);
        break;
      case truncation::keep_end:
        ex.input_ids.erase(ex.input_ids.begin(), ex.input_ids.begin() + cut);
        ex.labels.erase(ex.labels.begin(), ex.labels.begin() + cut);
        break;
    }
  }
  if (ex.trained() == 0) {
    if (why) *why = sft_drop::no_trained_tokens;
    return std::nullopt;
  }
  return ex;
}

/// A pipeline step encoding sft_records: use as `views::transform(enc) | views::cache1 |
/// views::filter(has_value)`. Counts in/out and drop reasons under step "encode" and the
/// token statistics of the examples it produces. The cache1 matters: range-v3's filter reads
/// each element twice (predicate, then dereference) and would run the encoder twice.
template <Tokenizer T, ChatRenderer F>
class sft_encoder {
 public:
  sft_encoder(const T& tok, const F& render, sft_options o, data_report& report)
      : tok_(&tok), render_(&render), o_(o), report_(&report) {}
  std::optional<sft_example> operator()(const sft_record& r) const {
    auto& st = report_->step("encode");
    ++st.in;
    sft_drop why = sft_drop::none;
    auto ex = encode_sft(r.messages, *tok_, *render_, o_, &why, r.id);
    if (!ex) {
      ++st.removed[why == sft_drop::too_long ? "too_long" : "no_trained_tokens"];
      return ex;
    }
    ++st.out;
    report_->tokens.add(ex->input_ids.size());
    return ex;
  }

 private:
  const T* tok_;
  const F* render_;
  sft_options o_;
  data_report* report_;
};

}  // namespace forge::data
