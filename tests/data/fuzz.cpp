// Fuzz tests under ASan/UBSan: seeded mutations of valid inputs. The JSONL reader must never
// crash and, in strict mode, let only forge::error escape; in the default mode it must
// account for every line. PII scanning, cleaning and the datasheet reader get the same.
#include <catch2/catch.hpp>

#include <random>

#include "forge/data/clean.hpp"
#include "forge/data/datasheet.hpp"
#include "forge/data/jsonl.hpp"
#include "forge/data/pii.hpp"

using namespace forge::data;

namespace {
const char* const seeds[] = {
    R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})",
    R"({"prompt":"2+2?","completion":"4","id":"q1"})",
    R"({"prompt":[{"role":"user","content":"x"}],"completion":[{"role":"assistant","content":"y"}]})",
    R"({"prompt":"p","chosen":"a","rejected":"b"})",
    R"({"chosen":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"rejected":[{"role":"user","content":"q"},{"role":"assistant","content":"b"}]})",
    R"({"prompt":"p","completion":"c","label":false})",
    R"({"text":"caf\u00e9 \ud83d\ude00 ok"})",
    R"({"text":"big","n":1e308,"id":7})",
};

std::string mutate(std::string s, std::mt19937_64& rng) {
  static const std::string interesting[] = {"\"",
                                            "{",
                                            "}",
                                            "[",
                                            "]",
                                            ":",
                                            ",",
                                            "\\",
                                            "\\u",
                                            "\\ud800",
                                            "\n",
                                            "\r",
                                            "\xC3",
                                            "\xED\xA0\x80",
                                            "\xF4\x90\x80\x80",
                                            "\xC0\xAF",
                                            "null",
                                            "1e999",
                                            "-",
                                            "true",
                                            "\"role\"",
                                            "\"content\"",
                                            "\0"};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 5) {
      case 0:  // flip a byte
        if (!s.empty()) s[pos % s.size()] = static_cast<char>(rng() & 0xFF);
        break;
      case 1:  // insert an interesting token
        s.insert(pos, interesting[rng() % std::size(interesting)]);
        break;
      case 2:  // delete a span
        if (!s.empty()) s.erase(pos % s.size(), 1 + rng() % 8);
        break;
      case 3:  // duplicate a span
        if (!s.empty()) {
          const std::size_t a = pos % s.size();
          s.insert(a, s.substr(a, 1 + rng() % 16));
        }
        break;
      default:  // truncate
        s.resize(pos);
    }
  }
  return s;
}

template <class R>
void read_all(const std::string& text, bool strict, std::size_t max_line) {
  data_report rep;
  jsonl_options o;
  o.strict = strict;
  o.max_line_bytes = max_line;
  o.hash_file = false;
  std::size_t n = 0;
  for (const R& r : parse_jsonl<R>(text, "fuzz.jsonl", rep, o)) {
    n += r.id.size();  // touch the record
  }
  if (!strict) {
    const auto& st = rep.step("read");
    REQUIRE(st.in == st.out + rep.removed());
    REQUIRE(rep.sources[0].lines == rep.sources[0].blank_lines + st.in);
  }
  (void)n;
}
}  // namespace

TEST_CASE("fuzz: the JSONL reader survives 100k mutated inputs") {
  std::mt19937_64 rng(0xF0220);
  for (int it = 0; it < 100000; ++it) {
    std::string doc;
    const int lines = 1 + static_cast<int>(rng() % 3);
    for (int l = 0; l < lines; ++l) {
      doc += seeds[rng() % std::size(seeds)];
      doc += '\n';
    }
    doc = mutate(doc, rng);
    const bool strict = rng() % 2;
    const std::size_t max_line = rng() % 8 == 0 ? 16 : 1 << 20;
    try {
      switch (rng() % 5) {
        case 0:
          read_all<sft_record>(doc, strict, max_line);
          break;
        case 1:
          read_all<preference_record>(doc, strict, max_line);
          break;
        case 2:
          read_all<kto_record>(doc, strict, max_line);
          break;
        case 3:
          read_all<text_record>(doc, strict, max_line);
          break;
        default:
          read_all<sft_record>(doc, false, max_line);
      }
    } catch (const forge::error&) {
      REQUIRE(strict);  // only strict mode may throw, and only forge::error
    }
  }
}

TEST_CASE("fuzz: PII scanning and cleaning on mutated text") {
  std::mt19937_64 rng(0xB17E);
  const std::string base =
      "Mail jane.doe@example.com, call +44 20 7946 0958 or (415) 555-0132; card 4111 1111 1111 "
      "1111; IBAN GB82 WEST 1234 5698 7654 32; ip 10.0.0.1 and 2001:db8::1; ssn 123-45-6789; "
      "key ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5b; caf\xC3\xA9 e\xCC\x81 \xE2\x80\x8B tab\there";
  for (int it = 0; it < 20000; ++it) {
    const std::string s = mutate(base, rng);
    const auto spans = find_pii(s);
    std::size_t prev = 0;
    for (const auto& sp : spans) {
      REQUIRE(sp.begin >= prev);
      REQUIRE(sp.begin < sp.end);
      REQUIRE(sp.end <= s.size());
      prev = sp.end;
    }
    pii_counts c;
    (void)mask_pii(s, c);
    if (is_utf8(s)) {
      const std::string once = clean_text(s);
      REQUIRE(is_utf8(once));
      REQUIRE(clean_text(once) == once);  // cleaning is idempotent
      (void)fold_text(s);
    } else {
      REQUIRE_THROWS_AS(clean_text(s), forge::error);
    }
  }
}

TEST_CASE("fuzz: the datasheet reader rejects mutated documents with forge::error only") {
  datasheet d{.name = "n"};
  d.report.sources.push_back({"a.jsonl", "00ff", 10, 2, 0, 2, 0});
  d.report.step("read").in = 2;
  d.report.pii["EMAIL"] = 1;
  d.report.tokens.add(5);
  const std::string base = d.to_json().dump();
  std::mt19937_64 rng(0xDA7A);
  for (int it = 0; it < 20000; ++it) {
    const std::string s = mutate(base, rng);
    auto j = nlohmann::json::parse(s, nullptr, false);
    if (j.is_discarded()) continue;
    try {
      (void)datasheet::from_json(j);
    } catch (const forge::error&) {
    }
  }
}
