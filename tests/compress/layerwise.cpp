// Whole-model GPTQ and AWQ with layer-by-layer calibration (hidden states carried from layer to
// layer, cost linear in depth) against the whole-model passes (quadratic in depth): every
// installed quantized weight and every reported error must be bit-identical.

#include <catch2/catch.hpp>

#include <chrono>

#include "forge/core/rng.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/model_quantize.hpp"

using namespace forge;
using Bk = backend::simd<>;

namespace {

model::causal_lm<float> small_model(std::int64_t layers, std::uint64_t seed) {
  model::model_config c;
  c.vocab_size = 97, c.hidden_size = 64, c.intermediate_size = 128;
  c.num_hidden_layers = layers, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.head_dim = 16, c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = false;
  c.sliding_window.assign(std::size_t(layers), 0);
  c.sliding_window[1] = 8;  // one windowed layer: the one-layer model must use its window
  return model::random_model<float>(c, {.seed = seed});
}

std::vector<std::vector<std::int64_t>> calibration(std::size_t n, std::uint64_t seed) {
  philox g(seed);
  std::vector<std::vector<std::int64_t>> out(n);
  for (auto& s : out) {
    s.resize(std::size_t(12 + g.below(20)));
    for (auto& t : s) t = std::int64_t(g.below(97));
  }
  return out;
}

template <class F>
void check_same(model::causal_lm<float>& a, model::causal_lm<float>& b,
                const quant::model_quant_report& ra, const quant::model_quant_report& rb) {
  REQUIRE(ra.layers.size() == rb.layers.size());
  REQUIRE(ra.layers.size() == 7 * a.layers.size());
  for (std::size_t i = 0; i < ra.layers.size(); ++i) {
    INFO(ra.layers[i].name);
    CHECK(ra.layers[i].name == rb.layers[i].name);
    CHECK(ra.layers[i].error == rb.layers[i].error);
    CHECK(ra.layers[i].rtn_error == rb.layers[i].rtn_error);
    CHECK(ra.layers[i].awq_ratio == rb.layers[i].awq_ratio);
  }
  auto la = adapters::linear_layers(a), lb = adapters::linear_layers(b);
  int compared = 0;
  for (std::size_t k = 0; k < la.size(); ++k) {
    if (!la[k].layer->base) continue;
    INFO(la[k].name);
    const auto* qa = dynamic_cast<const adapters::quantized_base<Bk, F>*>(la[k].layer->base.get());
    const auto* qb = dynamic_cast<const adapters::quantized_base<Bk, F>*>(lb[k].layer->base.get());
    REQUIRE(qa);
    REQUIRE(qb);
    CHECK(qa->weight() == qb->weight());
    ++compared;
  }
  CHECK(compared == int(7 * a.layers.size()));
  // Norms (AWQ folds scales into them) and every dense parameter.
  std::vector<const std::vector<float>*> pa, pb;
  a.for_each_parameter([&](const model::parameter<float>& p) { pa.push_back(&p.value); });
  b.for_each_parameter([&](const model::parameter<float>& p) { pb.push_back(&p.value); });
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(*pa[i] == *pb[i]);
}

}  // namespace

TEST_CASE("layer-by-layer GPTQ calibration gives the whole-model result bit for bit") {
  const auto calib = calibration(6, 11);
  auto a = small_model(4, 5), b = small_model(4, 5);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ra = quant::quantize_model_gptq<quant::int4_g32>(Bk{}, a, calib, {.act_order = true},
                                                              {.layerwise = true});
  const auto t1 = std::chrono::steady_clock::now();
  const auto rb = quant::quantize_model_gptq<quant::int4_g32>(Bk{}, b, calib, {.act_order = true},
                                                              {.layerwise = false});
  const auto t2 = std::chrono::steady_clock::now();
  check_same<quant::int4_g32>(a, b, ra, rb);
  WARN("GPTQ, 4 layers: layer by layer " << std::chrono::duration<double>(t1 - t0).count()
                                         << " s, whole model "
                                         << std::chrono::duration<double>(t2 - t1).count() << " s");
}

TEST_CASE("layer-by-layer AWQ calibration gives the whole-model result bit for bit") {
  const auto calib = calibration(6, 12);
  auto a = small_model(3, 6), b = small_model(3, 6);
  const auto ra =
      quant::quantize_model_awq<quant::int4_g32>(Bk{}, a, calib, {}, {.layerwise = true});
  const auto rb =
      quant::quantize_model_awq<quant::int4_g32>(Bk{}, b, calib, {}, {.layerwise = false});
  check_same<quant::int4_g32>(a, b, ra, rb);
}

TEST_CASE("layer-by-layer calibration rejects bad calibration sequences like the model does") {
  auto m = small_model(2, 7);
  CHECK_THROWS_AS(quant::quantize_model_gptq<quant::int4_g32>(Bk{}, m, {{1, 2, 97}}), error);
  CHECK_THROWS_AS(quant::quantize_model_gptq<quant::int4_g32>(Bk{}, m, {{}}), error);
  CHECK_THROWS_AS(quant::quantize_model_gptq<quant::int4_g32>(Bk{}, m, {}), error);
}
