#pragma once
// Preference encoding: a preference_record (prompt turns, chosen and rejected continuations)
// becomes token ids of the prompt and of each completion, as TRL's DPO data collator sees
// them:
//   prompt   = tokens(render(prompt, add_generation_prompt = true))
//   chosen   = tokens(render(prompt + chosen,   false))[len(prompt):]
//   rejected = tokens(render(prompt + rejected, false))[len(prompt):]
// The prompt must be a token prefix of both full renderings (a template or tokenizer that
// rewrites earlier turns or merges tokens across the boundary is an error naming the record
// and the first differing token; there is no silent fallback, as in encode_sft).
// Pairs that cannot teach anything are skipped and counted by reason:
//   identical         chosen and rejected tokenise the same (zero gradient, zero margin)
//   empty_completion  a completion has no tokens
//   prompt_too_long   the prompt alone fills the context (no completion token fits)
//   too_long          prompt + the longer completion exceeds max_length

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/data/sft.hpp"
#include "forge/data/tokenizer.hpp"

namespace forge::data {

/// One tokenised preference pair.
struct preference_example {
  std::string id{};
  std::vector<std::int32_t> prompt{};    ///< rendered prompt with the generation prompt
  std::vector<std::int32_t> chosen{};    ///< completion tokens (end-of-turn included)
  std::vector<std::int32_t> rejected{};  ///< completion tokens (end-of-turn included)
};

/// Why encode_preference produced no example.
enum class preference_skip { none, identical, empty_completion, prompt_too_long, too_long };

/// The report name of a skip reason.
inline std::string_view name_of(preference_skip s) {
  switch (s) {
    case preference_skip::none:
      return "none";
    case preference_skip::identical:
      return "identical";
    case preference_skip::empty_completion:
      return "empty_completion";
    case preference_skip::prompt_too_long:
      return "prompt_too_long";
    case preference_skip::too_long:
      return "too_long";
  }
  return "?";
}

/// Preference encoding parameters.
struct preference_options {
  std::size_t max_length = 2048;    ///< prompt + completion tokens at most (the context)
  bool add_special_tokens = false;  ///< passed to encode(); templates write BOS themselves
};

namespace detail {
inline nlohmann::json turns_json(const std::vector<message>& a, const std::vector<message>* b) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& m : a) j.push_back({{"role", m.role}, {"content", m.content}});
  if (b)
    for (const auto& m : *b) j.push_back({{"role", m.role}, {"content", m.content}});
  return j;
}
}  // namespace detail

/// Encodes one record; returns nothing (and sets `why`) when it is skipped. forge::error when
/// the chat template is not prefix-consistent for it.
template <Tokenizer T, ChatRenderer F>
std::optional<preference_example> encode_preference(const preference_record& r, const T& tok,
                                                    const F& render,
                                                    const preference_options& o = {},
                                                    preference_skip* why = nullptr) {
  if (why) *why = preference_skip::none;
  auto skip = [&](preference_skip s) -> std::optional<preference_example> {
    if (why) *why = s;
    return std::nullopt;
  };
  preference_example ex;
  ex.id = r.id;
  ex.prompt = tok.encode(render(detail::turns_json(r.prompt, nullptr), true), o.add_special_tokens);
  for (auto [turns, out] :
       {std::pair{&r.chosen, &ex.chosen}, std::pair{&r.rejected, &ex.rejected}}) {
    const auto full =
        tok.encode(render(detail::turns_json(r.prompt, turns), false), o.add_special_tokens);
    detail::require_prefix(ex.prompt, full, r.prompt.size(),
                           "the generation prompt is not a prefix of the answered prompt", r.id);
    out->assign(full.begin() + std::ptrdiff_t(ex.prompt.size()), full.end());
  }
  // The completions must differ in content, not just in the template around it.
  bool same_text = r.chosen.size() == r.rejected.size();
  for (std::size_t i = 0; same_text && i < r.chosen.size(); ++i)
    same_text = r.chosen[i].content == r.rejected[i].content;
  if (same_text || ex.chosen == ex.rejected) return skip(preference_skip::identical);
  bool empty = false;
  for (const auto* turns : {&r.chosen, &r.rejected}) {
    std::size_t chars = 0;
    for (const auto& m : *turns) chars += m.content.size();
    empty = empty || chars == 0;
  }
  if (empty || ex.chosen.empty() || ex.rejected.empty())
    return skip(preference_skip::empty_completion);
  if (ex.prompt.size() >= o.max_length) return skip(preference_skip::prompt_too_long);
  if (ex.prompt.size() + std::max(ex.chosen.size(), ex.rejected.size()) > o.max_length)
    return skip(preference_skip::too_long);
  return ex;
}

/// Encodes every record, counting inputs, outputs and skips by reason under report step
/// "encode_preference" and the token counts of the pairs kept (prompt + both completions).
template <Tokenizer T, ChatRenderer F>
std::vector<preference_example> encode_preferences(const std::vector<preference_record>& rs,
                                                   const T& tok, const F& render,
                                                   const preference_options& o,
                                                   data_report& report) {
  auto& st = report.step("encode_preference");
  std::vector<preference_example> out;
  for (const auto& r : rs) {
    ++st.in;
    preference_skip why = preference_skip::none;
    auto ex = encode_preference(r, tok, render, o, &why);
    if (!ex) {
      ++st.removed[std::string(name_of(why))];
      continue;
    }
    ++st.out;
    report.tokens.add(ex->prompt.size() + ex->chosen.size() + ex->rejected.size());
    out.push_back(std::move(*ex));
  }
  return out;
}

}  // namespace forge::data
