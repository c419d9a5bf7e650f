#pragma once
// A Unicode regular expression over UTF-8 (PCRE2, JIT-compiled) that finds matches the way
// the Oniguruma engine behind Hugging Face `tokenizers` does: leftmost-first backtracking
// semantics, and an empty match directly after the previous match is skipped by advancing one
// character. Two engine differences are removed by rewriting the pattern:
//   * `\s` / `\S` become explicit classes of the Unicode White_Space property (PCRE2's `\s`
//     with UCP also accepts U+180E, which Unicode dropped from White_Space in 6.3);
//   * literal patterns (`{"String": ...}` in tokenizer.json) are escaped code point by code
//     point so any text, including `\E`, is taken literally.

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// The body of a character class listing the Unicode White_Space code points.
inline constexpr std::string_view white_space_class_body =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
    "\\x{205f}\\x{3000}";

/// Rewrites `\s` and `\S` in a PCRE/Oniguruma pattern into explicit White_Space classes.
/// `\S` inside a bracket class has no such rewriting (it is kept and means PCRE2's `\S`).
inline std::string rewrite_space_classes(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') {
        if (in_class) {
          out += white_space_class_body;
        } else {
          out += '[';
          out += white_space_class_body;
          out += ']';
        }
      } else if (e == 'S' && !in_class) {
        out += "[^";
        out += white_space_class_body;
        out += ']';
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      // A POSIX class such as [:alpha:] inside a bracket expression.
      const std::size_t end = p.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(p.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

/// A pattern that matches `literal` exactly: every code point written as \x{...}.
inline std::string escape_literal(std::string_view literal) {
  std::string out;
  static constexpr char hex[] = "0123456789abcdef";
  std::size_t i = 0;
  while (i < literal.size()) {
    char32_t c = next_code_point(literal, i);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum) {
      out += static_cast<char>(c);
      continue;
    }
    std::string h;
    do {
      h.insert(h.begin(), hex[c & 15]);
      c >>= 4;
    } while (c != 0);
    out += "\\x{" + h + "}";
  }
  return out;
}

/// A compiled Unicode regular expression. Matching needs a `regex::matcher` (one per thread).
class regex {
 public:
  /// Compiles `pattern` (Oniguruma/PCRE syntax); forge::error naming `source` if it is invalid.
  regex(std::string_view pattern, const std::string& source) : pattern_(pattern) {
    const std::string rewritten = rewrite_space_classes(pattern);
    int code = 0;
    PCRE2_SIZE offset = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &offset, nullptr));
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(code, msg, sizeof msg);
      throw error(
          {.what = "invalid regular expression: " + std::string(reinterpret_cast<const char*>(msg)),
           .file = source,
           .expected = "a valid Unicode regular expression",
           .found = "/" + pattern_ + "/ (error near pattern byte " + std::to_string(offset) + ")"});
    }
    // JIT compilation is an optimisation only: without it matching is slower but identical.
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
  }

  friend std::shared_ptr<const regex> compile_shared(std::string_view, const std::string&,
                                                     std::string_view);

  /// The pattern as written in the tokenizer file.
  const std::string& pattern() const { return pattern_; }

  /// Per-thread matching state: match data and a JIT stack large enough for long inputs.
  class matcher {
   public:
    explicit matcher(const regex& re)
        : re_(&re),
          data_(pcre2_match_data_create_from_pattern(re.code_.get(), nullptr)),
          context_(pcre2_match_context_create(nullptr)) {
      if (!data_ || !context_) throw error("out of memory creating a regex matcher");
    }

    /// Appends the [begin, end) byte ranges of the successive matches in `s` (valid UTF-8) to
    /// `out`, with Oniguruma's rule for empty matches.
    void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) {
      if (!re_->literal_.empty()) {
        // A non-empty literal: successive non-overlapping occurrences, as the regex would find.
        const std::string& lit = re_->literal_;
        for (std::size_t p = s.find(lit); p != std::string_view::npos;
             p = s.find(lit, p + lit.size()))
          out.emplace_back(p, p + lit.size());
        return;
      }
      std::size_t last_end = 0;
      bool have_last = false;
      std::size_t last_match_end = 0;
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
      while (last_end <= s.size()) {
        int rc = pcre2_match(re_->code_.get(), subject, s.size(), last_end, PCRE2_NO_UTF_CHECK,
                             data_.get(), context_.get());
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !stack_) {
          // The default 32 KiB JIT stack was too small (long runs under a backtracking
          // quantifier): retry with a stack that grows to 64 MiB.
          stack_.reset(pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr));
          if (!stack_) throw error("out of memory creating a regex JIT stack");
          pcre2_jit_stack_assign(context_.get(), nullptr, stack_.get());
          continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof msg);
          throw error({.what = "regular expression matching failed: " +
                               std::string(reinterpret_cast<const char*>(msg)),
                       .place = at_byte(last_end),
                       .found = "/" + re_->pattern_ + "/"});
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data_.get());
        const std::size_t b = ov[0], e = ov[1];
        if (b == e && have_last && last_match_end == e) {
          last_end += last_end < s.size()
                          ? utf8_length_from_lead(static_cast<unsigned char>(s[last_end]))
                          : 1;
          continue;
        }
        last_end = e;
        have_last = true;
        last_match_end = e;
        out.emplace_back(b, e);
      }
    }

   private:
    struct free_data {
      void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
    };
    struct free_context {
      void operator()(pcre2_match_context* p) const { pcre2_match_context_free(p); }
    };
    struct free_stack {
      void operator()(pcre2_jit_stack* p) const { pcre2_jit_stack_free(p); }
    };
    const regex* re_;
    std::unique_ptr<pcre2_match_data, free_data> data_;
    std::unique_ptr<pcre2_match_context, free_context> context_;
    std::unique_ptr<pcre2_jit_stack, free_stack> stack_;
  };

 private:
  struct free_code {
    void operator()(pcre2_code* p) const { pcre2_code_free(p); }
  };
  std::string pattern_;
  std::string literal_;  // set for patterns made by literal(): matched with plain search
  std::unique_ptr<pcre2_code, free_code> code_;
};

/// The compiled form of `pattern`, shared between tokenizers that use the same pattern
/// (compiling and JIT-compiling dominates loading a tokenizer.json).
inline std::shared_ptr<const regex> compile_shared(std::string_view pattern,
                                                   const std::string& source,
                                                   std::string_view literal = {}) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const regex>, std::less<>> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(pattern);
  if (it != cache.end())
    if (auto re = it->second.lock()) return re;
  auto fresh = std::make_shared<regex>(pattern, source);
  fresh->literal_ = literal;
  std::shared_ptr<const regex> re = std::move(fresh);
  if (cache.size() > 256) std::erase_if(cache, [](const auto& kv) { return kv.second.expired(); });
  cache[std::string(pattern)] = re;
  return re;
}

/// A shared pattern matching `text` literally (tokenizer.json {"String": ...}).
inline std::shared_ptr<const regex> compile_literal(std::string_view text,
                                                    const std::string& source) {
  return compile_shared(escape_literal(text), source, text);
}

}  // namespace forge::text::detail
