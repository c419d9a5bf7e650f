#pragma once
// Splitting a Jinja template into tokens, with jinja2's whitespace rules as transformers
// configures them (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//   * `{%- ` / `{{-` / `{#-` strip all whitespace before the tag, ` -%}` etc. all after;
//   * trim_blocks drops the first newline after a block or comment tag (`+%}` keeps it);
//   * lstrip_blocks drops spaces and tabs from the start of a line up to a block or comment
//     tag (`{%+` keeps them);
//   * one trailing newline of the template is dropped; "\r\n" and "\r" read as "\n".
// The rules follow jinja2's lexer (jinja2/lexer.py, `tokeniter`), checked against jinja2.

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::text::detail::jinja {

/// A 1-based position in the template source.
struct location {
  std::uint32_t line = 1;
  std::uint32_t column = 1;
};

inline std::string place_of(location l) {
  return "line " + std::to_string(l.line) + ", column " + std::to_string(l.column);
}

enum class tok {
  text,         ///< literal template text (already whitespace-processed)
  var_begin,    ///< {{
  var_end,      ///< }}
  block_begin,  ///< {%
  block_end,    ///< %}
  name,
  string,  ///< a string literal, escapes already decoded
  integer,
  real,
  op,  ///< punctuation and operators, `text` holds the spelling
  eof
};

struct token {
  tok type;
  std::string text;
  location loc;
};

/// The whitespace options of jinja2's Environment; transformers uses trim and lstrip.
struct lex_options {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

class lexer {
 public:
  lexer(std::string_view source, std::string origin, lex_options opt)
      : origin_(std::move(origin)), opt_(opt) {
    // Newlines are normalised first, as jinja2 does, so columns count the normalised text.
    src_.reserve(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!opt_.keep_trailing_newline && !src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<token> run() {
    std::vector<token> out;
    bool line_starting = true;
    while (pos_ < src_.size()) {
      std::size_t t = find_tag(pos_);
      if (t == std::string::npos) {
        emit_text(out, src_.substr(pos_), loc_at(pos_));
        pos_ = src_.size();
        break;
      }
      const char kind = src_[t + 1];  // '{', '%' or '#'
      char sign =
          t + 2 < src_.size() && (src_[t + 2] == '-' || src_[t + 2] == '+') ? src_[t + 2] : '\0';
      std::string text = src_.substr(pos_, t - pos_);
      location text_loc = loc_at(pos_);
      if (sign == '-') {
        std::size_t e = text.size();
        while (e > 0 && is_ws(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        std::size_t nl = text.rfind('\n');
        std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = l_pos < text.size();
          for (std::size_t i = l_pos; i < text.size() && blank; ++i)
            blank = text[i] == ' ' || text[i] == '\t' || text[i] == '\f' || text[i] == '\v';
          if (blank) text.resize(l_pos);
        }
      }
      emit_text(out, std::move(text), text_loc);
      std::size_t after = t + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        line_starting = lex_comment(t, after);
      } else if (kind == '%' && is_raw(after)) {
        line_starting = lex_raw(out, t, after);
      } else {
        line_starting = lex_tag(out, t, after, kind == '%');
      }
    }
    out.push_back({tok::eof, "", loc_at(src_.size())});
    return out;
  }

  /// Location of a byte offset of the (normalised) source.
  location loc_at(std::size_t p) const {
    // Tokens are produced left to right, so a forward-moving cache keeps this linear.
    if (p < cache_pos_) {
      cache_pos_ = 0;
      cache_loc_ = {};
    }
    for (; cache_pos_ < p && cache_pos_ < src_.size(); ++cache_pos_) {
      if (src_[cache_pos_] == '\n') {
        ++cache_loc_.line;
        cache_loc_.column = 1;
      } else if ((static_cast<unsigned char>(src_[cache_pos_]) & 0xC0) != 0x80) {
        ++cache_loc_.column;
      }
    }
    return cache_loc_;
  }

 private:
  [[noreturn]] void fail(location l, std::string what, std::string expected = {},
                         std::string found = {}) const {
    throw forge::error({.what = std::move(what),
                        .file = origin_,
                        .place = place_of(l),
                        .expected = std::move(expected),
                        .found = std::move(found)});
  }

  static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }

  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    return std::string::npos;
  }

  static void emit_text(std::vector<token>& out, std::string text, location l) {
    if (!text.empty()) out.push_back({tok::text, std::move(text), l});
  }

  /// After a tag's closing delimiter ending at `p`: `-` strips all following whitespace,
  /// trim_blocks one newline. Returns whether the consumed text ends in a newline (jinja2's
  /// `line_starting`, which decides whether lstrip applies to the next tag).
  bool consume_after(std::size_t p, char end_sign, bool block_like) {
    pos_ = p;
    bool nl = false;
    if (end_sign == '-') {
      while (pos_ < src_.size() && is_ws(src_[pos_])) nl = src_[pos_++] == '\n';
    } else if (end_sign != '+' && block_like && opt_.trim_blocks && pos_ < src_.size() &&
               src_[pos_] == '\n') {
      ++pos_;
      nl = true;
    }
    return nl;
  }

  bool lex_comment(std::size_t t, std::size_t after) {
    std::size_t e = src_.find("#}", after);
    if (e == std::string::npos) fail(loc_at(t), "unterminated comment", "'#}'", "end of template");
    char end_sign = e > after && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : '\0';
    return consume_after(e + 2, end_sign, true);
  }

  // {% raw %} ... {% endraw %}: the text between is output verbatim.
  bool is_raw(std::size_t p) const { return match_word_tag(p, "raw") != std::string::npos; }

  /// If `{%[-+]?` is followed at p by `\s*word\s*[-+]?%}`, the offset just past `%}`.
  std::size_t match_word_tag(std::size_t p, std::string_view word) const {
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (src_.compare(p, word.size(), word) != 0) return std::string::npos;
    p += word.size();
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    if (src_.compare(p, 2, "%}") != 0) return std::string::npos;
    return p + 2;
  }

  bool lex_raw(std::vector<token>& out, std::size_t t, std::size_t after) {
    std::size_t open_end = match_word_tag(after, "raw");
    char open_sign = src_[open_end - 3];
    std::size_t body = open_end;
    if (open_sign == '-') {
      while (body < src_.size() && is_ws(src_[body])) ++body;
    } else if (open_sign != '+' && opt_.trim_blocks && body < src_.size() && src_[body] == '\n') {
      ++body;
    }
    for (std::size_t i = body; i + 1 < src_.size(); ++i) {
      if (src_[i] != '{' || src_[i + 1] != '%') continue;
      std::size_t a = i + 2;
      char sign = a < src_.size() && (src_[a] == '-' || src_[a] == '+') ? src_[a] : '\0';
      std::size_t close_end = match_word_tag(a + (sign ? 1 : 0), "endraw");
      if (close_end == std::string::npos) continue;
      std::string text = src_.substr(body, i - body);
      if (sign == '-') {
        std::size_t e = text.size();
        while (e > 0 && is_ws(text[e - 1])) --e;
        text.resize(e);
      }
      emit_text(out, std::move(text), loc_at(body));
      char end_sign = src_[close_end - 3];
      return consume_after(close_end, end_sign == '-' || end_sign == '+' ? end_sign : '\0', true);
    }
    fail(loc_at(t), "unterminated raw block", "'{% endraw %}'", "end of template");
  }

  /// The inside of `{{ }}` or `{% %}`: expression tokens up to the closing delimiter at
  /// bracket depth zero (so `{{ {'a': {'b': 1}} }}` works, as in jinja2's balancing stack).
  bool lex_tag(std::vector<token>& out, std::size_t t, std::size_t p, bool block) {
    out.push_back({block ? tok::block_begin : tok::var_begin, block ? "{%" : "{{", loc_at(t)});
    const char close = block ? '%' : '}';
    std::string open;  // brackets still open, innermost last
    bool after_dot = false;
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (p >= src_.size())
        fail(loc_at(t), block ? "unterminated block tag" : "unterminated expression tag",
             block ? "'%}'" : "'}}'", "end of template");
      char c = src_[p];
      if (open.empty()) {
        std::size_t q = p;
        char sign = '\0';
        if ((c == '-' || c == '+') && p + 1 < src_.size()) {
          sign = c;
          ++q;
        }
        if (q + 1 < src_.size() && src_[q] == close && src_[q + 1] == '}') {
          out.push_back({block ? tok::block_end : tok::var_end, block ? "%}" : "}}", loc_at(p)});
          return consume_after(q + 2, sign, block);
        }
      }
      location l = loc_at(p);
      // Names are ASCII identifiers; bytes of UTF-8 sequences are accepted too, since
      // Python (and so jinja2) allows non-ASCII letters in identifiers.
      auto name_start = [](char x) {
        return std::isalpha(static_cast<unsigned char>(x)) || x == '_' ||
               static_cast<unsigned char>(x) >= 0x80;
      };
      if (name_start(c)) {
        std::size_t e = p;
        while (e < src_.size() &&
               (name_start(src_[e]) || std::isdigit(static_cast<unsigned char>(src_[e]))))
          ++e;
        out.push_back({tok::name, src_.substr(p, e - p), l});
        p = e;
        after_dot = false;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(out, p, l, after_dot);
        after_dot = false;
        continue;
      }
      if (c == '\'' || c == '"') {
        p = lex_string(out, p, l);
        after_dot = false;
        continue;
      }
      static constexpr std::string_view two[] = {"//", "**", "==", "!=", "<=", ">="};
      bool matched = false;
      for (auto op : two)
        if (src_.compare(p, 2, op) == 0) {
          out.push_back({tok::op, std::string(op), l});
          p += 2;
          matched = true;
          break;
        }
      if (matched) {
        after_dot = false;
        continue;
      }
      if (std::string_view("+-*/%~[](){}<>=.:|,").find(c) == std::string_view::npos)
        fail(l, "unexpected character in tag", "an expression", "'" + std::string(1, c) + "'");
      if (c == '(' || c == '[' || c == '{') open.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
      if (c == ')' || c == ']' || c == '}') {
        if (open.empty() || open.back() != c)
          fail(l, "unbalanced bracket",
               open.empty() ? "an expression" : "'" + std::string(1, open.back()) + "'",
               "'" + std::string(1, c) + "'");
        open.pop_back();
      }
      out.push_back({tok::op, std::string(1, c), l});
      after_dot = c == '.';
      ++p;
    }
  }

  std::size_t lex_number(std::vector<token>& out, std::size_t p, location l, bool after_dot) {
    std::size_t e = p;
    auto digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) ||
                                 (src_[e] == '_' && e + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[e + 1])))))
        ++e;
    };
    digits();
    bool is_real = false;
    // `foo.0.1` is two item lookups, so no fraction right after a dot (jinja2's lookbehind).
    if (!after_dot && e + 1 < src_.size() && src_[e] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      ++e;
      digits();
      is_real = true;
    }
    if (!after_dot && e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      std::size_t f = e + 1;
      if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
      if (f < src_.size() && std::isdigit(static_cast<unsigned char>(src_[f]))) {
        e = f;
        digits();
        is_real = true;
      }
    }
    std::string text;
    for (std::size_t i = p; i < e; ++i)
      if (src_[i] != '_') text.push_back(src_[i]);
    out.push_back({is_real ? tok::real : tok::integer, std::move(text), l});
    return e;
  }

  /// A quoted string with Python escapes (jinja2 decodes literals with "unicode-escape"):
  /// \n \t \r \\ \' \" \a \b \f \v \0-\777 \xHH \uHHHH \UHHHHHHHH; other escapes stay as typed.
  std::size_t lex_string(std::vector<token>& out, std::size_t p, location l) {
    const char q = src_[p];
    std::string val;
    std::size_t i = p + 1;
    auto hex = [&](std::size_t n) -> long {
      if (i + n > src_.size()) return -1;
      long v = 0;
      for (std::size_t k = 0; k < n; ++k) {
        char h = src_[i + k];
        int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                            : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
      }
      return v;
    };
    while (true) {
      if (i >= src_.size())
        fail(l, "unterminated string literal", std::string(1, q), "end of template");
      char c = src_[i];
      if (c == q) {
        ++i;
        break;
      }
      if (c != '\\') {
        val.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= src_.size())
        fail(l, "unterminated string literal", std::string(1, q), "end of template");
      char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n':
          val.push_back('\n');
          break;
        case 't':
          val.push_back('\t');
          break;
        case 'r':
          val.push_back('\r');
          break;
        case 'a':
          val.push_back('\a');
          break;
        case 'b':
          val.push_back('\b');
          break;
        case 'f':
          val.push_back('\f');
          break;
        case 'v':
          val.push_back('\v');
          break;
        case '\\':
          val.push_back('\\');
          break;
        case '\'':
          val.push_back('\'');
          break;
        case '"':
          val.push_back('"');
          break;
        case '\n':
          break;  // a backslash-newline continues the line
        case 'x':
        case 'u':
        case 'U': {
          std::size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          long v = hex(n);
          if (v < 0 || v > 0x10FFFF)
            fail(loc_at(i - 2), "invalid escape in string literal",
                 "\\" + std::string(1, e) + " followed by " + std::to_string(n) + " hex digits");
          i += n;
          append_cp(val, static_cast<char32_t>(v));
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            unsigned v = static_cast<unsigned>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k)
              v = v * 8 + static_cast<unsigned>(src_[i++] - '0');
            append_cp(val, v);
          } else {
            val.push_back('\\');  // unknown escapes are kept, as Python does
            val.push_back(e);
          }
      }
    }
    out.push_back({tok::string, std::move(val), l});
    return i;
  }

  static void append_cp(std::string& out, char32_t c) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }

  std::string src_;
  std::string origin_;
  lex_options opt_;
  std::size_t pos_ = 0;
  mutable std::size_t cache_pos_ = 0;
  mutable location cache_loc_{};
};

}  // namespace forge::text::detail::jinja
