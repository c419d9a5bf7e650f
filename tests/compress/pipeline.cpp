// compress<gptq> in a typed pipeline: adapt<lora> -> compress<gptq> -> an Align-stage test
// double that trains LoRA on the int4 base. Checks the type rules accept the chain, the
// compress stage's metrics and artifacts, that the written GPTQ checkpoint loads back into a
// model with bit-identical logits, and that LoRA training on the quantized base lowers the
// loss (backward through the quantized base to the input).

#include <catch2/catch.hpp>

#include <omp.h>

#include "../support/fixtures.hpp"
#include "../train/tiny_task.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/quant/methods.hpp"
#include "forge/train/align_methods.hpp"

using namespace forge;
using Bk = backend::simd<>;

namespace forge::test {

/// Align-stage test double: LoRA SFT on whatever (int4 g32) base it gets; records the
/// validation loss before and after training in `last_losses` for the test to read.
struct lora_on_int4_test_double {
  static constexpr std::string_view name = "lora_on_int4_test_double";
  struct params {
    std::int64_t steps = 40;
  };
  using data = adapt_data;
  using accepts = repr::int4_group<32>;
  using produces = repr::with_lora<repr::int4_group<32>>;
  using backends = cpu_backends;
  static inline std::pair<double, double> last_losses{};
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    const double before = train::mean_loss(ctx.backend, m, d.val, 16, d.pad_id);
    auto set = adapters::attach_lora(
        ctx.backend, m, {.rank = 8, .alpha = 16, .target_modules = {"all-linear"}}, ctx.seed);
    train::train_sft(
        ctx.backend, m, train::lora_parameters(set), &set, d.train, {},
        {.max_steps = p.steps, .batch_size = 16, .optim = {.lr = 1e-2}, .seed = ctx.seed});
    const double after = train::mean_loss(ctx.backend, m, d.val, 16, d.pad_id);
    last_losses = {before, after};
    return {.model = std::move(m)};
  }
};
inline void to_json(nlohmann::json& j, const lora_on_int4_test_double::params& p) {
  j = {{"steps", p.steps}};
}

}  // namespace forge::test

namespace {
const model::causal_lm<float>& base() {
  static const auto m = [] {
    omp_set_num_threads(1);
    auto b = test::pretrained_tiny_base();
    omp_set_num_threads(2);
    return b;
  }();
  return m;
}
std::vector<std::vector<std::int64_t>> ids_of(const std::vector<data::sft_example>& xs) {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& e : xs) out.emplace_back(e.input_ids.begin(), e.input_ids.end());
  return out;
}
adapt_data upper_data() {
  adapt_data d;
  d.train = test::upper_task(800, 9, 1);
  d.val = test::upper_task(64, 9, 3);
  d.eos = {test::tiny_eos};
  return d;
}
compress_data calib_data() {
  compress_data d;
  d.calibration = ids_of(test::generic_text(64, 101));
  d.evaluation = ids_of(test::generic_text(64, 202));
  d.task = test::copy_items(32, 303);
  d.eos = {test::tiny_eos};
  return d;
}
std::vector<float> logits(model::causal_lm<float>& m, const std::vector<std::int64_t>& ids) {
  model::workspace<float> ws;
  auto z =
      model::forward(Bk{}, m, ws, {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids});
  return {z.begin(), z.end()};
}
}  // namespace

TEST_CASE("adapt<lora> -> compress<gptq> -> align on the int4 base: types, metrics, artifacts") {
  using G32 = gptq_as<quant::int4_g32>;
  static_assert(fits_v<lora::produces, G32::accepts>);
  static_assert(fits_v<G32::produces, test::lora_on_int4_test_double::accepts>);
  static_assert(!fits_v<G32::produces, full_finetune::accepts>);
  // The library's own Align methods compose after GPTQ on the matching int4 base, not another.
  static_assert(fits_v<gptq::produces, dpo<repr::int4_g128>::accepts>);
  static_assert(fits_v<G32::produces, dpo<repr::int4_group<32>>::accepts>);
  static_assert(!fits_v<gptq::produces, dpo<repr::nf4>::accepts>);
  [[maybe_unused]] auto typed =
      pipeline(adapt<lora>{}, compress<gptq>{}, align<dpo<repr::int4_g128>>{},
               align<kto<repr::int4_g128>>{});
  auto p = pipeline(
      adapt<lora>{{.rank = 4,
                   .alpha = 8,
                   .target_modules = {"all-linear"},
                   .max_steps = 10,
                   .batch_size = 8,
                   .learning_rate = 1e-2},
                  upper_data()},
      compress<G32>{
          {.measure = {.latency_tokens = 8}}, calib_data(), accept(perplexity_ratio <= 1.5)},
      align<test::lora_on_int4_test_double>{{.steps = 40}, upper_data()});
  const auto out = test::scratch("compress_pipeline");
  auto r = p.run(base(), Bk{}, {.out = out, .seed = 4});
  INFO(r.summary);
  REQUIRE(r.passed);
  REQUIRE(r.stages.size() == 3);
  const auto& s = r.stages[1];
  for (auto k : {"memory_bytes", "memory_ratio", "perplexity", "perplexity_ratio", "exact_match",
                 "task_score_delta", "latency_ms", "tokens_per_second"})
    CHECK(s.metrics.get(k).has_value());
  // Whole model: 54+3 = 57-token embeddings and head stay f32, so the ratio is well above
  // the projections' 5/32.
  const double ratio = s.metrics.get("memory_ratio").value();
  CHECK(ratio > 5.0 / 32);
  CHECK(ratio < 1.0);
  CHECK(s.metrics.get("perplexity_ratio").value() >= 0.9);
  const auto [before, after] = test::lora_on_int4_test_double::last_losses;
  INFO("align double loss " << before << " -> " << after);
  CHECK(after < 0.8 * before);
  const auto dir = out / "02_compress";
  CHECK(std::filesystem::exists(dir / "compression.json"));
  const auto cfg = nlohmann::json::parse(io::read_file(dir / "model" / "config.json"));
  const auto& qc = cfg.at("quantization_config");
  CHECK(qc.at("quant_method") == "gptq");
  CHECK(qc.at("bits") == 4);
  CHECK(qc.at("group_size") == 32);
  CHECK(qc.at("sym") == true);
  CHECK(qc.at("desc_act") == false);
}

TEST_CASE("GPTQ checkpoint (act-order) loads back with bit-identical logits") {
  auto p = pipeline(compress<gptq_as<quant::int4_g32>>{
      {.act_order = true, .measure = {.latency_tokens = 0}}, calib_data()});
  const auto out = test::scratch("compress_checkpoint");
  auto r = p.run(base(), Bk{}, {.out = out, .seed = 1});
  REQUIRE(r.passed);
  auto mem = std::move(*r.model);
  auto loaded = quant::load_gptq_checkpoint<Bk>(out / "01_compress" / "model");
  const auto cfg =
      nlohmann::json::parse(io::read_file(out / "01_compress" / "model" / "config.json"));
  CHECK(cfg.at("quantization_config").at("desc_act") == true);
  // Same quantized tensors (f16-exact scales, the permutation from g_idx) and the same f32
  // dense tensors: the same kernels produce the same bits, so equality is exact.
  CHECK(model::model_digest(loaded) == model::model_digest(mem));
  const std::vector<std::int64_t> ids = calib_data().evaluation[3];
  const auto a = logits(mem, ids), b = logits(loaded, ids);
  REQUIRE(a.size() == b.size());
  std::size_t diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
  CHECK(diff == 0);
  // And the quantized model differs from the dense one (the check is not vacuous).
  auto dense = base();
  const auto c = logits(dense, ids);
  std::size_t moved = 0;
  for (std::size_t i = 0; i < a.size(); ++i) moved += a[i] != c[i];
  CHECK(moved > a.size() / 2);
}

TEST_CASE("load_gptq_checkpoint rejects a checkpoint without a GPTQ quantization_config") {
  const auto dir = test::scratch("compress_bad_checkpoint");
  auto m = base();
  io::save_hf_checkpoint(m, dir);
  try {
    quant::load_gptq_checkpoint<Bk>(dir);
    FAIL("no error");
  } catch (const error& e) {
    CHECK(std::string(e.what()).find("quantization_config") != std::string::npos);
  }
}

TEST_CASE("compress<distill>: a 1-layer student from the 2-layer model, measured and saved") {
  auto d = calib_data();
  d.train = test::generic_text(2000, 41);
  auto p = pipeline(compress<distill>{{.layers = {1},
                                       .max_steps = 60,
                                       .batch_size = 16,
                                       .learning_rate = 3e-3,
                                       .warmup_steps = 10,
                                       .measure = {.latency_tokens = 4}},
                                      d,
                                      accept(task_score_delta >= -0.2)});
  const auto out = test::scratch("compress_distill");
  auto r = p.run(base(), Bk{}, {.out = out, .seed = 2});
  INFO(r.summary);
  REQUIRE(r.passed);
  REQUIRE(r.model->layers.size() == 1);
  const auto& s = r.stages[0];
  // One of two decoder layers kept: embeddings, norms and head are shared, so the ratio
  // lies between 1/2 and 1. Counted: 2-layer model weights vs 1-layer.
  const auto ratio = s.metrics.get("memory_ratio").value();
  const auto& c = base().config;
  const double layer = 4.0 * 64 * 64 + 3.0 * 64 * 128 + 2 * 64;
  const double shared = 2.0 * double(c.vocab_size) * 64 + 64;
  CHECK(ratio == Approx((shared + layer) / (shared + 2 * layer)).epsilon(1e-12));
  CHECK(s.metrics.get("perplexity_ratio").value() < 1.5);
  auto loaded = io::load_hf_checkpoint<float>(out / "01_compress" / "model");
  CHECK(model::model_digest(loaded) == model::model_digest(*r.model));
}

TEST_CASE("compress<rtn_as<int8_channel>> and <nf4>: representation tags and bytes by counting") {
  static_assert(std::is_same_v<rtn_as<quant::int8_channel>::produces, repr::int8>);
  static_assert(std::is_same_v<rtn_as<quant::nf4>::produces, repr::nf4>);
  static_assert(std::is_same_v<gptq::produces, repr::int4_group<128>>);
  const auto& c = base().config;
  // Every weight of the dense model in f32, and the projections' share of it.
  const double embed_head = 2.0 * double(c.vocab_size) * 64, norms = 64 + 2 * 2 * 64;
  const double proj = 2 * (4.0 * 64 * 64 + 3.0 * 64 * 128);
  const double before = 4 * (embed_head + norms + proj);
  auto d = calib_data();
  {
    auto p = pipeline(compress<rtn_as<quant::int8_channel>>{{}, d});
    auto r = p.run(base(), Bk{}, {.out = test::scratch("compress_rtn_int8"), .seed = 1});
    REQUIRE(r.passed);
    // int8: one byte per weight plus an f32 scale per output row (rows: 3·64 + 64 + 2·128 +
    // 64 = 576 per layer).
    const double after = 4 * (embed_head + norms) + proj + 4.0 * 2 * 576;
    CHECK(r.stages[0].metrics.get("memory_bytes").value() == after);
    CHECK(r.stages[0].metrics.get("memory_ratio").value() == Approx(after / before));
    CHECK(r.stages[0].metrics.get("perplexity_ratio").value() == Approx(1.0).epsilon(1e-3));
  }
  {
    auto p = pipeline(compress<rtn_as<quant::nf4>>{{}, d});
    auto r = p.run(base(), Bk{}, {.out = test::scratch("compress_rtn_nf4"), .seed = 1});
    REQUIRE(r.passed);
    // NF4 with double quantization, per projection of n weights: n/2 code bytes, one 8-bit
    // absmax code per 64 weights, one f32 per 256 absmax codes (rounded up) and the f32
    // offset.
    double q = 0;
    for (double n :
         {64.0 * 64, 64.0 * 64, 64.0 * 64, 64.0 * 64, 128.0 * 64, 128.0 * 64, 128.0 * 64})
      q += n / 2 + n / 64 + 4 * std::ceil(n / 64 / 256) + 4;
    const double after = 4 * (embed_head + norms) + 2 * q;
    CHECK(r.stages[0].metrics.get("memory_bytes").value() == after);
  }
}
