#pragma once
// Strict UTF-8 validation (RFC 3629 section 4 / Unicode 15 table 3-7, "well-formed UTF-8
// byte sequences"): rejects overlong forms, UTF-16 surrogates (U+D800..U+DFFF), code points
// above U+10FFFF, stray continuation bytes and truncated sequences, and says at which byte.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace forge::data {

/// Where and why a byte string is not well-formed UTF-8.
struct utf8_fault {
  std::size_t byte = 0;  ///< 0-based offset of the first byte of the bad sequence
  std::string reason;    ///< "overlong encoding", "surrogate code point", ...
};

/// Checks that `s` is well-formed UTF-8; returns the first fault, or nothing when valid.
inline std::optional<utf8_fault> check_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    // Bounds of the second byte per Table 3-7: they exclude overlongs (E0, F0), surrogates
    // (ED) and code points above U+10FFFF (F4) in one comparison.
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c == 0xE0) {
      len = 3;
      lo = 0xA0;
    } else if (c >= 0xE1 && c <= 0xEC) {
      len = 3;
    } else if (c == 0xED) {
      len = 3;
      hi = 0x9F;
    } else if (c >= 0xEE && c <= 0xEF) {
      len = 3;
    } else if (c == 0xF0) {
      len = 4;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = 4;
    } else if (c == 0xF4) {
      len = 4;
      hi = 0x8F;
    } else if (c == 0xC0 || c == 0xC1) {
      return utf8_fault{i, "overlong encoding"};
    } else if (c >= 0x80 && c <= 0xBF) {
      return utf8_fault{i, "unexpected continuation byte"};
    } else {
      return utf8_fault{i, "code point above U+10FFFF"};  // F5..FF
    }
    if (i + 1 >= n) return utf8_fault{i, "truncated sequence"};
    const unsigned char c1 = p[i + 1];
    if (c1 < lo || c1 > hi) {
      if (c1 < 0x80 || c1 > 0xBF) return utf8_fault{i, "truncated sequence"};
      if (c == 0xE0 || c == 0xF0) return utf8_fault{i, "overlong encoding"};
      if (c == 0xED) return utf8_fault{i, "surrogate code point"};
      return utf8_fault{i, "code point above U+10FFFF"};
    }
    for (std::size_t k = 2; k < len; ++k) {
      if (i + k >= n || p[i + k] < 0x80 || p[i + k] > 0xBF)
        return utf8_fault{i, "truncated sequence"};
    }
    i += len;
  }
  return std::nullopt;
}

/// True when `s` is well-formed UTF-8.
inline bool is_utf8(std::string_view s) {
  return !check_utf8(s).has_value();
}

namespace detail {
/// Decodes the code point starting at s[i] of a string already checked by check_utf8;
/// advances i past it.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  auto cont = [&](std::size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
  };
  char32_t cp;
  std::size_t len;
  if (c < 0x80) {
    cp = c;
    len = 1;
  } else if (c < 0xE0) {
    cp = (static_cast<char32_t>(c & 0x1F) << 6) | cont(1);
    len = 2;
  } else if (c < 0xF0) {
    cp = (static_cast<char32_t>(c & 0x0F) << 12) | (cont(1) << 6) | cont(2);
    len = 3;
  } else {
    cp = (static_cast<char32_t>(c & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
    len = 4;
  }
  i += len;
  return cp;
}

/// Appends the UTF-8 encoding of a valid code point.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}
}  // namespace detail

}  // namespace forge::data
