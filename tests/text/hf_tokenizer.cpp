// hf_tokenizer against the fixture's tokenizer_cases.json, made by the reference library
// (`tokenizers` 0.23) from the same tokenizer.json: ids must match exactly.

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "forge/io/atomic_file.hpp"
#include "forge/text/hf_tokenizer.hpp"
#include "../support/fixtures.hpp"

using forge::text::hf_tokenizer;

namespace {
const hf_tokenizer& fixture_tokenizer() {
  static const hf_tokenizer t = hf_tokenizer::from_file(forge::test::llama_a() / "model" / "tokenizer.json");
  return t;
}
nlohmann::json cases() {
  return nlohmann::json::parse(forge::io::read_file(forge::test::llama_a() / "tokenizer_cases.json"));
}
}  // namespace

TEST_CASE("every fixture case encodes to the reference ids and decodes back") {
  const auto& t = fixture_tokenizer();
  const auto c = cases();
  for (const auto& k : c["cases"]) {
    const std::string text = k["text"];
    const auto want = k["ids"].get<std::vector<std::int32_t>>();
    INFO("text: " << text);
    const auto got = t.encode(text);
    CHECK(got == want);
    CHECK(t.decode(got) == text);
  }
}

TEST_CASE("the rendered chat case encodes to the reference ids") {
  const auto& t = fixture_tokenizer();
  const auto c = cases()["chat"];
  const std::string text = c["text"];
  CHECK(t.encode(text) == c["ids"].get<std::vector<std::int32_t>>());
}
