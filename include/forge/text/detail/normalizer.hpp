#pragma once
// The normalizers of tokenizer.json used by the Llama, Mistral and Qwen families: Unicode
// normalization forms (UAX #15, via utf8proc), Prepend, Replace, Strip and ByteLevel, and
// Sequence (flattened into a list of steps applied in order).

#include <utf8proc.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/text/detail/byte_level.hpp"
#include "forge/text/detail/regex.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// utf8proc's normalization of one chunk of valid UTF-8.
inline std::string utf8proc_normalize(std::string_view s, int options) {
  if (s.empty()) return {};
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &out, static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) {
    std::free(out);
    throw error(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  }
  std::string r(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  std::free(out);
  return r;
}

/// Unicode normalization form `options` (utf8proc flags) of valid UTF-8 `s` (UAX #15).
/// ASCII is invariant under all four forms, has combining class 0 and is never the second
/// part of a composition, so normalization never acts across the start of an ASCII character:
/// only the stretches from the ASCII character before a non-ASCII run to the next ASCII
/// character go through utf8proc.
inline std::string unicode_normalize(std::string_view s, int options) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  const auto ascii = [&](std::size_t k) { return static_cast<unsigned char>(s[k]) < 0x80; };
  while (i < s.size()) {
    std::size_t j = i;
    while (j < s.size() && ascii(j)) ++j;
    if (j == s.size()) {
      out.append(s.substr(i));
      break;
    }
    const std::size_t chunk = j > i ? j - 1 : j;  // the ASCII character may take a mark
    out.append(s.substr(i, chunk - i));
    std::size_t k = j;
    while (k < s.size() && !ascii(k)) ++k;
    out += utf8proc_normalize(s.substr(chunk, k - chunk), options);
    i = k;
  }
  return out;
}

/// One normalization step.
struct normalizer_step {
  enum class kind { nfc, nfd, nfkc, nfkd, prepend, replace, strip, byte_level };
  kind k = kind::nfc;
  std::string text;                      ///< prepend: the prefix; replace: the replacement
  std::shared_ptr<const regex> pattern;  ///< replace: what is replaced
  bool left = false, right = false;      ///< strip: which ends

  /// Applies the step to `s` in place.
  void apply(std::string& s) const {
    switch (k) {
      case kind::nfc:
        s = unicode_normalize(s, UTF8PROC_COMPOSE);
        break;
      case kind::nfd:
        s = unicode_normalize(s, UTF8PROC_DECOMPOSE);
        break;
      case kind::nfkc:
        s = unicode_normalize(s, UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
        break;
      case kind::nfkd:
        s = unicode_normalize(s, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
        break;
      case kind::prepend:
        // The reference prepends only to non-empty strings.
        if (!s.empty()) s.insert(0, text);
        break;
      case kind::replace: {
        std::vector<std::pair<std::size_t, std::size_t>> m;
        regex::matcher(*pattern).find_all(s, m);
        if (m.empty()) break;
        std::string r;
        r.reserve(s.size());
        std::size_t last = 0;
        for (const auto& [b, e] : m) {
          r.append(s, last, b - last);
          r += text;
          last = e;
        }
        r.append(s, last, std::string::npos);
        s = std::move(r);
        break;
      }
      case kind::strip: {
        std::size_t b = 0, e = s.size();
        if (left) {
          std::size_t i = 0;
          while (i < s.size()) {
            std::size_t j = i;
            if (!is_white_space(next_code_point(s, j))) break;
            i = j;
          }
          b = i;
        }
        if (right) {
          while (e > b) {
            std::size_t j = e - 1;
            while (j > b && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
            std::size_t k2 = j;
            if (!is_white_space(next_code_point(s, k2))) break;
            e = j;
          }
        }
        s = s.substr(b, e - b);
        break;
      }
      case kind::byte_level: {
        std::string r;
        r.reserve(s.size() * 2);
        byte_level_table::get().map(s, r);
        s = std::move(r);
        break;
      }
    }
  }
};

/// A normalizer: its steps in order (empty = no normalizer).
struct normalizer {
  std::vector<normalizer_step> steps;
  bool empty() const { return steps.empty(); }
  void apply(std::string& s) const {
    for (const auto& st : steps) st.apply(s);
  }
};

}  // namespace forge::text::detail
