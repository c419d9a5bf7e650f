// LoRA on a quantized base: the fused SIMD forward and backward against the scalar reference,
// and the scalar backward against central finite differences of a double-precision forward.

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "common.hpp"
#include "forge/backend/qmatmul_lora.hpp"

using namespace forge;
using namespace forge::quant;
using namespace forge::backend;

namespace {

// |a - b| <= tol * (scale of the terms), with scale = max |reference| over the vector: the
// products sum k (or m) f32 terms in a different order than the double reference.
bool close(std::span<const float> a, std::span<const float> b, double tol) {
  double mx = 1e-30;
  for (float v : b) mx = std::max(mx, double(std::fabs(v)));
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(double(a[i]) - b[i]) <= tol * mx)) return false;
  return true;
}

template <class F, class Arch>
void compare(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t r, bool permute) {
  auto w = F::quantize(test::randn(n * k, 40 + m, 0.05f), n, k);
  if (permute) {
    w.perm.resize(k);
    std::iota(w.perm.begin(), w.perm.end(), 0);
    std::reverse(w.perm.begin(), w.perm.end());
  }
  auto a = test::randn(r * k, 41, 0.1f), b = test::randn(n * r, 42, 0.1f);
  auto x = test::randn(m * k, 43), dy = test::randn(m * n, 44);
  lora_view l{a, b, r, 2.0f};
  std::vector<float> y0(m * n), y1(m * n);
  qmatmul_lora(scalar{}, x, m, w, l, y0);
  qmatmul_lora(simd<Arch>{}, x, m, w, l, y1);
  INFO(F::name << " m=" << m << " n=" << n << " k=" << k << " r=" << r);
  // Tolerance 1e-5 of the largest output: k <= 512 f32 terms in another order.
  CHECK(close(y1, y0, 1e-5));
  std::vector<float> dx0(m * k), da0(r * k), db0(n * r), dx1(m * k), da1(r * k), db1(n * r);
  qmatmul_lora_backward(scalar{}, x, m, w, l, dy, {dx0, da0, db0});
  qmatmul_lora_backward(simd<Arch>{}, x, m, w, l, dy, {dx1, da1, db1});
  CHECK(close(dx1, dx0, 1e-5));
  CHECK(close(da1, da0, 1e-5));
  CHECK(close(db1, db0, 1e-5));
}

}  // namespace

TEST_CASE("fused LoRA forward and backward on the SIMD backends match the reference") {
  for (auto [m, n, k, r] : {std::array<std::int64_t, 4>{1, 37, 128, 4},
                            {3, 70, 256, 8},
                            {20, 65, 128, 16},
                            {33, 130, 256, 3}}) {
    compare<int4_g32, xsimd::avx512bw>(m, n, k, r, false);
    compare<int4_g128, xsimd::avx2>(m, n, k, r, m % 2 == 1);
    compare<nf4, xsimd::avx512bw>(m, n, k, r, false);
    compare<int8_channel, xsimd::avx2>(m, n, k, r, false);
  }
  compare<int4_g32, xsimd::avx512bw>(5, 64, 128, 4, true);
}

TEST_CASE("the reference LoRA backward matches finite differences") {
  const std::int64_t m = 3, n = 10, k = 64, r = 4;
  const float s = 1.5f;
  auto w = nf4_single::quantize(test::randn(n * k, 50, 0.1f), n, k);
  auto W = dequantize(w);
  auto a = test::randn(r * k, 51, 0.2f), b = test::randn(n * r, 52, 0.2f);
  auto x = test::randn(m * k, 53), g = test::randn(m * n, 54);
  // L = Σ g ⊙ y in double, y = x Wᵀ + s (x Aᵀ) Bᵀ.
  auto loss = [&](const std::vector<double>& X, const std::vector<double>& A,
                  const std::vector<double>& B) {
    double L = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t o = 0; o < n; ++o) {
        double y = 0;
        for (std::int64_t c = 0; c < k; ++c) y += X[i * k + c] * W[o * k + c];
        for (std::int64_t j = 0; j < r; ++j) {
          double u = 0;
          for (std::int64_t c = 0; c < k; ++c) u += X[i * k + c] * A[j * k + c];
          y += s * u * B[o * r + j];
        }
        L += g[i * n + o] * y;
      }
    return L;
  };
  std::vector<double> X(x.begin(), x.end()), A(a.begin(), a.end()), B(b.begin(), b.end());
  std::vector<float> dx(m * k), da(r * k), db(n * r);
  qmatmul_lora_backward(scalar{}, x, m, w, lora_view{a, b, r, s}, g, {dx, da, db});
  // L is linear in X and bilinear in (A, B): central differences are exact up to rounding;
  // with h = 1e-3 the double rounding error is ~1e-13 / 1e-3, far below the f32 results' 1e-6.
  auto check = [&](std::vector<double>& p, std::span<const float> grad) {
    for (std::size_t i = 0; i < p.size(); i += 7) {
      const double h = 1e-3, keep = p[i];
      p[i] = keep + h;
      const double lp = loss(X, A, B);
      p[i] = keep - h;
      const double lm = loss(X, A, B);
      p[i] = keep;
      CHECK(grad[i] == Approx((lp - lm) / (2 * h)).epsilon(1e-5).margin(1e-5));
    }
  };
  check(X, dx);
  check(A, da);
  check(B, db);
}
