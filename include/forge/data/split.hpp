#pragma once
// Stable train/validation/test splits: a record's split is a function of its content alone,
// so the same record lands in the same split whatever the file order, the other records or
// the machine. The key is the record's content as canonical JSON (nlohmann's dump: object
// keys sorted, no spaces; the id is not part of it), hashed with SHA-256 after a salt; the
// first 8 digest bytes, read big-endian, give u in [0, 1), cut by the cumulative ratios.

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/govern/hash.hpp"

namespace forge::data {

/// The three splits.
enum class split { train, validation, test };

/// "train", "validation", "test".
inline const char* split_name(split s) {
  switch (s) {
    case split::train:
      return "train";
    case split::validation:
      return "validation";
    case split::test:
      return "test";
  }
  return "train";
}

/// Split fractions (summing to 1) and the salt that makes one partition differ from another.
struct split_ratios {
  double train = 0.9;
  double validation = 0.05;
  double test = 0.05;
  std::string salt{};  ///< changing it reshuffles every record
};

/// u in [0, 1) from SHA-256(salt + '\0' + key): its first 8 bytes, big-endian, / 2^64.
inline double split_point(std::string_view key, std::string_view salt) {
  govern::sha256 h;
  h.update(salt);
  h.update("\0", 1);
  h.update(key);
  const auto d = h.digest();
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | d[static_cast<std::size_t>(i)];
  return std::ldexp(static_cast<double>(v >> 11), -53);  // top 53 bits: exact in a double
}

/// The split of a content key.
inline split assign_split(std::string_view key, const split_ratios& r) {
  const bool ok = r.train >= 0 && r.validation >= 0 && r.test >= 0 &&
                  std::abs(r.train + r.validation + r.test - 1.0) < 1e-9;
  require(ok, {.what = "split ratios must be non-negative and sum to 1",
               .file = "",
               .place = "",
               .expected = "train + validation + test = 1",
               .found = std::to_string(r.train) + " + " + std::to_string(r.validation) + " + " +
                        std::to_string(r.test)});
  const double u = split_point(key, r.salt);
  if (u < r.train) return split::train;
  if (u < r.train + r.validation) return split::validation;
  return split::test;
}

/// The split of a record (by its content, not its id); counted in the report's `splits`.
template <Record R>
split assign_split(const R& rec, const split_ratios& r, data_report& report) {
  const split s = assign_split(rec.content().dump(), r);
  ++report.splits[split_name(s)];
  return s;
}

}  // namespace forge::data
