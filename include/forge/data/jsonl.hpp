#pragma once
// Streaming JSONL reader (jsonlines.org: one UTF-8 JSON value per '\n'-terminated line)
// exposed as a range-v3 input view:
//
//   data_report rep;
//   for (const sft_record& r : read_jsonl<sft_record>("train.jsonl", rep)
//                                  | ranges::views::filter(keep) | ranges::views::transform(f))
//
// Memory is bounded: the file is read in 64 KiB chunks and one line at a time; a line longer
// than `max_line_bytes` is consumed without being stored and reported as line_too_long.
// Every unusable line (invalid UTF-8, invalid JSON, nesting too deep, missing field, wrong
// type, invalid record) is reported with file, line and detail: `strict` mode throws
// forge::error at the first one, the default records it in the data_report (issues, the
// "read" step's removal reasons, the source's skip count) and goes on. Blank lines are
// counted but are not records. A trailing '\r' (CRLF files) is removed. The data_report is
// held by pointer: it must outlive the view.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>
#include <range/v3/view/facade.hpp>

#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/data/utf8.hpp"
#include "forge/govern/hash.hpp"

namespace forge::data {

/// How the JSONL reader treats its input.
struct jsonl_options {
  bool strict = false;                     ///< throw at the first bad line instead of skipping
  std::size_t max_line_bytes = 16u << 20;  ///< longer lines are errors (bounded memory)
  std::size_t max_depth = 64;              ///< deeper JSON nesting is an error
  bool hash_file = true;                   ///< record the file's SHA-256 in the report
  std::string step = "read";               ///< report step that counts this input's lines
};

namespace detail {

/// Yields the lines of a file or of a memory buffer, one at a time, with bounded memory.
class line_source {
 public:
  line_source() = default;
  explicit line_source(const std::filesystem::path& path) : file_(std::fopen(path.c_str(), "rb")) {
    if (!file_)
      throw error({.what = "cannot open JSONL file",
                   .file = path.string(),
                   .place = "",
                   .expected = "",
                   .found = ""});
    buf_.resize(1u << 16);
  }
  explicit line_source(std::string text) : mem_(std::move(text)), in_memory_(true) {}
  line_source(const line_source&) = delete;
  line_source& operator=(const line_source&) = delete;
  ~line_source() {
    if (file_) std::fclose(file_);
  }

  /// Reads the next line into `line` (without '\n'); false at end of input. When the line is
  /// longer than `max`, `line` holds its first `max` bytes and `too_long` is set.
  bool next(std::string& line, bool& too_long, std::size_t max, const std::string& name) {
    line.clear();
    too_long = false;
    if (in_memory_) {
      if (mem_pos_ >= mem_.size()) return false;
      std::size_t e = mem_.find('\n', mem_pos_);
      if (e == std::string::npos) e = mem_.size();
      const std::size_t len = e - mem_pos_;
      too_long = len > max;
      line.assign(mem_, mem_pos_, too_long ? max : len);
      mem_pos_ = e + 1;
      return true;
    }
    bool any = false;
    for (;;) {
      if (pos_ == end_) {
        end_ = std::fread(buf_.data(), 1, buf_.size(), file_);
        pos_ = 0;
        if (end_ == 0) {
          if (std::ferror(file_))
            throw error(
                {.what = "read failed", .file = name, .place = "", .expected = "", .found = ""});
          return any;
        }
      }
      any = true;
      const char* b = buf_.data() + pos_;
      const void* nl = std::memchr(b, '\n', end_ - pos_);
      const std::size_t take =
          nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - b) : end_ - pos_;
      if (!too_long) {
        const std::size_t room = max - line.size();
        if (take > room) {
          line.append(b, room);
          too_long = true;
        } else {
          line.append(b, take);
        }
      }
      pos_ += take;
      if (nl) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  std::FILE* file_ = nullptr;
  std::string buf_;
  std::size_t pos_ = 0, end_ = 0;
  std::string mem_;
  std::size_t mem_pos_ = 0;
  bool in_memory_ = false;
};

/// Depth of JSON nesting, scanning outside strings only; stops early past `limit`.
inline std::size_t json_depth(std::string_view s, std::size_t limit) {
  std::size_t depth = 0, max_depth = 0;
  bool in_string = false, escape = false;
  for (char c : s) {
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

/// nlohmann's parse message without its "[json.exception...] parse error at line 1, column N: "
/// preamble (the reader reports the line and column itself).
inline std::string parse_message(std::string m) {
  const auto k = m.find(", column ");
  if (k == std::string::npos) return m;
  const auto c = m.find(": ", k);
  return c == std::string::npos ? m : m.substr(c + 2);
}

inline bool blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

/// The shared state of one pass over one JSONL input.
template <Record R>
struct jsonl_state {
  std::string name;
  std::optional<line_source> src;
  jsonl_options opts;
  data_report* report = nullptr;
  std::size_t source_index = 0;
  std::uint64_t line_no = 0;
  std::string line;
  std::optional<R> current;
  bool started = false;
  bool done = false;

  void fail(const std::string& reason, const std::string& detail, const std::string& expected = "",
            const std::string& found = "") {
    if (opts.strict)
      throw error({.what = reason + ": " + detail,
                   .file = name,
                   .place = at_line(line_no),
                   .expected = expected,
                   .found = found});
    auto& src_info = report->sources[source_index];
    ++src_info.skipped;
    auto& st = report->step(opts.step);
    ++st.in;
    ++st.removed[reason];
    report->add_issue({name, line_no, reason, detail});
  }

  /// Moves to the next valid record, or sets `done`.
  void advance() {
    current.reset();
    bool too_long = false;
    while (src->next(line, too_long, opts.max_line_bytes, name)) {
      ++line_no;
      ++report->sources[source_index].lines;
      if (too_long) {
        fail("line_too_long", "line longer than " + std::to_string(opts.max_line_bytes) + " bytes",
             "at most " + std::to_string(opts.max_line_bytes) + " bytes", "more");
        continue;
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (blank(line)) {
        ++report->sources[source_index].blank_lines;
        continue;
      }
      if (auto f = check_utf8(line)) {
        fail("invalid_utf8", f->reason + " at column " + std::to_string(f->byte + 1),
             "well-formed UTF-8", f->reason);
        continue;
      }
      if (json_depth(line, opts.max_depth) > opts.max_depth) {
        fail("invalid_json", "nesting deeper than " + std::to_string(opts.max_depth),
             "at most " + std::to_string(opts.max_depth) + " levels", "deeper");
        continue;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        // e.byte is nlohmann's 1-based position of the offending character.
        fail("invalid_json",
             "column " + std::to_string(e.byte) + ": " + detail::parse_message(e.what()));
        continue;
      } catch (const nlohmann::json::exception& e) {
        // Valid syntax the DOM cannot hold, such as a number overflowing a double (1e999).
        fail("invalid_json", e.what());
        continue;
      }
      try {
        R r = R::parse(j);
        if (r.id.empty())
          r.id = std::filesystem::path(name).filename().string() + ":" + std::to_string(line_no);
        current.emplace(std::move(r));
      } catch (const record_fault& f) {
        fail(f.reason, f.message(), f.expected, f.found);
        continue;
      }
      auto& st = report->step(opts.step);
      ++st.in;
      ++st.out;
      ++report->sources[source_index].records;
      return;
    }
    done = true;
  }
};
}  // namespace detail

/// A single-pass input view over the records of a JSONL file (or in-memory text). Copies
/// share the position. See read_jsonl.
template <Record R>
class jsonl_view : public ranges::view_facade<jsonl_view<R>, ranges::unknown> {
  friend ranges::range_access;
  std::shared_ptr<detail::jsonl_state<R>> st_;

  struct cursor {
    using single_pass = std::true_type;
    detail::jsonl_state<R>* st = nullptr;
    const R& read() const { return *st->current; }
    void next() { st->advance(); }
    bool equal(ranges::default_sentinel_t) const { return st->done; }
    // Single pass over shared state: two iterators of one view are always at one position.
    bool equal(const cursor& other) const { return st == other.st; }
  };
  cursor begin_cursor() {
    if (!st_)
      throw error({.what = "iterating a default-constructed jsonl_view",
                   .file = "",
                   .place = "",
                   .expected = "a view made by read_jsonl or parse_jsonl",
                   .found = "none"});
    if (!st_->started) {
      st_->started = true;
      st_->advance();
    }
    return cursor{st_.get()};
  }

 public:
  jsonl_view() = default;
  /// Reads `path`; the report gets a source entry now and the accounting as lines are read.
  jsonl_view(const std::filesystem::path& path, data_report& report, jsonl_options opts)
      : st_(std::make_shared<detail::jsonl_state<R>>()) {
    init(path.string(), report, opts);
    st_->src.emplace(path);
    source_info si{.path = path.string()};
    std::error_code ec;
    si.bytes = std::filesystem::file_size(path, ec);
    if (opts.hash_file) si.sha256 = govern::sha256_file(path);
    report.sources.push_back(std::move(si));
  }
  /// Reads JSONL held in memory; `name` stands for the file in reports.
  jsonl_view(std::string text, std::string name, data_report& report, jsonl_options opts)
      : st_(std::make_shared<detail::jsonl_state<R>>()) {
    init(name, report, opts);
    source_info si{.path = name, .bytes = text.size()};
    if (opts.hash_file) si.sha256 = govern::sha256_hex(text);
    st_->src.emplace(std::move(text));
    report.sources.push_back(std::move(si));
  }

 private:
  void init(std::string name, data_report& report, jsonl_options opts) {
    st_->name = std::move(name);
    st_->report = &report;
    st_->opts = opts;
    st_->source_index = report.sources.size();
    report.step(opts.step);
  }
};

/// Streams the records of shape R from a JSONL file; see jsonl_view.
template <Record R>
jsonl_view<R> read_jsonl(const std::filesystem::path& path, data_report& report,
                         jsonl_options opts = {}) {
  return jsonl_view<R>(path, report, opts);
}

/// Streams the records of shape R from JSONL text in memory; `name` is used in reports.
template <Record R>
jsonl_view<R> parse_jsonl(std::string text, std::string name, data_report& report,
                          jsonl_options opts = {}) {
  return jsonl_view<R>(std::move(text), std::move(name), report, opts);
}

}  // namespace forge::data
