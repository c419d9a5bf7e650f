// The Align methods in typed pipelines: the representation rules they declare (checked by
// the compiler here), adapt<qlora> → align<dpo<>> and align<dpo<dense_f32>> alone, the
// one-word swap to every other method on the same data, the metrics each measures and the
// artifacts it writes; gates on the Align metrics pass or stop the run.

#include <catch2/catch.hpp>

#include <omp.h>

#include "../support/fixtures.hpp"
#include "forge/adapters/methods.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/train/align_methods.hpp"
#include "tiny_preferences.hpp"

using namespace forge;

// ---- compile-time rules: exactly the base and base + LoRA, producing base + LoRA ----
static_assert(Method<dpo<>> && Method<cdpo<>> && Method<ipo<>> && Method<hinge<>> &&
              Method<robust_dpo<>> && Method<simpo<>> && Method<orpo<>> && Method<kto<>> &&
              Method<grpo<>>);
static_assert(fits_v<repr::nf4_lora, dpo<>::accepts> && fits_v<repr::nf4, dpo<>::accepts>);
static_assert(std::is_same_v<dpo<>::produces, repr::nf4_lora>);
static_assert(fits_v<repr::with_lora<repr::int4_g128>, kto<repr::int4_g128>::accepts>);
static_assert(fits_v<repr::int4_g32, simpo<repr::int4_g32>::accepts>);
static_assert(std::is_same_v<ipo<repr::dense_f32>::produces, repr::with_lora<repr::dense_f32>>);
static_assert(!fits_v<repr::int8, dpo<>::accepts>);
static_assert(!fits_v<repr::dense_f32, dpo<>::accepts>);  // another base: say dpo<dense_f32>
static_assert(!fits_v<repr::release, dpo<repr::dense_f32>::accepts>);
// adapt<qlora> (→ nf4 + lora) feeds align<dpo<>>:
static_assert(fits_v<qlora::produces, dpo<>::accepts>);

namespace {

align_data pref_data() {
  align_data d;
  d.train = test::tiny_preferences(64, 11, 1);
  d.val = test::tiny_preferences(16, 11, 2);
  d.eos = {test::tiny_eos};
  d.pad_id = test::tiny_pad;
  d.task = test::upper_items(16, 9, 2);
  // A few safety prompts through a character encoding (unknown characters dropped): the
  // plumbing of the safety metrics on a model that has never seen text.
  auto h = eval::harmful_prompts(0, 1), b = eval::benign_lookalikes(0, 1);
  d.safety.assign(h.begin(), h.begin() + 2);
  d.safety.insert(d.safety.end(), b.begin(), b.begin() + 2);
  const auto j = eval::jailbreak_variants({h[0]});
  d.safety.insert(d.safety.end(), j.begin(), j.end());
  d.encode_prompt = [](const std::string& s) {
    std::vector<std::int64_t> ids{test::tiny_bos};
    for (char c : s)
      if (test::tiny_chars.find(c) != std::string::npos) ids.push_back(test::tiny_id(c));
    ids.push_back(test::tiny_id('='));
    return ids;
  };
  d.decode = [](std::span<const std::int64_t> ids) {
    std::string s;
    for (auto t : ids)
      if (t >= 3) s += test::tiny_chars[std::size_t(t - 3)];
    return s;
  };
  d.max_new_tokens = 6;
  d.name = "tiny preferences";
  return d;
}

align_params fast() {
  return {.max_steps = 20, .batch_size = 8, .learning_rate = 5e-3, .eval_every = 10};
}

}  // namespace

TEST_CASE("adapt<qlora> then align<dpo<>>: metrics, artifacts and the gate") {
  omp_set_num_threads(1);
  const auto base = model::random_model<float>(test::tiny_config(), {.seed = 6});
  adapt_data ad;
  ad.train = test::upper_task(64, 9, 1);
  ad.eos = {test::tiny_eos};
  auto p = pipeline(
      adapt<qlora>{{.rank = 4, .alpha = 8, .max_steps = 5, .batch_size = 8, .learning_rate = 1e-3},
                   ad},
      align<dpo<>>{
          fast(), pref_data(),
          accept(preference_accuracy >= 0.9, reward_margin >= 0.05, kl_to_reference <= 1.0)});
  const auto out = test::scratch("align_pipeline_qlora_dpo");
  auto r = p.run(base, backend::simd<>{}, {.out = out, .seed = 3});
  INFO(r.summary);
  REQUIRE(r.stages.size() == 2);
  CHECK(r.passed);
  const auto& s = r.stages[1];
  for (auto k : {"preference_accuracy", "reward_margin", "kl_to_reference", "helpfulness_delta",
                 "refusal_accuracy", "false_refusal_rate", "jailbreak_resistance"})
    CHECK(s.metrics.get(k).has_value());
  CHECK(s.metrics.get("kl_to_reference").value() > 0);  // the policy moved off the reference
  const auto dir = out / "02_align";
  CHECK(std::filesystem::exists(dir / "adapter" / "adapter_model.safetensors"));
  CHECK(std::filesystem::exists(dir / "loss.csv"));
  // The Adapt adapter is still there under the alignment adapter (2 per adapted layer).
  const auto& m = r.model.value();
  CHECK(m.layers[0].q_proj.adapters.size() == 2);
  CHECK(m.layers[0].q_proj.base != nullptr);  // still NF4
}

TEST_CASE("align<...<dense_f32>> alone: every method is a one-word swap") {
  omp_set_num_threads(1);
  const auto base = model::random_model<float>(test::tiny_config(), {.seed = 6});
  const auto d = pref_data();
  auto check = [&](auto stage, const char* name) {
    INFO(name);
    const auto out = test::scratch(std::string("align_pipeline_") + name);
    auto r = pipeline(stage).run(base, backend::simd<>{}, {.out = out, .seed = 4});
    REQUIRE(r.stages.size() == 1);
    CHECK(r.passed);
    CHECK(r.stages[0].method == name);
    CHECK(r.stages[0].metrics.get("preference_accuracy").value() >= 0.9);
  };
  const auto gate = accept(preference_accuracy >= 0.9);
  auto ls = fast();
  ls.label_smoothing = 0.1;
  auto sp = fast();
  sp.beta = 2.0;
  check(align<dpo<repr::dense_f32>>{fast(), d, gate}, "dpo");
  check(align<cdpo<repr::dense_f32>>{ls, d, gate}, "cdpo");
  check(align<robust_dpo<repr::dense_f32>>{ls, d, gate}, "robust_dpo");
  check(align<ipo<repr::dense_f32>>{fast(), d, gate}, "ipo");
  check(align<hinge<repr::dense_f32>>{fast(), d, gate}, "hinge");
  check(align<simpo<repr::dense_f32>>{sp, d, gate}, "simpo");
  check(align<orpo<repr::dense_f32>>{fast(), d, gate}, "orpo");
  check(align<kto<repr::dense_f32>>{fast(), d, gate}, "kto");

  // A live reference gives the same stage result as the cached one, up to float order.
  auto live = fast();
  live.reference = "live";
  auto r =
      pipeline(align<dpo<repr::dense_f32>>{live, d, gate})
          .run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_live"), .seed = 4});
  CHECK(r.passed);

  // The wrong base at run time is an error naming the layer; cdpo without ε is refused.
  auto bad = pipeline(align<dpo<repr::nf4>>{fast(), d});
  REQUIRE_THROWS_WITH(
      bad.run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_bad")}),
      Catch::Contains("does not match the method's Base"));
  auto no_eps = pipeline(align<cdpo<repr::dense_f32>>{fast(), d});
  REQUIRE_THROWS_WITH(
      no_eps.run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_noeps")}),
      Catch::Contains("label smoothing"));
  // A strict gate stops the run and names the criterion.
  auto strict = pipeline(align<dpo<repr::dense_f32>>{fast(), d, accept(kl_to_reference <= 1e-9)});
  auto rs = strict.run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_strict")});
  CHECK_FALSE(rs.passed);
  REQUIRE(rs.failure);
  CHECK(rs.failure->describe().find("kl_to_reference") != std::string::npos);
}

TEST_CASE("align<grpo<dense_f32>>: prompts and a verifiable reward through the pipeline") {
  omp_set_num_threads(1);
  const auto base = model::random_model<float>(test::tiny_config(), {.seed = 6});
  auto d = pref_data();
  const auto items = test::upper_items(16, 9, 1);
  for (const auto& it : items) d.prompts.push_back(it.prompt);
  d.reward = [items](std::size_t i, std::span<const std::int64_t> y) {
    const auto& a = items[i].answer;
    return y.size() == a.size() + 1 && std::equal(a.begin(), a.end(), y.begin()) ? 1.0 : 0.0;
  };
  auto p = pipeline(align<grpo<repr::dense_f32>>{{.max_steps = 3,
                                                  .prompts_per_step = 2,
                                                  .num_generations = 4,
                                                  .max_new_tokens = 5,
                                                  .learning_rate = 1e-3},
                                                 d,
                                                 accept(kl_to_reference <= 10.0)});
  auto r = p.run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_grpo"), .seed = 4});
  REQUIRE(r.stages.size() == 1);
  CHECK(r.passed);
  CHECK(r.stages[0].method == "grpo");
  for (auto k : {"kl_to_reference", "preference_accuracy", "helpfulness_delta", "refusal_accuracy"})
    CHECK(r.stages[0].metrics.get(k).has_value());
  // No prompts: a clear error.
  d.prompts.clear();
  REQUIRE_THROWS_WITH(
      pipeline(align<grpo<repr::dense_f32>>{{}, d})
          .run(base, backend::simd<>{}, {.out = test::scratch("align_pipeline_grpo_bad")}),
      Catch::Contains("prompts and a reward"));
}
