// Fuzzing the chat-template interpreter (built with ASan and UBSan): seeded mutations of real
// templates are parsed and rendered; the only exception allowed to escape is forge::error,
// and nothing may crash, overflow the stack or run away (render limits are set low).

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/chat_template.hpp"

using json = nlohmann::ordered_json;

namespace {

/// SplitMix64: a tiny deterministic generator, the same on every platform.
struct splitmix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n ? static_cast<std::size_t>(next() % n) : 0; }
};

std::vector<std::string> corpus() {
  const auto data = forge::test::source_dir() / "tests" / "text" / "data";
  std::vector<std::string> out;
  for (const char* m : {"qwen2_7b_instruct", "meta_llama3_8b_instruct", "mistral_7b_instruct_v01",
                        "mistral_7b_instruct_v03"}) {
    auto cfg = json::parse(forge::io::read_file(data / "models" / m / "tokenizer_config.json"));
    out.push_back(cfg.at("chat_template").get<std::string>());
  }
  out.push_back(forge::io::read_file(forge::test::llama_a() / "model" / "chat_template.jinja"));
  auto cases = json::parse(forge::io::read_file(data / "jinja_cases.json"));
  for (const auto& c : cases.at("cases")) out.push_back(c.at("template").get<std::string>());
  return out;
}

// Fragments that steer mutations toward interesting syntax.
const std::vector<std::string> fragments = {"{{",
                                            "}}",
                                            "{%",
                                            "%}",
                                            "{#",
                                            "#}",
                                            "{%-",
                                            "-%}",
                                            "{{-",
                                            "-}}",
                                            "(",
                                            ")",
                                            "[",
                                            "]",
                                            "{",
                                            "}",
                                            "'",
                                            "\"",
                                            "\\",
                                            "|",
                                            ",",
                                            ":",
                                            ".",
                                            "~",
                                            "+",
                                            "-",
                                            "*",
                                            "**",
                                            "//",
                                            "%",
                                            "==",
                                            "!=",
                                            "<",
                                            " if ",
                                            " else ",
                                            " elif ",
                                            " endif ",
                                            " for ",
                                            " in ",
                                            " endfor ",
                                            " set ",
                                            " endset ",
                                            " macro ",
                                            " endmacro ",
                                            " not ",
                                            " and ",
                                            " or ",
                                            " is ",
                                            " defined ",
                                            " none ",
                                            " true ",
                                            " break ",
                                            " continue ",
                                            " raw ",
                                            " endraw ",
                                            " filter ",
                                            " with ",
                                            " namespace(",
                                            "range(",
                                            "loop.",
                                            "loop.index",
                                            "messages",
                                            "messages[0]",
                                            "message['content']",
                                            "| tojson",
                                            "| trim",
                                            "| length",
                                            "| join(', ')",
                                            "| selectattr('role', 'equalto', 'user')",
                                            "| map(attribute='x')",
                                            "raise_exception('x')",
                                            "ns.x = ns.x + [1]",
                                            "[::-1]",
                                            "[1:]",
                                            "1e308",
                                            "9223372036854775807",
                                            "-9223372036854775808",
                                            "'\\u00e9'",
                                            "'\\x'",
                                            "\n",
                                            "  ",
                                            "é",
                                            "\xff"};

std::string mutate(const std::string& base, const std::vector<std::string>& all, splitmix& r) {
  std::string s = base;
  const std::size_t edits = 1 + r.below(4);
  for (std::size_t e = 0; e < edits; ++e) {
    const std::size_t pos = r.below(s.size() + 1);
    switch (r.below(6)) {
      case 0:  // flip a byte
        if (!s.empty()) s[r.below(s.size())] = static_cast<char>(r.next());
        break;
      case 1:  // delete a span
        if (!s.empty()) s.erase(pos > 0 ? pos - 1 : 0, 1 + r.below(8));
        break;
      case 2:  // insert a syntax fragment
      case 3:
        s.insert(pos, fragments[r.below(fragments.size())]);
        break;
      case 4: {  // duplicate a span
        if (s.empty()) break;
        std::size_t a = r.below(s.size()), n = 1 + r.below(40);
        s.insert(pos, s.substr(a, n));
        break;
      }
      default: {  // splice in part of another template
        const std::string& o = all[r.below(all.size())];
        if (o.empty()) break;
        std::size_t a = r.below(o.size()), n = 1 + r.below(80);
        s.insert(pos, o.substr(a, n));
      }
    }
  }
  return s;
}

json context() {
  return json::parse(R"({
    "messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "Hello é"},
      {"role": "assistant", "content": " hi ", "tool_calls": [{"id": "abc123xyz",
        "function": {"name": "f", "arguments": {"x": 1}}}]},
      {"role": "tool", "tool_call_id": "abc123xyz", "content": {"content": [1, 2.5, null]}},
      {"role": "user", "content": ""}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": 1}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "d": {"a": 1}, "x": 3, "xs": [3, 1, 2], "s": "héllo", "name": "n", "n": 2, "y": "set"
  })");
}

}  // namespace

TEST_CASE("mutated real templates raise only forge::error") {
  const auto all = corpus();
  REQUIRE(all.size() >= 90);
  const json ctx = context();
  forge::text::render_limits lim;
  lim.max_steps = 20'000;
  lim.max_output_bytes = 1 << 20;
  lim.max_range = 1000;
  splitmix r{20260224};
  const int iterations = 100'000;
  int parsed = 0, rendered = 0, errors = 0;
  for (int i = 0; i < iterations; ++i) {
    const std::string src = mutate(all[r.below(all.size())], all, r);
    try {
      auto t = forge::text::chat_template::parse(src, "<fuzz>");
      ++parsed;
      t.render(ctx, lim);
      ++rendered;
    } catch (const forge::error& e) {
      ++errors;
      // Every error names the template; syntax and runtime errors also name a place.
      if (e.file() != "<fuzz>") FAIL("error without the template's name: " << e.what());
    } catch (const std::exception& e) {
      FAIL("non-forge exception for template:\n" << src << "\n" << e.what());
    }
  }
  // The mutations must exercise both outcomes, or the test proves nothing.
  INFO("parsed " << parsed << ", rendered " << rendered << ", errors " << errors);
  CHECK(parsed > iterations / 10);
  CHECK(rendered > iterations / 20);
  CHECK(errors > iterations / 10);
}
