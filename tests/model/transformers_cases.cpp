// Checkpoints written by transformers 5.17 itself (tests/model/data/transformers, made by
// make_cases.sh there): Llama with tied embeddings, 3:1 GQA, head_dim ≠ hidden/heads and
// llama3 rope; Llama with attention and MLP biases and linear rope; Llama with dynamic rope
// past max_position_embeddings; Qwen2 with q/k/v biases, one KV head and a sliding-window
// layer; Mistral with a sliding window. For each, forge must reproduce transformers' logits
// on a left-padded batch with explicit position ids, and its greedy tokens for a left-padded
// batch of two prompts of different lengths.

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/generate.hpp"

using namespace forge;
using namespace forge::model;

TEST_CASE("checkpoints made by transformers: logits and greedy tokens match") {
  const auto root = test::source_dir() / "tests" / "model" / "data" / "transformers";
  int cases = 0;
  for (auto name : {"llama_tied_gqa3_llama3", "llama_biases_linear", "llama_dynamic",
                    "qwen2_kv1_window", "mistral_window"}) {
    INFO(name);
    const auto dir = root / name;
    std::ifstream f(dir / "expect.json");
    REQUIRE(f);
    const auto e = nlohmann::json::parse(f);
    auto m = io::load_hf_checkpoint<float>(dir);
    const auto ids = e["input_ids"].get<std::vector<std::int64_t>>();
    const auto mask = e["attention_mask"].get<std::vector<std::int64_t>>();
    const auto pos = e["position_ids"].get<std::vector<std::int64_t>>();
    const auto want = e["logits"].get<std::vector<float>>();
    const std::int64_t B = 2, S = 12, V = m.config.vocab_size;
    workspace<float> ws;
    auto z = forward(
        backend::simd<>{}, m, ws,
        {.batch = B, .seq = S, .input_ids = ids, .attention_mask = mask, .position_ids = pos});
    REQUIRE(z.size() == want.size());
    // Padding queries are excluded: their outputs are undefined in both implementations.
    // 1e-4: f32 on both sides, eager attention, different summation order.
    double err = 0;
    for (std::int64_t t = 0; t < B * S; ++t)
      if (mask[t])
        for (std::int64_t v = 0; v < V; ++v)
          err = std::max(err, double(std::abs(z[t * V + v] - want[t * V + v])));
    CHECK(err < 1e-4);
    const auto prompts = e["prompts"].get<std::vector<std::vector<std::int64_t>>>();
    auto g = generate(backend::simd<>{}, m, prompts, {.max_new_tokens = 8, .eos_token_ids = {-1}});
    CHECK(g.tokens == e["greedy"].get<std::vector<std::vector<std::int64_t>>>());
    ++cases;
  }
  CHECK(cases == 5);
}
