// Fuzzing the safetensors reader (built with ASan+UBSan): 120k seeded mutations of the
// fixtures' headers and length prefixes. Every input must either parse, after which every
// tensor's bytes are read in full, or fail with forge::error. Any other exception, crash or
// sanitizer report fails the test.

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/io/safetensors.hpp"

using namespace forge;

namespace {
std::vector<std::byte> load(const std::filesystem::path& p) {
  auto s = io::read_file(p);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// Characters that steer the JSON parser and the validator into their interesting branches.
constexpr char kTokens[] = "{}[]\",:0123456789-eE.  \\u\xff\x00";

std::vector<std::byte> mutate(const std::vector<std::byte>& seed, std::mt19937_64& rng) {
  auto b = seed;
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(b[i]);
  auto pick = [&](std::size_t lo, std::size_t hi) {  // in [lo, hi)
    return lo + static_cast<std::size_t>(rng() % std::max<std::size_t>(1, hi - lo));
  };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t hdr_end = std::min<std::size_t>(8 + n, b.size());  // edits resize b
    switch (rng() % 7) {
      case 0:  // flip a bit in the header
        b[pick(8, hdr_end)] ^= std::byte(1u << (rng() % 8));
        break;
      case 1:  // replace a header byte by a structural character
        b[pick(8, hdr_end)] = std::byte(kTokens[rng() % (sizeof kTokens - 1)]);
        break;
      case 2: {  // insert a character into the header (keeping the length prefix)
        auto at = pick(8, hdr_end);
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at),
                 std::byte(kTokens[rng() % (sizeof kTokens - 1)]));
        break;
      }
      case 3: {  // delete a header byte
        auto at = pick(8, hdr_end);
        if (at < b.size()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(at));
        break;
      }
      case 4: {  // change the length prefix a little or a lot
        std::uint64_t m = (rng() % 2) ? n + (rng() % 17) - 8 : rng();
        for (int i = 0; i < 8; ++i) b[i] = std::byte((m >> (8 * i)) & 0xff);
        break;
      }
      case 5:  // truncate anywhere
        b.resize(pick(0, b.size() + 1));
        break;
      default: {  // overwrite a digit run inside the header with another number
        auto at = pick(8, hdr_end);
        auto s = std::to_string(rng() % 100000);
        for (std::size_t i = 0; i < s.size() && at + i < b.size(); ++i) b[at + i] = std::byte(s[i]);
      }
    }
    if (b.size() < 9) break;
  }
  return b;
}
}  // namespace

TEST_CASE("the safetensors reader survives 120k mutated headers with only forge::error") {
  const auto dir = test::llama_a();
  // Small seeds keep the run fast: the adapter (40 KB) and a header-only copy of the
  // expectations file (tensor spans then run past the end, exercising those checks).
  std::vector<std::vector<std::byte>> seeds = {load(dir / "adapter" / "adapter_model.safetensors")};
  auto expect = load(dir / "expect.safetensors");
  expect.resize(8 + 4112 + 300);
  seeds.push_back(expect);

  std::mt19937_64 rng(20261124);
  std::size_t parsed = 0, rejected = 0;
  for (int i = 0; i < 120'000; ++i) {
    auto input = mutate(seeds[i % seeds.size()], rng);
    try {
      auto f = io::safetensors_file::parse(input, "fuzz.safetensors");
      std::uint64_t sum = 0;  // touch every byte the reader hands out
      for (auto& t : f.tensors())
        for (auto b : f.bytes(t)) sum += std::to_integer<unsigned>(b);
      (void)sum;
      ++parsed;
    } catch (const forge::error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL("non-forge exception: " << e.what() << " at iteration " << i);
    }
  }
  INFO("parsed " << parsed << ", rejected " << rejected);
  CHECK(parsed + rejected == 120'000);
  CHECK(rejected > 60'000);  // the mutations do break most headers: the fuzzer reaches errors
  CHECK(parsed > 1'000);     // and some survive validation, so the accessors are exercised
}
