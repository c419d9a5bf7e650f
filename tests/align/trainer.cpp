// Preference encoding (skips and errors), reference handling (adapters off = the base; cached
// equals live), bad inputs during training, and bit-exact resume of the preference trainer.

#include <catch2/catch.hpp>

#include <omp.h>

#include <cmath>

#include "../data/doubles.hpp"
#include "../support/fixtures.hpp"
#include "forge/train/preference_trainer.hpp"
#include "tiny_preferences.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {

data::preference_record record(std::string prompt, std::string chosen, std::string rejected) {
  return data::preference_record::parse(
      {{"id", "r"}, {"prompt", prompt}, {"chosen", chosen}, {"rejected", rejected}});
}

adapters::lora_config lora_cfg() {
  return {.rank = 4, .alpha = 8, .target_modules = {"all-linear"}};
}

}  // namespace

TEST_CASE(
    "preference records encode to prompt and completion tokens; useless pairs are counted skips") {
  test::whitespace_tokenizer_test_double tok;
  test::chatml_renderer_test_double chat;
  const auto r = record("what is two", "two is 2", "no idea");
  data::preference_skip why{};
  const auto ex = data::encode_preference(r, tok, chat, {}, &why);
  REQUIRE(ex);
  CHECK(why == data::preference_skip::none);
  // Reference: the prompt rendered with the generation prompt, the completions the rest of
  // each full rendering.
  const auto prompt =
      tok.encode("<|im_start|> user\nwhat is two <|im_end|>\n<|im_start|> assistant\n", false);
  CHECK(ex->prompt == prompt);
  CHECK(ex->chosen == tok.encode("two is 2 <|im_end|>", false));
  CHECK(ex->rejected == tok.encode("no idea <|im_end|>", false));

  CHECK_FALSE(data::encode_preference(record("q", "same", "same"), tok, chat, {}, &why));
  CHECK(why == data::preference_skip::identical);
  CHECK_FALSE(data::encode_preference(record("q", "", "something"), tok, chat, {}, &why));
  CHECK(why == data::preference_skip::empty_completion);
  CHECK_FALSE(data::encode_preference(record("a b c d e f g h", "x", "y"), tok, chat,
                                      {.max_length = 8}, &why));
  CHECK(why == data::preference_skip::prompt_too_long);
  CHECK_FALSE(data::encode_preference(record("q", "a b c d e f g h i j", "y"), tok, chat,
                                      {.max_length = 12}, &why));
  CHECK(why == data::preference_skip::too_long);

  data::data_report rep;
  const auto all = data::encode_preferences(
      {r, record("q", "same", "same"), record("q", "", "x"), record("a b", "c", "d")}, tok, chat,
      {}, rep);
  CHECK(all.size() == 2);
  const auto& st = rep.step("encode_preference");
  CHECK(st.in == 4);
  CHECK(st.out == 2);
  CHECK(st.removed.at("identical") == 1);
  CHECK(st.removed.at("empty_completion") == 1);

  // A template whose generation prompt is not a prefix of the answered prompt is an error.
  test::chatml_renderer_test_double broken{.broken_prompt = true};
  REQUIRE_THROWS_WITH(data::encode_preference(r, tok, broken),
                      Catch::Contains("not a prefix") && Catch::Contains("token"));
}

TEST_CASE("with adapters off the model computes its base; cached reference equals live") {
  omp_set_num_threads(1);
  auto base = model::random_model<float>(test::tiny_config(), {.seed = 3});
  const auto xs = test::tiny_preferences(12, 1, 1);
  auto m = base;
  auto set = adapters::attach_lora(be_t{}, m, lora_cfg(), 2);
  for (auto& mod : set.modules)  // non-zero B: the adapters change the outputs
    for (auto& v : mod->B) v = 0.05f;
  std::vector<std::size_t> pick{0, 3, 5, 7};
  model::workspace<float> ws;
  const auto b = train::detail::pair_batch(xs, pick, test::tiny_pad);
  const auto with = objectives::sequence_logprobs(be_t{}, m, ws, b);
  const auto of_base = objectives::sequence_logprobs(be_t{}, base, ws, b);
  std::vector<double> off;
  {
    train::adapters_disabled<float> g(m);
    off = objectives::sequence_logprobs(be_t{}, m, ws, b);
  }
  CHECK(off == of_base);  // same weights, same batch: bit-identical
  CHECK(std::abs(with[0] - of_base[0]) > 1e-3);
  CHECK(objectives::sequence_logprobs(be_t{}, m, ws, b) == with);  // restored

  // Cached (one pair per forward) vs live (a 4-pair batch, other padding): equal up to the
  // float summation order of differently shaped batches; 1e-5 relative on log-probs of a few
  // nats is ~100 float ulps.
  const auto cache = train::compute_reference_cache(be_t{}, m, xs, true, test::tiny_pad);
  const auto live = train::live_reference(be_t{}, m, xs, pick, pick, test::tiny_pad);
  for (std::size_t q = 0; q < pick.size(); ++q) {
    CHECK(cache.chosen[pick[q]] == Approx(live.chosen[q]).epsilon(1e-5));
    CHECK(cache.rejected[pick[q]] == Approx(live.rejected[q]).epsilon(1e-5));
    CHECK(cache.kl[pick[q]] == Approx(live.kl[q]).epsilon(1e-5));
    CHECK(cache.chosen[pick[q]] == Approx(of_base[q]).epsilon(1e-5));
  }
  CHECK(cache.bytes() == (12 + 12 + 24) * sizeof(double));

  // Training with either reference follows the same trajectory (same tolerance reasoning).
  for (bool kto : {false, true}) {
    INFO("kto " << kto);
    std::vector<std::vector<train::log_entry>> logs;
    for (auto mode : {train::reference_mode::cached, train::reference_mode::live}) {
      auto mm = base;
      auto s = adapters::attach_lora(be_t{}, mm, lora_cfg(), 2);
      train::preference_trainer_options o{.reference = mode,
                                          .max_steps = 4,
                                          .batch_size = 4,
                                          .optim = {.lr = 1e-2, .weight_decay = 0},
                                          .seed = 1};
      o.objective.kto = kto;
      logs.push_back(
          train::train_preference(be_t{}, mm, train::lora_parameters(s), &s, xs, {}, o).log);
    }
    for (std::size_t i = 0; i < logs[0].size(); ++i)
      CHECK(logs[0][i].loss == Approx(logs[1][i].loss).epsilon(1e-4));
  }
}

TEST_CASE(
    "bad inputs while training: non-finite reference skipped and counted, NaN policy is an error") {
  omp_set_num_threads(1);
  auto m = model::random_model<float>(test::tiny_config(), {.seed = 3});
  const auto xs = test::tiny_preferences(6, 1, 1);
  auto set = adapters::attach_lora(be_t{}, m, lora_cfg(), 2);
  auto cache = train::compute_reference_cache(be_t{}, m, xs, false, test::tiny_pad);
  cache.rejected[2] = std::nan("");
  train::preference_trainer_options o{.max_steps = 2, .batch_size = 2, .optim = {.lr = 1e-3}};
  const auto r =
      train::train_preference(be_t{}, m, train::lora_parameters(set), &set, xs, {}, o, &cache);
  CHECK(r.skipped_nonfinite_reference == 1);
  CHECK(r.steps == 2);

  // A live reference without adapters is refused.
  auto dense = model::random_model<float>(test::tiny_config(), {.seed = 3});
  o.reference = train::reference_mode::live;
  REQUIRE_THROWS_WITH(
      train::train_preference(be_t{}, dense, train::model_parameters(dense), nullptr, xs, {}, o),
      Catch::Contains("live reference needs LoRA"));
  // NaN in the policy: the loss's log-probs are not finite → error naming the pair.
  o.reference = train::reference_mode::cached;
  for (auto& mod : set.modules)
    for (auto& v : mod->B) v = std::nanf("");
  REQUIRE_THROWS_WITH(
      train::train_preference(be_t{}, m, train::lora_parameters(set), &set, xs, {}, o),
      Catch::Contains("not finite"));
  // KTO needs two pairs for its mismatched KL rows.
  o.objective.kto = true;
  REQUIRE_THROWS_WITH(train::train_preference(be_t{}, m, train::lora_parameters(set), &set,
                                              std::span(xs).first(1), {}, o),
                      Catch::Contains("at least 2 pairs"));
}

TEST_CASE("a paused and resumed preference run equals the uninterrupted one bit for bit") {
  omp_set_num_threads(1);
  const auto base = model::random_model<float>(test::tiny_config(), {.seed = 4});
  const auto xs = test::tiny_preferences(10, 2, 1);
  for (bool kto : {false, true}) {
    INFO("kto " << kto);
    auto run = [&](const std::filesystem::path& dir, std::int64_t halt) {
      auto m = base;
      auto set = adapters::attach_lora(
          be_t{}, m, {.rank = 4, .alpha = 8, .dropout = 0.1, .target_modules = {"all-linear"}}, 5);
      train::preference_trainer_options o{
          .max_steps = 6,
          .batch_size = 3,
          .grad_accum = 2,
          .optim = {.lr = 5e-3, .weight_decay = 0.01},
          .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 2},
          .out_dir = dir,
          .seed = 9,
          .halt_after = halt};
      o.objective.kto = kto;
      train::train_preference(be_t{}, m, train::lora_parameters(set), &set, xs, {}, o);
      return set;
    };
    const auto a = test::scratch(kto ? "align_resume_kto_a" : "align_resume_a");
    const auto b = test::scratch(kto ? "align_resume_kto_b" : "align_resume_b");
    auto whole = run(a, 0);
    run(b, 3);                 // pause after step 3
    auto resumed = run(b, 0);  // continue from the checkpoint to step 6
    for (std::size_t i = 0; i < whole.modules.size(); ++i) {
      CHECK(whole.modules[i]->A == resumed.modules[i]->A);
      CHECK(whole.modules[i]->B == resumed.modules[i]->B);
    }
  }
}
