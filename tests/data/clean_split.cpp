// Cleaning (NFC, control characters, whitespace), strict UTF-8 validation, and stable splits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "forge/data/clean.hpp"
#include "forge/data/split.hpp"
#include "forge/data/utf8.hpp"

using namespace forge::data;

TEST_CASE("the UTF-8 check rejects every ill-formed class with its byte offset") {
  // Cases from Unicode 15 table 3-7 and Markus Kuhn's UTF-8 decoder stress test.
  struct bad {
    std::string s;
    std::size_t byte;
    const char* reason;
  };
  const std::vector<bad> cases{
      {"ab\xC0\xAF", 2, "overlong encoding"},                // '/' as 2 bytes
      {"\xE0\x80\xAF", 0, "overlong encoding"},              // '/' as 3 bytes
      {"x\xF0\x80\x80\xAF", 1, "overlong encoding"},         // '/' as 4 bytes
      {"\xED\xA0\x80", 0, "surrogate code point"},           // U+D800
      {"\xED\xBF\xBF", 0, "surrogate code point"},           // U+DFFF
      {"\xF4\x90\x80\x80", 0, "code point above U+10FFFF"},  // U+110000
      {"\xF5\x80\x80\x80", 0, "code point above U+10FFFF"},
      {"abc\x80", 3, "unexpected continuation byte"},
      {"\xC3", 0, "truncated sequence"},
      {"\xE2\x82", 0, "truncated sequence"},
      {"\xE2\x82x", 0, "truncated sequence"},
      {"ok \xF0\x9F\x98", 3, "truncated sequence"},
  };
  for (const auto& c : cases) {
    INFO(c.reason << " at " << c.byte);
    auto f = check_utf8(c.s);
    REQUIRE(f);
    CHECK(f->byte == c.byte);
    CHECK(f->reason == c.reason);
  }
  // Boundary code points that are valid: U+007F, U+0080, U+07FF, U+0800, U+D7FF, U+E000,
  // U+FFFD, U+10000, U+10FFFF.
  for (const char* ok : {"\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF",
                         "\xEE\x80\x80", "\xEF\xBF\xBD", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"})
    CHECK(is_utf8(ok));
}

TEST_CASE("the UTF-8 check agrees with a decode-and-re-encode reference on random bytes") {
  // Reference: a byte string is well-formed iff greedy decoding by the textbook rules
  // (shortest form, no surrogates, <= U+10FFFF) consumes it all.
  auto reference = [](const std::string& s) {
    std::size_t i = 0;
    while (i < s.size()) {
      const auto c = static_cast<unsigned char>(s[i]);
      std::size_t len = c < 0x80         ? 1
                        : (c >> 5) == 6  ? 2
                        : (c >> 4) == 14 ? 3
                        : (c >> 3) == 30 ? 4
                                         : 0;
      if (len == 0 || i + len > s.size()) return false;
      std::uint32_t cp = len == 1 ? c : c & (0x7F >> len);
      for (std::size_t k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (b & 0x3F);
      }
      const std::uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
      i += len;
    }
    return true;
  };
  std::mt19937 rng(7);
  const unsigned char alphabet[] = {'a',  0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0,
                                    0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x8F, 0x90};
  for (int t = 0; t < 20000; ++t) {
    std::string s(rng() % 6, '\0');
    for (auto& ch : s) ch = static_cast<char>(alphabet[rng() % sizeof alphabet]);
    INFO("case " << t);
    REQUIRE(is_utf8(s) == reference(s));
  }
}

TEST_CASE("NFC composes decomposed text (UAX #15)") {
  CHECK(to_nfc("e\xCC\x81") == "\xC3\xA9");                     // e + U+0301 -> U+00E9
  CHECK(to_nfc("\xE1\x84\x80\xE1\x85\xA1") == "\xEA\xB0\x80");  // Hangul jamo -> U+AC00
  CHECK(to_nfc("\xE2\x84\xAB") == "\xC3\x85");                  // U+212B ANGSTROM SIGN -> U+00C5
  CHECK(to_nfc("plain") == "plain");
  CHECK_THROWS_AS(to_nfc("bad\xFF"), forge::error);
}

TEST_CASE("control characters go, tabs and newlines stay, CR becomes LF") {
  CHECK(strip_control_chars("a\x01"
                            "b\x7F"
                            "c\tc\r\nd\re") == "abc\tc\nd\ne");
  CHECK(strip_control_chars("x\xC2\x85y") == "xy");                     // U+0085 (C1 NEL)
  CHECK(strip_control_chars("z\xE2\x80\x8Bw\xEF\xBB\xBF") == "zw");     // ZWSP, BOM
  CHECK(strip_control_chars("\xE2\x80\x8D", false) == "\xE2\x80\x8D");  // ZWJ kept
}

TEST_CASE("whitespace normalisation keeps indentation, trims line ends and blank runs") {
  CHECK(normalize_whitespace("  hello\xC2\xA0world  \n\n\n\n  indented\t\n") ==
        "hello world\n\n  indented");
  CHECK(normalize_whitespace("a \t  b", true) == "a b");
  CHECK(normalize_whitespace("a\n\n\nb", false, 0) == "a\nb");
  CHECK(normalize_whitespace(" \n \n") == "");
}

TEST_CASE("clean_text applies all steps; fold_text is the matching form") {
  CHECK(clean_text("  Cafe\xCC\x81\x07 \r\n\r\n\r\n ok ") == "Caf\xC3\xA9\n\n ok");
  CHECK(fold_text("  HeLLo \n\t W\xC3\x96rld ") == "hello w\xC3\xB6rld");
  CHECK(fold_text("Stra\xC3\x9F"
                  "e") == "strasse");  // case folding maps sharp s to ss
  text_record r{"1", "A\x01 B  "};
  clean_record(r);
  CHECK(r.text == "A B");
}

TEST_CASE("split points match a SHA-256 reference computed with Python's hashlib") {
  // hashlib.sha256(salt + b"\0" + key).digest()[:8] big-endian >> 11, / 2^53
  CHECK(split_point(R"({"text":"hello"})", "") == 0.8893177259854432);
  CHECK(split_point("abc", "s1") == 0.4020855434294015);
  sft_record s{"any-id", {{"user", "hi"}, {"assistant", "yo"}}};
  CHECK(split_point(s.content().dump(), "") == 0.5849696195113325);
}

TEST_CASE("splits are stable under reordering and follow the ratios") {
  split_ratios r{.train = 0.8, .validation = 0.1, .test = 0.1};
  std::vector<text_record> recs;
  for (int i = 0; i < 10000; ++i)
    recs.push_back({"id" + std::to_string(i), "record " + std::to_string(i)});
  data_report rep;
  std::map<std::string, split> first;
  for (const auto& x : recs) first[x.text] = assign_split(x, r, rep);
  std::mt19937 rng(1);
  std::shuffle(recs.begin(), recs.end(), rng);
  data_report rep2;
  for (auto& x : recs) {
    x.id = "other";  // ids do not matter, only content
    REQUIRE(assign_split(x, r, rep2) == first[x.text]);
  }
  CHECK(rep.splits == rep2.splits);
  // Binomial(10000, 0.1): sd = 30; allow 4 sd.
  CHECK(std::abs(static_cast<double>(rep.splits["validation"]) - 1000) < 120);
  CHECK(std::abs(static_cast<double>(rep.splits["test"]) - 1000) < 120);
  CHECK(rep.splits["train"] + rep.splits["validation"] + rep.splits["test"] == 10000);
  // Another salt moves records between splits.
  split_ratios r2 = r;
  r2.salt = "v2";
  int moved = 0;
  for (const auto& x : recs) moved += assign_split(x.content().dump(), r2) != first[x.text];
  CHECK(moved > 1000);
  CHECK_THROWS_AS(assign_split("k", split_ratios{.train = 0.5, .validation = 0.1, .test = 0.1}),
                  forge::error);
}
