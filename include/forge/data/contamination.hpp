#pragma once
// Contamination sweep: training records that share a word n-gram (13 by default, as in the
// GPT-3 paper's contamination analysis, Brown et al. 2020, appendix C) with any evaluation
// set are removed and listed with the sets they overlap. Words are the maximal runs of
// letters and digits of the folded text (fold_text: NFC, case folded), so punctuation and
// spacing do not hide an overlap. An evaluation item shorter than n words contributes its
// whole word sequence as one gram when it has at least `min_words` words; shorter items
// cannot be swept reliably and are counted in `too_short()`.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/data/clean.hpp"
#include "forge/data/dedup.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"

namespace forge::data {

/// Parameters of the contamination sweep.
struct contamination_options {
  std::size_t n = 13;         ///< n-gram length in words
  std::size_t min_words = 8;  ///< shorter evaluation items are not indexed (counted instead)
  std::size_t min_hits = 1;   ///< n-grams a record must share with a set to be removed
};

namespace detail {
/// Hashes of the words of the folded text (letters/digits; any non-ASCII byte counts as a
/// letter so that scripts other than Latin keep their words).
inline std::vector<std::uint64_t> word_hashes(std::string_view text) {
  const std::string f = fold_text(text);
  std::vector<std::uint64_t> w;
  std::size_t i = 0;
  auto is_word = [](unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
  };
  while (i < f.size()) {
    while (i < f.size() && !is_word(static_cast<unsigned char>(f[i]))) ++i;
    std::size_t j = i;
    while (j < f.size() && is_word(static_cast<unsigned char>(f[j]))) ++j;
    if (j > i) w.push_back(hash_bytes(std::string_view(f).substr(i, j - i)));
    i = j;
  }
  return w;
}
inline std::uint64_t gram_hash(const std::uint64_t* w, std::size_t len) {
  std::uint64_t h = splitmix64(len);
  for (std::size_t t = 0; t < len; ++t) h = splitmix64(h ^ w[t]);
  return h;
}
}  // namespace detail

/// An index of the n-grams of up to 64 evaluation sets.
class contamination_index {
 public:
  explicit contamination_index(contamination_options o = {}) : o_(o) {
    require(o.n > 0 && o.min_words > 0, {.what = "n-gram length must be positive",
                                         .file = "",
                                         .place = "",
                                         .expected = "n > 0",
                                         .found = "0"});
  }

  /// Adds one evaluation item (question, answer, or both joined) of set `set_name`.
  void add(const std::string& set_name, std::string_view text) {
    const std::uint64_t bit = std::uint64_t{1} << set_index(set_name);
    const auto w = detail::word_hashes(text);
    if (w.size() < o_.min_words) {
      ++too_short_;
      return;
    }
    const std::size_t len = std::min(w.size(), o_.n);
    if (len < o_.n) lengths_.insert(len);
    for (std::size_t s = 0; s + len <= w.size(); ++s) grams_[detail::gram_hash(&w[s], len)] |= bit;
  }

  /// Per evaluation set, how many distinct n-grams of `text` it contains (sets with none are
  /// left out).
  std::vector<std::pair<std::string, std::size_t>> overlaps(std::string_view text) const {
    const auto w = detail::word_hashes(text);
    std::vector<std::size_t> count(names_.size(), 0);
    std::set<std::uint64_t> seen;
    auto probe = [&](std::size_t len) {
      for (std::size_t s = 0; s + len <= w.size(); ++s) {
        const auto h = detail::gram_hash(&w[s], len);
        auto it = grams_.find(h);
        if (it == grams_.end() || !seen.insert(h).second) continue;
        for (std::size_t k = 0; k < names_.size(); ++k)
          if (it->second >> k & 1) ++count[k];
      }
    };
    probe(o_.n);
    for (std::size_t len : lengths_) probe(len);
    std::vector<std::pair<std::string, std::size_t>> out;
    for (std::size_t k = 0; k < names_.size(); ++k)
      if (count[k] > 0) out.emplace_back(names_[k], count[k]);
    return out;
  }

  /// Keeps a record unless it overlaps an evaluation set by at least `min_hits` n-grams;
  /// a removed record is listed in the report with every set it overlaps (step
  /// "contamination", reason "eval_overlap").
  template <Record R>
  bool keep(const R& r, data_report& report) const {
    auto& st = report.step("contamination");
    ++st.in;
    bool hit = false;
    for (const auto& [set, k] : overlaps(joined_text(r))) {
      if (k < o_.min_hits) continue;
      hit = true;
      report.contamination.push_back({r.id, set, k});
    }
    if (hit)
      ++st.removed["eval_overlap"];
    else
      ++st.out;
    return !hit;
  }

  /// Evaluation items too short to index.
  std::size_t too_short() const { return too_short_; }
  /// Names of the indexed evaluation sets, in the order first added.
  const std::vector<std::string>& sets() const { return names_; }

 private:
  std::size_t set_index(const std::string& name) {
    for (std::size_t k = 0; k < names_.size(); ++k)
      if (names_[k] == name) return k;
    require(names_.size() < 64, {.what = "too many evaluation sets in one contamination index",
                                 .file = "",
                                 .place = name,
                                 .expected = "at most 64",
                                 .found = "65"});
    names_.push_back(name);
    return names_.size() - 1;
  }
  contamination_options o_;
  std::vector<std::string> names_;
  std::unordered_map<std::uint64_t, std::uint64_t> grams_;  // gram hash -> bitset of sets
  std::set<std::size_t> lengths_;  // gram lengths below n, from short evaluation items
  std::size_t too_short_ = 0;
};

}  // namespace forge::data
