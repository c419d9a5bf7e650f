#pragma once
// data_report: the ledger every data step appends to. Readers record each input file and
// every line they could not use (file, line, reason); filters record how many records went
// in and out and why the others were removed; PII masking, dedup, the contamination sweep,
// token statistics and splits add their counts. The datasheet renders it (datasheet.hpp).
// Nothing a step removes goes unrecorded.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace forge::data {

/// One input file as read: its content hash and what became of its lines.
struct source_info {
  std::string path{};             ///< as given to the reader
  std::string sha256{};           ///< hex SHA-256 of the whole file ("" for in-memory input)
  std::uint64_t bytes = 0;        ///< file size in bytes
  std::uint64_t lines = 0;        ///< lines seen (blank lines included)
  std::uint64_t blank_lines = 0;  ///< empty or whitespace-only lines (not records, not errors)
  std::uint64_t records = 0;      ///< records produced
  std::uint64_t skipped = 0;      ///< malformed lines skipped (each also in `issues`)
};

/// One input line that could not be used.
struct data_issue {
  std::string file{};      ///< source path
  std::uint64_t line = 0;  ///< 1-based line number
  std::string reason{};    ///< stable category: invalid_json, invalid_utf8, missing_field, ...
  std::string detail{};    ///< what exactly was wrong, with column or field name
};

/// Records in and out of one named step, with the reasons for every removal.
struct step_counts {
  std::string name{};                              ///< "read", "clean", "pii", "dedup", ...
  std::uint64_t in = 0;                            ///< records entering the step
  std::uint64_t out = 0;                           ///< records leaving it
  std::map<std::string, std::uint64_t> removed{};  ///< reason -> records removed for it
};

/// A training record that shares n-grams with an evaluation set.
struct contamination_hit {
  std::string record_id{};   ///< id of the training record (removed)
  std::string eval_set{};    ///< name of the evaluation set it overlaps
  std::uint64_t ngrams = 0;  ///< how many of its n-grams occur in that set
};

/// A removed near or exact duplicate and the record it duplicates.
struct duplicate_pair {
  std::string removed_id{};  ///< record dropped
  std::string kept_id{};     ///< earlier record it duplicates
  double jaccard = 0;        ///< estimated or exact Jaccard similarity (1 for exact)
};

/// Running min / mean / max / total of per-record token counts.
struct token_stats {
  std::uint64_t records = 0;
  std::uint64_t total = 0;
  std::uint64_t min = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max = 0;
  /// Adds one record of `n` tokens.
  void add(std::uint64_t n) {
    ++records;
    total += n;
    min = std::min(min, n);
    max = std::max(max, n);
  }
  /// Mean tokens per record (0 when empty).
  double mean() const { return records ? static_cast<double>(total) / records : 0.0; }
};

/// The ledger of a data pipeline run; plain data, appended to by every step.
struct data_report {
  std::vector<source_info> sources{};
  std::vector<data_issue> issues{};            ///< the first `max_issues` problems, in order
  std::size_t max_issues = 10000;              ///< bound on kept issue details (counts stay exact)
  std::uint64_t issues_not_listed = 0;         ///< problems counted but beyond `max_issues`
  std::vector<step_counts> steps{};            ///< in the order the steps first reported
  std::map<std::string, std::uint64_t> pii{};  ///< placeholder type -> spans masked
  std::uint64_t exact_duplicates = 0;
  std::uint64_t near_duplicates = 0;
  std::vector<duplicate_pair> duplicates{};  ///< every removed duplicate (bounded by max_issues)
  std::vector<contamination_hit> contamination{};  ///< every removed contaminated record
  token_stats tokens;
  std::map<std::string, std::uint64_t> splits{};  ///< split name -> records

  /// The counters of step `name`, created (at the end) on first use; the reference stays
  /// valid when later steps are created.
  step_counts& step(const std::string& name) {
    for (auto& s : steps)
      if (s.name == name) return s;
    steps.push_back(step_counts{.name = name});
    return steps.back();
  }

  /// Records one unusable input line.
  void add_issue(data_issue issue) {
    if (issues.size() < max_issues)
      issues.push_back(std::move(issue));
    else
      ++issues_not_listed;
  }

  /// Total records removed by all steps, for `reason` ("" = any reason).
  std::uint64_t removed(const std::string& reason = "") const {
    std::uint64_t n = 0;
    for (const auto& s : steps)
      for (const auto& [r, c] : s.removed)
        if (reason.empty() || r == reason) n += c;
    return n;
  }
};

}  // namespace forge::data
