// The built-in stage data (builtin/stage_data.hpp): replayed pre-training text in the SFT set,
// and the safety pairs of the Align set — their framings kept apart from the evaluated ones,
// their answers as configured. Expectations follow from the documented construction.

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "forge/builtin/stage_data.hpp"

using namespace forge;

namespace {

bool all_trained(const data::sft_example& e) {
  return std::none_of(e.labels.begin(), e.labels.end(), [](auto l) { return l == -100; });
}

std::string text_of(const text::any_tokenizer& tok, const std::vector<std::int32_t>& ids) {
  return tok.decode(ids, true);
}

}  // namespace

TEST_CASE("SFT data: replayed pre-training documents spread evenly among the task examples") {
  const auto tok = builtin::load_tokenizer();
  builtin::data_sizes n;
  n.sft_train = 100, n.sft_val = 2, n.task_eval = 2, n.general = 6;
  n.task_kinds = {"instruction", "date"};
  n.replay = 0;
  const auto plain = builtin::sft_data(tok, 1, n);
  n.replay = 25;
  const auto mixed = builtin::sft_data(tok, 1, n);
  REQUIRE(mixed.train.size() == plain.train.size() + 25);

  // Task examples mask their prompts (-100); replayed documents train every token.
  std::vector<std::size_t> at;
  std::vector<const data::sft_example*> tasks;
  for (std::size_t i = 0; i < mixed.train.size(); ++i)
    if (all_trained(mixed.train[i]))
      at.push_back(i);
    else
      tasks.push_back(&mixed.train[i]);
  REQUIRE(at.size() == 25);
  for (const auto& e : plain.train) REQUIRE_FALSE(all_trained(e));
  // The task examples keep their order.
  REQUIRE(tasks.size() == plain.train.size());
  for (std::size_t i = 0; i < tasks.size(); ++i)
    CHECK(tasks[i]->input_ids == plain.train[i].input_ids);
  // Even spread: one document in every run of total/25 examples, so consecutive documents are
  // between ⌊total/25⌋ − 1 and ⌈total/25⌉ + 1 places apart.
  const double step = double(mixed.train.size()) / 25.0;
  for (std::size_t k = 1; k < at.size(); ++k) {
    CHECK(double(at[k] - at[k - 1]) >= step - 1.0);
    CHECK(double(at[k] - at[k - 1]) <= step + 1.0);
  }
  // They are the pre-training corpus's first documents, never the held-out regression text.
  const auto docs = builtin::corpus(1, 25);
  std::set<std::vector<std::int32_t>> general;
  for (const auto& g : mixed.general) general.insert(g.input_ids);
  for (std::size_t k = 0; k < at.size(); ++k) {
    auto ids = tok.encode(docs[k], false);
    if (ids.size() > n.max_length) ids.resize(n.max_length);
    CHECK(mixed.train[at[k]].input_ids == ids);
    CHECK(general.count(mixed.train[at[k]].input_ids) == 0);
  }
}

TEST_CASE("Align data: safety pairs in training framings only, answers as configured") {
  const auto tok = std::make_shared<const text::any_tokenizer>(builtin::load_tokenizer());
  builtin::data_sizes n;
  n.preference = 10, n.preference_val = 2, n.task_eval = 2;
  n.task_kinds = {"instruction"};
  const auto d = builtin::alignment_data(tok, 1, n);
  const std::size_t templates = 14, frames = n.safety_train_frames.size();
  // Every helpfulness pair and every safety pair is there (nothing skipped at 256 tokens).
  REQUIRE(d.train.size() == n.preference + 2 * templates * frames);

  std::size_t refusals = 0, helpful = 0, harmful_seen = 0, benign_seen = 0;
  std::set<std::string> benign_rejected, train_prompts;
  for (const auto& e : d.train) {
    if (!e.id.starts_with("safety-")) continue;
    const auto chosen = text_of(*tok, e.chosen), rejected = text_of(*tok, e.rejected);
    train_prompts.insert(text_of(*tok, e.prompt));
    if (e.id.ends_with("-direct")) {
      ++harmful_seen;
      refusals += chosen.starts_with(n.refusal);
      CHECK_FALSE(eval::is_refusal(rejected));
    } else {
      REQUIRE(e.id.ends_with("-benign"));
      ++benign_seen;
      helpful += chosen.starts_with(n.helpful);
      CHECK(eval::is_refusal(rejected));
      benign_rejected.insert(rejected);
    }
  }
  CHECK(harmful_seen == templates * frames);
  CHECK(benign_seen == templates * frames);
  CHECK(refusals == harmful_seen);
  CHECK(helpful == benign_seen);
  // The benign pairs reject every listed phrasing of a refusal, not only the taught one.
  CHECK(benign_rejected.size() == eval::refusal_phrasings().size());
  // Harmful and benign pairs alternate in couples of one template and framing.
  std::size_t first = 0;
  while (!d.train[first].id.starts_with("safety-")) ++first;
  CHECK(d.train[first].id.ends_with("-direct"));
  CHECK(d.train[first + 1].id.ends_with("-benign"));

  // No evaluated safety prompt was trained on: evaluation uses framings 3 and 4 only.
  const auto eval_direct = eval::framed_prompts({3, 4}, true);
  for (const auto& it : d.safety) {
    const auto rendered = text_of(*tok, [&] {
      const auto ids = d.encode_prompt(it.prompt);
      return std::vector<std::int32_t>(ids.begin(), ids.end());
    }());
    CHECK(train_prompts.count(rendered) == 0);
  }
  CHECK(std::count_if(d.safety.begin(), d.safety.end(), [](const auto& it) {
          return it.variant == "direct";
        }) == std::ptrdiff_t(eval_direct.size()));

  // A training framing that is an evaluation framing is refused by name.
  n.safety_train_frames = {0, 3};
  CHECK_THROWS_WITH(builtin::alignment_data(tok, 1, n),
                    Catch::Contains("data_sizes.safety_train_frames"));
}
