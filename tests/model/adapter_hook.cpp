// The linear-layer extension point on the fixture: a LoRA test double plugged into every
// projection through linear_adapter, with the base model frozen, must reproduce PEFT's
// logits, loss and LoRA gradients (logits_lora, loss_lora, grad.* in expect.safetensors).
// It shows an adapter gets its own gradients in backward and frozen weights need no
// gradient buffers. (The real LoRA lives in adapters/; this double is for the hook only.)

#include <catch2/catch.hpp>

#include <cmath>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/forward.hpp"

using namespace forge;
using namespace forge::model;

namespace {
// y += scale · (x·Aᵀ)·Bᵀ, A [r, in], B [out, r]; backward: dB += scale·dyᵀ·(x·Aᵀ),
// dA += scale·(dy·B)ᵀ·x, dx += scale·(dy·B)·A.
struct test_lora_double : linear_adapter<float> {
  std::int64_t r, in, out;
  float scale;
  std::vector<float> A, B, dA, dB;
  test_lora_double(std::vector<float> a, std::vector<float> b, std::int64_t r_, std::int64_t in_,
                   std::int64_t out_, float s)
      : r(r_),
        in(in_),
        out(out_),
        scale(s),
        A(std::move(a)),
        B(std::move(b)),
        dA(A.size()),
        dB(B.size()) {}
  void forward(const float* x, std::int64_t rows, float* y) override {
    std::vector<float> xa(rows * r);
    backend::gemm_nt(backend::scalar{}, rows, r, in, x, A.data(), xa.data(), false);
    for (auto& v : xa) v *= scale;
    backend::gemm_nt(backend::scalar{}, rows, out, r, xa.data(), B.data(), y, true);
  }
  void backward(const float* x, const float* dy, std::int64_t rows, float* dx) override {
    std::vector<float> xa(rows * r), dyb(rows * r);
    backend::gemm_nt(backend::scalar{}, rows, r, in, x, A.data(), xa.data(), false);
    backend::gemm_nn(backend::scalar{}, rows, out, r, dy, B.data(), dyb.data(), false);
    for (auto& v : xa) v *= scale;
    for (auto& v : dyb) v *= scale;
    backend::gemm_tn(backend::scalar{}, rows, out, r, dy, xa.data(), dB.data(), true);
    backend::gemm_tn(backend::scalar{}, rows, r, in, dyb.data(), x, dA.data(), true);
    if (dx) backend::gemm_nn(backend::scalar{}, rows, r, in, dyb.data(), A.data(), dx, true);
  }
};
}  // namespace

TEST_CASE("an adapter through the linear hook reproduces PEFT's LoRA logits, loss and grads") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  auto ad = io::safetensors_file::open(test::llama_a() / "adapter" / "adapter_model.safetensors");
  auto ex = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  const float scale = 8.0f / 4.0f;  // lora_alpha / r from adapter_config.json
  std::vector<std::pair<std::string, std::shared_ptr<test_lora_double>>> hooks;
  for (std::size_t li = 0; li < m.layers.size(); ++li) {
    auto& L = m.layers[li];
    const std::string p = "base_model.model.model.layers." + std::to_string(li) + ".";
    for (auto [name, lin] : {std::pair{"self_attn.q_proj", &L.q_proj},
                             {"self_attn.k_proj", &L.k_proj},
                             {"self_attn.v_proj", &L.v_proj},
                             {"self_attn.o_proj", &L.o_proj},
                             {"mlp.gate_proj", &L.gate_proj},
                             {"mlp.up_proj", &L.up_proj},
                             {"mlp.down_proj", &L.down_proj}}) {
      auto h = std::make_shared<test_lora_double>(ad.to_f32(p + name + ".lora_A.weight"),
                                                  ad.to_f32(p + name + ".lora_B.weight"), 4,
                                                  lin->in, lin->out, scale);
      lin->adapters.push_back(h);
      hooks.push_back({p + name, h});
    }
  }
  m.set_trainable(false);  // frozen base: no gradient buffers at all
  m.enable_grads();
  std::size_t buffers = 0;
  m.for_each_parameter([&](auto& prm) { buffers += !prm.grad.empty(); });
  CHECK(buffers == 0);

  const auto ids = ex.copy_as<std::int64_t>("input_ids", dtype::i64);
  const std::int64_t B = 2, S = 18;
  workspace<float> ws;
  auto z = forward(backend::simd<>{}, m, ws, {.batch = B, .seq = S, .input_ids = ids},
                   {.for_backward = true});
  const auto want = ex.to_f32("logits_lora");
  double err = 0;
  for (std::size_t i = 0; i < z.size(); ++i) err = std::max(err, double(std::abs(z[i] - want[i])));
  CHECK(err < 1e-4);                                               // f32, as for the base logits
  const double loss = causal_lm_loss(backend::simd<>{}, ws, ids);  // labels = input_ids
  CHECK(std::abs(loss - double(ex.to_f32("loss_lora")[0])) < 1e-5);
  backward(backend::simd<>{}, m, ws);
  // Gradients are compared relative to each tensor's largest entry: 1e-4 covers f32
  // accumulation over 36 tokens and two layers.
  for (auto& [name, h] : hooks) {
    for (auto [which, got] : {std::pair{"lora_A", &h->dA}, {"lora_B", &h->dB}}) {
      const auto ref = ex.to_f32("grad." + name + "." + which + ".default.weight");
      REQUIRE(ref.size() == got->size());
      double scale_ref = 1e-12, d = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        scale_ref = std::max(scale_ref, double(std::abs(ref[i])));
        d = std::max(d, double(std::abs(ref[i] - (*got)[i])));
      }
      INFO(name << "." << which);
      CHECK(d / scale_ref < 1e-4);
    }
  }
}
