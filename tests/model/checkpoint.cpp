// Checkpoint directories: save -> load round trips for every architecture and storage
// dtype, sharded checkpoints, generation_config eos lists, and clear errors for bad
// checkpoints (missing / extra / misshapen tensors, wrong dtype, truncated file, NaN).

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;
namespace fs = std::filesystem;

namespace {

model_config tiny(architecture a) {
  model_config c;
  c.arch = a;
  c.vocab_size = 48, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 4;
  c.max_position_embeddings = 128;
  c.sliding_window.assign(2, 0);
  c.eos_token_ids = {1};
  c.bos_token_id = 0;
  if (a == architecture::qwen2) c.qkv_bias = true, c.sliding_window = {0, 8};
  if (a == architecture::mistral) c.sliding_window = {8, 8};
  return c;
}

std::vector<float> logits_of(causal_lm<float>& m) {
  std::vector<std::int64_t> ids = {1, 5, 9, 12, 3, 7};
  workspace<float> ws;
  auto z = forward(backend::simd<>{}, m, ws, {.batch = 1, .seq = 6, .input_ids = ids});
  return {z.begin(), z.end()};
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const forge::error& e) {
    return e.what();
  }
  return "no error";
}

void copy_fixture(const fs::path& to) {
  for (auto name : {"config.json", "model.safetensors", "generation_config.json"})
    fs::copy_file(test::llama_a() / "model" / name, to / name);
}

// A copy of the fixture's tensors with one edit, written as a new model.safetensors.
void rewrite_fixture(const fs::path& dir,
                     const std::function<void(std::vector<io::tensor_view>&,
                                              std::vector<std::vector<std::byte>>&)>& edit) {
  auto f = io::safetensors_file::open(test::llama_a() / "model" / "model.safetensors");
  std::vector<std::vector<std::byte>> store;
  std::vector<io::tensor_view> views;
  store.reserve(64);
  for (const auto& t : f.tensors()) {
    auto b = f.bytes(t);
    store.emplace_back(b.begin(), b.end());
    views.push_back({t.name, t.type, t.shape, store.back()});
  }
  edit(views, store);
  fs::copy_file(test::llama_a() / "model" / "config.json", dir / "config.json");
  io::write_safetensors(dir / "model.safetensors", views);
}

}  // namespace

TEST_CASE("saved checkpoints of every architecture load back to the same model") {
  for (auto a : {architecture::llama, architecture::mistral, architecture::qwen2}) {
    for (bool tied : {false, true}) {
      auto c = tiny(a);
      c.tie_word_embeddings = tied;
      if (a == architecture::llama && tied)
        c.rope = {.type = "llama3",
                  .theta = 500000.0,
                  .factor = 8.0,
                  .low_freq_factor = 1.0,
                  .high_freq_factor = 4.0,
                  .original_max_position_embeddings = 64};
      auto m = random_model<float>(c, {.seed = 9});
      const auto dir = test::scratch("model_ckpt_" + model_type_name(a) + (tied ? "_tied" : ""));
      io::save_hf_checkpoint(m, dir);
      auto back = io::load_hf_checkpoint<float>(dir);
      INFO(model_type_name(a) << " tied=" << tied);
      CHECK(back.config == m.config);
      CHECK(back.generation.eos_token_ids == std::vector<std::int64_t>{1});
      std::vector<float> v1, v2;
      m.for_each_parameter([&](auto& p) { v1.insert(v1.end(), p.value.begin(), p.value.end()); });
      back.for_each_parameter(
          [&](auto& p) { v2.insert(v2.end(), p.value.begin(), p.value.end()); });
      CHECK(v1 == v2);  // f32 storage: exact
      CHECK(logits_of(back) == logits_of(m));
    }
  }
}

TEST_CASE("bf16 and f16 checkpoints load as the exactly widened values") {
  for (auto t : {dtype::bf16, dtype::f16}) {
    auto m = random_model<float>(tiny(architecture::qwen2), {.seed = 2});
    const auto dir = test::scratch(std::string("model_ckpt_") + std::string(name(t)));
    io::save_hf_checkpoint(m, dir, t);
    auto back = io::load_hf_checkpoint<float>(dir);
    CHECK(back.config.torch_dtype == t);
    bool all_exact = true;
    for (std::size_t i = 0; i < m.embed_tokens.value.size(); ++i) {
      const float x = m.embed_tokens.value[i];
      const float want = t == dtype::bf16 ? to_f32(to_bf16(x)) : to_f32(to_f16(x));
      all_exact &= back.embed_tokens.value[i] == want;
    }
    CHECK(all_exact);
    CHECK(back.embed_tokens.stored == t);
    // Stored as loaded: saving again without a dtype keeps the 16-bit format.
    const auto again = test::scratch(std::string("model_ckpt_again_") + std::string(name(t)));
    io::save_hf_checkpoint(back, again);
    auto f = io::safetensors_file::open(again / "model.safetensors");
    CHECK(f.at("model.norm.weight").type == t);
    // Converted on request.
    auto as32 = io::load_hf_checkpoint<float>(dir, {.store_as = dtype::f32});
    CHECK(as32.norm.stored == dtype::f32);
  }
}

TEST_CASE("sharded checkpoints load through model.safetensors.index.json") {
  auto m = random_model<float>(tiny(architecture::llama), {.seed = 4});
  const auto one = test::scratch("model_ckpt_single");
  io::save_hf_checkpoint(m, one);
  auto f = io::safetensors_file::open(one / "model.safetensors");
  const auto dir = test::scratch("model_ckpt_sharded");
  fs::copy_file(one / "config.json", dir / "config.json");
  std::vector<io::tensor_view> a, b;
  nlohmann::json map;
  for (const auto& t : f.tensors()) {
    const bool first = t.name.find("layers.1") == std::string::npos;
    (first ? a : b).push_back({t.name, t.type, t.shape, f.bytes(t)});
    map[t.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  io::write_safetensors(dir / "model-00001-of-00002.safetensors", a);
  io::write_safetensors(dir / "model-00002-of-00002.safetensors", b);
  io::write_atomic(dir / "model.safetensors.index.json",
                   nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
  auto back = io::load_hf_checkpoint<float>(dir);
  CHECK(logits_of(back) == logits_of(m));
  // An index entry pointing outside the directory is refused.
  map["model.norm.weight"] = "../model.safetensors";
  io::write_atomic(dir / "model.safetensors.index.json",
                   nlohmann::json{{"weight_map", map}}.dump());
  CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
             Catch::Contains("plain file name") && Catch::Contains("model.norm.weight"));
}

TEST_CASE("generation_config eos lists override the config's eos") {
  const auto dir = test::scratch("model_ckpt_eos_list");
  copy_fixture(dir);
  io::write_atomic(dir / "generation_config.json", std::string(R"({"eos_token_id": [1, 7, 9]})"));
  auto m = io::load_hf_checkpoint<float>(dir);
  CHECK(m.generation.eos_token_ids == std::vector<std::int64_t>{1, 7, 9});
}

TEST_CASE("bad checkpoints give errors naming the tensor and the expectation") {
  const auto dir = test::scratch("model_ckpt_bad");
  SECTION("missing tensor") {
    rewrite_fixture(dir, [](auto& v, auto&) {
      std::erase_if(v, [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
    });
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("missing tensor") &&
                   Catch::Contains("model.layers.1.mlp.up_proj.weight") &&
                   Catch::Contains("[176, 64]"));
  }
  SECTION("extra tensor") {
    rewrite_fixture(dir, [](auto& v, auto& store) {
      store.emplace_back(std::vector<std::byte>(8));
      v.push_back({"model.layers.0.self_attn.q_proj.bias", dtype::f32, {2}, store.back()});
    });
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("unexpected tensor") &&
                   Catch::Contains("model.layers.0.self_attn.q_proj.bias"));
  }
  SECTION("shape disagreeing with the config") {
    rewrite_fixture(dir, [](auto& v, auto&) {
      for (auto& t : v)
        if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {64, 32};
    });
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("model.layers.0.self_attn.k_proj.weight") &&
                   Catch::Contains("expected [32, 64]") && Catch::Contains("found [64, 32]"));
  }
  SECTION("wrong dtype") {
    rewrite_fixture(dir, [](auto& v, auto&) {
      for (auto& t : v)
        if (t.name == "model.norm.weight") t.type = dtype::i32;
    });
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("model.norm.weight") && Catch::Contains("F32, BF16 or F16") &&
                   Catch::Contains("I32"));
  }
  SECTION("NaN weights when validating") {
    rewrite_fixture(dir, [](auto& v, auto& store) {
      for (std::size_t i = 0; i < v.size(); ++i)
        if (v[i].name == "model.layers.1.post_attention_layernorm.weight") {
          const float nan = std::nanf("");
          std::memcpy(store[i].data() + 4 * 3, &nan, 4);
        }
    });
    CHECK_NOTHROW(io::load_hf_checkpoint<float>(dir));  // not asked to validate
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir, {.validate = true}); }),
               Catch::Contains("non-finite") &&
                   Catch::Contains("model.layers.1.post_attention_layernorm.weight") &&
                   Catch::Contains("index 3"));
  }
  SECTION("truncated safetensors") {
    copy_fixture(dir);
    const auto p = dir / "model.safetensors";
    fs::resize_file(p, fs::file_size(p) - 100);
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("model.safetensors"));
  }
  SECTION("no weights at all") {
    fs::copy_file(test::llama_a() / "model" / "config.json", dir / "config.json");
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("model.safetensors.index.json"));
  }
  SECTION("unsupported architecture") {
    copy_fixture(dir);
    auto j = nlohmann::json::parse(io::read_file(dir / "config.json"));
    j["architectures"] = {"GPT2LMHeadModel"};
    fs::remove(dir / "config.json");
    io::write_atomic(dir / "config.json", j.dump());
    CHECK_THAT(error_of([&] { io::load_hf_checkpoint<float>(dir); }),
               Catch::Contains("unsupported architecture") && Catch::Contains("GPT2LMHeadModel"));
  }
}
