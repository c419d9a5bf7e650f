// AdamW step by step against a double-precision transcription of torch.optim.AdamW's update,
// the 8-bit variant against the f32 one, the schedules against transformers' formulas and
// global-norm clipping against clip_grad_norm_'s definition.

#include <catch2/catch.hpp>

#include <cmath>

#include "forge/train/adamw.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/schedule.hpp"

using namespace forge;
using namespace forge::train;

TEST_CASE("AdamW follows PyTorch's update step by step") {
  // Three parameters over five steps with changing gradients and learning rates.
  std::vector<float> w = {0.5f, -1.25f, 2.0f}, g(3);
  std::vector<double> rw = {0.5, -1.25, 2.0}, rm(3, 0.0), rv(3, 0.0);
  adamw_options o{.lr = 0.1, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1};
  adamw<float> opt({{"w", w, g}}, o);
  for (int t = 1; t <= 5; ++t) {
    const double lr = 0.1 / t;
    for (int i = 0; i < 3; ++i) g[i] = float(std::sin(3.0 * t + i) * (i + 1));
    opt.step(lr);
    // torch.optim.AdamW, single tensor, amsgrad off:
    for (int i = 0; i < 3; ++i) {
      const double gi = g[i];
      rw[i] *= 1 - lr * o.weight_decay;
      rm[i] = o.beta1 * rm[i] + (1 - o.beta1) * gi;
      rv[i] = o.beta2 * rv[i] + (1 - o.beta2) * gi * gi;
      const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
      rw[i] -= lr / bc1 * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + o.eps);
      INFO("step " << t << " param " << i);
      CHECK(std::abs(w[i] - rw[i]) < 2e-6);  // f32 arithmetic vs double, |w| ≤ 2.5
      CHECK(std::abs(opt.first_moments()[0].f32[i] - rm[i]) < 1e-6);
      CHECK(std::abs(opt.second_moments()[0].f32[i] - rv[i]) < 1e-6);
    }
  }
  CHECK(opt.steps() == 5);
}

TEST_CASE("8-bit AdamW states stay close to the f32 ones and take a quarter of the memory") {
  const std::size_t n = 1000;
  std::vector<float> w32(n), w8(n), g32(n), g8(n);
  for (std::size_t i = 0; i < n; ++i) w32[i] = w8[i] = float(std::cos(double(i)));
  adamw<float> a({{"w", w32, g32}}, {.lr = 1e-3});
  adamw<float> b({{"w", w8, g8}}, {.lr = 1e-3, .eight_bit = true});
  for (int t = 0; t < 20; ++t) {
    for (std::size_t i = 0; i < n; ++i)
      g32[i] = g8[i] = float(std::sin(0.37 * double(i * (t + 1))));
    a.step(1e-3);
    b.step(1e-3);
  }
  double d = 0;
  for (std::size_t i = 0; i < n; ++i) d = std::max(d, double(std::abs(w32[i] - w8[i])));
  // Each step moves a weight by at most ~lr; 8-bit states perturb the step by a few percent.
  CHECK(d < 20 * 1e-3 * 0.1);
  CHECK(d > 0);  // really quantized
  CHECK(b.state_bytes() * 4 < a.state_bytes() * 1.1);
}

TEST_CASE("schedules follow transformers' warmup, linear and cosine formulas") {
  schedule lin{.kind = schedule_kind::linear, .warmup_steps = 10, .total_steps = 110};
  CHECK(lin.factor(0) == 0.0);
  CHECK(lin.factor(5) == 0.5);
  CHECK(lin.factor(10) == 1.0);
  CHECK(lin.factor(60) == Approx(0.5));
  CHECK(lin.factor(110) == 0.0);
  CHECK(lin.factor(200) == 0.0);
  schedule cos{.kind = schedule_kind::cosine, .warmup_steps = 10, .total_steps = 110};
  CHECK(cos.factor(10) == 1.0);
  CHECK(cos.factor(60) == Approx(0.5));
  CHECK(cos.factor(35) == Approx(0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(cos.factor(110) == Approx(0.0).margin(1e-15));
  schedule con{.kind = schedule_kind::constant, .warmup_steps = 4};
  CHECK(con.factor(2) == 0.5);
  CHECK(con.factor(1000) == 1.0);
  CHECK_THROWS_WITH(parse_schedule_kind("step"), Catch::Contains("constant, linear or cosine"));
}

TEST_CASE("global-norm clipping scales all gradients together as clip_grad_norm_") {
  std::vector<float> a = {3, 0}, ga = {3, 0}, b = {0}, gb = {4};
  std::vector<trainable<float>> ps = {{"a", a, ga}, {"b", b, gb}};
  CHECK(clip_grad_norm(ps, 10.0) == Approx(5.0));  // below the limit: unchanged
  CHECK(ga[0] == 3.0f);
  CHECK(clip_grad_norm(ps, 1.0) == Approx(5.0));  // returns the norm before clipping
  CHECK(ga[0] == Approx(3.0 / (5.0 + 1e-6)));
  CHECK(gb[0] == Approx(4.0 / (5.0 + 1e-6)));
  CHECK(global_grad_norm(ps) == Approx(1.0).epsilon(1e-6));
}
