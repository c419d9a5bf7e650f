// The Adapt methods in a typed pipeline, end to end on the tiny pre-trained model: each trains,
// measures the Adapt metrics, writes its artifacts (PEFT adapter or HF model, loss curve,
// checkpoint) and passes or fails its exact-match gate.

#include <catch2/catch.hpp>

#include <omp.h>

#include "../support/fixtures.hpp"
#include "../train/tiny_task.hpp"
#include "forge/adapters/methods.hpp"
#include "forge/pipeline/pipeline.hpp"

using namespace forge;

namespace {
adapt_data task_data() {
  adapt_data d;
  d.train = test::upper_task(2000, 9, 1);
  d.val = test::upper_task(64, 9, 3);
  d.task = test::upper_items(100, 9, 2);
  d.general = test::generic_text(64, 77);
  d.eos = {test::tiny_eos};
  d.name = "upper-casing task";
  return d;
}
const model::causal_lm<float>& base() {
  static const auto m = [] {
    omp_set_num_threads(1);
    return test::pretrained_tiny_base();
  }();
  return m;
}
}  // namespace

TEST_CASE("pipeline(adapt<lora>) trains, measures, writes a PEFT adapter and passes its gate") {
  const auto data = task_data();
  auto p = pipeline(adapt<lora>{{.rank = 8,
                                 .alpha = 16,
                                 .target_modules = {"all-linear"},
                                 .max_steps = 300,
                                 .batch_size = 16,
                                 .learning_rate = 1e-2,
                                 .warmup_steps = 10,
                                 .eval_every = 100},
                                data,
                                accept(exact_match >= 0.9)});
  const auto out = test::scratch("adapters_pipeline_lora");
  auto r = p.run(base(), backend::simd<>{}, {.out = out, .seed = 3});
  REQUIRE(r.stages.size() == 1);
  INFO(r.summary);
  CHECK(r.passed);
  const auto& s = r.stages[0];
  CHECK(s.metrics.get("exact_match").value() >= 0.9);
  for (auto k : {"perplexity", "regression_delta", "ece", "mce", "train_val_gap"})
    CHECK(s.metrics.get(k).has_value());
  CHECK(s.metrics.get("perplexity").value() >= 1.0);
  // Upper-casing after a separator conflicts with the copy text the base was trained on:
  // the regression metric sees the forgetting.
  CHECK(s.metrics.get("regression_delta").value() > 0.1);
  const auto dir = out / "01_adapt";
  CHECK(std::filesystem::exists(dir / "adapter" / "adapter_model.safetensors"));
  CHECK(std::filesystem::exists(dir / "loss.svg"));
  // The adapter it wrote is a PEFT adapter for this model: loading it reproduces the output.
  auto m2 = base();
  auto set = io::load_peft_adapter(backend::simd<>{}, m2, dir / "adapter");
  CHECK(model::model_digest(m2) == model::model_digest(r.model.value()));
}

TEST_CASE("adapt<dora> and adapt<full_finetune> are one-word swaps; a strict gate stops the run") {
  const auto data = task_data();
  auto p = pipeline(adapt<dora>{{.rank = 4,
                                 .alpha = 8,
                                 .target_modules = {"all-linear"},
                                 .max_steps = 20,
                                 .batch_size = 8,
                                 .learning_rate = 1e-2},
                                data,
                                accept(exact_match >= 0.99)});
  auto r =
      p.run(base(), backend::simd<>{}, {.out = test::scratch("adapters_pipeline_dora"), .seed = 1});
  CHECK(!r.passed);  // 20 steps cannot learn the task
  REQUIRE(r.failure.has_value());
  CHECK(r.failure->describe().find("exact_match") != std::string::npos);

  auto f = pipeline(adapt<full_finetune>{
      {.parameters = R"(model\.layers\.1\..*)", .max_steps = 5}, data, accept(perplexity >= 1.0)});
  const auto full_dir = test::scratch("adapters_pipeline_full");
  auto rf = f.run(base(), backend::simd<>{}, {.out = full_dir, .seed = 1});
  CHECK(rf.passed);
  CHECK(std::filesystem::exists(full_dir / "01_adapt" / "model" / "model.safetensors"));
}
