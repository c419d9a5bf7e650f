// Writes checkpoints with forge for a reference tool to load: one directory per
// configuration (Llama with tied embeddings, 3:1 GQA and llama3 rope; Llama with biases and
// linear rope stored in bf16; Qwen2 with q/k/v biases, one KV head and a windowed layer;
// Mistral with a sliding window), each with `forge_expected.safetensors` holding input ids
// and the logits forge computes from the saved files; and two PEFT adapter directories
// (LoRA on all linear layers with rsLoRA, and DoRA) over a saved base, with the logits forge
// computes with the adapter applied. check_transformers.py loads the directories with
// transformers (and PEFT) and compares. As a ctest test it checks that what was saved
// reloads to the same logits.
//
// usage: export_checkpoints OUT_DIR

#include <cstdio>
#include <filesystem>

#include "forge/adapters/lora.hpp"
#include "forge/core/rng.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;

namespace {
model_config base(architecture a) {
  model_config c;
  c.arch = a;
  c.vocab_size = 96, c.hidden_size = 48, c.intermediate_size = 72, c.num_hidden_layers = 2;
  c.num_attention_heads = 6, c.num_key_value_heads = 2, c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.sliding_window.assign(2, 0);
  c.eos_token_ids = {1};
  c.bos_token_id = 0;
  return c;
}

std::vector<std::int64_t> ids() {
  std::vector<std::int64_t> v;
  for (int t = 0; t < 24; ++t) v.push_back((t * 37 + 11) % 96);
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: export_checkpoints OUT_DIR\n");
    return 1;
  }
  const std::filesystem::path out = argv[1];
  struct item {
    const char* name;
    model_config c;
    std::optional<dtype> as;
  };
  std::vector<item> items;
  {
    auto c = base(architecture::llama);
    c.tie_word_embeddings = true, c.num_attention_heads = 6, c.num_key_value_heads = 2;
    c.head_dim = 12;  // head_dim != hidden / heads
    c.rope = {.type = "llama3",
              .theta = 500000.0,
              .factor = 8.0,
              .low_freq_factor = 1.0,
              .high_freq_factor = 4.0,
              .original_max_position_embeddings = 16};
    items.push_back({"llama_tied_gqa3_llama3", c, {}});
  }
  {
    auto c = base(architecture::llama);
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.rope = {.type = "linear", .factor = 2.0};
    items.push_back({"llama_biases_linear_bf16", c, dtype::bf16});
  }
  {
    auto c = base(architecture::qwen2);
    c.qkv_bias = true, c.num_key_value_heads = 1, c.sliding_window = {0, 8};
    items.push_back({"qwen2_kv1_window", c, {}});
  }
  {
    auto c = base(architecture::mistral);
    c.sliding_window = {8, 8};
    items.push_back({"mistral_window", c, {}});
  }
  try {
    int seed = 1;
    for (auto& it : items) {
      auto m = random_model<float>(it.c, {.seed = std::uint64_t(seed++), .initializer_range = 0.1});
      const auto dir = out / it.name;
      io::save_hf_checkpoint(m, dir, it.as);
      // Logits of what was saved (bf16 rounding included), from the files themselves.
      auto saved = io::load_hf_checkpoint<float>(dir);
      auto in = ids();
      workspace<float> ws;
      auto z = forward(backend::scalar{}, saved, ws,
                       {.batch = 1, .seq = std::int64_t(in.size()), .input_ids = in});
      std::vector<float> logits(z.begin(), z.end());
      // The in-memory model must agree with its reloaded copy (exactly for f32 storage).
      if (!it.as) {
        workspace<float> ws2;
        auto z2 = forward(backend::scalar{}, m, ws2,
                          {.batch = 1, .seq = std::int64_t(in.size()), .input_ids = in});
        for (std::size_t i = 0; i < logits.size(); ++i)
          if (z2[i] != logits[i]) {
            std::fprintf(stderr, "%s: reloaded logits differ at %zu\n", it.name, i);
            return 1;
          }
      }
      std::vector<io::tensor_view> views = {
          {"input_ids", dtype::i64, {1, std::int64_t(in.size())}, std::as_bytes(std::span(in))},
          io::f32_view("logits", {1, std::int64_t(in.size()), it.c.vocab_size}, logits)};
      io::write_safetensors(dir / "forge_expected.safetensors", views);
      std::printf("%s: written\n", it.name);
    }
    // PEFT adapters over a saved Llama base; B (and DoRA's magnitude) are randomised so the
    // adapter changes the logits (PEFT initialises B to zero).
    for (bool dora : {false, true}) {
      auto c = base(architecture::llama);
      auto m = random_model<float>(c, {.seed = 40u + dora, .initializer_range = 0.1});
      const auto dir = out / (dora ? "peft_dora" : "peft_lora_rslora");
      io::save_hf_checkpoint(m, dir / "base");
      auto set = adapters::attach_lora(backend::scalar{}, m,
                                       {.rank = 4,
                                        .alpha = 8,
                                        .target_modules = {"all-linear"},
                                        .use_rslora = !dora,
                                        .use_dora = dora},
                                       7);
      philox rng(99, dora);
      for (auto& mod : set.modules) {
        for (auto& b : mod->B) b = rng.normal(0.0f, 0.2f);
        for (auto& g : mod->m) g *= 1.0f + 0.1f * rng.normal();
      }
      io::save_peft_adapter(set, dir / "adapter");
      auto in = ids();
      workspace<float> ws;
      auto z = forward(backend::scalar{}, m, ws,
                       {.batch = 1, .seq = std::int64_t(in.size()), .input_ids = in});
      std::vector<float> logits(z.begin(), z.end());
      std::vector<io::tensor_view> views = {
          {"input_ids", dtype::i64, {1, std::int64_t(in.size())}, std::as_bytes(std::span(in))},
          io::f32_view("logits", {1, std::int64_t(in.size()), c.vocab_size}, logits)};
      io::write_safetensors(dir / "forge_expected.safetensors", views);
      std::printf("%s: written\n", dir.filename().c_str());
    }
  } catch (const forge::error& e) {
    std::fprintf(stderr, "export_checkpoints: %s\n", e.what());
    return 1;
  }
  return 0;
}
