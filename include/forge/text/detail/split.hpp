#pragma once
// Splitting a string by a pattern with one of the delimiter behaviours of tokenizer.json
// ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"). A pattern
// yields a cover of the string by ranges flagged match / no match; the behaviour folds that
// cover into the pieces that are kept. Empty pieces are dropped, as the reference does.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// How the matched delimiters of a split are kept.
enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

using byte_range = std::pair<std::size_t, std::size_t>;

/// A range of the input and whether it is a pattern match.
struct flagged_range {
  byte_range r;
  bool match;
};

/// Turns the successive matches of a regex over a string of length n into a cover of [0, n).
inline void cover_from_matches(const std::vector<byte_range>& matches, std::size_t n,
                               std::vector<flagged_range>& out) {
  out.clear();
  if (n == 0) return;
  std::size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({{prev, b}, false});
    out.push_back({{b, e}, true});
    prev = e;
  }
  if (prev != n) out.push_back({{prev, n}, false});
}

/// The cover of `s` in which every code point satisfying `pred` is a match of its own.
template <class Pred>
void cover_from_predicate(std::string_view s, Pred pred, std::vector<flagged_range>& out) {
  out.clear();
  std::size_t last = 0, i = 0;
  while (i < s.size()) {
    const std::size_t b = i;
    const char32_t c = next_code_point(s, i);
    if (pred(c)) {
      if (last < b) out.push_back({{last, b}, false});
      out.push_back({{b, i}, true});
      last = i;
    }
  }
  if (i > last) out.push_back({{last, i}, false});
}

/// Folds a cover into the kept pieces (non-empty ranges) according to `behavior`.
inline void apply_behavior(const std::vector<flagged_range>& cover, split_behavior behavior,
                           std::vector<byte_range>& out) {
  out.clear();
  switch (behavior) {
    case split_behavior::isolated:
      for (const auto& f : cover) out.push_back(f.r);
      break;
    case split_behavior::removed:
      for (const auto& f : cover)
        if (!f.match) out.push_back(f.r);
      break;
    case split_behavior::contiguous: {
      bool prev = false;
      for (const auto& f : cover) {
        if (f.match == prev && !out.empty())
          out.back().second = f.r.second;
        else
          out.push_back(f.r);
        prev = f.match;
      }
      break;
    }
    case split_behavior::merged_with_previous: {
      bool prev = false;
      for (const auto& f : cover) {
        if (f.match && !prev && !out.empty())
          out.back().second = f.r.second;
        else
          out.push_back(f.r);
        prev = f.match;
      }
      break;
    }
    case split_behavior::merged_with_next: {
      bool prev = false;
      for (std::size_t k = cover.size(); k-- > 0;) {
        const auto& f = cover[k];
        if (f.match && !prev && !out.empty())
          out.back().first = f.r.first;
        else
          out.push_back(f.r);
        prev = f.match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  std::erase_if(out, [](const byte_range& r) { return r.first == r.second; });
}

}  // namespace forge::text::detail
