#pragma once
// The decoders of tokenizer.json: ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace,
// BPEDecoder and Sequence (flattened into steps). A decoder turns the list of token strings
// into a list of strings whose concatenation is the decoded text.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/text/detail/byte_level.hpp"
#include "forge/text/detail/pre_tokenizer.hpp"
#include "forge/text/detail/regex.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// One decoding step.
struct decoder_step {
  enum class kind { byte_level, byte_fallback, fuse, strip, replace, metaspace, bpe };
  kind k = kind::fuse;
  std::string content;                   ///< strip: the character; replace: the replacement
  char32_t strip_char = 0;               ///< strip
  std::size_t start = 0, stop = 0;       ///< strip: at most this many at each end
  std::shared_ptr<const regex> pattern;  ///< replace
  char32_t replacement_char = 0x2581;    ///< metaspace
  prepend_scheme scheme = prepend_scheme::always;  ///< metaspace
  std::string suffix;                              ///< bpe: the end-of-word suffix

  void apply(std::vector<std::string>& tokens) const {
    switch (k) {
      case kind::byte_level: {
        // All tokens become one string: a token made only of alphabet characters turns into
        // its bytes, any other token is kept as it is; invalid UTF-8 is repaired lossily.
        const auto& t = byte_level_table::get();
        std::string bytes;
        for (const auto& tok : tokens) {
          const std::size_t mark = bytes.size();
          bool ok = true;
          std::size_t i = 0;
          while (i < tok.size()) {
            const int b = t.decode(next_code_point(tok, i));
            if (b < 0) {
              ok = false;
              break;
            }
            bytes += static_cast<char>(b);
          }
          if (!ok) {
            bytes.resize(mark);
            bytes += tok;
          }
        }
        tokens.assign(1, utf8_lossy(bytes));
        break;
      }
      case kind::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;
        const auto flush = [&] {
          if (pending.empty()) return;
          if (first_invalid_utf8(pending) == pending.size())
            out.push_back(pending);
          else
            for (std::size_t n = 0; n < pending.size(); ++n) out.emplace_back("\xEF\xBF\xBD");
          pending.clear();
        };
        for (auto& tok : tokens) {
          int byte = -1;
          if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>')
            byte = parse_hex_byte(tok[3], tok[4]);
          if (byte >= 0) {
            pending += static_cast<char>(byte);
          } else {
            flush();
            out.push_back(std::move(tok));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case kind::fuse: {
        std::string all;
        for (const auto& tok : tokens) all += tok;
        tokens.assign(1, std::move(all));
        break;
      }
      case kind::strip:
        for (auto& tok : tokens) tok = strip(tok);
        break;
      case kind::replace: {
        regex::matcher m(*pattern);
        std::vector<std::pair<std::size_t, std::size_t>> found;
        for (auto& tok : tokens) {
          found.clear();
          m.find_all(tok, found);
          if (found.empty()) continue;
          std::string r;
          std::size_t last = 0;
          for (const auto& [b, e] : found) {
            r.append(tok, last, b - last);
            r += content;
            last = e;
          }
          r.append(tok, last, std::string::npos);
          tok = std::move(r);
        }
        break;
      }
      case kind::metaspace: {
        // Every replacement character becomes a space, except in the first token where the
        // reference drops them (they came from the prepended prefix) unless nothing is prepended.
        for (std::size_t n = 0; n < tokens.size(); ++n) {
          std::string r;
          std::size_t i = 0;
          const std::string& tok = tokens[n];
          while (i < tok.size()) {
            const std::size_t b = i;
            const char32_t c = next_code_point(tok, i);
            if (c == replacement_char) {
              if (!(n == 0 && scheme != prepend_scheme::never)) r += ' ';
            } else {
              r.append(tok, b, i - b);
            }
          }
          tokens[n] = std::move(r);
        }
        break;
      }
      case kind::bpe:
        for (std::size_t n = 0; n < tokens.size(); ++n)
          tokens[n] = replace_all(tokens[n], suffix, n + 1 == tokens.size() ? "" : " ");
        break;
    }
  }

 private:
  static int parse_hex_byte(char hi, char lo) {
    const auto v = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int h = v(hi), l = v(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }

  std::string strip(const std::string& tok) const {
    std::vector<std::size_t> starts;  // byte offset of each code point
    std::size_t i = 0;
    while (i < tok.size()) {
      starts.push_back(i);
      next_code_point(tok, i);
    }
    const auto at = [&](std::size_t k) {
      std::size_t j = starts[k];
      return next_code_point(tok, j);
    };
    const std::size_t n = starts.size();
    std::size_t cut_start = 0, cut_stop = n;
    for (std::size_t k = 0; k < start && k < n; ++k) {
      if (at(k) != strip_char) break;
      cut_start = k + 1;
    }
    for (std::size_t k = 0; k < stop && k < n; ++k) {
      const std::size_t idx = n - k - 1;
      if (at(idx) != strip_char) break;
      cut_stop = idx;
    }
    if (cut_start >= cut_stop) return {};
    const std::size_t b = starts[cut_start];
    const std::size_t e = cut_stop == n ? tok.size() : starts[cut_stop];
    return tok.substr(b, e - b);
  }

  static std::string replace_all(const std::string& s, const std::string& from,
                                 const std::string& to) {
    if (from.empty()) return s;
    std::string r;
    std::size_t last = 0, at = 0;
    while ((at = s.find(from, last)) != std::string::npos) {
      r.append(s, last, at - last);
      r += to;
      last = at + from.size();
    }
    r.append(s, last, std::string::npos);
    return r;
  }
};

/// A decoder: its steps in order (empty = tokens joined with single spaces, as the reference).
struct decoder {
  std::vector<decoder_step> steps;
  std::string decode(std::vector<std::string> tokens) const {
    if (steps.empty()) {
      std::string r;
      for (std::size_t n = 0; n < tokens.size(); ++n) {
        if (n) r += ' ';
        r += tokens[n];
      }
      return r;
    }
    for (const auto& st : steps) st.apply(tokens);
    std::string r;
    for (const auto& t : tokens) r += t;
    return r;
  }
};

}  // namespace forge::text::detail
