// QLoRA: the NF4 (double-quantized) base takes ≈ 4.127 bits per parameter, and LoRA on it
// computes the same outputs and gradients as LoRA on the dequantized dense weights.

#include <catch2/catch.hpp>

#include <omp.h>

#include "forge/adapters/qlora.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {
model::model_config cfg(std::int64_t H, std::int64_t I) {
  model::model_config c;
  c.vocab_size = 50, c.hidden_size = H, c.intermediate_size = I, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = H / 4;
  c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(2, 0);
  return c;
}
}  // namespace

TEST_CASE("the NF4 base takes 4.127 bits per parameter (QLoRA §3)") {
  auto m = model::random_model<float>(cfg(256, 512), {.seed = 1});
  std::int64_t params = 0;
  std::size_t expect = 0;
  for (auto [key, lin] : adapters::linear_layers(m))
    if (key != "lm_head")
      params += lin->in * lin->out, expect += quant::nf4::bytes_for(lin->out, lin->in);
  const auto bytes = adapters::quantize_base_nf4(be_t{}, m);
  CHECK(bytes == expect);
  CHECK(bytes == adapters::quantized_base_bytes(m));
  const double bits = 8.0 * double(bytes) / double(params);
  // 4 + 8/64 (8-bit absmax per 64) + 32/(64·256) (f32 per 256 absmax) + per-tensor offsets
  CHECK(std::abs(bits - (4 + 8.0 / 64 + 32.0 / (64 * 256))) < 0.002);
  for (auto [key, lin] : adapters::linear_layers(m))
    if (key != "lm_head") CHECK(lin->weight.value.empty());  // the dense copy is gone
}

TEST_CASE("LoRA on the NF4 base equals LoRA on its dequantized weights") {
  omp_set_num_threads(1);
  auto q = model::random_model<float>(cfg(64, 128), {.seed = 3});
  auto dense = q;
  adapters::quantize_base_nf4(be_t{}, q);
  // The dense twin gets exactly the dequantized weights.
  for (auto [key, lin] : adapters::linear_layers(dense)) {
    if (key == "lm_head") continue;
    auto& ql = adapters::layer_named(q, key);
    const auto& w = dynamic_cast<const adapters::quantized_base<be_t>&>(*ql.base).weight();
    for (std::int64_t r = 0; r < lin->out; ++r)
      quant::nf4::dequantize_row(
          w, r,
          std::span(lin->weight.value).subspan(std::size_t(r * lin->in), std::size_t(lin->in)));
  }
  const adapters::lora_config c{.rank = 4, .alpha = 8, .target_modules = {"all-linear"}};
  auto sq = adapters::attach_lora(be_t{}, q, c, 7);
  auto sd = adapters::attach_lora(be_t{}, dense, c, 7);
  for (std::size_t i = 0; i < sq.modules.size(); ++i)
    for (std::size_t j = 0; j < sq.modules[i]->B.size(); ++j)
      sq.modules[i]->B[j] = sd.modules[i]->B[j] = 0.05f * float((j * 7 + i) % 11) - 0.25f;
  std::vector<std::int64_t> ids(24);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 13) % 50);
  model::workspace<float> wq, wd;
  auto zq = model::forward(be_t{}, q, wq, {.batch = 2, .seq = 12, .input_ids = ids},
                           {.for_backward = true});
  auto zd = model::forward(be_t{}, dense, wd, {.batch = 2, .seq = 12, .input_ids = ids},
                           {.for_backward = true});
  double d = 0;
  for (std::size_t i = 0; i < zq.size(); ++i) d = std::max(d, double(std::abs(zq[i] - zd[i])));
  CHECK(d < 1e-4);  // same weights, different f32 summation order
  const double lq = model::causal_lm_loss(be_t{}, wq, ids),
               ld = model::causal_lm_loss(be_t{}, wd, ids);
  CHECK(std::abs(lq - ld) < 1e-5);
  model::backward(be_t{}, q, wq);
  model::backward(be_t{}, dense, wd);
  for (std::size_t i = 0; i < sq.modules.size(); ++i)
    for (auto [a, b] : {std::pair{&sq.modules[i]->dA, &sd.modules[i]->dA},
                        {&sq.modules[i]->dB, &sd.modules[i]->dB}}) {
      double top = 1e-12, e = 0;
      for (std::size_t j = 0; j < a->size(); ++j)
        top = std::max(top, double(std::abs((*b)[j]))),
        e = std::max(e, double(std::abs((*a)[j] - (*b)[j])));
      INFO(sq.modules[i]->name);
      CHECK(e / top < 1e-4);
    }
}

TEST_CASE("NF4 needs input widths that are multiples of 64, and DoRA a dense base") {
  auto m = model::random_model<float>(cfg(64, 96), {.seed = 1});
  CHECK_THROWS_WITH(adapters::quantize_base_nf4(be_t{}, m),
                    Catch::Contains("down_proj") && Catch::Contains("in = 96"));
  auto q = model::random_model<float>(cfg(64, 128), {.seed = 1});
  adapters::quantize_base_nf4(be_t{}, q);
  CHECK_THROWS_WITH(adapters::attach_lora(be_t{}, q, {.use_dora = true}),
                    Catch::Contains("DoRA needs a dense"));
}
