// Fuzzing the governance parsers (built with ASan+UBSan): manifests, stage reports, registry
// files, key files and signatures, 130k seeded mutations of valid inputs in all. Each input
// must parse or fail with forge::error; any other exception, crash or sanitizer report
// fails the test.

#include <catch2/catch.hpp>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/govern/registry.hpp"
#include "forge/govern/release.hpp"
#include "sample_release.hpp"

using namespace forge;
using namespace forge::govern;

namespace {
constexpr char kTokens[] = "{}[]\",:0123456789-eE.tfn \\u/\xff";

std::string mutate(const std::string& seed, std::mt19937_64& rng) {
  std::string s = seed;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const std::size_t at = rng() % s.size();
    switch (rng() % 6) {
      case 0:
        s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8)));
        break;
      case 1:
        s[at] = kTokens[rng() % (sizeof kTokens - 1)];
        break;
      case 2:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(at),
                 kTokens[rng() % (sizeof kTokens - 1)]);
        break;
      case 3:
        s.erase(at, 1 + rng() % 8);
        break;
      case 4:
        s.resize(at);
        break;
      default: {  // another number where a digit was
        const auto n = std::to_string(static_cast<long long>(rng() % 2000000) - 1000000);
        s.replace(at, 1, n);
      }
    }
  }
  return s;
}

template <class F>
void fuzz(const std::string& what, const std::string& seed, int iterations, std::uint64_t salt,
          F&& parse) {
  std::mt19937_64 rng(salt);
  REQUIRE_NOTHROW(parse(seed));
  int ok = 0, rejected = 0;
  for (int i = 0; i < iterations; ++i) {
    const auto input = mutate(seed, rng);
    try {
      parse(input);
      ++ok;
    } catch (const forge::error&) {
      ++rejected;
    }
  }
  INFO(what << ": parsed " << ok << ", rejected " << rejected);
  CHECK(ok + rejected == iterations);
  CHECK(rejected > iterations / 10);  // the mutations do reach the validation
}
}  // namespace

TEST_CASE("governance parsers survive mutated input with only forge::error") {
  auto dir = test::scratch("govern_fuzz");
  const signing_key key(std::array<unsigned char, 32>{7});
  assemble_release(dir / "release", test::sample_spec(), key);

  const auto manifest_text = io::read_file(dir / "release" / "MANIFEST.json");
  fuzz("manifest", manifest_text, 40000, 1, [](const std::string& t) {
    auto m = manifest::parse(t, "MANIFEST.json");
    (void)m.to_json();
  });
  const auto bound = manifest::parse(manifest_text, "MANIFEST.json");
  const auto report = io::read_file(dir / "release" / "reports" / "01_align.json");
  fuzz("report", report, 40000, 2, [&](const std::string& t) {
    auto b = read_report_binding(t, "reports/01_align.json");
    (void)check_bindings(bound, {b});
  });
  // The pipeline's nested layout (pipeline/run.hpp) of the same binding.
  const auto& base = test::sample_spec().card.base_model_sha256;
  const json nested = {
      {"schema", "forge.stage_report/1"},
      {"stage", {{"index", 1}, {"kind", "adapt"}, {"of", 2}}},
      {"input", {{"sha256", base}, {"accepted_representations", {"dense f32"}}}},
      {"output", {{"sha256", sha256_hex(std::string_view("adapted model"))}}},
      {"data", {{{"name", "sql-sft"}, {"sha256", sha256_hex(std::string_view("sft data"))}}}}};
  fuzz("pipeline report", nested.dump(2), 40000, 6, [&](const std::string& t) {
    auto b = read_report_binding(t, "reports/01_adapt.json");
    (void)check_bindings(bound, {b});
  });
  fuzz("public key", public_key_text(key.public_part()), 20000, 3,
       [](const std::string& t) { (void)parse_public_key(t, "signing_key.pub"); });
  fuzz("signature", io::read_file(dir / "release" / "MANIFEST.json.sig"), 10000, 4,
       [](const std::string& t) { (void)parse_signature(t, "MANIFEST.json.sig"); });

  adapter_registry reg(dir / "registry.json");
  adapter_record r;
  r.base_model_name = "llama_a";
  r.task = "sql";
  r.version = 1;
  r.id = "llama_a-sql-v1";
  r.base_model_sha256 = std::string(64, 'a');
  r.tenants = {"t"};
  r.rank = 4;
  r.eval = {{"exact_match", 0.9}};
  reg.add(r);
  reg.activate(r.id);
  const auto registry_text = io::read_file(dir / "registry.json");
  fuzz("registry", registry_text, 30000, 5, [&](const std::string& t) {
    for (const auto& rec : adapter_registry::parse_records(t, "registry.json")) (void)rec.id.size();
  });
}
