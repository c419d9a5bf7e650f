// config.json parsing: both transformers layouts, every rope type, architecture-specific
// defaults and biases, sliding windows, eos lists, errors that name the key, and rope
// frequencies against values computed by hand from transformers' formulas.

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "forge/model/config.hpp"
#include "forge/model/rope.hpp"

using namespace forge;
using namespace forge::model;

namespace {
nlohmann::json base() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-6})");
}
std::string error_of(const nlohmann::json& j) {
  try {
    parse_config(j, "config.json");
  } catch (const forge::error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("defaults follow transformers: head_dim, kv heads, rope") {
  auto j = base();
  j.erase("num_key_value_heads");
  const auto c = parse_config(j, "config.json");
  CHECK(c.head_dim == 8);
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.rope.type == "default");
  CHECK(c.rope.theta == 10000.0);
  CHECK(!c.tie_word_embeddings);
  CHECK(c.sliding_window == std::vector<std::int64_t>{0, 0, 0});
}

TEST_CASE("both rope layouts parse to the same rope config") {
  auto v5 = base(), v4 = base();
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                           {"factor", 8.0},           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
  CHECK(parse_config(v5, "a") == parse_config(v4, "b"));
  auto old = base();  // transformers < 4.45 spelled the key "type"
  old["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  CHECK(parse_config(old, "c").rope.type == "linear");
  CHECK(parse_config(old, "c").rope.factor == 4.0);
}

TEST_CASE("architecture specifics: Qwen2 biases and windows, Mistral windows, Llama biases") {
  auto q = base();
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["use_sliding_window"] = true;
  q["sliding_window"] = 16;
  q["max_window_layers"] = 1;
  auto c = parse_config(q, "q");
  CHECK(c.qkv_bias);
  CHECK(!c.o_bias);
  CHECK(c.sliding_window == std::vector<std::int64_t>{0, 16, 16});
  q["use_sliding_window"] = false;
  CHECK(parse_config(q, "q").sliding_window == std::vector<std::int64_t>{0, 0, 0});

  auto m = base();
  m["architectures"] = {"MistralForCausalLM"};
  CHECK(parse_config(m, "m").sliding_window == std::vector<std::int64_t>{4096, 4096, 4096});
  m["sliding_window"] = nullptr;
  CHECK(parse_config(m, "m").sliding_window == std::vector<std::int64_t>{0, 0, 0});

  auto l = base();
  l["attention_bias"] = true;
  l["mlp_bias"] = true;
  c = parse_config(l, "l");
  CHECK((c.qkv_bias && c.o_bias && c.mlp_bias));
}

TEST_CASE("to_json round-trips through the parser") {
  for (const char* arch : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) {
    auto j = base();
    j["architectures"] = {arch};
    j["eos_token_id"] = {2, 5};
    j["tie_word_embeddings"] = true;
    j["head_dim"] = 12;
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    const auto c = parse_config(j, "x");
    CHECK(parse_config(to_json(c), "y") == c);
    CHECK(c.eos_token_ids == std::vector<std::int64_t>{2, 5});
  }
}

TEST_CASE("invalid configs name the key and the expectation") {
  auto j = base();
  j["architectures"] = {"GPTNeoXForCausalLM"};
  CHECK_THAT(error_of(j),
             Catch::Contains("unsupported architecture") && Catch::Contains("GPTNeoXForCausalLM"));
  j = base();
  j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
  CHECK_THAT(error_of(j), Catch::Contains("unsupported rope type") && Catch::Contains("longrope"));
  j = base();
  j["num_key_value_heads"] = 3;
  CHECK_THAT(error_of(j), Catch::Contains("num_key_value_heads") && Catch::Contains("found 3"));
  j = base();
  j["hidden_size"] = "32";
  CHECK_THAT(error_of(j), Catch::Contains("key hidden_size") && Catch::Contains("an integer"));
  j = base();
  j.erase("vocab_size");
  CHECK_THAT(error_of(j), Catch::Contains("missing required key") && Catch::Contains("vocab_size"));
  j = base();
  j["hidden_act"] = "gelu";
  CHECK_THAT(error_of(j), Catch::Contains("hidden_act") && Catch::Contains("gelu"));
  j = base();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  CHECK_THAT(error_of(j), Catch::Contains("incomplete llama3"));
  CHECK_THAT(
      [] {
        try {
          parse_config_text("{\"vocab_size\": 1,,}", "config.json");
        } catch (const forge::error& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      Catch::Contains("config.json") && Catch::Contains("byte"));
}

TEST_CASE("rope frequencies follow transformers' init functions") {
  auto c = parse_config(base(), "x");  // head_dim 8: f_i = 10000^(-i/4)
  auto f = rope_inv_freq(c, 10);
  for (int i = 0; i < 4; ++i) CHECK(f[i] == Approx(std::pow(10000.0, -i / 4.0)).epsilon(1e-15));
  c.rope = {.type = "linear", .factor = 4.0};
  CHECK(rope_inv_freq(c, 10)[1] == Approx(std::pow(10000.0, -0.25) / 4).epsilon(1e-15));
  // dynamic: unchanged up to max_position_embeddings, then base·(f·L/M − (f−1))^(D/(D−2)).
  c.rope = {.type = "dynamic", .factor = 2.0};
  CHECK(rope_inv_freq(c, 511)[1] == Approx(std::pow(10000.0, -0.25)).epsilon(1e-15));
  const double base2 = 10000.0 * std::pow(2.0 * 1024 / 512 - 1, 8.0 / 6.0);
  CHECK(rope_inv_freq(c, 1023)[1] == Approx(std::pow(base2, -0.25)).epsilon(1e-13));
  // llama3 with old context 64, low 1, high 4: wavelengths > 64 scaled by 1/8, < 16 kept,
  // in between blended with s = (64/λ − 1)/3.
  c.rope = {.type = "llama3",
            .theta = 100.0,
            .factor = 8.0,
            .low_freq_factor = 1.0,
            .high_freq_factor = 4.0,
            .original_max_position_embeddings = 64};
  f = rope_inv_freq(c, 10);
  for (int i = 0; i < 4; ++i) {
    const double f0 = std::pow(100.0, -i / 4.0), wl = 2 * std::numbers::pi / f0;
    double want = f0;
    if (wl > 64)
      want = f0 / 8;
    else if (wl >= 16) {
      const double s = (64 / wl - 1) / 3;
      want = (1 - s) * f0 / 8 + s * f0;
    }
    CHECK(f[i] == Approx(want).epsilon(1e-15));
  }
}
