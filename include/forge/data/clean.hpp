#pragma once
// Text cleaning before training: Unicode NFC (UAX #15, via utf8proc), removal of control
// characters, whitespace normalisation. Each transformation is a plain function on UTF-8
// text; clean_text applies the chosen ones in a fixed order; clean_record applies them to
// every text field of a record.
//
// Order: control characters first (so NFC never sees them), then NFC, then whitespace.

#include <cstdlib>
#include <string>
#include <string_view>

#include <utf8proc.h>

#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/data/utf8.hpp"

namespace forge::data {

/// Which cleaning transformations clean_text applies. The defaults keep code intact: tabs and
/// runs of inner spaces (indentation) survive unless `collapse_spaces` is set.
struct clean_options {
  bool nfc = true;                   ///< Unicode canonical composition (NFC)
  bool strip_control = true;         ///< drop C0/C1 controls except \t and \n; \r\n and \r -> \n
  bool strip_invisible = true;       ///< drop U+200B ZWSP, U+2060 word joiner, U+FEFF BOM
  bool normalize_whitespace = true;  ///< exotic spaces -> ' ', trim line ends and the text
  bool collapse_spaces = false;      ///< also collapse runs of spaces/tabs inside a line to one
  int max_blank_lines = 1;           ///< longer runs of empty lines shrink to this many (<0: keep)
};

/// Unicode NFC of well-formed UTF-8 text; forge::error if the text is not UTF-8.
inline std::string to_nfc(std::string_view s) {
  if (auto f = check_utf8(s))
    throw error({.what = "cannot normalise text that is not UTF-8",
                 .file = "<text>",
                 .place = at_byte(f->byte),
                 .expected = "well-formed UTF-8",
                 .found = f->reason});
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    throw error({.what = std::string("Unicode normalisation failed: ") + utf8proc_errmsg(n),
                 .file = "<text>",
                 .place = "",
                 .expected = "",
                 .found = ""});
  }
  std::string r(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  std::free(out);
  return r;
}

/// Removes C0/C1 control characters except tab and newline; CRLF and lone CR become '\n'.
/// With `invisible`, also removes U+200B, U+2060 and U+FEFF (zero-width characters that hide
/// text; U+200C/U+200D stay because scripts and emoji need them). Input must be UTF-8.
inline std::string strip_control_chars(std::string_view s, bool invisible = true) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t start = i;
    const char32_t cp = detail::next_code_point(s, i);
    if (cp == '\r') {
      out += '\n';
      if (i < s.size() && s[i] == '\n') ++i;
      continue;
    }
    if (cp == '\t' || cp == '\n') {
      out += static_cast<char>(cp);
      continue;
    }
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) continue;
    if (invisible && (cp == 0x200B || cp == 0x2060 || cp == 0xFEFF)) continue;
    out.append(s.substr(start, i - start));
  }
  return out;
}

namespace detail {
/// Unicode space separators (category Zs) other than U+0020, plus \v and \f.
inline bool exotic_space(char32_t cp) {
  if (cp == '\v' || cp == '\f') return true;
  if (cp < 0x80) return false;
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_ZS;
}
}  // namespace detail

/// Whitespace normalisation: Unicode space separators, \v and \f become ' '; spaces and tabs
/// at line ends are removed; runs of more than `max_blank_lines` empty lines shrink; leading
/// and trailing blank space of the text is removed; with `collapse`, runs of spaces and tabs
/// inside a line become one space. Input must be UTF-8 with '\n' line ends.
inline std::string normalize_whitespace(std::string_view s, bool collapse = false,
                                        int max_blank_lines = 1) {
  // Pass 1: per line, map exotic spaces and trim the line's end (and collapse if asked).
  std::string mapped;
  mapped.reserve(s.size());
  std::size_t i = 0;
  std::size_t line_start = 0;
  while (i < s.size()) {
    const std::size_t start = i;
    const char32_t cp = detail::next_code_point(s, i);
    if (cp == '\n') {
      while (mapped.size() > line_start && (mapped.back() == ' ' || mapped.back() == '\t'))
        mapped.pop_back();
      mapped += '\n';
      line_start = mapped.size();
      continue;
    }
    const bool space = cp == ' ' || cp == '\t' || detail::exotic_space(cp);
    if (space) {
      const char c = (cp == '\t' && !collapse) ? '\t' : ' ';
      if (collapse && mapped.size() > line_start && mapped.back() == ' ') continue;
      mapped += c;
      continue;
    }
    mapped.append(s.substr(start, i - start));
  }
  while (mapped.size() > line_start && (mapped.back() == ' ' || mapped.back() == '\t'))
    mapped.pop_back();
  // Pass 2: blank-line runs and the text's own leading/trailing newlines.
  std::string out;
  out.reserve(mapped.size());
  int newlines = 0;
  for (char c : mapped) {
    if (c == '\n') {
      ++newlines;
      continue;
    }
    if (newlines > 0 && !out.empty()) {
      int keep = newlines;
      if (max_blank_lines >= 0 && keep > max_blank_lines + 1) keep = max_blank_lines + 1;
      out.append(static_cast<std::size_t>(keep), '\n');
    }
    newlines = 0;
    out += c;
  }
  // Leading spaces of the first line are indentation only if the text is code; trim them
  // anyway: a record's text starting with spaces is an artefact of extraction.
  const std::size_t first = out.find_first_not_of(" \t");
  return first == std::string::npos ? std::string() : out.substr(first);
}

/// The matching form of a text, for duplicate and contamination detection: NFC with Unicode
/// case folding (utf8proc CASEFOLD), control characters dropped, every run of whitespace one
/// space, trimmed. Two texts that differ only in case, normalisation form or spacing fold to
/// the same string.
inline std::string fold_text(std::string_view s) {
  std::string t = strip_control_chars(to_nfc(s));
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(t.data()), static_cast<utf8proc_ssize_t>(t.size()),
      &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD));
  if (n < 0)
    throw error({.what = std::string("case folding failed: ") + utf8proc_errmsg(n),
                 .file = "<text>",
                 .place = "",
                 .expected = "",
                 .found = ""});
  const std::string_view folded(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  std::string r;
  r.reserve(folded.size());
  std::size_t i = 0;
  while (i < folded.size()) {
    const std::size_t start = i;
    const char32_t cp = detail::next_code_point(folded, i);
    if (cp == ' ' || cp == '\t' || cp == '\n' || detail::exotic_space(cp)) {
      if (!r.empty() && r.back() != ' ') r += ' ';
    } else {
      r.append(folded.substr(start, i - start));
    }
  }
  std::free(out);
  if (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

/// Applies the cleaning steps chosen in `o` to UTF-8 text; forge::error if it is not UTF-8.
inline std::string clean_text(std::string_view s, const clean_options& o = {}) {
  if (auto f = check_utf8(s))
    throw error({.what = "cannot clean text that is not UTF-8",
                 .file = "<text>",
                 .place = at_byte(f->byte),
                 .expected = "well-formed UTF-8",
                 .found = f->reason});
  std::string t(s);
  if (o.strip_control) t = strip_control_chars(t, o.strip_invisible);
  if (o.nfc) t = to_nfc(t);
  if (o.normalize_whitespace) t = normalize_whitespace(t, o.collapse_spaces, o.max_blank_lines);
  return t;
}

/// Cleans every text field of a record in place.
template <Record R>
void clean_record(R& r, const clean_options& o = {}) {
  r.for_each_text([&](std::string& t) { t = clean_text(t, o); });
}

/// Cleans every text field of a record in place and counts it under step "clean" (cleaning
/// removes no record; a length or emptiness filter afterwards does).
template <Record R>
void clean_record(R& r, data_report& report, const clean_options& o = {}) {
  clean_record(r, o);
  auto& st = report.step("clean");
  ++st.in;
  ++st.out;
}

}  // namespace forge::data
