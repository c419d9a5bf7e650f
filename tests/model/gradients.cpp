// Backward against central finite differences in double precision, on tiny random configs
// that together cover every option the model supports: GQA ratios 2:1, 3:1 and a single
// KV head, head_dim ≠ hidden/heads, tied embeddings, Llama attention/MLP biases, Qwen2
// q/k/v biases, Mistral and Qwen2 sliding windows, rope types default/linear/dynamic/llama3,
// padding masks (a fully masked query included), explicit position ids, ignored labels,
// last-position logits and input-embedding gradients. Also: gradient checkpointing gives
// identical gradients, frozen parameters get no gradient buffers, and the simd backend's
// gradients agree with the scalar reference.

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>

#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;

namespace {

struct fd_case {
  std::string name;
  model_config config;
  bool use_mask = true, use_positions = false;
};

model_config base_config() {
  model_config c;
  c.vocab_size = 32, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 4;
  c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(2, 0);
  return c;
}

std::vector<fd_case> cases() {
  std::vector<fd_case> out;
  {
    auto c = base_config();
    out.push_back({"llama, default rope, GQA 2:1", c});
  }
  {
    auto c = base_config();
    c.num_attention_heads = 3, c.num_key_value_heads = 1, c.head_dim = 6;  // 3:1, 18 != 16
    c.tie_word_embeddings = true;
    c.rope = {.type = "llama3",
              .theta = 100.0,
              .factor = 8.0,
              .low_freq_factor = 1.0,
              .high_freq_factor = 4.0,
              .original_max_position_embeddings = 32};
    out.push_back({"llama, GQA 3:1, head_dim 6, tied, llama3 rope", c, true, true});
  }
  {
    auto c = base_config();
    c.num_key_value_heads = 4;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.rope = {.type = "linear", .factor = 2.0};
    out.push_back({"llama, MHA, attention and mlp biases, linear rope", c});
  }
  {
    auto c = base_config();
    c.arch = architecture::qwen2;
    c.num_key_value_heads = 1;
    c.qkv_bias = true;
    c.max_position_embeddings = 3;  // seq 5 > 3: the dynamic base grows
    c.rope = {.type = "dynamic", .factor = 2.0};
    out.push_back({"qwen2, single KV head, dynamic rope", c});
  }
  {
    auto c = base_config();
    c.arch = architecture::mistral;
    c.sliding_window = {2, 2};
    out.push_back({"mistral, sliding window 2", c, false});
  }
  {
    auto c = base_config();
    c.arch = architecture::qwen2;
    c.qkv_bias = true;
    c.sliding_window = {0, 3};
    out.push_back({"qwen2, sliding window on layer 1", c, true, true});
  }
  return out;
}

constexpr std::int64_t B = 2, S = 5;

// Random weights with non-trivial norms and biases, so every gradient term is exercised.
causal_lm<double> make(const model_config& c, std::uint64_t seed) {
  auto m = random_model<double>(c, {.seed = seed, .initializer_range = 0.4});
  philox r(seed, 99);
  m.for_each_parameter([&](parameter<double>& p) {
    if (p.name.ends_with("norm.weight"))
      for (auto& x : p.value) x = 1.0 + 0.3 * r.normal();
    if (p.name.ends_with(".bias"))
      for (auto& x : p.value) x = 0.3 * r.normal();
  });
  return m;
}

struct batch {
  std::vector<std::int64_t> ids, mask, pos, labels;
};
batch make_batch(const model_config& c, bool use_mask, bool use_positions) {
  batch b;
  philox r(7, 1);
  for (std::int64_t i = 0; i < B * S; ++i)
    b.ids.push_back(std::int64_t(r.next_u64() % c.vocab_size));
  b.labels = b.ids;
  b.labels[3] = -100;  // ignored label
  if (use_mask) {
    b.mask = {1, 1, 1, 1, 0,   // right padding
              0, 1, 1, 1, 1};  // left padding: query 0 sees no key at all
    b.labels[4] = b.labels[5] = -100;
  }
  if (use_positions) b.pos = {0, 1, 2, 3, 4, 0, 0, 1, 2, 3};  // left-padded positions
  return b;
}

model_input<double> input_of(const batch& b) {
  return {
      .batch = B, .seq = S, .input_ids = b.ids, .attention_mask = b.mask, .position_ids = b.pos};
}

template <class Bk>
double loss_of(Bk be, causal_lm<double>& m, const batch& b) {
  workspace<double> ws;
  forward(be, m, ws, input_of(b));
  return causal_lm_loss(be, ws, b.labels);
}

template <class Bk>
void analytic(Bk be, causal_lm<double>& m, const batch& b, bool recompute) {
  m.enable_grads();
  workspace<double> ws;
  forward(be, m, ws, input_of(b), {.for_backward = true, .recompute = recompute});
  causal_lm_loss(be, ws, b.labels);
  backward(be, m, ws);
}

// |a − n| / max(|a|, |n|, 1e-4): gradients below 1e-4 are compared absolutely, since the
// O(h²) truncation and O(ε/h) rounding errors of the difference (~1e-11 here) would
// dominate a purely relative measure there.
double rel_err(double a, double n) {
  return std::abs(a - n) / std::max({std::abs(a), std::abs(n), 1e-4});
}

}  // namespace

TEST_CASE("parameter gradients match central finite differences (f64)") {
  for (const auto& fc : cases()) {
    SECTION(fc.name) {
      auto m = make(fc.config, 3);
      const auto b = make_batch(fc.config, fc.use_mask, fc.use_positions);
      analytic(backend::scalar{}, m, b, false);
      philox pick(11, 2);
      double worst = 0;
      std::string worst_at;
      m.for_each_parameter([&](parameter<double>& p) {
        // Up to 6 entries per tensor (all of small ones): the check stays fast.
        const std::int64_t n = p.numel();
        for (int k = 0; k < std::min<std::int64_t>(6, n); ++k) {
          const std::int64_t i = n <= 6 ? k : std::int64_t(pick.next_u64() % std::uint64_t(n));
          const double h = 1e-5, x = p.value[i];
          p.value[i] = x + h;
          const double lp = loss_of(backend::scalar{}, m, b);
          p.value[i] = x - h;
          const double lm = loss_of(backend::scalar{}, m, b);
          p.value[i] = x;
          const double e = rel_err(p.grad[i], (lp - lm) / (2 * h));
          if (e > worst) worst = e, worst_at = p.name + "[" + std::to_string(i) + "]";
        }
      });
      INFO("worst at " << worst_at);
      CHECK(worst <= 1e-6);
    }
  }
}

TEST_CASE("input embedding gradients and last-position logits match finite differences") {
  auto c = cases()[1].config;
  auto m = make(c, 5);
  m.enable_grads();
  philox r(17, 3);
  std::vector<double> emb(std::size_t(B * S * c.hidden_size)), w(std::size_t(B * c.vocab_size));
  for (auto& x : emb) x = r.normal();
  for (auto& x : w) x = r.normal();
  // Objective: Σ w · last-position logits — exercises the gather in logits_for::last.
  auto objective = [&](bool grad, std::vector<double>* d_emb) {
    workspace<double> ws;
    auto z = forward(backend::scalar{}, m, ws, {.batch = B, .seq = S, .inputs_embeds = emb},
                     {.logits = logits_for::last, .for_backward = grad});
    double f = 0;
    for (std::size_t i = 0; i < z.size(); ++i) f += w[i] * z[i];
    if (grad) {
      std::copy(w.begin(), w.end(), ws.dlogits().begin());
      backward(backend::scalar{}, m, ws, std::span<double>(*d_emb));
    }
    return f;
  };
  std::vector<double> d_emb(emb.size());
  objective(true, &d_emb);
  double worst = 0;
  for (std::size_t i = 0; i < emb.size(); i += 7) {
    const double h = 1e-5, x = emb[i];
    emb[i] = x + h;
    const double fp = objective(false, nullptr);
    emb[i] = x - h;
    const double fm = objective(false, nullptr);
    emb[i] = x;
    worst = std::max(worst, rel_err(d_emb[i], (fp - fm) / (2 * h)));
  }
  CHECK(worst <= 1e-6);
  // The embedding matrix is tied to the head here: its gradient is the head's only.
  double fd = 0;
  {
    auto& p = m.embed_tokens;
    const double h = 1e-5, x = p.value[5];
    p.value[5] = x + h;
    const double fp = objective(false, nullptr);
    p.value[5] = x - h;
    const double fm = objective(false, nullptr);
    p.value[5] = x;
    fd = (fp - fm) / (2 * h);
  }
  CHECK(rel_err(m.embed_tokens.grad[5], fd) <= 1e-6);
}

TEST_CASE("gradient checkpointing gives identical gradients") {
  for (const auto& fc : cases()) {
    auto m1 = make(fc.config, 4), m2 = make(fc.config, 4);
    const auto b = make_batch(fc.config, fc.use_mask, fc.use_positions);
    analytic(backend::scalar{}, m1, b, false);
    analytic(backend::scalar{}, m2, b, true);
    std::vector<std::vector<double>> g1, g2;
    m1.for_each_parameter([&](parameter<double>& p) { g1.push_back(p.grad); });
    m2.for_each_parameter([&](parameter<double>& p) { g2.push_back(p.grad); });
    // The recomputed layer runs the same code on the same inputs: bit-identical.
    CHECK(g1 == g2);
  }
}

TEST_CASE("frozen parameters get no gradient buffer and leave the others unchanged") {
  const auto c = cases()[0].config;
  auto full = make(c, 6), lora_like = make(c, 6);
  const auto b = make_batch(c, true, false);
  analytic(backend::scalar{}, full, b, false);
  lora_like.set_trainable(false);
  lora_like.norm.trainable = true;
  analytic(backend::scalar{}, lora_like, b, false);
  std::size_t with_grad = 0;
  lora_like.for_each_parameter([&](parameter<double>& p) { with_grad += !p.grad.empty(); });
  CHECK(with_grad == 1);
  CHECK(lora_like.norm.grad == full.norm.grad);
}

TEST_CASE("simd backend gradients agree with the scalar reference (f64)") {
  for (const auto& fc : cases()) {
    auto m1 = make(fc.config, 8), m2 = make(fc.config, 8);
    const auto b = make_batch(fc.config, fc.use_mask, fc.use_positions);
    analytic(backend::scalar{}, m1, b, false);
    analytic(backend::simd<>{}, m2, b, false);
    std::vector<double> g1, g2;
    m1.for_each_parameter(
        [&](parameter<double>& p) { g1.insert(g1.end(), p.grad.begin(), p.grad.end()); });
    m2.for_each_parameter(
        [&](parameter<double>& p) { g2.insert(g2.end(), p.grad.begin(), p.grad.end()); });
    REQUIRE(g1.size() == g2.size());
    // Only summation order differs (blocked GEMM, FMA): 1e-12 relative in f64.
    double worst = 0;
    for (std::size_t i = 0; i < g1.size(); ++i)
      worst = std::max(worst, std::abs(g1[i] - g2[i]) / std::max(std::abs(g1[i]), 1e-6));
    INFO(fc.name);
    CHECK(worst < 1e-10);
  }
}
