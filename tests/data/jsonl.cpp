// The JSONL reader: record shapes, the accounting of every malformed line, strict mode,
// bounded line length, and composition with range-v3 views.
#include <catch2/catch.hpp>

#include <fstream>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/take.hpp>
#include <range/v3/view/transform.hpp>

#include "../support/fixtures.hpp"
#include "forge/data/jsonl.hpp"

using namespace forge::data;

namespace {
template <class R>
std::vector<R> all(std::string text, data_report& rep, jsonl_options o = {}) {
  std::vector<R> out;
  for (const R& r : parse_jsonl<R>(std::move(text), "mem.jsonl", rep, o)) out.push_back(r);
  return out;
}
}  // namespace

TEST_CASE("sft records come from message lists and from prompt/completion pairs") {
  data_report rep;
  auto rs = all<sft_record>(
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})"
      "\n"
      R"({"prompt":"2+2?","completion":"4","id":"q7"})"
      "\n"
      R"({"prompt":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}],"completion":[{"role":"assistant","content":"y"}]})"
      "\n",
      rep);
  REQUIRE(rs.size() == 3);
  CHECK(rs[0].messages == std::vector<message>{{"user", "hi"}, {"assistant", "hello"}});
  CHECK(rs[0].id == "mem.jsonl:1");
  CHECK(rs[1].messages == std::vector<message>{{"user", "2+2?"}, {"assistant", "4"}});
  CHECK(rs[1].id == "q7");
  CHECK(rs[2].messages.size() == 3);
  CHECK(rs[2].messages[0].role == "system");
  CHECK(rep.step("read").in == 3);
  CHECK(rep.step("read").out == 3);
  CHECK(rep.issues.empty());
}

TEST_CASE("preference records take explicit or implicit prompts") {
  data_report rep;
  auto rs = all<preference_record>(
      R"({"prompt":"p","chosen":"good","rejected":"bad"})"
      "\n"
      R"({"chosen":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"rejected":[{"role":"user","content":"q"},{"role":"assistant","content":"b"}]})"
      "\n",
      rep);
  REQUIRE(rs.size() == 2);
  CHECK(rs[0].prompt == std::vector<message>{{"user", "p"}});
  CHECK(rs[0].chosen == std::vector<message>{{"assistant", "good"}});
  CHECK(rs[0].rejected == std::vector<message>{{"assistant", "bad"}});
  CHECK(rs[1].prompt == std::vector<message>{{"user", "q"}});
  CHECK(rs[1].chosen == std::vector<message>{{"assistant", "a"}});
  CHECK(rs[1].rejected == std::vector<message>{{"assistant", "b"}});
}

TEST_CASE("kto and text records") {
  data_report rep;
  auto k = all<kto_record>(R"({"prompt":"p","completion":"c","label":true})"
                           "\n"
                           R"({"prompt":"p","completion":"c","label":1})"
                           "\n",
                           rep);
  REQUIRE(k.size() == 1);
  CHECK(k[0].label);
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].reason == "wrong_type");
  CHECK(rep.issues[0].line == 2);
  CHECK(rep.issues[0].detail.find("label") != std::string::npos);
  data_report rep2;
  auto t = all<text_record>("{\"text\":\"a\"}\n{\"text\":\"b\"}", rep2);  // no final newline
  REQUIRE(t.size() == 2);
  CHECK(t[1].text == "b");
}

TEST_CASE("every malformed line is reported with its line number and reason, then skipped") {
  std::string bad_utf8 = "{\"text\":\"caf\xC3\"}";  // truncated 2-byte sequence
  std::string text =
      "{\"text\":\"ok\"}\n"  // 1 ok
      "{\"text\": oops}\n"   // 2 invalid json
      + bad_utf8 +
      "\n"                        // 3 invalid utf8
      "\n"                        // 4 blank
      "{\"txt\":\"a\"}\r\n"       // 5 missing field
      "{\"text\":5}\n"            // 6 wrong type
      "[1,2]\n"                   // 7 not an object
      "{\"text\":\"fine\"}\r\n";  // 8 ok (CRLF)
  data_report rep;
  auto rs = all<text_record>(text, rep);
  REQUIRE(rs.size() == 2);
  CHECK(rs[1].text == "fine");
  REQUIRE(rep.issues.size() == 5);
  const std::vector<std::pair<std::uint64_t, std::string>> want{{2, "invalid_json"},
                                                                {3, "invalid_utf8"},
                                                                {5, "missing_field"},
                                                                {6, "wrong_type"},
                                                                {7, "wrong_type"}};
  for (std::size_t i = 0; i < want.size(); ++i) {
    CHECK(rep.issues[i].line == want[i].first);
    CHECK(rep.issues[i].reason == want[i].second);
    CHECK(rep.issues[i].file == "mem.jsonl");
  }
  // The UTF-8 fault is located: byte 13 (0-based 12) holds the truncated lead byte.
  CHECK(rep.issues[1].detail.find("column 13") != std::string::npos);
  const auto& src = rep.sources.at(0);
  CHECK(src.lines == 8);
  CHECK(src.blank_lines == 1);
  CHECK(src.records == 2);
  CHECK(src.skipped == 5);
  CHECK(src.sha256 == forge::govern::sha256_hex(text));
  const auto& st = rep.step("read");
  CHECK(st.in == 7);
  CHECK(st.out == 2);
  CHECK(st.removed.at("wrong_type") == 2);
  CHECK(st.removed.at("invalid_json") == 1);
  CHECK(st.in == st.out + rep.removed());  // nothing unaccounted for
}

TEST_CASE("strict mode throws at the first bad line with file and line") {
  data_report rep;
  try {
    all<text_record>("{\"text\":\"a\"}\n{\"text\":null}\n{bad\n", rep, {.strict = true});
    FAIL("no error thrown");
  } catch (const forge::error& e) {
    CHECK(e.file() == "mem.jsonl");
    CHECK(e.place() == "line 2");
    CHECK(e.expected() == "string");
    CHECK(e.found() == "null");
  }
}

TEST_CASE("lines over the length limit are errors and do not stop the stream") {
  const std::string big(5000, 'x');
  std::string text = "{\"text\":\"" + big + "\"}\n{\"text\":\"small\"}\n";
  auto path = forge::test::scratch("data_jsonl") / "long.jsonl";
  std::ofstream(path) << text;
  data_report rep;
  std::vector<std::string> got;
  for (const auto& r : read_jsonl<text_record>(path, rep, {.max_line_bytes = 1000}))
    got.push_back(r.text);
  REQUIRE(got == std::vector<std::string>{"small"});
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].reason == "line_too_long");
  CHECK(rep.issues[0].line == 1);
  CHECK(rep.sources[0].sha256 == forge::govern::sha256_hex(text));
  CHECK(rep.sources[0].bytes == text.size());
}

TEST_CASE("file reading crosses chunk boundaries and matches in-memory parsing") {
  // 3000 records of varying size: the 64 KiB read buffer splits lines at arbitrary points.
  std::string text;
  for (int i = 0; i < 3000; ++i)
    text += "{\"text\":\"" + std::string(static_cast<std::size_t>(i % 97), 'a' + i % 26) + "\"}\n";
  auto path = forge::test::scratch("data_jsonl_chunks") / "many.jsonl";
  std::ofstream(path) << text;
  data_report r1, r2;
  auto a = read_jsonl<text_record>(path, r1) | ranges::to<std::vector>();
  auto b = all<text_record>(text, r2);
  REQUIRE(a.size() == 3000);
  REQUIRE(b.size() == 3000);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a[i].text == b[i].text);
}

TEST_CASE("the reader composes with range-v3 views lazily") {
  data_report rep;
  std::string text;
  for (int i = 0; i < 100; ++i) text += "{\"text\":\"n" + std::to_string(i) + "\"}\n";
  auto v = parse_jsonl<text_record>(text, "mem", rep) |
           ranges::views::filter([](const text_record& r) { return r.text.size() == 2; }) |
           ranges::views::transform([](const text_record& r) { return r.text; }) |
           ranges::views::take(3);
  auto got = v | ranges::to<std::vector>();
  CHECK(got == std::vector<std::string>{"n0", "n1", "n2"});
  // Lazy: the reader stopped after the third match, at line 3.
  CHECK(rep.sources[0].lines <= 4);
}

TEST_CASE("nesting depth is bounded") {
  data_report rep;
  std::string deep = std::string(100, '[') + std::string(100, ']');
  auto rs = all<text_record>(deep + "\n", rep);
  CHECK(rs.empty());
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].reason == "invalid_json");
}

TEST_CASE("a missing file is a clear error") {
  data_report rep;
  CHECK_THROWS_AS(read_jsonl<text_record>("/nonexistent/x.jsonl", rep), forge::error);
}

TEST_CASE("a number that overflows a double is invalid JSON, not a crash") {
  data_report rep;
  auto rs = all<text_record>("{\"text\":\"a\",\"n\":1e999}\n", rep);
  CHECK(rs.empty());
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].reason == "invalid_json");
}

TEST_CASE("long lines spanning several read chunks are joined or rejected correctly") {
  // The reader fills 64 KiB chunks; these lines cross two to three chunk boundaries.
  const std::string mid(150000, 'm');
  const std::string huge(200000, 'h');
  const std::string text =
      "{\"text\":\"" + mid + "\"}\n{\"text\":\"" + huge + "\"}\n{\"text\":\"end\"}";
  auto path = forge::test::scratch("data_jsonl_long") / "long.jsonl";
  std::ofstream(path) << text;
  data_report rep;
  std::vector<std::size_t> sizes;
  for (const auto& r : read_jsonl<text_record>(path, rep, {.max_line_bytes = 180000}))
    sizes.push_back(r.text.size());
  CHECK(sizes == std::vector<std::size_t>{150000, 3});
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].line == 2);
  CHECK(rep.issues[0].reason == "line_too_long");
  CHECK(rep.sources[0].lines == 3);
  jsonl_view<text_record> empty;
  CHECK_THROWS_AS(empty.begin(), forge::error);
}

namespace {
// A user-defined shape: an evaluation item with question and answer fields.
struct qa_record {
  std::string id;
  std::string question, answer;
  static qa_record parse(const nlohmann::json& j) {
    if (!j.is_object()) throw record_fault{"wrong_type", "<record>", "object", "other"};
    return {"", detail::string_field(j, "question"), detail::string_field(j, "answer")};
  }
  nlohmann::json content() const { return {{"question", question}, {"answer", answer}}; }
  template <class F>
  void for_each_text(F&& f) {
    f(question);
    f(answer);
  }
  template <class F>
  void for_each_text(F&& f) const {
    f(question);
    f(answer);
  }
};
static_assert(Record<qa_record>);
}  // namespace

TEST_CASE("a user-defined record shape reads like the built-in ones") {
  data_report rep;
  auto rs = all<qa_record>("{\"question\":\"q?\",\"answer\":\"a\"}\n{\"question\":\"q2\"}\n", rep);
  REQUIRE(rs.size() == 1);
  CHECK(joined_text(rs[0]) == "q?\na");
  REQUIRE(rep.issues.size() == 1);
  CHECK(rep.issues[0].reason == "missing_field");
  CHECK(rep.issues[0].detail == "missing_field 'answer'");
}
