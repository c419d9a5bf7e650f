// Chat templates: the Jinja interpreter against jinja2 and the Hugging Face fixture.
//
// data/jinja_cases.json holds one small template per construct with the text jinja2 3.1
// renders in transformers' environment (or the error it raises); data/make_jinja_cases.py
// regenerates it. Every case must match exactly: rendering is text, there is no tolerance.

#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/chat_template.hpp"

using forge::text::apply_chat_template;
using forge::text::chat_options;
using forge::text::chat_template;
using json = nlohmann::ordered_json;

namespace {

std::filesystem::path data_dir() {
  return forge::test::source_dir() / "tests" / "text" / "data";
}

json read_json(const std::filesystem::path& p) {
  return json::parse(forge::io::read_file(p));
}

std::string render(const std::string& src, const json& ctx = json::object()) {
  return chat_template::parse(src, "<test>").render(ctx);
}

/// The forge::error a template raises while parsing or rendering.
forge::error error_of(const std::string& src, const json& ctx = json::object()) {
  try {
    render(src, ctx);
  } catch (const forge::error& e) {
    return e;
  }
  FAIL("expected a forge::error for template: " << src);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("the fixture's chat case renders exactly as transformers did") {
  // tokenizer_cases.json's "chat" entry: the messages and the text transformers'
  // apply_chat_template(messages, tokenize=False, add_generation_prompt=True) produced.
  const auto dir = forge::test::llama_a();
  const json cases = read_json(dir / "tokenizer_cases.json");
  const json& chat = cases.at("chat");
  const auto tmpl = forge::text::load_chat_template(dir / "model");
  chat_options base;
  base.add_generation_prompt = true;
  auto opt = forge::text::chat_options_from_config(dir / "model", base);
  CHECK(opt.bos_token == "<|begin_of_text|>");
  CHECK(opt.eos_token == "<|end_of_text|>");
  CHECK(apply_chat_template(tmpl, chat.at("messages"), opt) == chat.at("text").get<std::string>());

  // Without the generation prompt the text ends after the last turn.
  opt.add_generation_prompt = false;
  std::string expected = chat.at("text").get<std::string>();
  expected.resize(expected.size() - std::string("<|im_start|>assistant\n").size());
  CHECK(apply_chat_template(tmpl, chat.at("messages"), opt) == expected);
}

TEST_CASE("every construct renders as jinja2 renders it") {
  const json file = read_json(data_dir() / "jinja_cases.json");
  REQUIRE(file.at("cases").size() >= 90);
  for (const auto& c : file.at("cases")) {
    const std::string name = c.at("name");
    const std::string tmpl = c.at("template");
    INFO("case: " << name << "\ntemplate: " << tmpl);
    if (c.contains("expected")) {
      std::string got;
      REQUIRE_NOTHROW(got = render(tmpl, c.at("context")));
      CHECK(got == c.at("expected").get<std::string>());
    } else {
      // jinja2 raised: forge must raise too, with the same message (raise_exception's text,
      // Undefined's "'x' is undefined", Python's TypeError wording where forge matches it).
      auto e = error_of(tmpl, c.at("context"));
      const std::string want = c.at("error");
      INFO("forge: " << e.what() << "\njinja2: " << want);
      CHECK(e.file() == "<test>");
      CHECK(e.place().rfind("line 1, column ", 0) == 0);
      if (name == "raise_exception" || name.starts_with("undefined") || name == "division by zero")
        CHECK(e.problem() == want);
    }
  }
}

TEST_CASE("raise_exception becomes a forge::error carrying the message and its place") {
  auto e = error_of("line one\n  {{ raise_exception('Conversation roles must alternate') }}");
  CHECK(e.problem() == "Conversation roles must alternate");
  CHECK(e.place() == "line 2, column 6");
  CHECK(std::string(e.what()).find("<test>") != std::string::npos);
}

TEST_CASE("unsupported constructs are errors naming line and column") {
  SECTION("an unsupported tag") {
    auto e = error_of("ok\n{% include 'other.jinja' %}");
    CHECK(e.problem() == "unsupported tag 'include'");
    CHECK(e.place() == "line 2, column 4");
  }
  SECTION("an unknown filter") {
    auto e = error_of("{{ x }}\n\n   {{ x | frobnicate }}");
    CHECK(e.problem() == "unknown filter 'frobnicate'");
    CHECK(e.place() == "line 3, column 11");
  }
  SECTION("an unknown filter inside a loop body, even one never run") {
    auto e = error_of("{% if false %}{% for m in [] %}\n{{ m | nope }}{% endfor %}{% endif %}");
    CHECK(e.problem() == "unknown filter 'nope'");
    CHECK(e.place() == "line 2, column 8");
  }
  SECTION("an unknown filter in a branch is reported when the branch runs") {
    auto e = error_of("{% if x %}\n  {{ 1 | nope }}{% endif %}", json{{"x", true}});
    CHECK(e.problem() == "no filter named 'nope'");
    CHECK(e.place() == "line 2, column 10");
  }
  SECTION("an unknown test") {
    auto e = error_of("{{ x is prime }}");
    CHECK(e.problem() == "unknown test 'prime'");
    CHECK(e.place() == "line 1, column 9");
  }
  SECTION("recursive loops") {
    auto e = error_of("{% for x in xs recursive %}{% endfor %}");
    CHECK(e.place() == "line 1, column 16");
  }
  SECTION("star arguments") {
    auto e = error_of("{{ f(*args) }}");
    CHECK(e.place() == "line 1, column 6");
  }
  SECTION("break outside a loop") {
    auto e = error_of("{% if true %}{% break %}{% endif %}");
    CHECK(e.problem() == "'break' outside of a loop");
    CHECK(e.place() == "line 1, column 17");
  }
  SECTION("a stray end tag") {
    auto e = error_of("a\n{% endfor %}");
    CHECK(e.problem() == "unexpected 'endfor' tag");
    CHECK(e.place() == "line 2, column 4");
  }
}

TEST_CASE("malformed templates are errors naming line and column") {
  SECTION("unterminated expression tag") {
    auto e = error_of("ab\ncd {{ x ");
    CHECK(e.problem() == "unterminated expression tag");
    CHECK(e.place() == "line 2, column 4");
  }
  SECTION("unterminated block tag") {
    auto e = error_of("{% if x");
    CHECK(e.problem() == "unterminated block tag");
    CHECK(e.place() == "line 1, column 1");
  }
  SECTION("unterminated comment") {
    auto e = error_of("x {# never closed");
    CHECK(e.problem() == "unterminated comment");
    CHECK(e.place() == "line 1, column 3");
  }
  SECTION("unclosed block") {
    auto e = error_of("{% for m in messages %}\n{{ m }}\n");
    CHECK(e.problem() == "unclosed block");
    CHECK(e.expected() == "'else' or 'endfor'");
  }
  SECTION("unterminated string") {
    auto e = error_of("{{ 'abc }}");
    CHECK(e.problem() == "unterminated string literal");
    CHECK(e.place() == "line 1, column 4");
  }
  SECTION("unexpected character") {
    auto e = error_of("{{ a $ b }}");
    CHECK(e.problem() == "unexpected character in tag");
    CHECK(e.place() == "line 1, column 6");
  }
  SECTION("bad expression") {
    auto e = error_of("{{ 1 + }}");
    CHECK(e.place() == "line 1, column 8");
  }
  SECTION("unbalanced bracket") {
    auto e = error_of("{{ (1 + 2 }}");
    CHECK(e.problem() == "unbalanced bracket");
    CHECK(e.expected() == "')'");
    CHECK(e.place() == "line 1, column 11");
  }
  SECTION("columns count code points") {
    auto e = error_of("é€ {{ x | nope }}");
    CHECK(e.place() == "line 1, column 11");
  }
}

TEST_CASE("runtime errors name the expression's place") {
  auto e = error_of("{% for m in messages %}\n  {{ m.content + 1 }}\n{% endfor %}",
                    json{{"messages", json::array({json{{"content", "x"}}})}});
  CHECK(e.place() == "line 2, column 16");
  CHECK(e.problem() == "unsupported operand type(s) for +: 'str' and 'int'");
  auto u = error_of("{{ x.y.z }}");
  CHECK(u.problem() == "'x' is undefined");
  auto n = error_of("{% for x in 5 %}{% endfor %}");
  CHECK(n.problem() == "'int' object is not iterable");
}

TEST_CASE("render limits stop runaway templates with an error") {
  forge::text::render_limits lim;
  lim.max_steps = 1000;
  auto t = chat_template::parse(
      "{% for i in range(100) %}{% for j in range(100) %}x{% endfor %}{% endfor %}");
  CHECK_THROWS_AS(t.render(json::object(), lim), forge::error);
  lim = {};
  lim.max_output_bytes = 100;
  CHECK_THROWS_AS(chat_template::parse("{{ 'ab' * 1000 }}").render(json::object(), lim),
                  forge::error);
  CHECK_THROWS_AS(chat_template::parse("{% for i in range(60) %}{{ 'abc' }}{% endfor %}")
                      .render(json::object(), lim),
                  forge::error);
  lim = {};
  // A macro that calls itself forever hits the depth limit, not the stack's end.
  CHECK_THROWS_AS(chat_template::parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
                      .render(json::object(), lim),
                  forge::error);
  // Deep nesting in the source is refused while parsing.
  std::string deep(500, '(');
  CHECK_THROWS_AS(chat_template::parse("{{ " + deep + "1" + std::string(500, ')') + " }}"),
                  forge::error);
  std::string ifs;
  for (int i = 0; i < 200; ++i) ifs += "{% if true %}";
  CHECK_THROWS_AS(chat_template::parse(ifs), forge::error);
  // A namespace cannot grow an unboundedly nested list.
  CHECK_THROWS_AS(chat_template::parse("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}"
                                       "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}")
                      .render(json::object()),
                  forge::error);
}

TEST_CASE("context key order is kept with ordered_json and sorted with json") {
  const std::string src = "{% for k, v in d.items() %}{{ k }}{% endfor %} {{ d | tojson }}";
  auto t = chat_template::parse(src);
  json ordered = json::parse(R"({"d": {"b": 1, "a": 2}})");
  CHECK(t.render(ordered) == R"(ba {"b": 1, "a": 2})");
  nlohmann::json sorted = nlohmann::json::parse(R"({"d": {"b": 1, "a": 2}})");
  CHECK(t.render(sorted) == R"(ab {"a": 2, "b": 1})");
  CHECK_THROWS_AS(t.render(json::array()), forge::error);
}

TEST_CASE("apply_chat_template passes transformers' variables") {
  auto t = chat_template::parse(
      "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ documents is none }}|"
      "{{ add_generation_prompt }}|{{ custom }}|{{ messages | length }}");
  chat_options opt;
  opt.add_generation_prompt = true;
  opt.bos_token = "<s>";
  opt.eos_token = "</s>";
  opt.extra["custom"] = "yes";
  CHECK(apply_chat_template(t, json::array({json{{"role", "user"}, {"content", "x"}}}), opt) ==
        "<s>|</s>|True|True|True|yes|1");
  // Without special tokens they are undefined, and print as nothing.
  CHECK(apply_chat_template(t, json::array(), {}) == "||True|True|False||0");
  CHECK_THROWS_AS(apply_chat_template(t, json::object(), {}), forge::error);
}

TEST_CASE("load_chat_template reads chat_template.jinja or tokenizer_config.json") {
  const auto dir = forge::test::scratch("chat_template_load");
  const auto write = [&](const std::string& name, const std::string& text) {
    forge::io::write_atomic(dir / name, text);
  };
  SECTION("string form") {
    write(
        "tokenizer_config.json",
        R"({"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",)"
        R"( "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": "<pad>"})");
    auto t = forge::text::load_chat_template(dir);
    auto opt = forge::text::chat_options_from_config(dir);
    CHECK(opt.bos_token == "<s>");
    CHECK(opt.extra.at("pad_token") == "<pad>");
    CHECK(apply_chat_template(t, json::parse(R"([{"role": "user", "content": "hi"}])"), opt) ==
          "<s>hi");
  }
  SECTION("named templates pick default, or the one asked for") {
    write("tokenizer_config.json",
          R"({"chat_template": [{"name": "default", "template": "D{{ messages | length }}"},)"
          R"( {"name": "tool_use", "template": "T{{ tools | length }}"}]})");
    CHECK(forge::text::load_chat_template(dir).render(json{{"messages", json::array()}}) == "D0");
    CHECK(forge::text::load_chat_template(dir, "tool_use")
              .render(json{{"tools", json::array({1})}}) == "T1");
    CHECK_THROWS_AS(forge::text::load_chat_template(dir, "rag"), forge::error);
  }
  SECTION("chat_template.jinja wins over the config") {
    write("tokenizer_config.json", R"({"chat_template": "config"})");
    write("chat_template.jinja", "file\n");
    CHECK(forge::text::load_chat_template(dir).render(json::object()) == "file");
  }
  SECTION("missing or malformed") {
    CHECK_THROWS_AS(forge::text::load_chat_template(dir), forge::error);
    write("tokenizer_config.json", R"({"bos_token": "<s>"})");
    CHECK_THROWS_AS(forge::text::load_chat_template(dir), forge::error);
    write("tokenizer_config.json", R"({"chat_template": 5})");
    CHECK_THROWS_AS(forge::text::load_chat_template(dir), forge::error);
    write("tokenizer_config.json", R"({"chat_template": "{% if %}"})");
    try {
      forge::text::load_chat_template(dir);
      FAIL("expected an error");
    } catch (const forge::error& e) {
      CHECK(e.file() == (dir / "tokenizer_config.json").string());
      CHECK(e.place() == "line 1, column 7");
    }
    write("tokenizer_config.json", "{not json");
    CHECK_THROWS_AS(forge::text::load_chat_template(dir), forge::error);
  }
}
