// Quantized products: every SIMD path (AVX-512 register decode, AVX2 tile decode, tiled GEMM)
// against the scalar reference on random shapes with ragged edges (n and m not multiples of
// any tile or vector width; int8 with k not a multiple of the vector width).

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "common.hpp"
#include "forge/backend/qmatmul.hpp"

using namespace forge;
using namespace forge::quant;

namespace {

// Tolerance: the reference sums in double, the kernels in f32 in a different order; the error
// of an f32 sum of k terms is bounded by about k * 2^-24 * sum |w x|; we allow 1e-5 * sum |w x|
// for k <= 1024 (k * 2^-24 <= 6e-5 is the worst case, random-order errors are far smaller).
template <class F, class B>
void compare(B b, const qtensor<F>& w, std::int64_t m, std::uint64_t seed) {
  auto x = test::randn(static_cast<std::size_t>(m * w.cols), seed);
  std::vector<float> ref(static_cast<std::size_t>(m * w.rows)), got(ref.size(), -1.0f);
  backend::qmatmul(backend::scalar{}, x, m, w, ref);
  backend::qmatmul(b, x, m, w, got);
  auto d = dequantize(w);
  std::size_t bad = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double mag = 0;
      for (std::int64_t k = 0; k < w.cols; ++k)
        mag += std::fabs(d[r * w.cols + k] * x[i * w.cols + k]);
      const auto j = static_cast<std::size_t>(i * w.rows + r);
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-7)) ++bad;
    }
  INFO(F::name << " m=" << m << " n=" << w.rows << " k=" << w.cols);
  CHECK(bad == 0);
}

template <class F, class B>
void all_shapes(B b) {
  // (m, n, k): decode path with 1..4-row kernels and remainders, and the tiled GEMM (m >= 16).
  const std::int64_t shapes[][3] = {
      {1, 37, 256}, {3, 70, 128}, {6, 1, 512}, {17, 65, 640}, {33, 130, 1024}};
  std::uint64_t seed = 100;
  for (auto& s : shapes) {
    auto wf = test::randn(static_cast<std::size_t>(s[1] * s[2]), ++seed, 0.05f);
    compare(b, F::quantize(wf, s[1], s[2]), s[0], ++seed);
  }
}

template <class B>
void every_format(B b) {
  all_shapes<int8_channel>(b);
  all_shapes<int4_g32>(b);
  all_shapes<int4_g128>(b);
  all_shapes<int4_group<64, false>>(b);
  all_shapes<nf4>(b);
  all_shapes<nf4_single>(b);
  all_shapes<q4_0>(b);
  all_shapes<q8_0>(b);
  // int8 with a ragged k (45: not a multiple of 16 or 32).
  auto wf = test::randn(29 * 45, 7);
  auto t = int8_channel::quantize(wf, 29, 45);
  for (std::int64_t m : {1, 2, 5, 20}) compare(b, t, m, 8 + static_cast<std::uint64_t>(m));
  // int4 with an act-order permutation of the input features.
  auto w4 = int4_g32::quantize(test::randn(40 * 128, 9), 40, 128);
  w4.perm.resize(128);
  std::iota(w4.perm.begin(), w4.perm.end(), 0);
  philox g(3);
  for (std::size_t i = 127; i > 0; --i) std::swap(w4.perm[i], w4.perm[g.below(i + 1)]);
  for (std::int64_t m : {1, 4, 16}) compare(b, w4, m, 20 + static_cast<std::uint64_t>(m));
}

}  // namespace

TEST_CASE("simd<avx512bw> quantized products match the scalar reference") {
  every_format(backend::simd<xsimd::avx512bw>{});
}

TEST_CASE("simd<avx2> quantized products match the scalar reference") {
  every_format(backend::simd<xsimd::avx2>{});
}

TEST_CASE("the scalar reference is x times the dequantized weight, input order") {
  // With a permutation, the reference must still compute x · dequantize(W)ᵀ in input order.
  auto w = int4_g32::quantize(test::randn(3 * 64, 1), 3, 64);
  w.perm.resize(64);
  for (int i = 0; i < 64; ++i) w.perm[i] = 63 - i;
  auto x = test::randn(64, 2);
  std::vector<float> y(3);
  backend::qmatvec(backend::scalar{}, x, w, y);
  auto d = dequantize(w);
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int k = 0; k < 64; ++k) s += double(d[r * 64 + k]) * x[k];
    CHECK(y[r] == static_cast<float>(s));
  }
  // Stored column 0 is input column 63: dequantize_row undoes the permutation.
  CHECK(d[63] == int4_g32::group(w, 0, 0).scale * (int4_g32::code(w, 0, 0) - 8.0f));
}

TEST_CASE("qmatmul rejects mismatched shapes") {
  auto w = int8_channel::quantize(std::vector<float>(12, 1.0f), 3, 4);
  std::vector<float> x(5), y(3);
  CHECK_THROWS_WITH(backend::qmatvec(backend::scalar{}, x, w, y),
                    Catch::Contains("input features"));
}
