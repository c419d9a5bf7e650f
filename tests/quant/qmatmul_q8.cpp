// int4 x int8-activation products: the VNNI kernel against the reference of the same
// arithmetic, and both against the f32 product within the activation-rounding bound.

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "common.hpp"
#include "forge/backend/qmatmul_q8.hpp"

using namespace forge;
using namespace forge::quant;
using namespace forge::backend;

namespace {
template <class F>
void check(std::int64_t m, std::int64_t n, std::int64_t k, bool permute) {
  auto w = F::quantize(test::randn(n * k, 60 + n, 0.05f), n, k);
  if (permute) {
    w.perm.resize(k);
    std::iota(w.perm.begin(), w.perm.end(), 0);
    std::reverse(w.perm.begin(), w.perm.end());
  }
  auto x = test::randn(m * k, 61);
  std::vector<float> ref(m * n), got(m * n), f32(m * n);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, w, got);
  qmatmul(scalar{}, x, m, w, f32);
  auto d = dequantize(w);
  INFO(F::name << " m=" << m << " n=" << n << " k=" << k);
  std::size_t bad_kernel = 0, bad_bound = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      const auto j = static_cast<std::size_t>(i * n + r);
      // Kernel vs reference: same integer dots; f32 sums of k/64 scaled terms in another
      // order: 1e-5 of Σ|w x|.
      double mag = 0, bound = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad_kernel;
      // Reference vs f32: each activation moves by at most half its block's step d_b / 2.
      for (std::int64_t b = 0; b < k / 32; ++b) {
        float amax = 0, wsum = 0;
        for (int e = 0; e < 32; ++e) {
          const auto col = w.perm.empty() ? b * 32 + e : w.perm[b * 32 + e];
          amax = std::max(amax, std::fabs(x[i * k + col]));
          wsum += std::fabs(d[r * k + col]);
        }
        bound += amax / 127 / 2 * wsum;
      }
      if (!(std::fabs(ref[j] - f32[j]) <= bound * 1.001 + 1e-6)) ++bad_bound;
    }
  CHECK(bad_kernel == 0);
  CHECK(bad_bound == 0);
}
}  // namespace

TEST_CASE("int4 x int8-activation products: VNNI kernel, reference and f32 bound") {
  check<int4_g128>(1, 37, 256, false);
  check<int4_g32>(3, 70, 128, false);
  check<int4_group<64, false>>(2, 65, 320, true);
  check<int4_group<32, false>>(5, 16, 64, false);
}
