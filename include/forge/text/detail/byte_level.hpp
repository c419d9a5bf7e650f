#pragma once
// The byte-to-character table of byte-level BPE (GPT-2, Radford et al. 2019; encoder.py's
// bytes_to_unicode): printable Latin-1 bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for themselves and
// the other 68 bytes map, in increasing order, to U+0100, U+0101, ... so every byte has a
// visible, non-space character and BPE never sees raw control bytes or spaces.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// The byte-level alphabet: for each byte its character's UTF-8, and the reverse map.
class byte_level_table {
 public:
  byte_level_table() {
    reverse_.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      code_[b] = c;
      utf8_[b] = utf8_of(c);
      reverse_[c] = static_cast<std::int16_t>(b);
    }
  }

  /// UTF-8 of the character that stands for byte `b`.
  const std::string& encode(unsigned char b) const { return utf8_[b]; }

  /// The byte that code point `c` stands for, or -1 if `c` is not in the alphabet.
  int decode(char32_t c) const { return c < reverse_.size() ? reverse_[c] : -1; }

  /// Appends the byte-level form of `bytes` to `out`.
  void map(std::string_view bytes, std::string& out) const {
    // Every alphabet character is 1 or 2 bytes of UTF-8 (U+0021..U+0143).
    const std::size_t at = out.size();
    out.resize(at + 2 * bytes.size());
    char* p = out.data() + at;
    for (char ch : bytes) {
      const auto& u = utf8_[static_cast<unsigned char>(ch)];
      p[0] = u[0];
      if (u.size() == 2) p[1] = u[1];
      p += u.size();
    }
    out.resize(static_cast<std::size_t>(p - out.data()));
  }

  /// The shared table.
  static const byte_level_table& get() {
    static const byte_level_table t;
    return t;
  }

 private:
  std::array<char32_t, 256> code_{};
  std::array<std::string, 256> utf8_;
  std::array<std::int16_t, 324> reverse_{};  // the alphabet lies in U+0021..U+0143
};

}  // namespace forge::text::detail
