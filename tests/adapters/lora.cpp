// LoRA against PEFT's fixture (llama_a: adapter/ made by PEFT 0.21, expect.safetensors and
// merged/ by PyTorch): logits, loss and every gradient through the frozen base, the PEFT
// directory round trip, merge/unmerge, target matching, initialisation and bad input.

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "../support/fixtures.hpp"
#include "forge/adapters/lora.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;
using be_t = backend::simd<>;

namespace {
double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}
}  // namespace

TEST_CASE("LoRA with PEFT's fixture adapter reproduces its logits, loss and gradients") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto set = io::load_peft_adapter(be_t{}, m, test::llama_a() / "adapter");
  auto ex = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  CHECK(set.modules.size() == 14);  // 7 projections x 2 layers
  CHECK(set.config.rank == 4);
  CHECK(set.config.scaling() == 2.0);
  std::size_t buffers = 0;
  m.for_each_parameter([&](auto& p) { buffers += !p.grad.empty(); });
  CHECK(buffers == 0);  // the base is frozen: no gradient memory for it

  const auto ids = ex.copy_as<std::int64_t>("input_ids", dtype::i64);
  workspace<float> ws;
  auto z =
      forward(be_t{}, m, ws, {.batch = 2, .seq = 18, .input_ids = ids}, {.for_backward = true});
  CHECK(max_abs_diff(z, ex.to_f32("logits_lora")) < 1e-4);  // f32 over two layers
  // HF shifts labels = input_ids inside the model; causal_lm_loss does the same.
  const double loss = causal_lm_loss(be_t{}, ws, ids);
  CHECK(std::abs(loss - double(ex.to_f32("loss_lora")[0])) < 1e-5);
  set.zero_grad();
  backward(be_t{}, m, ws);
  for (auto& mod : set.modules) {
    for (auto [which, got] : {std::pair{"lora_A", &mod->dA}, {"lora_B", &mod->dB}}) {
      const auto ref =
          ex.to_f32("grad.base_model.model." + mod->name + "." + which + ".default.weight");
      double top = 1e-12;
      for (float v : ref) top = std::max(top, double(std::abs(v)));
      INFO(mod->name << "." << which);
      // relative to the tensor's largest entry: f32 accumulation over 36 tokens, 2 layers
      CHECK(max_abs_diff(*got, ref) / top < 1e-4);
    }
  }
}

TEST_CASE("merging the fixture adapter gives PEFT's merged weights; unmerge restores the base") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto before = m.layers[1].down_proj.weight.value;
  auto set = io::load_peft_adapter(be_t{}, m, test::llama_a() / "adapter");
  set.merge(m);
  auto merged = io::safetensors_file::open(test::llama_a() / "merged" / "model.safetensors");
  std::size_t compared = 0;
  m.for_each_parameter([&](parameter<float>& p) {
    INFO(p.name);
    CHECK(max_abs_diff(p.value, merged.to_f32(p.name)) < 1e-5);  // f32 rounding of W + s·B·A
    ++compared;
  });
  CHECK(compared == merged.tensors().size());
  // A merged adapter adds nothing: the forward equals PEFT's adapted logits.
  auto ex = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  const auto ids = ex.copy_as<std::int64_t>("input_ids", dtype::i64);
  workspace<float> ws;
  auto z = forward(be_t{}, m, ws, {.batch = 2, .seq = 18, .input_ids = ids});
  CHECK(max_abs_diff(z, ex.to_f32("logits_lora")) < 1e-4);
  set.unmerge(m);
  CHECK(max_abs_diff(m.layers[1].down_proj.weight.value, before) < 1e-6);  // W + Δ − Δ in f32
}

TEST_CASE("a saved adapter has PEFT's layout and key names and loads back bit-exactly") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto set = io::load_peft_adapter(be_t{}, m, test::llama_a() / "adapter");
  const auto dir = test::scratch("adapters_lora_roundtrip");
  io::save_peft_adapter(set, dir, "llama_a");
  // Same tensor names, shapes and values as PEFT's own file.
  auto ours = io::safetensors_file::open(dir / "adapter_model.safetensors");
  auto peft = io::safetensors_file::open(test::llama_a() / "adapter" / "adapter_model.safetensors");
  REQUIRE(ours.tensors().size() == peft.tensors().size());
  for (const auto& t : peft.tensors()) {
    INFO(t.name);
    REQUIRE(ours.find(t.name) != nullptr);
    CHECK(ours.find(t.name)->shape == t.shape);
    CHECK(max_abs_diff(ours.to_f32(t.name), peft.to_f32(t.name)) == 0);
  }
  auto cfg = load_json(dir / "adapter_config.json");
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["r"] == 4);
  CHECK(cfg["lora_alpha"] == 8.0);
  CHECK(cfg["target_modules"].size() == 7);
  auto m2 = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto back = io::load_peft_adapter(be_t{}, m2, dir);
  REQUIRE(back.modules.size() == set.modules.size());
  for (std::size_t i = 0; i < set.modules.size(); ++i) {
    CHECK(back.modules[i]->A == set.modules[i]->A);
    CHECK(back.modules[i]->B == set.modules[i]->B);
  }
}

TEST_CASE("targets are matched as PEFT does: name or .name suffix, full-match regex, all-linear") {
  adapters::lora_config c;
  c.target_modules = {"q_proj"};
  CHECK(adapters::is_target(c, "model.layers.0.self_attn.q_proj"));
  CHECK(!adapters::is_target(c, "model.layers.0.self_attn.k_proj"));
  CHECK(!adapters::is_target(c, "model.layers.0.self_attn.xq_proj"));  // suffix must follow a dot
  c.target_modules = {"self_attn.v_proj"};
  CHECK(adapters::is_target(c, "model.layers.1.self_attn.v_proj"));
  c.target_modules = {"all-linear"};
  CHECK(adapters::is_target(c, "model.layers.1.mlp.down_proj"));
  CHECK(!adapters::is_target(c, "lm_head"));  // PEFT never adapts the output layer here
  c.target_regex = R"(.*\.1\.self_attn\.(q|v)_proj)";
  CHECK(adapters::is_target(c, "model.layers.1.self_attn.q_proj"));
  CHECK(!adapters::is_target(c, "model.layers.0.self_attn.q_proj"));
  CHECK(!adapters::is_target(c, "model.layers.1.self_attn.q_proj.x"));  // full match only

  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto set = adapters::attach_lora(be_t{}, m, c, 3);
  REQUIRE(set.modules.size() == 2);
  CHECK(set.modules[0]->name == "model.layers.1.self_attn.q_proj");
}

TEST_CASE("a new adapter starts as the base model with PEFT's initialisation") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto ex = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  const auto ids = ex.copy_as<std::int64_t>("input_ids", dtype::i64);
  workspace<float> ws;
  const auto z0 = forward(be_t{}, m, ws, {.batch = 2, .seq = 18, .input_ids = ids});
  const std::vector<float> base(z0.begin(), z0.end());
  auto set = adapters::attach_lora(be_t{}, m,
                                   {.rank = 16, .alpha = 32, .target_modules = {"all-linear"}}, 1);
  auto z = forward(be_t{}, m, ws, {.batch = 2, .seq = 18, .input_ids = ids});
  CHECK(max_abs_diff(z, base) == 0);  // B = 0 exactly
  // A ~ U(±1/√in) (kaiming_uniform with a = √5): all inside, and spread over the range.
  const auto& A = set.modules[0]->A;
  const double bound = 1 / std::sqrt(64.0);
  double lo = 1, hi = -1, mean = 0, var = 0;
  for (float v : A) lo = std::min(lo, double(v)), hi = std::max(hi, double(v)), mean += v;
  mean /= double(A.size());
  for (float v : A) var += (v - mean) * (v - mean);
  var /= double(A.size());
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi - lo > 1.9 * bound);
  CHECK(std::abs(var - bound * bound / 3) < 0.1 * bound * bound / 3);  // 1024 draws: ±10 %
  // r·(in + out) per module: q 128, k 96, v 96, o 128, gate/up/down 240 each; two layers
  CHECK(set.parameter_count() == 2 * 16 * (128 + 96 + 96 + 128 + 3 * 240));
}

TEST_CASE("rsLoRA scales by alpha over the square root of the rank") {
  adapters::lora_config c{.rank = 16, .alpha = 8, .use_rslora = true};
  CHECK(c.scaling() == Approx(2.0));
  c.use_rslora = false;
  CHECK(c.scaling() == Approx(0.5));
}

TEST_CASE("bad adapters and configurations give clear errors") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  CHECK_THROWS_WITH(adapters::attach_lora(be_t{}, m, {.rank = 0}), Catch::Contains("rank"));
  CHECK_THROWS_WITH(adapters::attach_lora(be_t{}, m, {.target_modules = {"qkv_proj"}}),
                    Catch::Contains("no module matches") && Catch::Contains("qkv_proj"));
  CHECK_THROWS_WITH(adapters::attach_lora(be_t{}, m, {.target_regex = "(("}),
                    Catch::Contains("regex"));
  const auto dir = test::scratch("adapters_lora_bad");
  const auto src = test::llama_a() / "adapter";
  // Wrong rank in the config: the tensors no longer fit.
  std::filesystem::copy_file(src / "adapter_model.safetensors", dir / "adapter_model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  auto cfg = load_json(src / "adapter_config.json");
  cfg["r"] = 8;
  save_json(dir / "adapter_config.json", cfg);
  auto m1 = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  CHECK_THROWS_WITH(io::load_peft_adapter(be_t{}, m1, dir),
                    Catch::Contains("shape does not match") && Catch::Contains("[8, 64]"));
  // A base model with fewer layers than the adapter was made for.
  cfg["r"] = 4;
  save_json(dir / "adapter_config.json", cfg);
  auto c1 = m1.config;
  c1.num_hidden_layers = 1;
  auto small = random_model<float>(c1, {.seed = 1});
  CHECK_THROWS_WITH(
      io::load_peft_adapter(be_t{}, small, dir),
      Catch::Contains("base model does not have") && Catch::Contains("model.layers.1"));
  cfg["use_dora"] = true;  // DoRA config but no magnitude vectors in the file
  save_json(dir / "adapter_config.json", cfg);
  auto m2 = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  CHECK_THROWS_WITH(io::load_peft_adapter(be_t{}, m2, dir),
                    Catch::Contains("lora_magnitude_vector") && Catch::Contains("missing"));
  cfg["use_dora"] = false;
  cfg["peft_type"] = "IA3";
  save_json(dir / "adapter_config.json", cfg);
  CHECK_THROWS_WITH(io::load_peft_adapter(be_t{}, m2, dir), Catch::Contains("IA3"));
}
