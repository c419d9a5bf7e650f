// Generation: transformers' greedy tokens on the fixture, cached logits equal to uncached
// ones (prefill + decode, reuse after truncation, left-padded batches, sliding windows),
// batched prompts of different lengths, the logits processors on hand-computed cases,
// seeded sampling, eos and stop strings.

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/generate.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;

namespace {
struct gen_fixture {
  std::vector<std::int64_t> prompt, output;
};
gen_fixture read_generate_json() {
  std::ifstream f(test::llama_a() / "generate.json");
  auto j = nlohmann::json::parse(f);
  return {j["prompt_ids"].get<std::vector<std::int64_t>>(),
          j["output_ids"].get<std::vector<std::int64_t>>()};
}
std::vector<std::int64_t> new_tokens(const gen_fixture& g) {
  return {g.output.begin() + std::ptrdiff_t(g.prompt.size()), g.output.end()};
}
}  // namespace

TEST_CASE("greedy generation reproduces transformers' tokens exactly") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto g = read_generate_json();
  const auto want = new_tokens(g);
  generation_options o{.max_new_tokens = std::int64_t(want.size())};
  CHECK(generate(backend::simd<>{}, m, {g.prompt}, o).tokens[0] == want);
  CHECK(generate(backend::scalar{}, m, {g.prompt}, o).tokens[0] == want);
}

TEST_CASE("kv-cache logits equal no-cache logits on the fixture") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto g = read_generate_json();
  const std::int64_t T = std::int64_t(g.output.size()), V = m.config.vocab_size;
  workspace<float> full_ws, ws;
  auto full = forward(backend::simd<>{}, m, full_ws, {.batch = 1, .seq = T, .input_ids = g.output});
  std::vector<float> all(full.begin(), full.end());
  kv_cache<float> cache(m.config, 1, T);
  // Same arithmetic in a different blocking (GEMV vs GEMM): f32 rounding only.
  const double tol = 1e-5;
  auto check_rows = [&](std::span<const float> z, std::int64_t first, std::int64_t n) {
    double err = 0;
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t v = 0; v < V; ++v)
        err = std::max(err, double(std::abs(z[r * V + v] - all[(first + r) * V + v])));
    return err;
  };
  const std::int64_t P = std::int64_t(g.prompt.size());
  auto z = forward(backend::simd<>{}, m, ws,
                   {.batch = 1, .seq = P, .input_ids = std::span(g.output).first(P)}, {}, &cache);
  CHECK(check_rows(z, 0, P) < tol);
  for (std::int64_t t = P; t < T; ++t) {
    z = forward(backend::simd<>{}, m, ws,
                {.batch = 1, .seq = 1, .input_ids = std::span(g.output).subspan(t, 1)}, {}, &cache);
    CHECK(check_rows(z, t, 1) < tol);
  }
  // Reuse across calls: roll back to 5 slots and continue with a 3-token chunk.
  cache.truncate(5);
  z = forward(backend::simd<>{}, m, ws,
              {.batch = 1, .seq = 3, .input_ids = std::span(g.output).subspan(5, 3)}, {}, &cache);
  CHECK(check_rows(z, 5, 3) < tol);
  CHECK(cache.length == 8);
}

TEST_CASE("cached, left-padded, windowed decoding equals the plain forward (f64)") {
  for (auto arch : {architecture::mistral, architecture::qwen2}) {
    model_config c;
    c.arch = arch;
    c.vocab_size = 40, c.hidden_size = 16, c.intermediate_size = 20, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = arch == architecture::qwen2 ? 1 : 2;
    c.head_dim = 4, c.qkv_bias = arch == architecture::qwen2;
    c.sliding_window = arch == architecture::mistral ? std::vector<std::int64_t>{3, 3}
                                                     : std::vector<std::int64_t>{0, 4};
    auto m = random_model<double>(c, {.seed = 1, .initializer_range = 0.3});
    const std::vector<std::int64_t> seq = {3, 9, 27, 1, 5, 38, 12, 7, 19};  // row 1 of the batch
    const std::vector<std::int64_t> seq0 = {4, 8, 15, 16, 23, 35, 2, 11, 30, 6, 21, 33};
    const std::int64_t T0 = std::int64_t(seq0.size()), T1 = std::int64_t(seq.size());
    const std::int64_t pad = T0 - T1, V = c.vocab_size;
    // Reference: each row alone, no cache, no padding.
    workspace<double> w0, w1, ws;
    auto r0 = forward(backend::scalar{}, m, w0, {.batch = 1, .seq = T0, .input_ids = seq0});
    std::vector<double> ref0(r0.begin(), r0.end());
    auto r1 = forward(backend::scalar{}, m, w1, {.batch = 1, .seq = T1, .input_ids = seq});
    std::vector<double> ref1(r1.begin(), r1.end());
    // Batched: row 1 left-padded; prefill 6 slots, then one slot at a time.
    kv_cache<double> cache(c, 2, T0);
    double err = 0;
    for (std::int64_t s0 = 0; s0 < T0;) {
      const std::int64_t n = s0 == 0 ? 6 : 1;
      std::vector<std::int64_t> ids, mask, pos;
      for (std::int64_t b = 0; b < 2; ++b)
        for (std::int64_t s = s0; s < s0 + n; ++s) {
          const bool real = b == 0 || s >= pad;
          ids.push_back(b == 0 ? seq0[s] : (real ? seq[s - pad] : 0));
          mask.push_back(real);
          pos.push_back(b == 0 ? s : (real ? s - pad : 1));
        }
      auto z = forward(
          backend::simd<>{}, m, ws,
          {.batch = 2, .seq = n, .input_ids = ids, .attention_mask = mask, .position_ids = pos}, {},
          &cache);
      for (std::int64_t s = s0; s < s0 + n; ++s)
        for (std::int64_t v = 0; v < V; ++v) {
          err = std::max(err, std::abs(z[(s - s0) * V + v] - ref0[s * V + v]));
          if (s >= pad)
            err = std::max(err, std::abs(z[(n + s - s0) * V + v] - ref1[(s - pad) * V + v]));
        }
      s0 += n;
    }
    // Left padding shifts query and key slots alike, so windows cover the same real tokens.
    // f64, same formulas, different blocking: 1e-12.
    INFO(model_type_name(arch));
    CHECK(err < 1e-12);
  }
}

TEST_CASE("batched prompts of different lengths decode as they do alone") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto g = read_generate_json();
  const std::vector<std::int64_t> shorter(g.prompt.begin(), g.prompt.begin() + 3);
  const std::vector<std::int64_t> other = {7, 300, 12, 90, 411};
  generation_options o{.max_new_tokens = 10};
  auto batched = generate(backend::simd<>{}, m, {g.prompt, shorter, other}, o);
  CHECK(batched.tokens[0] == generate(backend::simd<>{}, m, {g.prompt}, o).tokens[0]);
  CHECK(batched.tokens[1] == generate(backend::simd<>{}, m, {shorter}, o).tokens[0]);
  CHECK(batched.tokens[2] == generate(backend::simd<>{}, m, {other}, o).tokens[0]);
  const auto want = new_tokens(g);
  CHECK(batched.tokens[0] == std::vector<std::int64_t>(want.begin(), want.begin() + 10));
}

TEST_CASE("repetition penalty divides positive and multiplies negative seen logits") {
  // Hand-computed: z = [2, 2.5, -1, 0.5], seen {1, 2}, penalty 2 -> [2, 1.25, -2, 0.5].
  std::vector<double> z = {2.0, 2.5, -1.0, 0.5};
  philox rng(0, 0);
  generation_options o{.repetition_penalty = 2.0};
  CHECK(pick_token(z, {1, 2, 1}, o, rng) == 0);
  CHECK(z == std::vector<double>{2.0, 1.25, -2.0, 0.5});
}

TEST_CASE("top-k 1 and a tiny top-p reduce sampling to greedy") {
  std::vector<double> base = {0.1, 1.7, -0.3, 1.6, 0.0};
  philox rng(3, 0);
  for (int i = 0; i < 50; ++i) {
    auto z = base;
    CHECK(pick_token(z, {}, {.do_sample = true, .top_k = 1}, rng) == 1);
    z = base;
    CHECK(pick_token(z, {}, {.do_sample = true, .top_k = 0, .top_p = 1e-6}, rng) == 1);
  }
}

TEST_CASE("top-p keeps the nucleus and samples it in proportion") {
  // p = [0.5, 0.3, 0.2], top_p = 0.6: 0.2 is dropped (0.2 <= 0.4), the rest renormalised
  // to [0.625, 0.375]. 4000 draws: the standard error of the frequency is 0.0077, so a
  // 0.04 band is 5 sigma.
  philox rng(5, 0);
  int n0 = 0, n1 = 0, n2 = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<double> z = {std::log(0.5), std::log(0.3), std::log(0.2)};
    const auto t = pick_token(z, {}, {.do_sample = true, .top_k = 0, .top_p = 0.6}, rng);
    (t == 0 ? n0 : t == 1 ? n1 : n2)++;
  }
  CHECK(n2 == 0);
  CHECK(std::abs(n0 / 4000.0 - 0.625) < 0.04);
  // Temperature 0.5 squares the odds: p ∝ [0.25, 0.09, 0.04]: token 0 has 0.6579.
  int m0 = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<double> z = {std::log(0.5), std::log(0.3), std::log(0.2)};
    m0 += pick_token(z, {}, {.do_sample = true, .temperature = 0.5, .top_k = 0}, rng) == 0;
  }
  CHECK(std::abs(m0 / 4000.0 - 0.25 / 0.38) < 0.04);
}

TEST_CASE("seeded sampling is reproducible and the seed matters") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto g = read_generate_json();
  generation_options o{
      .max_new_tokens = 12, .do_sample = true, .temperature = 1.5, .top_k = 0, .seed = 42};
  const auto a = generate(backend::simd<>{}, m, {g.prompt}, o).tokens[0];
  const auto b = generate(backend::simd<>{}, m, {g.prompt}, o).tokens[0];
  o.seed = 43;
  const auto c = generate(backend::simd<>{}, m, {g.prompt}, o).tokens[0];
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("generation stops at eos tokens and at stop strings") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto g = read_generate_json();
  const auto want = new_tokens(g);  // 499, 59, 142, 301, ...
  generation_options o{.max_new_tokens = 16, .eos_token_ids = {want[1]}};
  auto r = generate(backend::simd<>{}, m, {g.prompt}, o);
  CHECK(r.tokens[0] == std::vector<std::int64_t>{want[0], want[1]});
  CHECK(r.reasons[0] == finish_reason::eos);
  // A test-only decoder that spells each token as <id>.
  generation_options s{.max_new_tokens = 16, .stop_strings = {"2><3"}};
  s.decode = [](std::span<const std::int64_t> t) {
    std::string out;
    for (auto x : t) out.append("<").append(std::to_string(x)).append(">");
    return out;
  };
  r = generate(backend::simd<>{}, m, {g.prompt}, s);
  // "<499><59><142><301>" contains "2><3" once token 301 is appended.
  CHECK(r.tokens[0] == std::vector<std::int64_t>{want[0], want[1], want[2], want[3]});
  CHECK(r.reasons[0] == finish_reason::stop_string);
  r = generate(backend::simd<>{}, m, {g.prompt}, {.max_new_tokens = 4});
  CHECK(r.reasons[0] == finish_reason::length);
  CHECK(r.tokens[0].size() == 4);
}
