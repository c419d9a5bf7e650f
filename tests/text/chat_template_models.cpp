// Published chat templates render as transformers renders them.
//
// data/models/<model>/tokenizer_config.json hold the `chat_template` and special tokens
// copied from each model's published tokenizer_config.json (the "_source" field names it):
//   Qwen/Qwen2-7B-Instruct                   ChatML, with a default system prompt
//   meta-llama/Meta-Llama-3-8B-Instruct      header tokens, `| trim`, bos on the first turn
//   mistralai/Mistral-7B-Instruct-v0.1       [INST] turns, raise_exception on bad order
//   mistralai/Mistral-7B-Instruct-v0.3       namespace(), selectattr, tools and tool calls
// The expected strings were written by reading each template, and every one was confirmed
// with jinja2 3.1.6 in transformers' environment (trim_blocks, lstrip_blocks, tojson as
// json.dumps(ensure_ascii=False), raise_exception) on the same messages. Text must match
// exactly: there is no tolerance in a prompt.

#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/text/chat_template.hpp"

using json = nlohmann::ordered_json;

namespace {

std::filesystem::path model_dir(const std::string& name) {
  return forge::test::source_dir() / "tests" / "text" / "data" / "models" / name;
}

const json system_msg = {{"role", "system"}, {"content", "You are a pirate."}};
const json user1 = {{"role", "user"}, {"content", "Hello, who are you?"}};
// Leading and trailing spaces show which templates trim the content.
const json assistant1 = {{"role", "assistant"}, {"content", "  Arr, a humble assistant.  "}};
const json user2 = {{"role", "user"}, {"content", "Tell me a joke."}};

const json with_system = json::array({system_msg, user1, assistant1, user2});
const json without_system = json::array({user1, assistant1, user2});
const json two_users = json::array({user1, user2});

/// Renders with the model's own template and special tokens, as apply_chat_template does.
std::string render(const std::string& model, const json& messages, bool add_generation_prompt,
                   const json& tools = nullptr) {
  const auto dir = model_dir(model);
  forge::text::chat_options base;
  base.add_generation_prompt = add_generation_prompt;
  base.tools = tools;
  auto opt = forge::text::chat_options_from_config(dir, base);
  return forge::text::apply_chat_template(forge::text::load_chat_template(dir), messages, opt);
}

std::string error_message(const std::string& model, const json& messages) {
  try {
    render(model, messages, false);
  } catch (const forge::error& e) {
    return e.problem();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("Qwen2-Instruct (ChatML) renders as transformers does") {
  const std::string m = "qwen2_7b_instruct";
  const std::string turns =
      "<|im_start|>user\nHello, who are you?<|im_end|>\n"
      "<|im_start|>assistant\n  Arr, a humble assistant.  <|im_end|>\n"
      "<|im_start|>user\nTell me a joke.<|im_end|>\n";
  SECTION("a system message is used as given") {
    CHECK(render(m, with_system, false) ==
          "<|im_start|>system\nYou are a pirate.<|im_end|>\n" + turns);
    CHECK(render(m, with_system, true) ==
          "<|im_start|>system\nYou are a pirate.<|im_end|>\n" + turns + "<|im_start|>assistant\n");
  }
  SECTION("without one the template adds its default system prompt") {
    const std::string sys = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
    CHECK(render(m, without_system, false) == sys + turns);
    CHECK(render(m, without_system, true) == sys + turns + "<|im_start|>assistant\n");
  }
}

TEST_CASE("Meta-Llama-3-Instruct renders as transformers does") {
  const std::string m = "meta_llama3_8b_instruct";
  // Content is trimmed (`| trim`), bos_token starts the first turn only.
  const std::string turns =
      "<|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\nArr, a humble assistant.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>";
  const std::string prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  CHECK(
      render(m, with_system, false) ==
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>" +
          turns);
  CHECK(
      render(m, with_system, true) ==
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>" +
          turns + prompt);
  CHECK(render(m, without_system, false) == "<|begin_of_text|>" + turns);
  CHECK(render(m, without_system, true) == "<|begin_of_text|>" + turns + prompt);
  // This template does not check the order of roles.
  CHECK(render(m, two_users, false) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>");
}

TEST_CASE("Mistral-7B-Instruct-v0.1 renders as transformers does") {
  const std::string m = "mistral_7b_instruct_v01";
  // No trimming; each assistant turn ends with eos_token and a space; the template has no
  // generation prompt, so add_generation_prompt changes nothing.
  const std::string expected =
      "<s>[INST] Hello, who are you? [/INST]  Arr, a humble assistant.  </s> [INST] Tell me a "
      "joke. [/INST]";
  CHECK(render(m, without_system, false) == expected);
  CHECK(render(m, without_system, true) == expected);
  SECTION("roles must alternate, and a system message is not accepted") {
    CHECK(error_message(m, two_users) ==
          "Conversation roles must alternate user/assistant/user/assistant/...");
    CHECK(error_message(m, with_system) ==
          "Conversation roles must alternate user/assistant/user/assistant/...");
    // A tool turn where an assistant turn belongs passes the order check, then is refused.
    CHECK(error_message(m, json::array({user1, json{{"role", "tool"}, {"content", "x"}}})) ==
          "Only user and assistant roles are supported!");
  }
}

TEST_CASE("Mistral-7B-Instruct-v0.3 renders as transformers does") {
  const std::string m = "mistral_7b_instruct_v03";
  SECTION("the system message is placed before the last user message") {
    const std::string expected =
        "<s>[INST] Hello, who are you?[/INST] Arr, a humble assistant.</s>"
        "[INST] You are a pirate.\n\nTell me a joke.[/INST]";
    CHECK(render(m, with_system, false) == expected);
    CHECK(render(m, with_system, true) == expected);
  }
  SECTION("without a system message") {
    CHECK(render(m, without_system, false) ==
          "<s>[INST] Hello, who are you?[/INST] Arr, a humble assistant.</s>[INST] Tell me a "
          "joke.[/INST]");
  }
  SECTION("roles must alternate") {
    CHECK(error_message(m, two_users) ==
          "After the optional system message, conversation roles must alternate "
          "user/assistant/user/assistant/...");
  }
  SECTION("tools, a tool call and its result") {
    const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
        "description": "Get the weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
    const json messages = json::array(
        {user1,
         json::parse(R"({"role": "assistant", "tool_calls": [{"id": "abc123xyz", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]})"),
         json::parse(R"({"role": "tool", "tool_call_id": "abc123xyz", "content": "22C"})"),
         json::parse(R"({"role": "assistant", "content": "It is 22C."})"), user2});
    // The tool list goes before the last user message; the tool call is the function's
    // JSON without its closing brace, then the id; tool content is printed with `string`.
    CHECK(render(m, messages, true, tools) ==
          "<s>[INST] Hello, who are you?[/INST]"
          "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": "
          "\"abc123xyz\"}]</s>"
          "[TOOL_RESULTS] {\"content\": 22C, \"call_id\": \"abc123xyz\"}[/TOOL_RESULTS] It is "
          "22C.</s>"
          "[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
          "\"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", "
          "\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}]"
          "[/AVAILABLE_TOOLS][INST] Tell me a joke.[/INST]");
    // A tool call id of the wrong length is refused by the template itself.
    json bad = messages;
    bad[1]["tool_calls"][0]["id"] = "short";
    CHECK(error_message(m, bad) == "Tool call IDs should be alphanumeric strings with length 9!");
  }
}

TEST_CASE("continue_final_message stops right after a prefilled assistant reply") {
  // transformers cuts the rendered text after the stripped final content and right-strips it;
  // checked with jinja2 and the same slicing in Python.
  const auto dir = model_dir("meta_llama3_8b_instruct");
  const auto t = forge::text::load_chat_template(dir);
  forge::text::chat_options opt = forge::text::chat_options_from_config(dir);
  opt.continue_final_message = true;
  json messages =
      json::array({user1, json{{"role", "assistant"}, {"content", "  The answer is "}}});
  CHECK(forge::text::apply_chat_template(t, messages, opt) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe answer is");
  opt.add_generation_prompt = true;
  CHECK_THROWS_AS(forge::text::apply_chat_template(t, messages, opt), forge::error);
}
