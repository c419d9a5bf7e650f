// SFT encoding with the real text layer: the fixture's tokenizer.json and chat template.
// The trained positions must be exactly the tokens of each assistant reply and its closing
// "<|im_end|>\n" (what the template writes after a reply); everything else is ignored. The
// reference is computed independently, by decoding the trained runs back to text.

#include <catch2/catch.hpp>

#include "../support/fixtures.hpp"
#include "forge/data/sft.hpp"
#include "forge/text/chat_template.hpp"
#include "forge/text/load_tokenizer.hpp"

using namespace forge;

namespace {
struct fixture_text {
  text::any_tokenizer tok = text::load_tokenizer(test::llama_a() / "model");
  text::chat_template tmpl = text::load_chat_template(test::llama_a() / "model");
  std::string render(const nlohmann::json& messages, bool add_generation_prompt) const {
    return text::apply_chat_template(tmpl, nlohmann::ordered_json::parse(messages.dump()),
                                     {.add_generation_prompt = add_generation_prompt});
  }
};
}  // namespace

TEST_CASE("SFT labels cover exactly the assistant replies of a rendered conversation") {
  fixture_text ft;
  auto renderer = [&](const nlohmann::json& m, bool gen) { return ft.render(m, gen); };
  const std::vector<data::message> conv = {{"system", "You convert units."},
                                           {"user", "3 km in m?"},
                                           {"assistant", "3000 m"},
                                           {"user", "and 2.5 kg in g?"},
                                           {"assistant", "2500 g, since 1 kg = 1000 g."}};
  auto ex = data::encode_sft(conv, ft.tok, renderer);
  REQUIRE(ex.has_value());

  // The ids are the tokenization of the whole rendered conversation.
  nlohmann::json all = nlohmann::json::array();
  for (auto& m : conv) all.push_back({{"role", m.role}, {"content", m.content}});
  CHECK(ex->input_ids == ft.tok.encode(ft.render(all, false), false));

  // Collect the trained runs and decode each.
  std::vector<std::string> runs;
  for (std::size_t i = 0; i < ex->labels.size();) {
    if (ex->labels[i] == data::ignore_index) {
      ++i;
      continue;
    }
    std::vector<std::int32_t> run;
    for (; i < ex->labels.size() && ex->labels[i] != data::ignore_index; ++i) {
      CHECK(ex->labels[i] == ex->input_ids[i]);
      run.push_back(ex->labels[i]);
    }
    runs.push_back(ft.tok.decode(run));
  }
  REQUIRE(runs.size() == 2);
  CHECK(runs[0] == "3000 m<|im_end|>\n");
  CHECK(runs[1] == "2500 g, since 1 kg = 1000 g.<|im_end|>\n");

  // Only the last turn when asked.
  auto last = data::encode_sft(conv, ft.tok, renderer, {.all_assistant_turns = false});
  REQUIRE(last.has_value());
  CHECK(last->trained() < ex->trained());
  CHECK(last->trained() == ft.tok.encode("2500 g, since 1 kg = 1000 g.<|im_end|>\n", false).size());
}
