// sentencepiece_tokenizer against libsentencepiece's own processor. There is no .model
// fixture, so the test trains small models (BPE with byte fallback, as Llama-2, and unigram)
// with the library's trainer on a generated corpus, then requires our wrapper to give exactly
// the library's ids and text, plus the LlamaTokenizer BOS/EOS convention.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/load_tokenizer.hpp"
#include "forge/text/sentencepiece.hpp"

using forge::text::sentencepiece_tokenizer;

namespace {

// A corpus of simple sentences from a fixed word list (seeded, so the model is reproducible).
std::string make_corpus() {
  static const char* words[] = {"the",   "model", "learns", "small",   "tokens", "from",
                                "text",  "and",   "writes", "numbers", "like",   "42",
                                "or",    "3.14",  "in",     "every",   "line",   "quickly",
                                "naïve", "café",  "über",   "data"};
  std::mt19937_64 rng(7);
  std::string corpus;
  for (int line = 0; line < 3000; ++line) {
    const auto n = 3 + rng() % 10;
    for (std::uint64_t i = 0; i < n; ++i) {
      if (i) corpus += ' ';
      corpus += words[rng() % std::size(words)];
    }
    corpus += '\n';
  }
  return corpus;
}

// Trains a model into `dir`/`name`.model with the library's trainer and returns its path.
std::filesystem::path train(const std::filesystem::path& dir, const std::string& name,
                            const std::string& type) {
  const auto corpus = dir / "corpus.txt";
  if (!std::filesystem::exists(corpus)) forge::io::write_atomic(corpus, make_corpus());
  const auto prefix = dir / name;
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"input", corpus.string()},
       {"model_prefix", prefix.string()},
       {"model_type", type},
       {"vocab_size", type == "bpe" ? "400" : "70"},
       {"byte_fallback", type == "bpe" ? "true" : "false"},
       {"character_coverage", "1.0"},
       {"num_threads", "1"},
       {"minloglevel", "2"}});
  INFO(status.ToString());
  REQUIRE(status.ok());
  return prefix.string() + ".model";
}

const std::vector<std::string>& probes() {
  static const std::vector<std::string> p = {
      "the model learns small tokens",
      "  leading and   inner spaces ",
      "numbers 1234567 and 3.14159",
      "unseen characters: 中文 🙂 ß ‰",
      "naïve café über",
      "",
      "tabs\tand\nnewlines\n",
  };
  return p;
}

}  // namespace

TEST_CASE("sentencepiece_tokenizer gives the library's ids and text") {
  const auto dir = forge::test::scratch("text_sentencepiece");
  for (const std::string type : {"bpe", "unigram"}) {
    INFO("model type " << type);
    const auto path = train(dir, type, type);
    sentencepiece::SentencePieceProcessor ref;
    REQUIRE(ref.Load(path.string()).ok());
    const auto ours = sentencepiece_tokenizer::from_file(path);

    CHECK(ours.vocab_size() == static_cast<std::size_t>(ref.GetPieceSize()));
    CHECK(ours.bos_id() == ref.bos_id());
    CHECK(ours.eos_id() == ref.eos_id());
    CHECK(ours.is_special(ref.bos_id()));
    CHECK(ours.is_special(ref.unk_id()));
    for (const auto& text : probes()) {
      INFO("text: " << text);
      std::vector<int> want;
      REQUIRE(ref.Encode(text, &want).ok());
      const auto plain = ours.encode(text, false);
      CHECK(std::vector<int>(plain.begin(), plain.end()) == want);
      // LlamaTokenizer convention: BOS first, no EOS.
      const auto with_bos = ours.encode(text);
      REQUIRE(with_bos.size() == want.size() + 1);
      CHECK(with_bos.front() == ref.bos_id());
      std::string want_text;
      REQUIRE(ref.Decode(want, &want_text).ok());
      CHECK(ours.decode(plain) == want_text);
      // skip_special_tokens: the library's text of the ids without control/unknown pieces.
      std::vector<int> kept;
      for (int id : want)
        if (!ref.IsControl(id) && !ref.IsUnknown(id)) kept.push_back(id);
      std::string want_skip;
      REQUIRE(ref.Decode(kept, &want_skip).ok());
      CHECK(ours.decode(with_bos, true) == want_skip);
    }
    for (int id = 0; id < ref.GetPieceSize(); ++id) {
      REQUIRE(ours.id_to_token(id) == ref.IdToPiece(id));
      REQUIRE(ours.token_to_id(ref.IdToPiece(id)) == id);
    }
    CHECK_FALSE(ours.token_to_id("no such piece").has_value());
    CHECK_FALSE(ours.id_to_token(ref.GetPieceSize()).has_value());
  }
}

TEST_CASE("byte fallback round-trips text the model never saw") {
  const auto dir = forge::test::scratch("text_sentencepiece_bytes");
  const auto ours = sentencepiece_tokenizer::from_file(train(dir, "m", "bpe"));
  // Every character outside the training corpus must become <0xXX> pieces, never <unk>.
  const std::string text = "中文 🙂 Ω";
  const auto ids = ours.encode(text, false);
  for (auto id : ids) CHECK_FALSE(ours.is_special(id));
  CHECK(ours.decode(ids) == text);
  CHECK(ours.token_to_id("<0xE4>").has_value());
}

TEST_CASE("load_tokenizer picks tokenizer.model and applies tokenizer_config") {
  const auto dir = forge::test::scratch("text_sentencepiece_dir");
  const auto model = train(dir, "m", "bpe");
  const auto repo = dir / "repo";
  std::filesystem::create_directories(repo);
  std::filesystem::copy_file(model, repo / "tokenizer.model");
  forge::io::write_atomic(repo / "tokenizer_config.json",
                          R"({"add_bos_token": false, "add_eos_token": true,
                              "bos_token": {"content": "<s>", "lstrip": false},
                              "eos_token": "</s>", "chat_template": "{{ messages }}"})");
  const auto t = forge::text::load_tokenizer(repo);
  REQUIRE(std::holds_alternative<sentencepiece_tokenizer>(t.get()));
  CHECK(t.config().bos_token == "<s>");
  CHECK(t.config().eos_token == "</s>");
  CHECK(t.chat_template() == "{{ messages }}");
  const auto ids = t.encode("the model");
  const auto plain = t.encode("the model", false);
  // add_bos_token false, add_eos_token true: only EOS is added.
  REQUIRE(ids.size() == plain.size() + 1);
  CHECK(ids.back() == t.eos_id());
  CHECK(std::equal(plain.begin(), plain.end(), ids.begin()));
}

TEST_CASE("sentencepiece errors are forge::error naming the file") {
  const auto dir = forge::test::scratch("text_sentencepiece_errors");
  CHECK_THROWS_AS(sentencepiece_tokenizer::from_file(dir / "missing.model"), forge::error);
  forge::io::write_atomic(dir / "garbage.model",
                          std::string("this is not a protobuf \x01\x02\xff"));
  try {
    sentencepiece_tokenizer::from_file(dir / "garbage.model");
    FAIL("a corrupt model loaded");
  } catch (const forge::error& e) {
    CHECK(e.file() == (dir / "garbage.model").string());
  }
  // A truncated real model must fail too.
  const auto good = forge::io::read_file(train(dir, "m", "bpe"));
  CHECK_THROWS_AS(sentencepiece_tokenizer::from_bytes(good.substr(0, good.size() / 2), "half"),
                  forge::error);
  const auto t = sentencepiece_tokenizer::from_bytes(good, "m.model");
  try {
    t.encode("ok \xC3\x28 bad");
    FAIL("invalid UTF-8 was accepted");
  } catch (const forge::error& e) {
    CHECK(e.place() == "byte 3");
  }
  const std::vector<std::int32_t> bad_ids = {5, static_cast<std::int32_t>(t.vocab_size())};
  CHECK_THROWS_AS(t.decode(bad_ids), forge::error);
  CHECK_THROWS_AS(forge::text::load_tokenizer(dir / "nowhere"), forge::error);
}
