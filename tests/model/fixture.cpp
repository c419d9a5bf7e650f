// The whole model on the transformers fixture: load the checkpoint directory (both config
// layouts), compare logits with transformers' own, and reproduce its greedy generation.

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/forward.hpp"

using namespace forge;

namespace {
struct expect_data {
  std::vector<std::int64_t> ids;
  std::vector<float> logits;
  std::int64_t B = 0, S = 0, V = 0;
};
expect_data read_expect() {
  auto f = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  expect_data e;
  e.ids = f.copy_as<std::int64_t>("input_ids", dtype::i64);
  e.logits = f.to_f32("logits");
  const auto& s = f.at("logits").shape;
  e.B = s[0], e.S = s[1], e.V = s[2];
  return e;
}
template <class B>
double max_abs_logit_error(B be, model::causal_lm<float>& m, const expect_data& e) {
  model::workspace<float> ws;
  auto logits = model::forward(be, m, ws, {.batch = e.B, .seq = e.S, .input_ids = e.ids});
  REQUIRE(logits.size() == e.logits.size());
  double err = 0;
  for (std::size_t i = 0; i < logits.size(); ++i)
    err = std::max(err, double(std::abs(logits[i] - e.logits[i])));
  return err;
}
}  // namespace

TEST_CASE("fixture logits match transformers within 1e-4 (f32)") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto e = read_expect();
  // transformers computed these in f32 too; 1e-4 absorbs summation-order differences
  // over the 64/176-wide dot products of two layers.
  CHECK(max_abs_logit_error(backend::scalar{}, m, e) < 1e-4);
  CHECK(max_abs_logit_error(backend::simd<>{}, m, e) < 1e-4);
}

TEST_CASE("the transformers-4 config layout loads to the same model") {
  const auto v5 = model::load_config(test::llama_a() / "model" / "config.json");
  const auto v4 = model::load_config(test::llama_a() / "model" / "config.v4.json");
  CHECK(v4 == v5);
  CHECK(v5.rope.type == "default");
  CHECK(v5.rope.theta == 10000.0);
  CHECK(v5.head_dim == 16);
  CHECK(v5.num_key_value_heads == 2);
  // And the v4 file drives the whole model to the same logits.
  auto dir = test::scratch("model_fixture_v4");
  for (auto name : {"model.safetensors", "generation_config.json"})
    std::filesystem::copy_file(test::llama_a() / "model" / name, dir / name);
  std::filesystem::copy_file(test::llama_a() / "model" / "config.v4.json", dir / "config.json");
  auto m = io::load_hf_checkpoint<float>(dir);
  CHECK(max_abs_logit_error(backend::simd<>{}, m, read_expect()) < 1e-4);
}

TEST_CASE("last-position logits equal the last row of all logits") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto e = read_expect();
  model::workspace<float> ws;
  model::forward(backend::simd<>{}, m, ws, {.batch = e.B, .seq = e.S, .input_ids = e.ids},
                 {.logits = model::logits_for::last});
  auto last = ws.logits();
  REQUIRE(std::int64_t(last.size()) == e.B * e.V);
  for (std::int64_t b = 0; b < e.B; ++b)
    for (std::int64_t v = 0; v < e.V; ++v)
      CHECK(std::abs(last[b * e.V + v] - e.logits[(b * e.S + e.S - 1) * e.V + v]) < 1e-4);
}
