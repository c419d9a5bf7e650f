// The BPE trainer against the reference implementation (pip `tokenizers`' BpeTrainer): the
// same corpus and settings must give the same vocabulary ids and the same merges, and the
// library must encode and decode text with our tokenizer.json exactly as forge's loader does.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/core/rng.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/bpe_trainer.hpp"
#include "forge/text/load_tokenizer.hpp"

namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

// A corpus with a skewed word distribution (so counts tie often and tie-breaking matters),
// numbers, punctuation, runs of spaces and newlines, and multi-byte UTF-8.
std::vector<std::string> corpus(std::uint64_t seed, std::size_t n) {
  static const std::vector<std::string> words = {
      "the",   "a",      "of",      "and",   "to",     "in",     "is",       "was",   "that",
      "it",    "for",    "on",      "with",  "as",     "his",    "they",     "at",    "be",
      "this",  "from",   "have",    "or",    "by",     "one",    "had",      "not",   "but",
      "what",  "all",    "were",    "when",  "we",     "there",  "can",      "an",    "your",
      "river", "stone",  "lantern", "seven", "eleven", "metres", "kilogram", "café",  "naïve",
      "über",  "Straße", "日本",    "語",    "😀",      "don't",  "it's",     "we'll", "I'm",
      "3.14",  "2024",   "12,000",  "x+y",   "(ok)",   "--",     "!!",       "...",   "\"q\""};
  forge::philox rng(seed, 0);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string s;
    const std::size_t len = 3 + rng.below(14);
    for (std::size_t j = 0; j < len; ++j) {
      // Squaring a uniform index skews towards the front of the list (Zipf-like).
      const double u = rng.uniform();
      const std::size_t k = static_cast<std::size_t>(u * u * static_cast<double>(words.size()));
      if (j > 0) {
        const auto sep = rng.below(20);
        s += sep == 0 ? "  " : sep == 1 ? "\n" : sep == 2 ? ", " : " ";
      }
      s += words[k];
    }
    s += rng.below(3) == 0 ? ".\n" : ".";
    out.push_back(std::move(s));
  }
  return out;
}

void check_against_reference(const std::vector<std::string>& texts,
                             const forge::text::bpe_trainer_options& opt, const std::string& tag) {
  const std::string python = forge::test::python();
  if (python.empty())
    FAIL(
        "FORGE_PYTHON is not set: this test needs a python with pip `tokenizers` "
        "(configure with -DFORGE_PYTHON=/path/to/venv/bin/python)");
  forge::text::bpe_trainer tr(opt);
  for (const auto& t : texts) tr.feed(t);
  const auto bpe = tr.train();
  const auto dir = forge::test::scratch("builtin_bpe_trainer_" + tag);
  forge::text::save_bpe_tokenizer(bpe, dir / "tok",
                                  {.bos_token = opt.special_tokens.at(0),
                                   .eos_token = opt.special_tokens.at(1),
                                   .pad_token = opt.special_tokens.at(1)});

  std::vector<std::string> samples = {"",
                                      " ",
                                      "hello world",
                                      "The river's stone, 12,000 kg.",
                                      "naïve café über 日本語 😀",
                                      "  \n\n  tabs\tand   spaces",
                                      "<|begin_of_text|>the stone<|end_of_text|>"};
  for (std::size_t i = 0; i < 40; ++i) samples.push_back(texts[i * 7 % texts.size()]);
  nlohmann::json job = {{"texts", texts},
                        {"vocab_size", opt.vocab_size},
                        {"min_frequency", opt.min_frequency},
                        {"special_tokens", opt.special_tokens},
                        {"ours", (dir / "tok" / "tokenizer.json").string()},
                        {"samples", samples}};
  forge::io::write_atomic(dir / "job.json", job.dump());
  const auto script = forge::test::source_dir() / "tests" / "builtin" / "bpe_reference.py";
  const std::string cmd = shell_quote(python) + " " + shell_quote(script.string()) + " " +
                          shell_quote((dir / "job.json").string()) + " " +
                          shell_quote((dir / "ref.json").string());
  INFO("reference command: " << cmd);
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto ref = nlohmann::json::parse(forge::io::read_file(dir / "ref.json"));

  // Bit-identical training: every id and every merge in the same order.
  const auto ref_vocab = ref.at("vocab").get<std::vector<std::string>>();
  REQUIRE(bpe.vocab.size() == ref_vocab.size());
  for (std::size_t i = 0; i < ref_vocab.size(); ++i) {
    INFO("id " << i);
    REQUIRE(bpe.vocab[i] == ref_vocab[i]);
  }
  const auto& ref_merges = ref.at("merges");
  REQUIRE(bpe.merges.size() == ref_merges.size());
  for (std::size_t i = 0; i < ref_merges.size(); ++i) {
    INFO("merge " << i);
    REQUIRE(bpe.merges[i].first == ref_merges[i][0].get<std::string>());
    REQUIRE(bpe.merges[i].second == ref_merges[i][1].get<std::string>());
  }

  // The library reads our file and encodes as forge's own loader does.
  const auto tok = forge::text::load_tokenizer(dir / "tok");
  REQUIRE(tok.bos_id() == 0);
  REQUIRE(tok.eos_id() == 1);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    INFO("sample " << i << ": " << samples[i]);
    const auto ids = tok.encode(samples[i], true);
    CHECK(ids == ref.at("ours_ids")[i].get<std::vector<std::int32_t>>());
    CHECK(tok.decode(ids) == samples[i]);
    CHECK(ref.at("decoded")[i].get<std::string>() == samples[i]);
  }
}

}  // namespace

TEST_CASE("bpe_trainer matches the reference BpeTrainer merge for merge") {
  const auto texts = corpus(7, 3000);
  check_against_reference(texts,
                          {.vocab_size = 420,  // below what min_frequency allows: ends on size
                           .min_frequency = 2,
                           .special_tokens = {"<|begin_of_text|>", "<|end_of_text|>", "<pad>"}},
                          "small");
}

TEST_CASE("bpe_trainer stops at min_frequency exactly as the reference does") {
  // A vocab_size far above what the corpus supports: training ends on min_frequency.
  const auto texts = corpus(11, 400);
  check_against_reference(
      texts, {.vocab_size = 5000, .min_frequency = 5, .special_tokens = {"<s>", "</s>"}},
      "minfreq");
}

TEST_CASE("bpe_trainer rejects bad input with forge::error") {
  REQUIRE_THROWS_AS(forge::text::bpe_trainer({.vocab_size = 100}), forge::error);
  forge::text::bpe_trainer tr({.vocab_size = 300});
  REQUIRE_THROWS_AS(tr.feed(std::string("ok \xff bad")), forge::error);
  tr.feed("fine text");
  const auto bpe = tr.train();
  REQUIRE(bpe.vocab.size() == 256);  // no special tokens; "fine text" has no pair twice
  const auto dir = forge::test::scratch("builtin_bpe_trainer_bad");
  REQUIRE_THROWS_AS(forge::text::save_bpe_tokenizer(bpe, dir, {.bos_token = "<s>"}), forge::error);
}
