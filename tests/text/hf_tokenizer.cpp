// hf_tokenizer against the fixture's tokenizer_cases.json, made by the reference library
// (`tokenizers` 0.23) from the same tokenizer.json: ids must match exactly.

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <thread>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/hf_tokenizer.hpp"
#include "forge/text/load_tokenizer.hpp"

using forge::text::hf_tokenizer;

namespace {
const hf_tokenizer& fixture_tokenizer() {
  static const hf_tokenizer t =
      hf_tokenizer::from_file(forge::test::llama_a() / "model" / "tokenizer.json");
  return t;
}
nlohmann::json cases() {
  return nlohmann::json::parse(
      forge::io::read_file(forge::test::llama_a() / "tokenizer_cases.json"));
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

TEST_CASE("merges written as \"a b\" strings give the same ids as pair arrays") {
  // tokenizers 0.23 writes merges as pairs; older files use one string per merge.
  auto doc = nlohmann::json::parse(
      forge::io::read_file(forge::test::llama_a() / "model" / "tokenizer.json"));
  for (auto& m : doc["model"]["merges"])
    m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const auto legacy = hf_tokenizer::from_json(doc.dump(), "legacy.json");
  for (const auto& k : cases()["cases"]) {
    const std::string text = k["text"];
    CHECK(legacy.encode(text) == k["ids"].get<std::vector<std::int32_t>>());
  }
}

TEST_CASE("load_tokenizer reads the fixture directory and its tokenizer_config") {
  const auto t = forge::text::load_tokenizer(forge::test::llama_a() / "model");
  REQUIRE(std::holds_alternative<hf_tokenizer>(t.get()));
  CHECK(t.vocab_size() == 512);
  CHECK(t.bos_id() == 0);  // "<|begin_of_text|>" in tokenizer_config.json
  CHECK(t.eos_id() == 1);  // "<|end_of_text|>"
  CHECK_FALSE(t.pad_id().has_value());
  CHECK(t.token_to_id("<|im_end|>") == 3);
  CHECK(t.id_to_token(3) == "<|im_end|>");
  CHECK(t.id_to_token(224) == "\xC4\xA0");  // 'Ġ', the byte-level form of a space
  CHECK_FALSE(t.id_to_token(512).has_value());
  CHECK(t.is_special(2));
  CHECK_FALSE(t.is_special(224));
  // The template lives in chat_template.jinja beside the config; it is exposed unrendered.
  CHECK(t.chat_template() ==
        forge::io::read_file(forge::test::llama_a() / "model" / "chat_template.jinja"));
}

TEST_CASE("skip_special_tokens drops the chat markers when decoding") {
  const auto& t = fixture_tokenizer();
  const auto c = cases()["chat"];
  const auto ids = c["ids"].get<std::vector<std::int32_t>>();
  CHECK(t.decode(ids) == c["text"].get<std::string>());
  CHECK(t.decode(ids, true) == "system\nYou are terse.\nuser\nSay hi.\nassistant\n");
}

TEST_CASE("invalid UTF-8 input is a forge::error naming the byte offset") {
  const auto& t = fixture_tokenizer();
  const std::string bad[] = {std::string("ab\xFF"), std::string("\xC0\xAF"),  // overlong
                             std::string("x\xED\xA0\x80"),                    // surrogate
                             std::string("ok\xF4\x90\x80\x80"),               // > U+10FFFF
                             std::string("\xE2\x82")};                        // truncated
  const std::string where[] = {"byte 2", "byte 0", "byte 1", "byte 2", "byte 0"};
  for (std::size_t i = 0; i < std::size(bad); ++i) {
    try {
      t.encode(bad[i]);
      FAIL("accepted invalid UTF-8 case " << i);
    } catch (const forge::error& e) {
      CHECK(e.place() == where[i]);
    }
  }
}

TEST_CASE("decode rejects ids outside the vocabulary") {
  const std::vector<std::int32_t> ids = {5, 512};
  CHECK_THROWS_AS(fixture_tokenizer().decode(ids), forge::error);
  const std::vector<std::int32_t> negative = {-1};
  CHECK_THROWS_AS(fixture_tokenizer().decode(negative), forge::error);
}

namespace {
// A hand-made BPE: a, b, c; merges (b c) then (a b); "abc" is also a whole token.
std::string tiny_json(bool ignore_merges) {
  return std::string(R"({"model": {"type": "BPE", "ignore_merges": )") +
         (ignore_merges ? "true" : "false") +
         R"(, "vocab": {"a": 0, "b": 1, "c": 2, "bc": 3, "ab": 4, "abc": 5},
                        "merges": [["b", "c"], ["a", "b"]]}})";
}
}  // namespace

TEST_CASE("merge order and ignore_merges follow the reference rules") {
  // By rank: (b c) merges first, leaving a + bc, which has no merge.
  CHECK(hf_tokenizer::from_json(tiny_json(false)).encode("abc") == std::vector<std::int32_t>{0, 3});
  // ignore_merges: a piece that is itself a token is taken whole.
  CHECK(hf_tokenizer::from_json(tiny_json(true)).encode("abc") == std::vector<std::int32_t>{5});
  // No normalizer/pre-tokenizer/decoder: tokens are joined by spaces, as in the reference.
  CHECK(hf_tokenizer::from_json(tiny_json(false)).decode(std::vector<std::int32_t>{0, 3}) ==
        "a bc");
}

TEST_CASE("tokenizer.json errors name the file and the JSON path") {
  const auto expect = [](const std::string& json, const std::string& place) {
    try {
      hf_tokenizer::from_json(json, "t.json");
      FAIL("accepted: " << json);
    } catch (const forge::error& e) {
      CHECK(e.file() == "t.json");
      CHECK(e.place() == place);
    }
  };
  expect(R"({"model": )", "byte 11");  // nlohmann counts the end of input as byte 11
  expect(R"({"normalizer": null})", "/model");
  expect(R"({"model": {"vocab": {"a": 0}, "merges": [["a", "b"]]}})", "/model/merges/0");
  expect(R"({"model": {"vocab": {"a": 0}, "merges": ["a  a"]}})", "/model/merges/0");
  expect(R"({"model": {"vocab": {"a": -3}, "merges": []}})", "/model/vocab/a");
  expect(R"({"model": {"vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Sequence",
            "pretokenizers": [{"type": "Whitespace"}]}})",
         "/pre_tokenizer/pretokenizers/0/type");
  expect(R"({"model": {"vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Split",
            "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false}})",
         "/pre_tokenizer/pattern/Regex");
  expect(R"({"model": {"vocab": {}, "merges": [], "dropout": 0.1}})", "/model/dropout");
}

TEST_CASE("concurrent encodes agree with a sequential encode") {
  const auto& t = fixture_tokenizer();
  std::string text;
  for (const auto& k : cases()["cases"]) text += k["text"].get<std::string>() + "\n";
  const auto want = t.encode(text);
  std::vector<std::vector<std::int32_t>> got(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] {
      for (int r = 0; r < 50; ++r) got[i] = t.encode(text);
    });
  for (auto& th : threads) th.join();
  for (const auto& g : got) CHECK(g == want);
}
