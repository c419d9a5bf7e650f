#pragma once
// Added tokens (tokenizer.json "added_tokens"): special and user tokens found in the text
// before any splitting, so "<|im_start|>" is one id and never reaches the regex or BPE.
// Matching is leftmost-longest over all token strings, as the reference's Aho-Corasick
// automaton; `single_word`, `lstrip` and `rstrip` then adjust or discard a match.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "forge/text/detail/split.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// One entry of "added_tokens".
struct added_token {
  std::string content;
  std::int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  std::string match_form;  ///< what is searched for: content, or its normalized form
};

/// A range of text and, if it is an added token, that token's id (else -1).
struct segment {
  byte_range r;
  std::int32_t id;
};

/// Leftmost-longest matcher over a set of added tokens.
class added_token_matcher {
 public:
  added_token_matcher() = default;

  /// Matches the tokens whose `normalized` flag equals `normalized` (empty forms are skipped).
  added_token_matcher(const std::vector<added_token>& tokens, bool normalized) : tokens_(&tokens) {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const auto& t = tokens[i];
      if (t.normalized != normalized || t.match_form.empty()) continue;
      by_first_[static_cast<unsigned char>(t.match_form[0])].push_back(i);
      any_ = true;
    }
    // Longest first, so the first hit at a position is the longest one there.
    for (auto& v : by_first_)
      std::stable_sort(v.begin(), v.end(), [&](std::size_t a, std::size_t b) {
        return tokens[a].match_form.size() > tokens[b].match_form.size();
      });
  }

  bool empty() const { return !any_; }

  /// Splits valid UTF-8 `s` into a cover of segments (token or plain text, in order).
  void split(std::string_view s, std::vector<segment>& out) const {
    out.clear();
    if (!any_) {
      if (!s.empty()) out.push_back({{0, s.size()}, -1});
      return;
    }
    std::size_t start_offset = 0;
    std::size_t p = 0;
    while (p < s.size()) {
      const added_token* hit = nullptr;
      for (std::size_t idx : by_first_[static_cast<unsigned char>(s[p])]) {
        const auto& t = (*tokens_)[idx];
        if (s.compare(p, t.match_form.size(), t.match_form) == 0) {
          hit = &t;
          break;
        }
      }
      if (!hit) {
        ++p;
        continue;
      }
      std::size_t start = p, stop = p + hit->match_form.size();
      p = stop;  // the search resumes after the raw match whatever happens to it below
      if (hit->single_word) {
        const bool space_before = start == 0 || !is_word_char(last_code_point(s.substr(0, start)));
        std::size_t q = stop;
        const bool space_after = stop == s.size() || !is_word_char(next_code_point(s, q));
        if (!space_before || !space_after) continue;
      }
      if (hit->lstrip) {
        std::size_t b = start;
        while (b > start_offset) {
          std::size_t j = b - 1;
          while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
          std::size_t k = j;
          if (!is_white_space(next_code_point(s, k))) break;
          b = j;
        }
        start = std::max(b, start_offset);
      }
      if (hit->rstrip) {
        while (stop < s.size()) {
          std::size_t k = stop;
          if (!is_white_space(next_code_point(s, k))) break;
          stop = k;
        }
      }
      start = std::max(start, start_offset);
      if (start_offset < start) out.push_back({{start_offset, start}, -1});
      out.push_back({{start, stop}, hit->id});
      start_offset = stop;
      p = std::max(p, stop);
    }
    if (start_offset < s.size()) out.push_back({{start_offset, s.size()}, -1});
  }

 private:
  const std::vector<added_token>* tokens_ = nullptr;
  std::array<std::vector<std::size_t>, 256> by_first_;
  bool any_ = false;
};

}  // namespace forge::text::detail
