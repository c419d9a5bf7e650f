// The committed built-in model: it loads, its held-out perplexity is far below uniform,
// greedy generation stays in the corpus' domain, and its provenance matches the regenerated
// corpus and tokenizer.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/backend/backend.hpp"
#include "forge/builtin/chat.hpp"
#include "forge/builtin/corpus.hpp"
#include "forge/builtin/model.hpp"
#include "forge/builtin/tasks.hpp"
#include "forge/builtin/tokenizer.hpp"
#include "forge/eval/task.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/model/generate.hpp"
#include "forge/text/bpe_trainer.hpp"
#include "forge/train/trainer.hpp"

namespace fb = forge::builtin;
using be_t = forge::backend::simd<>;

namespace {
nlohmann::json provenance() {
  return nlohmann::json::parse(forge::io::read_file(fb::model_dir() / "provenance.json"));
}
}  // namespace

TEST_CASE("the built-in model loads with its tokenizer and chat template") {
  auto m = fb::load_model();
  const auto tok = fb::load_tokenizer();
  REQUIRE(m.config.vocab_size == std::int64_t(tok.vocab_size()));
  REQUIRE(m.config == [&] {
    auto c = fb::model_config_for(m.config.vocab_size, 256);
    c.torch_dtype = forge::dtype::bf16;  // stored as bf16
    return c;
  }());
  REQUIRE(m.config.parameter_count() == provenance().at("parameters").get<std::int64_t>());
  REQUIRE(tok.bos_id() == 0);
  REQUIRE(tok.eos_id() == tok.token_to_id(fb::im_end_token));
  REQUIRE(tok.chat_template() == fb::chat_template_source());
}

TEST_CASE("held-out perplexity of the built-in model is far below uniform") {
  auto m = fb::load_model();
  const auto tok = fb::load_tokenizer();
  const auto docs = fb::heldout_text(provenance().at("seed").get<std::uint64_t>(), 60);
  std::vector<std::int32_t> stream;
  for (const auto& d : docs) {
    const auto ids = tok.encode(d, false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  std::vector<forge::data::sft_example> rows;
  for (std::size_t i = 0; i + 256 <= stream.size(); i += 256) {
    forge::data::sft_example e;
    e.input_ids.assign(stream.begin() + std::ptrdiff_t(i),
                       stream.begin() + std::ptrdiff_t(i + 256));
    e.labels = e.input_ids;
    rows.push_back(std::move(e));
  }
  REQUIRE(rows.size() >= 8);
  const double loss = forge::train::mean_loss(
      be_t{}, m, std::span<const forge::data::sft_example>(rows), 4, *tok.pad_id());
  const double ppl = std::exp(loss), uniform = double(m.config.vocab_size);
  WARN("held-out loss " << loss << " nats/token, perplexity " << ppl << " (uniform " << uniform
                        << ", pre-training run measured "
                        << provenance().at("heldout_perplexity").get<double>() << " in f32)");
  // Uniform is 2048. The training run measured ~2.0 with f32 weights; bf16 storage and a
  // different slice of held-out text move that by a few percent, so 3.0 leaves ample margin
  // while still failing for any model that did not learn the corpus.
  REQUIRE(ppl < 3.0);
  REQUIRE(std::abs(loss - provenance().at("heldout_loss").get<double>()) < 0.15);
}

TEST_CASE("greedy generation continues corpus-style prompts in domain") {
  auto m = fb::load_model();
  const auto tok = fb::load_tokenizer();
  auto run = [&](const std::string& prompt, std::int64_t n) {
    const auto ids = tok.encode(prompt, false);
    std::vector<std::vector<std::int64_t>> p = {{ids.begin(), ids.end()}};
    const auto g = forge::model::generate(be_t{}, m, p, {.max_new_tokens = n});
    std::vector<std::int32_t> out(g.tokens[0].begin(), g.tokens[0].end());
    return tok.decode(out);
  };
  const std::string story = run(std::string(fb::bos_token) + "Once upon a time, Anna", 24);
  WARN("story continuation: " << story);
  REQUIRE(story.find("lived in a") != std::string::npos);
  const std::string chat = run(fb::render_chat({{"user", "What colour is grass?"}}, true), 12);
  WARN("chat answer: " << chat);
  REQUIRE(chat.find("Green.") == 0);
  const std::string units = run(
      std::string(fb::bos_token) + "There are 1000 grams in one kilogram, so 3 kilograms is", 6);
  WARN("units continuation: " << units);
  REQUIRE(units.find(" 3000 grams") == 0);
}

TEST_CASE("provenance matches the regenerated corpus and the re-trained tokenizer") {
  const auto prov = provenance();
  const auto docs = fb::corpus(prov.at("seed").get<std::uint64_t>(),
                               prov.at("corpus_documents").get<std::size_t>());
  REQUIRE(forge::govern::sha256_hex(fb::join(docs)) == prov.at("corpus_sha256").get<std::string>());
  // The tokenizer is re-trained from the corpus exactly as tools/pretrain_builtin.cpp does,
  // and must come out byte-identical to the committed tokenizer.json.
  const auto json =
      forge::text::bpe_tokenizer_json(
          fb::train_tokenizer(docs, prov.at("tokenizer").at("vocab_size").get<std::size_t>()))
          .dump(2) +
      "\n";
  REQUIRE(json == forge::io::read_file(fb::model_dir() / "tokenizer.json"));
}

TEST_CASE("task_items tokenise the chat prompt and the bare answer") {
  auto m = fb::load_model();
  const auto tok = fb::load_tokenizer();
  const auto ts = fb::tasks(1, 40, fb::split::eval);
  const auto items = fb::task_items(tok, ts);
  REQUIRE(items.size() == ts.size());
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const auto& it = items[i];
    std::vector<std::int32_t> p(it.prompt.begin(), it.prompt.end()),
        a(it.answer.begin(), it.answer.end());
    REQUIRE(tok.decode(p) == fb::render_chat({{"user", ts[i].prompt}}, true));
    REQUIRE(tok.decode(a) == ts[i].answer);
    // The answer's tokens are exactly those it has inside the full conversation, so a model
    // that reproduces the SFT target token by token scores an exact match.
    const auto full =
        tok.encode(fb::render_chat({{"user", ts[i].prompt}, {"assistant", ts[i].answer}}), false);
    REQUIRE(full.size() == p.size() + a.size() + 2);  // + <|im_end|> "\n"
    REQUIRE(std::equal(p.begin(), p.end(), full.begin()));
    REQUIRE(std::equal(a.begin(), a.end(), full.begin() + std::ptrdiff_t(p.size())));
  }
  // The base model has seen the chat format but not these instructions: it answers, but
  // rarely exactly (this is what Adapt improves; the number is reported, not asserted).
  const auto s = forge::eval::evaluate_task(be_t{}, m, items, {*tok.eos_id()});
  WARN("base model exact match on 40 eval tasks: " << s.exact_match);
}

TEST_CASE("the tokenizers library encodes with the committed tokenizer.json as forge does") {
  const std::string python = forge::test::python();
  if (python.empty())
    FAIL(
        "FORGE_PYTHON is not set: this test needs a python with pip `tokenizers` "
        "(configure with -DFORGE_PYTHON=/path/to/venv/bin/python)");
  const auto tok = fb::load_tokenizer();
  std::vector<std::string> texts = fb::heldout_text(1, 30);
  for (const auto& t : fb::tasks(1, 30, fb::split::eval))
    texts.push_back(fb::render_chat({{"user", t.prompt}, {"assistant", t.answer}}));
  texts.push_back("Unusual text: caf\u00e9 \u65e5\u672c \U0001F600 <|im_start|>x<|im_end|>");
  const auto dir = forge::test::scratch("builtin_model_encode");
  forge::io::write_atomic(dir / "in.json", nlohmann::json(texts).dump());
  auto q = [](const std::string& s) { return "'" + s + "'"; };  // paths have no quotes
  const std::string cmd =
      q(python) + " " +
      q((forge::test::source_dir() / "tests/builtin/encode_reference.py").string()) + " " +
      q((fb::model_dir() / "tokenizer.json").string()) + " " + q((dir / "in.json").string()) + " " +
      q((dir / "out.json").string());
  INFO("reference command: " << cmd);
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto ref = nlohmann::json::parse(forge::io::read_file(dir / "out.json"));
  REQUIRE(ref.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    INFO(texts[i]);
    REQUIRE(tok.encode(texts[i], false) == ref[i].get<std::vector<std::int32_t>>());
  }
}
