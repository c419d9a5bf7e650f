#pragma once
// Built-in preference pairs for Align (DPO and relatives), generated from a seed over the
// train side of the task set (builtin/tasks.hpp), so they never contain an eval prompt.
//
// Two kinds, alternating (`preference_kind(i)`):
//   helpful vs unhelpful  chosen = the exact answer; rejected = a wrong answer (an off-by-some
//                         number, a shuffled list, a wrong date) or an evasive non-answer
//   concise vs padded     chosen = the exact answer; rejected = the same answer wrapped in
//                         filler ("Sure! That is a great question. ... I hope this helps!")
// Safety pairs (refusal vs compliance) are not made here.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "forge/builtin/tasks.hpp"
#include "forge/data/records.hpp"

namespace forge::builtin {

/// Which kind pair i is: "helpful" (even i) or "concise" (odd i).
inline std::string preference_kind(std::size_t i) {
  return i % 2 == 0 ? "helpful" : "concise";
}

namespace detail {

// A wrong answer for task t: a changed number for numeric answers, else an evasive reply.
inline std::string wrong_answer(const task& t, picker& p) {
  bool numeric = !t.answer.empty();
  for (char c : t.answer) numeric = numeric && ((c >= '0' && c <= '9') || c == '-');
  if (numeric) {
    const std::int64_t v = std::stoll(t.answer);
    const std::int64_t d = p.range(1, 9);
    return std::to_string(p.chance(1, 2) ? v + d : v - d);
  }
  static const std::vector<std::string_view> evasive = {
      "I am not sure about that.", "That depends on many things.",
      "You could look it up somewhere.", "Let me think about something else."};
  return std::string(p.pick(evasive));
}

inline std::string padded_answer(const task& t, picker& p) {
  static const std::vector<std::string_view> openers = {
      "Sure! That is a great question, and I am happy to help you with it.",
      "Of course! Let me think about this carefully before I answer.",
      "What an interesting request! I will do my very best here."};
  static const std::vector<std::string_view> closers = {
      "I hope this helps, and feel free to ask me anything else!",
      "Let me know if you would like me to explain it in more detail.",
      "Thank you for asking, I really enjoyed working on this!"};
  return std::string(p.pick(openers)) + " The answer is " + t.answer + ". " +
         std::string(p.pick(closers));
}

}  // namespace detail

/// `n` preference pairs of generator `seed` (kinds alternate, see preference_kind). Pair i
/// depends only on (seed, i).
inline std::vector<data::preference_record> preference_pairs(std::uint64_t seed, std::size_t n) {
  const auto ts = tasks(seed ^ 0x5052454655ull, n, split::train);
  std::vector<data::preference_record> out;
  out.reserve(n);
  const philox base(seed, 32);
  for (std::size_t i = 0; i < n; ++i) {
    detail::picker p{base.fork(i)};
    const auto& t = ts[i];
    data::preference_record r;
    r.id = preference_kind(i) + "-" + t.id;
    r.prompt = {{"user", t.prompt}};
    r.chosen = {{"assistant", t.answer}};
    r.rejected = {
        {"assistant", i % 2 == 0 ? detail::wrong_answer(t, p) : detail::padded_answer(t, p)}};
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace forge::builtin
