#pragma once
// Duplicate removal, streaming, first occurrence kept.
//   exact_dedup  SHA-256 of the folded text (fold_text: NFC, case folded, whitespace
//                collapsed), so copies that differ only in case or spacing are caught.
//   near_dedup   MinHash signatures (Broder 1997, "On the resemblance and containment of
//                documents") of word or character shingles, banded LSH (Leskovec, Rajaraman,
//                Ullman, "Mining of Massive Datasets" ch. 3.4: b bands of r rows, a pair of
//                Jaccard s becomes a candidate with probability 1-(1-s^r)^b), then each
//                candidate verified by exact Jaccard of the shingle sets (or by the fraction
//                of equal signature entries when verify_exact is off, to save memory).
// Both are deterministic: hash functions derive from a seed with splitmix64.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/data/clean.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/govern/hash.hpp"

namespace forge::data {

namespace detail {
/// splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer, used as a seeded hash.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
/// FNV-1a 64-bit hash of bytes, mixed with splitmix64 for avalanche.
inline std::uint64_t hash_bytes(std::string_view s, std::uint64_t seed = 0) {
  std::uint64_t h = 0xCBF29CE484222325ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return splitmix64(h);
}
}  // namespace detail

/// Exact duplicate filter over folded text: keeps the first record of each content.
class exact_dedup {
 public:
  /// Registers `text` under `id`; returns the id of the earlier identical text, if any.
  std::optional<std::string> insert(std::string_view id, std::string_view text) {
    const auto d = govern::sha256().update(fold_text(text)).digest();
    key k;
    std::memcpy(k.data(), d.data(), k.size());
    auto [it, fresh] = seen_.try_emplace(k, std::string(id));
    if (fresh) return std::nullopt;
    return it->second;
  }
  /// Keeps a record unless an identical one came first; records the drop in the report
  /// (step "dedup_exact", reason "exact_duplicate", and the pair).
  template <Record R>
  bool keep(const R& r, data_report& report) {
    auto& st = report.step("dedup_exact");
    ++st.in;
    if (auto earlier = insert(r.id, joined_text(r))) {
      ++st.removed["exact_duplicate"];
      ++report.exact_duplicates;
      if (report.duplicates.size() < report.max_issues)
        report.duplicates.push_back({r.id, *earlier, 1.0});
      return false;
    }
    ++st.out;
    return true;
  }
  /// Distinct contents seen.
  std::size_t size() const { return seen_.size(); }

 private:
  using key = std::array<unsigned char, 16>;  // 128 bits of SHA-256: collisions negligible
  struct key_hash {
    std::size_t operator()(const key& k) const {
      std::size_t h;
      std::memcpy(&h, k.data(), sizeof h);
      return h;
    }
  };
  std::unordered_map<key, std::string, key_hash> seen_;
};

/// Parameters of MinHash near-duplicate detection.
struct minhash_options {
  std::size_t bands = 16;     ///< LSH bands b
  std::size_t rows = 8;       ///< rows per band r; signature length b*r
  std::size_t shingle = 5;    ///< shingle length k (words, or bytes when !word_shingles)
  bool word_shingles = true;  ///< k-word shingles of the folded text, else k-byte shingles
  double threshold = 0.8;     ///< Jaccard similarity at or above which a text is a duplicate
  bool verify_exact = true;   ///< verify candidates on shingle sets (memory: 8 bytes/shingle)
  std::uint64_t seed = 0x5EEDF00Dull;  ///< seeds the hash family
};

/// The set of shingle hashes of a text (sorted, unique). Texts shorter than one shingle give
/// a single shingle of the whole folded text; an empty text gives the empty set.
inline std::vector<std::uint64_t> shingles(std::string_view text, const minhash_options& o) {
  const std::string f = fold_text(text);
  std::vector<std::uint64_t> out;
  if (f.empty()) return out;
  const std::size_t k = std::max<std::size_t>(1, o.shingle);
  if (o.word_shingles) {
    std::vector<std::uint64_t> words;
    std::size_t i = 0;
    while (i < f.size()) {
      std::size_t j = f.find(' ', i);
      if (j == std::string::npos) j = f.size();
      words.push_back(detail::hash_bytes(std::string_view(f).substr(i, j - i)));
      i = j + 1;
    }
    if (words.size() < k) {
      out.push_back(detail::hash_bytes(f, 1));
    } else {
      for (std::size_t s = 0; s + k <= words.size(); ++s) {
        std::uint64_t h = k;
        for (std::size_t t = 0; t < k; ++t) h = detail::splitmix64(h ^ words[s + t]);
        out.push_back(h);
      }
    }
  } else if (f.size() < k) {
    out.push_back(detail::hash_bytes(f, 1));
  } else {
    for (std::size_t s = 0; s + k <= f.size(); ++s)
      out.push_back(detail::hash_bytes(std::string_view(f).substr(s, k), 2));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// Exact Jaccard similarity |A∩B| / |A∪B| of two sorted unique sets (1 for two empty sets).
inline double jaccard(const std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b) {
  if (a.empty() && b.empty()) return 1.0;
  std::size_t i = 0, j = 0, both = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] < b[j])
      ++i;
    else if (b[j] < a[i])
      ++j;
    else {
      ++both;
      ++i;
      ++j;
    }
  }
  return static_cast<double>(both) / static_cast<double>(a.size() + b.size() - both);
}

/// MinHash signature of a shingle set: for each of bands*rows hash functions
/// h_i(x) = (a_i x + b_i) mod (2^61 - 1), the minimum over the set (all-ones when empty).
inline std::vector<std::uint64_t> minhash_signature(const std::vector<std::uint64_t>& set,
                                                    const minhash_options& o) {
  __extension__ using u128 = unsigned __int128;
  constexpr std::uint64_t p = (std::uint64_t{1} << 61) - 1;
  const std::size_t n = o.bands * o.rows;
  std::vector<std::uint64_t> sig(n, ~std::uint64_t{0});
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t a = detail::splitmix64(o.seed + 2 * i) % (p - 1) + 1;
    const std::uint64_t b = detail::splitmix64(o.seed + 2 * i + 1) % p;
    std::uint64_t m = ~std::uint64_t{0};
    for (std::uint64_t x : set) {
      const u128 v = static_cast<u128>(a) * (x % p) + b;
      // Reduction mod the Mersenne prime 2^61-1: fold the high bits onto the low bits.
      std::uint64_t r = static_cast<std::uint64_t>((v & p) + (v >> 61));
      r = (r & p) + (r >> 61);
      if (r >= p) r -= p;
      m = std::min(m, r);
    }
    sig[i] = m;
  }
  return sig;
}

/// A kept text that a new one duplicates.
struct near_match {
  std::string kept_id;  ///< id of the earlier, kept text
  double jaccard = 0;   ///< exact (verify_exact) or signature-estimated similarity
};

/// Streaming near-duplicate filter: insert() keeps a text unless it is within the Jaccard
/// threshold of a text kept before.
class near_dedup {
 public:
  explicit near_dedup(minhash_options o = {}) : o_(o), buckets_(o.bands) {
    require(o.bands > 0 && o.rows > 0,
            {.what = "MinHash needs bands > 0 and rows > 0",
             .file = "",
             .place = "",
             .expected = "positive",
             .found = std::to_string(o.bands) + "x" + std::to_string(o.rows)});
    require(o.threshold > 0 && o.threshold <= 1, {.what = "Jaccard threshold out of range",
                                                  .file = "",
                                                  .place = "",
                                                  .expected = "0 < threshold <= 1",
                                                  .found = std::to_string(o.threshold)});
  }

  /// Returns the best kept match at or above the threshold (the text is then not kept), or
  /// nothing (the text is kept and indexed).
  std::optional<near_match> insert(std::string_view id, std::string_view text) {
    auto set = shingles(text, o_);
    auto sig = minhash_signature(set, o_);
    std::vector<std::uint64_t> band_keys(o_.bands);
    for (std::size_t b = 0; b < o_.bands; ++b) {
      std::uint64_t h = b;
      for (std::size_t r = 0; r < o_.rows; ++r) h = detail::splitmix64(h ^ sig[b * o_.rows + r]);
      band_keys[b] = h;
    }
    std::unordered_set<std::uint32_t> cand;
    for (std::size_t b = 0; b < o_.bands; ++b) {
      auto it = buckets_[b].find(band_keys[b]);
      if (it != buckets_[b].end()) cand.insert(it->second.begin(), it->second.end());
    }
    std::optional<near_match> best;
    for (std::uint32_t c : cand) {
      const double s = o_.verify_exact ? jaccard(set, docs_[c].set) : agreement(sig, docs_[c].sig);
      if (s >= o_.threshold && (!best || s > best->jaccard)) best = near_match{docs_[c].id, s};
    }
    if (best) return best;
    const auto idx = static_cast<std::uint32_t>(docs_.size());
    for (std::size_t b = 0; b < o_.bands; ++b) buckets_[b][band_keys[b]].push_back(idx);
    doc d{std::string(id), {}, {}};
    if (o_.verify_exact)
      d.set = std::move(set);
    else
      d.sig = std::move(sig);
    docs_.push_back(std::move(d));
    return std::nullopt;
  }

  /// Keeps a record unless a near duplicate came first; records the drop in the report
  /// (step "dedup_near", reason "near_duplicate", and the pair with its similarity).
  template <Record R>
  bool keep(const R& r, data_report& report) {
    auto& st = report.step("dedup_near");
    ++st.in;
    if (auto m = insert(r.id, joined_text(r))) {
      ++st.removed["near_duplicate"];
      ++report.near_duplicates;
      if (report.duplicates.size() < report.max_issues)
        report.duplicates.push_back({r.id, m->kept_id, m->jaccard});
      return false;
    }
    ++st.out;
    return true;
  }

  /// Texts kept so far.
  std::size_t size() const { return docs_.size(); }

 private:
  static double agreement(const std::vector<std::uint64_t>& a,
                          const std::vector<std::uint64_t>& b) {
    std::size_t eq = 0;
    for (std::size_t i = 0; i < a.size(); ++i) eq += a[i] == b[i];
    return static_cast<double>(eq) / static_cast<double>(a.size());
  }
  struct doc {
    std::string id;
    std::vector<std::uint64_t> set;
    std::vector<std::uint64_t> sig;
  };
  minhash_options o_;
  std::vector<std::unordered_map<std::uint64_t, std::vector<std::uint32_t>>> buckets_;
  std::vector<doc> docs_;
};

}  // namespace forge::data
