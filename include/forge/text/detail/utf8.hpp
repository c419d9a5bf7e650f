#pragma once
// UTF-8 helpers shared by the tokenizers: strict validation (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), code point decoding and encoding, the lossy repair used
// when decoded bytes are not valid UTF-8, and the few Unicode character classes the
// tokenizer.json components need (taken from utf8proc's tables).

#include <utf8proc.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"

namespace forge::text::detail {

/// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes there are not one.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const std::size_t n = s.size();
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  const auto cont = [&](std::size_t k) { return k < n && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (i + 1 >= n) return 0;
    const unsigned char c1 = b(i + 1);
    // Table 3-7 of the Unicode standard: E0 needs A0..BF (no overlongs), ED needs 80..9F (no
    // surrogates).
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;
    if (c1 < lo || c1 > hi) return 0;
    return cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (i + 1 >= n) return 0;
    const unsigned char c1 = b(i + 1);
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;
    if (c1 < lo || c1 > hi) return 0;
    return cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/// Byte offset of the first invalid UTF-8 sequence in `s`, or s.size() if it is all valid.
inline std::size_t first_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path: most text is ASCII and needs no table walk.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) return i;
    i += len;
  }
  return s.size();
}

/// Throws forge::error naming the byte offset of the first invalid UTF-8 sequence in `s`.
inline void require_utf8(std::string_view s, const std::string& source) {
  const std::size_t bad = first_invalid_utf8(s);
  if (bad == s.size()) return;
  static constexpr char hex[] = "0123456789abcdef";
  const auto byte = static_cast<unsigned char>(s[bad]);
  throw error({.what = "text is not valid UTF-8",
               .file = source,
               .place = at_byte(bad),
               .expected = "a UTF-8 sequence (RFC 3629)",
               .found = std::string("byte 0x") + hex[byte >> 4] + hex[byte & 15]});
}

/// Decodes the code point at s[i] (which must start a valid sequence) and advances i.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto b = [&](std::size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[k]));
  };
  const char32_t c = b(i);
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    const char32_t r = ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
    i += 2;
    return r;
  }
  if (c < 0xF0) {
    const char32_t r = ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
    i += 3;
    return r;
  }
  const char32_t r =
      ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) | (b(i + 3) & 0x3F);
  i += 4;
  return r;
}

/// Length in bytes of the (valid) UTF-8 sequence whose lead byte is `lead`.
inline std::size_t utf8_length_from_lead(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/// Appends the UTF-8 encoding of `c` to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

/// The UTF-8 encoding of one code point.
inline std::string utf8_of(char32_t c) {
  std::string s;
  append_utf8(s, c);
  return s;
}

/// Number of bytes of the longest prefix of s[i..] that could still begin a valid sequence
/// (at least 1): the "maximal subpart" that is replaced by one U+FFFD (Unicode 15, §3.9,
/// "U+FFFD Substitution of Maximal Subparts"), the policy of Rust's from_utf8_lossy too.
inline std::size_t maximal_invalid_subpart(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  std::size_t k = 1;
  for (; k <= need && i + k < s.size(); ++k) {
    const unsigned char x = b(i + k);
    const bool ok = k == 1 ? (x >= lo && x <= hi) : (x & 0xC0) == 0x80;
    if (!ok) break;
  }
  return k;
}

/// `bytes` as UTF-8, each maximal invalid subpart replaced by U+FFFD.
inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    const std::size_t len = utf8_sequence_length(bytes, i);
    if (len > 0) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += maximal_invalid_subpart(bytes, i);
    }
  }
  return out;
}

/// Unicode general category of `c` (utf8proc's UTF8PROC_CATEGORY_*).
inline int category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

/// Unicode White_Space (the property behind `\s` in Oniguruma and Rust's regex).
inline bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

/// Rust's char::is_numeric: general category Nd, Nl or No.
inline bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const int k = category(c);
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/// A word character in the sense of Unicode regex `\w` (UTS #18 Annex C): letters, marks,
/// decimal digits, connector punctuation and the joiners. Letter numbers stand in for the
/// few Other_Alphabetic code points outside the mark categories.
inline bool is_word_char(char32_t c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  if (c == 0x200C || c == 0x200D) return true;
  switch (category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

/// The last code point of non-empty valid UTF-8 `s`.
inline char32_t last_code_point(std::string_view s) {
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return next_code_point(s, i);
}

}  // namespace forge::text::detail
