// AWQ: the searched scales follow the reference's formula, never lose to RTN on the
// calibration data, beat it clearly when a few input channels carry large activations (the
// paper's salient channels), and folding 1/s into the previous op leaves the function unchanged.

#include <catch2/catch.hpp>
#include <cmath>

#include "common.hpp"
#include "forge/quant/awq.hpp"
#include "forge/quant/int4.hpp"

using namespace forge;
using namespace forge::quant;

namespace {
// Activations with a few salient channels (10x larger), as observed in LLM layer inputs.
std::vector<float> salient(std::int64_t m, std::int64_t n, std::uint64_t seed) {
  auto x = test::randn(static_cast<std::size_t>(m * n), seed);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < n; c += 37) x[i * n + c] *= 10.0f;
  return x;
}
}  // namespace

TEST_CASE("awq beats rtn on activations with salient channels, and its scales follow the formula") {
  const std::int64_t n = 256, m = 128;
  auto w1 = test::randn(96 * n, 1, 0.05f), w2 = test::randn(32 * n, 2, 0.05f);
  auto x = salient(m, n, 3);
  std::vector<awq_linear> ls = {{w1, 96}, {w2, 32}};
  auto r = awq_search<int4_g128>(ls, n, x, m);
  REQUIRE(r.losses.size() == 20);
  // alpha = 0 is RTN: s = 1.
  INFO("rtn loss " << r.losses[0] << ", awq loss " << r.loss << " at alpha " << r.ratio);
  CHECK(r.loss <= r.losses[0]);
  CHECK(r.loss < 0.8 * r.losses[0]);
  CHECK(r.ratio > 0);
  // The returned scales are mean|x|^alpha, clamped and normalised by sqrt(max * min).
  std::vector<double> a(n, 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < n; ++c) a[c] += std::fabs(x[i * n + c]) / m;
  double mx = 0, mn = 1e30;
  for (auto v : a) {
    const double s = std::max(std::pow(v, r.ratio), 1e-4);
    mx = std::max(mx, s);
    mn = std::min(mn, s);
  }
  // Tolerance: f32 pow and division versus double here, a few ulp.
  for (std::int64_t c = 0; c < n; ++c)
    CHECK(r.scales[c] ==
          Approx(std::max(std::pow(a[c], r.ratio), 1e-4) / std::sqrt(mx * mn)).epsilon(1e-5));
  // Salient channels get the largest scales.
  CHECK(r.scales[0] > 1.5f * r.scales[1]);  // (10x)^alpha with alpha >= 0.2
}

TEST_CASE("folding 1/s into rmsnorm or the previous linear preserves the layer") {
  const std::int64_t n = 64, rows = 8;
  auto s = test::randn(n, 5);
  for (auto& v : s) v = 0.5f + std::fabs(v);
  auto g = test::randn(n, 6), w = test::randn(rows * n, 7), h = test::randn(n, 8);
  // RMSNorm: y = W · (g ⊙ h / rms(h)); after folding: (W diag s) · ((g / s) ⊙ h / rms(h)).
  auto g2 = g;
  fold_scales_into_rmsnorm(g2, s);
  // Previous linear P (n x 5): its output P z feeds W; after folding, (P / s) z feeds W diag s.
  auto P = test::randn(n * 5, 9), z = test::randn(5, 10), bias = test::randn(n, 11);
  auto P2 = P, b2 = bias;
  fold_scales_into_linear(P2, n, 5, s, b2);
  for (std::int64_t r = 0; r < rows; ++r) {
    double y = 0, y2 = 0, u = 0, u2 = 0;
    for (std::int64_t c = 0; c < n; ++c) {
      y += double(w[r * n + c]) * g[c] * h[c];
      y2 += double(w[r * n + c]) * s[c] * g2[c] * h[c];
      double pz = bias[c], pz2 = b2[c];
      for (int k = 0; k < 5; ++k)
        pz += double(P[c * 5 + k]) * z[k], pz2 += double(P2[c * 5 + k]) * z[k];
      u += double(w[r * n + c]) * pz;
      u2 += double(w[r * n + c]) * s[c] * pz2;
    }
    // Tolerance: one f32 rounding of each folded weight, summed over 64 terms.
    CHECK(y2 == Approx(y).epsilon(1e-5).margin(1e-5));
    CHECK(u2 == Approx(u).epsilon(1e-5).margin(1e-5));
  }
  std::vector<float> short_g(3);
  CHECK_THROWS_WITH(fold_scales_into_rmsnorm(short_g, s), Catch::Contains("differ in length"));
}

TEST_CASE("quantize_awq quantizes W diag(s)") {
  const std::int64_t n = 128, rows = 4;
  auto w = test::randn(rows * n, 12);
  std::vector<float> s(n, 2.0f);
  auto q = quantize_awq<int4_g128>(w, rows, n, s);
  auto w2 = w;
  for (auto& v : w2) v *= 2.0f;
  CHECK(q == int4_g128::quantize(w2, rows, n));
}
