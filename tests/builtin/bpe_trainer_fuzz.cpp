// Fuzz test of the BPE trainer under ASan/UBSan: seeded random byte strings (valid UTF-8
// fragments mixed with arbitrary bytes) are fed; only forge::error may escape, and training
// on what was accepted yields a consistent vocabulary and merge list.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "forge/core/rng.hpp"
#include "forge/text/bpe_trainer.hpp"

TEST_CASE("bpe_trainer survives arbitrary input") {
  static const char* pieces[] = {"a", "b", " ", "  ", "\n", "é", "日", "😀", "'s", "12", ".", "ab"};
  forge::philox rng(99, 0);
  forge::text::bpe_trainer tr({.vocab_size = 400, .min_frequency = 1, .special_tokens = {"<s>"}});
  std::size_t accepted = 0, rejected = 0;
  for (int it = 0; it < 100000; ++it) {
    std::string s;
    const auto n = rng.below(12);
    for (std::uint32_t j = 0; j < n; ++j) {
      if (rng.below(8) == 0)
        s += static_cast<char>(rng.below(256));
      else
        s += pieces[rng.below(12)];
    }
    try {
      tr.feed(s);
      ++accepted;
    } catch (const forge::error&) {
      ++rejected;
    }
  }
  REQUIRE(accepted > 1000);
  REQUIRE(rejected > 1000);
  const auto bpe = tr.train();
  REQUIRE(bpe.vocab.size() <= 400);
  // A merge whose string already is a token adds no id (the reference does the same).
  REQUIRE(bpe.vocab.size() <= 1 + 256 + bpe.merges.size());
  REQUIRE(bpe.vocab.size() > 300);
  const std::set<std::string> ids(bpe.vocab.begin(), bpe.vocab.end());
  REQUIRE(ids.size() == bpe.vocab.size());
  for (const auto& [l, r] : bpe.merges) {
    REQUIRE(ids.count(l) == 1);
    REQUIRE(ids.count(r) == 1);
    REQUIRE(ids.count(l + r) == 1);
  }
}
