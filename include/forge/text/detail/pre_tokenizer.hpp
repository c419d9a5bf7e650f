#pragma once
// The pre-tokenizers of tokenizer.json: ByteLevel (GPT-2 regex split + byte-to-character
// mapping), Split (a regex or literal with a delimiter behaviour), Metaspace (SentencePiece's
// '▁' convention), Digits, WhitespaceSplit, and Sequence (flattened into steps).
//
// Steps run as a pipeline over pieces: each step splits or transforms one piece and hands the
// results to the next step, and the last step hands finished pieces to the model. Nothing is
// materialised for the whole text, so memory stays proportional to the longest piece.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/text/detail/byte_level.hpp"
#include "forge/text/detail/regex.hpp"
#include "forge/text/detail/split.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text::detail {

/// The GPT-2 split pattern used by the ByteLevel pre-tokenizer when use_regex is true.
inline constexpr std::string_view gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// When Metaspace prepends its replacement character.
enum class prepend_scheme { always, first, never };

/// One pre-tokenization step.
struct pre_tokenizer_step {
  enum class kind { byte_level, split, metaspace, digits, whitespace_split };
  kind k = kind::byte_level;
  // byte_level
  bool add_prefix_space = false;
  bool use_regex = true;
  // split (and byte_level's regex)
  std::shared_ptr<const regex> pattern;
  split_behavior behavior = split_behavior::isolated;
  bool invert = false;
  // metaspace
  std::string replacement = "\xE2\x96\x81";  // U+2581
  char32_t replacement_char = 0x2581;
  prepend_scheme scheme = prepend_scheme::always;
  bool split = true;
  // digits
  bool individual_digits = false;
};

/// Per-call working memory of one step.
struct pre_tokenizer_scratch {
  std::string buf;
  std::string mapped;
  std::vector<byte_range> matches;
  std::vector<flagged_range> cover;
  std::vector<byte_range> pieces;
  std::unique_ptr<regex::matcher> matcher;
};

/// A pre-tokenizer: its steps in order (empty = the whole text is one piece).
class pre_tokenizer {
 public:
  std::vector<pre_tokenizer_step> steps;

  /// Working memory for `run`, one per thread.
  std::vector<pre_tokenizer_scratch> make_scratch() const {
    std::vector<pre_tokenizer_scratch> s(steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i)
      if (steps[i].pattern) s[i].matcher = std::make_unique<regex::matcher>(*steps[i].pattern);
    return s;
  }

  /// Splits `piece` (valid UTF-8; `at_start` if it begins at offset 0 of the input) and calls
  /// `sink(std::string_view)` for every resulting non-empty piece, in order.
  template <class Sink>
  void run(std::string_view piece, bool at_start, std::vector<pre_tokenizer_scratch>& scratch,
           Sink&& sink) const {
    run_from(0, piece, at_start, scratch, sink);
  }

 private:
  template <class Sink>
  void run_from(std::size_t i, std::string_view piece, bool at_start,
                std::vector<pre_tokenizer_scratch>& scratch, Sink& sink) const {
    if (piece.empty()) return;
    if (i == steps.size()) {
      sink(piece);
      return;
    }
    const auto& st = steps[i];
    auto& sc = scratch[i];
    switch (st.k) {
      case pre_tokenizer_step::kind::byte_level: {
        std::string_view text = piece;
        if (st.add_prefix_space && piece.front() != ' ') {
          sc.buf.assign(1, ' ');
          sc.buf += piece;
          text = sc.buf;
        }
        // The mapped form goes to a second buffer so `text` stays valid; later steps never
        // touch this step's buffers, and this step is not re-entered while they run.
        if (!st.use_regex) {
          sc.mapped.clear();
          byte_level_table::get().map(text, sc.mapped);
          run_from(i + 1, sc.mapped, at_start, scratch, sink);
          return;
        }
        split_into(sc, text, st.pattern != nullptr, false, split_behavior::isolated);
        for (const auto& [b, e] : sc.pieces) {
          sc.mapped.clear();
          byte_level_table::get().map(text.substr(b, e - b), sc.mapped);
          run_from(i + 1, sc.mapped, at_start && b == 0, scratch, sink);
        }
        return;
      }
      case pre_tokenizer_step::kind::split: {
        split_into(sc, piece, true, st.invert, st.behavior);
        forward(i, piece, at_start, sc.pieces, scratch, sink);
        return;
      }
      case pre_tokenizer_step::kind::metaspace: {
        sc.buf.clear();
        for (char c : piece) {
          if (c == ' ')
            sc.buf += st.replacement;
          else
            sc.buf += c;
        }
        const bool starts = sc.buf.compare(0, st.replacement.size(), st.replacement) == 0;
        if (!starts && (st.scheme == prepend_scheme::always ||
                        (st.scheme == prepend_scheme::first && at_start)))
          sc.buf.insert(0, st.replacement);
        const std::string text = std::move(sc.buf);
        if (!st.split) {
          run_from(i + 1, text, at_start, scratch, sink);
          return;
        }
        const char32_t rc = st.replacement_char;
        cover_from_predicate(
            text, [rc](char32_t c) { return c == rc; }, sc.cover);
        apply_behavior(sc.cover, split_behavior::merged_with_next, sc.pieces);
        forward(i, text, at_start, sc.pieces, scratch, sink);
        return;
      }
      case pre_tokenizer_step::kind::digits: {
        cover_from_predicate(piece, is_numeric, sc.cover);
        apply_behavior(sc.cover,
                       st.individual_digits ? split_behavior::isolated : split_behavior::contiguous,
                       sc.pieces);
        forward(i, piece, at_start, sc.pieces, scratch, sink);
        return;
      }
      case pre_tokenizer_step::kind::whitespace_split: {
        cover_from_predicate(piece, is_white_space, sc.cover);
        // Consecutive whitespace is one delimiter; the reference then removes it.
        apply_behavior(sc.cover, split_behavior::removed, sc.pieces);
        forward(i, piece, at_start, sc.pieces, scratch, sink);
        return;
      }
    }
  }

  // Hands the pieces of `text` to step i + 1. The ranges are copied first because deeper steps
  // of the same pipeline never touch this step's scratch, but a copy keeps that obviously true.
  template <class Sink>
  void forward(std::size_t i, std::string_view text, bool at_start,
               const std::vector<byte_range>& ranges, std::vector<pre_tokenizer_scratch>& scratch,
               Sink& sink) const {
    const std::vector<byte_range> pieces = ranges;
    for (const auto& [b, e] : pieces)
      run_from(i + 1, text.substr(b, e - b), at_start && b == 0, scratch, sink);
  }

  void split_into(pre_tokenizer_scratch& sc, std::string_view text, bool use_pattern, bool invert,
                  split_behavior behavior) const {
    sc.matches.clear();
    if (use_pattern) sc.matcher->find_all(text, sc.matches);
    cover_from_matches(sc.matches, text.size(), sc.cover);
    if (invert)
      for (auto& f : sc.cover) f.match = !f.match;
    apply_behavior(sc.cover, behavior, sc.pieces);
  }
};

}  // namespace forge::text::detail
