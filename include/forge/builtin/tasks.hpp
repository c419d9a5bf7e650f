#pragma once
// The built-in SFT task set: instructions with one exact answer each, generated from a seed.
//
// Kinds (`task::kind`):
//   arithmetic   "Compute (14 + 7) * 3 - 5. Reply with the number only."        -> "58"
//   units        "Convert 7 kilograms to grams. Reply with the number only."    -> "7000"
//   date         "Write 12 March 2021 as YYYY-MM-DD." / the reverse            -> "2021-03-12"
//   format       "Write 1234567 with comma thousands separators." / upper case -> "1,234,567"
//   instruction  checkable constraints: sort words, repeat a word n times, reverse words,
//                count letters                                                  -> "blue, green,
//                red"
// Train and eval tasks are disjoint by construction: a task is an eval task iff the FNV-1a
// hash of its prompt is 0 mod 8, so no prompt is on both sides whatever the seeds.
//
//   auto train = forge::builtin::tasks(1, 2000, forge::builtin::split::train);
//   std::vector<forge::data::sft_record> recs = forge::builtin::sft_records(train);
//   auto items = forge::builtin::task_items(tokenizer, forge::builtin::tasks(1, 200,
//                                           forge::builtin::split::eval));

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "forge/builtin/chat.hpp"
#include "forge/builtin/detail/gen.hpp"
#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/eval/task.hpp"

namespace forge::builtin {

/// Which side of the train/eval split.
enum class split { train, eval };

/// One task: a user instruction and its exact answer.
struct task {
  std::string id{};      ///< "arithmetic-12" (kind and generation index)
  std::string kind{};    ///< arithmetic, units, date, format or instruction
  std::string prompt{};  ///< the user turn
  std::string answer{};  ///< the exact assistant reply
};

namespace detail {

inline task arithmetic_task(picker& p) {
  const auto a = p.range(2, 40), b = p.range(2, 40), c = p.range(2, 9), d = p.range(1, 30);
  task t{.kind = "arithmetic"};
  std::int64_t v = 0;
  switch (p.rng.below(3)) {
    case 0:
      v = (a + b) * c - d;
      t.prompt = "Compute (" + std::to_string(a) + " + " + std::to_string(b) + ") * " +
                 std::to_string(c) + " - " + std::to_string(d) + ".";
      break;
    case 1:
      v = a * c + b - d;
      t.prompt = "Compute " + std::to_string(a) + " * " + std::to_string(c) + " + " +
                 std::to_string(b) + " - " + std::to_string(d) + ".";
      break;
    default:
      v = a + b + d - c;
      t.prompt = "Compute " + std::to_string(a) + " + " + std::to_string(b) + " + " +
                 std::to_string(d) + " - " + std::to_string(c) + ".";
  }
  t.prompt += " Reply with the number only.";
  t.answer = std::to_string(v);
  return t;
}

inline task units_task(picker& p) {
  const auto& u = p.pick(units);
  const auto c = p.range(2, 30);
  task t{.kind = "units"};
  if (p.chance(1, 2)) {
    t.prompt = "Convert " + plural(c, u.big, u.bigs) + " to " + std::string(u.smalls) + ".";
    t.answer = std::to_string(c * u.factor);
  } else {
    t.prompt =
        "Convert " + plural(c * u.factor, u.small, u.smalls) + " to " + std::string(u.bigs) + ".";
    t.answer = std::to_string(c);
  }
  t.prompt += " Reply with the number only.";
  return t;
}

inline task date_task(picker& p) {
  const auto d = random_date(p);
  task t{.kind = "date"};
  switch (p.rng.below(3)) {
    case 0:
      t.prompt = "Write " + long_date(d) + " as YYYY-MM-DD.";
      t.answer = iso_date(d);
      break;
    case 1:
      t.prompt = "Write " + iso_date(d) + " as day, month name and year.";
      t.answer = long_date(d);
      break;
    default:
      t.prompt = "Write " + iso_date(d) + " as MM/DD/YYYY.";
      t.answer = us_date(d);
  }
  return t;
}

inline task format_task(picker& p) {
  task t{.kind = "format"};
  if (p.chance(1, 2)) {
    const auto n = p.range(1000, 9999999);
    t.prompt = "Write " + std::to_string(n) + " with comma thousands separators.";
    t.answer = with_commas(n);
  } else {
    std::string w(p.pick(words));
    t.prompt = "Write the word " + w + " in upper case.";
    for (auto& ch : w) ch = static_cast<char>(ch - 'a' + 'A');
    t.answer = w;
  }
  return t;
}

inline task instruction_task(picker& p) {
  task t{.kind = "instruction"};
  switch (p.rng.below(4)) {
    case 0: {
      std::vector<std::string> ws;
      while (ws.size() < 3) {
        std::string w(p.pick(colours));
        if (std::find(ws.begin(), ws.end(), w) == ws.end()) ws.push_back(w);
      }
      t.prompt = "Sort these words alphabetically and list them separated by commas: " + ws[0] +
                 ", " + ws[1] + ", " + ws[2] + ".";
      std::sort(ws.begin(), ws.end());
      t.answer = ws[0] + ", " + ws[1] + ", " + ws[2];
      break;
    }
    case 1: {
      const std::string w(p.pick(words));
      const auto n = p.range(2, 5);
      t.prompt =
          "Repeat the word " + w + " exactly " + std::to_string(n) + " times, separated by spaces.";
      for (std::int64_t i = 0; i < n; ++i) t.answer += (i ? " " : "") + w;
      break;
    }
    case 2: {
      const std::string a(p.pick(words)), b(p.pick(words)), c(p.pick(words));
      t.prompt = "Reverse the order of these words: " + a + " " + b + " " + c + ".";
      t.answer = c + " " + b + " " + a;
      break;
    }
    default: {
      const std::string w(p.pick(words));
      t.prompt = "How many letters are in the word " + w + "? Reply with the number only.";
      t.answer = std::to_string(w.size());
    }
  }
  return t;
}

inline task make_task(picker& p) {
  switch (p.rng.below(5)) {
    case 0:
      return arithmetic_task(p);
    case 1:
      return units_task(p);
    case 2:
      return date_task(p);
    case 3:
      return format_task(p);
    default:
      return instruction_task(p);
  }
}

inline bool is_eval_prompt(const std::string& prompt) {
  return text_hash(prompt) % 8 == 0;
}

}  // namespace detail

/// The task kinds, in generation order.
inline std::vector<std::string> task_kinds() {
  return {"arithmetic", "units", "date", "format", "instruction"};
}

/// `n` tasks of generator `seed` on side `s` of the split, restricted to `kinds` (empty: all
/// kinds, mixed uniformly). Task i of a side depends only on (seed, side, kinds, i): a longer
/// list extends a shorter one. forge::error for an unknown kind.
inline std::vector<task> tasks(std::uint64_t seed, std::size_t n, split s,
                               const std::vector<std::string>& kinds = {}) {
  const auto all = task_kinds();
  for (const auto& k : kinds)
    if (std::find(all.begin(), all.end(), k) == all.end())
      throw error({.what = "unknown built-in task kind",
                   .place = "tasks(kinds)",
                   .expected = "arithmetic, units, date, format or instruction",
                   .found = k});
  std::vector<task> out;
  out.reserve(n);
  const philox base(seed, 16);
  const bool want_eval = s == split::eval;
  for (std::uint64_t i = 0; out.size() < n; ++i) {
    detail::picker p{base.fork(i)};
    task t = detail::make_task(p);
    if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), t.kind) == kinds.end()) continue;
    if (detail::is_eval_prompt(t.prompt) != want_eval) continue;
    t.id = t.kind + "-" + std::to_string(i);
    out.push_back(std::move(t));
  }
  return out;
}

/// The tasks as SFT conversations (user prompt, assistant answer).
inline std::vector<data::sft_record> sft_records(const std::vector<task>& ts) {
  std::vector<data::sft_record> out;
  out.reserve(ts.size());
  for (const auto& t : ts)
    out.push_back({.id = t.id, .messages = {{"user", t.prompt}, {"assistant", t.answer}}});
  return out;
}

/// Exact-match evaluation items: prompt = the chat rendering of the user turn with the
/// assistant header (builtin/chat.hpp), answer = the answer's tokens (without the closing
/// <|im_end|>, which eval::evaluate_task strips from generations). `tok` is any
/// forge::text::Tokenizer (the built-in model's, normally).
template <class Tok>
std::vector<eval::task_item> task_items(const Tok& tok, const std::vector<task>& ts) {
  std::vector<eval::task_item> out;
  out.reserve(ts.size());
  for (const auto& t : ts) {
    const auto p = tok.encode(render_chat({{"user", t.prompt}}, true), false);
    const auto a = tok.encode(t.answer, false);
    out.push_back({.prompt = {p.begin(), p.end()}, .answer = {a.begin(), a.end()}});
  }
  return out;
}

}  // namespace forge::builtin
