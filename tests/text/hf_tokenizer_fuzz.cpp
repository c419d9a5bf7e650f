// Fuzz test of the tokenizer.json parser (built with ASan + UBSan): seeded mutations of valid
// tokenizer files — byte flips, insertions, deletions, truncations, and structural edits of the
// JSON tree — are loaded and, when they load, used to encode and decode. The only thing allowed
// to escape is forge::error; a crash, a sanitizer report or another exception fails the test.

#include <catch2/catch.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/hf_tokenizer.hpp"

using forge::text::hf_tokenizer;

namespace {

// A small tokenizer.json that switches on every supported component, so mutations reach
// every parser branch cheaply.
const char* kitchen_sink = R"({
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
     "normalized": false, "special": true},
    {"id": 11, "content": "tool", "single_word": true, "lstrip": true, "rstrip": true,
     "normalized": true, "special": false}],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "NFC"}, {"type": "Prepend", "prepend": "_"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "_"},
    {"type": "Strip", "strip_left": false, "strip_right": true}]},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}|\\s+(?!\\S)|[^\\s\\p{N}]+"},
     "behavior": "Isolated", "invert": false},
    {"type": "Metaspace", "replacement": "_", "prepend_scheme": "first", "split": true},
    {"type": "Digits", "individual_digits": false},
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": false}]},
  "post_processor": {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
     {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
     "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}]},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "_"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "ByteLevel"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    {"type": "Metaspace", "replacement": "_", "prepend_scheme": "always"}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": true,
    "byte_fallback": true, "ignore_merges": true, "continuing_subword_prefix": null,
    "end_of_word_suffix": null,
    "vocab": {"<unk>": 1, "a": 2, "b": 3, "ab": 4, "_": 5, "_a": 6, "<0x61>": 7, "<0x62>": 8,
              "1": 9, "12": 10, "2": 12},
    "merges": [["a", "b"], "_ a", ["1", "2"]]}
})";

class mutator {
 public:
  explicit mutator(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t below(std::uint64_t n) { return rng_() % n; }

  // Byte-level damage to the text.
  std::string bytes(std::string s) {
    const auto edits = 1 + below(4);
    for (std::uint64_t e = 0; e < edits && !s.empty(); ++e) {
      const auto at = below(s.size());
      switch (below(5)) {
        case 0:
          s[at] = static_cast<char>(below(256));
          break;
        case 1:
          s.insert(at, 1, "{}[]\",:0-9e\\u"[below(14)]);
          break;
        case 2:
          s.erase(at, 1 + below(8));
          break;
        case 3:
          s.resize(at);
          break;
        default:
          s.insert(at, s.substr(below(s.size()), below(16)));
          break;
      }
    }
    return s;
  }

  // Replaces, removes or retypes one node of the JSON tree.
  std::string tree(nlohmann::json doc) {
    std::vector<nlohmann::json*> nodes;
    collect(doc, nodes);
    nlohmann::json& target = *nodes[below(nodes.size())];
    switch (below(9)) {
      case 0:
        target = nullptr;
        break;
      case 1:
        target = -static_cast<std::int64_t>(below(5));
        break;
      case 2:
        target = static_cast<std::int64_t>(below(100));
        break;
      case 3:
        target = (std::int64_t{1} << 40);
        break;
      case 4:
        target = std::string(below(3), "ab_<>"[below(5)]);
        break;
      case 5:
        target = nlohmann::json::array();
        break;
      case 6:
        target = nlohmann::json::object();
        break;
      case 7:
        target = below(2) == 0;
        break;
      default:
        if (target.is_object() && !target.empty()) {
          auto it = target.begin();
          std::advance(it, static_cast<std::ptrdiff_t>(below(target.size())));
          target.erase(it);
        } else if (target.is_array() && !target.empty()) {
          target.erase(target.begin() + static_cast<std::ptrdiff_t>(below(target.size())));
        } else {
          target = 1.5;
        }
    }
    return doc.dump();
  }

 private:
  static void collect(nlohmann::json& j, std::vector<nlohmann::json*>& out) {
    out.push_back(&j);
    if (j.is_structured())
      for (auto& c : j) collect(c, out);
  }
  std::mt19937_64 rng_;
};

// Loads `json` and, if it loads, encodes and decodes with it; returns whether it loaded.
bool exercise(const std::string& json, std::uint64_t& rng_state) {
  std::optional<hf_tokenizer> t;
  try {
    t.emplace(hf_tokenizer::from_json(json, "<fuzz>"));
  } catch (const forge::error&) {
    return false;
  }
  try {
    for (const char* text : {"ab ab 123 <s>x", " tool  a\tb\n", "\xC3\xA9\xF0\x9F\x99\x82", ""}) {
      const auto ids = t->encode(text);
      (void)t->decode(ids, true);
    }
  } catch (const forge::error&) {
    // e.g. a mutated regex that exceeds the match limit
  }
  // Decoding arbitrary ids may fail with forge::error but must not crash.
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  const std::vector<std::int32_t> ids = {static_cast<std::int32_t>(rng_state >> 58),
                                         static_cast<std::int32_t>((rng_state >> 40) & 15) - 2};
  try {
    (void)t->decode(ids);
  } catch (const forge::error&) {
  }
  return true;
}

}  // namespace

TEST_CASE("mutated tokenizer.json files load or fail with forge::error, never crash") {
  const std::string sink = kitchen_sink;
  const auto sink_doc = nlohmann::json::parse(sink);
  std::uint64_t state = 1;
  // The seed itself is valid (REQUIRE_NOTHROW reports the error if not).
  REQUIRE_NOTHROW(hf_tokenizer::from_json(sink, "<seed>").encode("ab ab 123 <s>x"));
  REQUIRE(exercise(sink, state));

  mutator m(1234);
  std::size_t loaded = 0;
  // 100,000 mutations of the small all-components file (half textual, half structural).
  for (int i = 0; i < 100000; ++i) {
    const std::string mutant = i % 2 == 0 ? m.bytes(sink) : m.tree(sink_doc);
    loaded += exercise(mutant, state) ? 1 : 0;
  }
  // Structural edits that hit optional or unused values leave a loadable file; if nothing
  // loaded, the mutations never reached the encoder.
  CHECK(loaded > 1000);
}

TEST_CASE("mutations of the fixture tokenizer.json never crash") {
  // The real file is 40 times larger than the small one, so it gets fewer iterations.
  mutator m(99);
  std::uint64_t state = 7;
  const std::string fixture =
      forge::io::read_file(forge::test::llama_a() / "model" / "tokenizer.json");
  const auto fixture_doc = nlohmann::json::parse(fixture);
  for (int i = 0; i < 1000; ++i)
    exercise(i % 2 == 0 ? m.bytes(fixture) : m.tree(fixture_doc), state);
}
