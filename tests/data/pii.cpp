// PII masking: known-answer checks of the validators (Luhn, IBAN mod-97) and precision and
// recall per type on the labelled set tests/data/pii_cases.jsonl (302 lines; labels come
// from the generator that placed each value, hard negatives included).
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <map>

#include "../support/fixtures.hpp"
#include "forge/data/pii.hpp"

using namespace forge::data;

TEST_CASE("Luhn and IBAN checks accept published valid numbers and reject altered ones") {
  // 79927398713 is the worked example of the Luhn algorithm (ISO/IEC 7812-1 annex B);
  // 4111111111111111 is the well-known Visa test number.
  CHECK(detail::luhn_ok("79927398713"));
  CHECK_FALSE(detail::luhn_ok("79927398710"));
  CHECK(detail::luhn_ok("4111111111111111"));
  CHECK_FALSE(detail::luhn_ok("4111111111111112"));
  // Example IBANs of the ISO 13616 registry.
  CHECK(detail::iban_checksum_ok("GB82WEST12345698765432"));
  CHECK(detail::iban_checksum_ok("DE89370400440532013000"));
  CHECK_FALSE(detail::iban_checksum_ok("GB83WEST12345698765432"));
  CHECK(detail::iban_length("GB") == 22);
  CHECK(detail::iban_length("XX") == 0);
}

TEST_CASE("masking replaces spans by typed placeholders and counts them") {
  pii_counts counts;
  const std::string in =
      "Mail jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, "
      "IBAN GB82 WEST 1234 5698 7654 32, host 192.168.0.7, v1.2.3, key ghp_"
      "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5b";
  const std::string out = mask_pii(in, counts);
  CHECK(out ==
        "Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD>, IBAN <IBAN>, host <IPV4>, v1.2.3, "
        "key <API_KEY>");
  CHECK(counts == pii_counts{{"EMAIL", 1},
                             {"PHONE", 1},
                             {"CREDIT_CARD", 1},
                             {"IBAN", 1},
                             {"IPV4", 1},
                             {"API_KEY", 1}});
}

TEST_CASE("mask_record masks every text field and counts into the report") {
  data_report rep;
  sft_record r{"r1", {{"user", "my ssn is 123-45-6789"}, {"assistant", "noted, 123-45-6789"}}};
  mask_record(r, rep);
  CHECK(r.messages[0].content == "my ssn is <SSN>");
  CHECK(r.messages[1].content == "noted, <SSN>");
  CHECK(rep.pii.at("SSN") == 2);
  CHECK(rep.step("pii").in == 1);
}

TEST_CASE("disabled types are left alone") {
  pii_counts c;
  pii_options o;
  o.email = false;
  CHECK(mask_pii("a@b.example.com 10.0.0.1", c, o) == "a@b.example.com <IPV4>");
}

TEST_CASE("precision and recall on the labelled PII set are at least 0.95") {
  const auto path = forge::test::source_dir() / "tests" / "data" / "pii_cases.jsonl";
  std::ifstream in(path);
  INFO("labelled set " << path << " (FORGE_SOURCE_DIR names the source tree)");
  REQUIRE(in);
  struct tally {
    int tp = 0, fp = 0, fn = 0;
  };
  std::map<std::string, tally> per_type;
  tally all;
  int lines = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++lines;
    const auto j = nlohmann::json::parse(line);
    const std::string text = j["text"];
    std::vector<std::tuple<std::string, std::size_t, std::size_t>> want, got;
    for (const auto& s : j["spans"]) want.emplace_back(s["type"], s["start"], s["end"]);
    for (const auto& s : find_pii(text))
      got.emplace_back(std::string(pii_name(s.type)), s.begin, s.end);
    // A detection counts only with exact type and byte span.
    for (const auto& g : got) {
      const bool hit = std::find(want.begin(), want.end(), g) != want.end();
      auto& t = per_type[std::get<0>(g)];
      (hit ? t.tp : t.fp)++;
      (hit ? all.tp : all.fp)++;
      if (!hit)
        std::printf("false positive %s '%s' in: %s\n", std::get<0>(g).c_str(),
                    text.substr(std::get<1>(g), std::get<2>(g) - std::get<1>(g)).c_str(),
                    text.c_str());
    }
    for (const auto& w : want)
      if (std::find(got.begin(), got.end(), w) == got.end()) {
        per_type[std::get<0>(w)].fn++;
        all.fn++;
        std::printf("missed %s '%s' in: %s\n", std::get<0>(w).c_str(),
                    text.substr(std::get<1>(w), std::get<2>(w) - std::get<1>(w)).c_str(),
                    text.c_str());
      }
  }
  REQUIRE(lines >= 200);
  auto pr = [](const tally& t) {
    const double p = t.tp + t.fp ? static_cast<double>(t.tp) / (t.tp + t.fp) : 1.0;
    const double r = t.tp + t.fn ? static_cast<double>(t.tp) / (t.tp + t.fn) : 1.0;
    return std::pair{p, r};
  };
  std::printf("PII detection on %d labelled lines (exact type and span):\n", lines);
  std::printf("  %-12s %5s %5s %5s %9s %7s\n", "type", "tp", "fp", "fn", "precision", "recall");
  for (const auto& [name, t] : per_type) {
    auto [p, r] = pr(t);
    std::printf("  %-12s %5d %5d %5d %9.3f %7.3f\n", name.c_str(), t.tp, t.fp, t.fn, p, r);
  }
  auto [p, r] = pr(all);
  std::printf("  %-12s %5d %5d %5d %9.3f %7.3f\n", "overall", all.tp, all.fp, all.fn, p, r);
  CHECK(p >= 0.95);
  CHECK(r >= 0.95);
  // Per type the set holds 19..48 spans, so one miss moves a rate by up to 0.05: require 0.9.
  for (const auto& [name, t] : per_type) {
    auto [tp, tr] = pr(t);
    INFO(name);
    CHECK(tp >= 0.90);
    CHECK(tr >= 0.90);
  }
  CHECK(per_type.size() == 8);
}
