// Fuzzing parse_json + get_field (ASan/UBSan): 100k seeded mutations of the fixture configs;
// only forge::error may escape.

#include <catch2/catch.hpp>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/core/json.hpp"

using namespace forge;

TEST_CASE("parse_json survives 100k mutated configs with only forge::error") {
  std::vector<std::string> seeds = {
      io::read_file(test::llama_a() / "model" / "config.json"),
      io::read_file(test::llama_a() / "adapter" / "adapter_config.json")};
  const std::string alphabet = "{}[]\",:0123456789-+eE.tfn \\u\xc3\xa9\xff\n";
  std::mt19937_64 rng(11);
  std::size_t ok = 0, bad = 0;
  for (int i = 0; i < 100'000; ++i) {
    std::string s = seeds[i % 2];
    for (int e = 0, n = 1 + int(rng() % 3); e < n && !s.empty(); ++e) {
      const std::size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          s.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          s.erase(at, 1 + rng() % 4);
      }
    }
    try {
      auto j = parse_json(s, "fuzz.json");
      (void)get_field_or<int>(j, "hidden_size", 0, "fuzz.json");
      ++ok;
    } catch (const forge::error&) {
      ++bad;
    } catch (const std::exception& e) {
      FAIL("non-forge exception at iteration " << i << ": " << e.what());
    }
  }
  CHECK(ok + bad == 100'000);
  CHECK(bad > 10'000);
  CHECK(ok > 1'000);
}
