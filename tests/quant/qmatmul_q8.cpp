// int4 x int8-activation products: the VNNI kernel against the reference of the same
// arithmetic, and both against the f32 product within the activation-rounding bound.

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <tuple>

#include "common.hpp"
#include "forge/adapters/quantized_base_q8.hpp"
#include "forge/backend/qmatmul_int4_panels.hpp"
#include "forge/backend/qmatmul_int8_panels.hpp"
#include "forge/backend/qmatmul_nf4_panels.hpp"
#include "forge/backend/qmatmul_q4_0_panels.hpp"
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

namespace {
// Q4_0 weights x Q8_0 activations (llama.cpp's decode arithmetic).
void check_q4_0(std::int64_t m, std::int64_t n, std::int64_t k) {
  const auto w = q4_0::quantize(test::randn(n * k, 70 + n, 0.05f), n, k);
  const auto x = test::randn(m * k, 71 + k);
  std::vector<float> ref(m * n), got(m * n, -1e30f), f32(m * n);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, w, got);
  qmatmul(scalar{}, x, m, w, f32);
  const auto d = dequantize(w);
  INFO("q4_0 m=" << m << " n=" << n << " k=" << k);
  std::size_t bad_kernel = 0, bad_bound = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      const auto j = static_cast<std::size_t>(i * n + r);
      // Kernel vs reference: the same exact integer block dots; f32 sums of k/32 scaled terms
      // in another order (and the scale products rounded to f32): 1e-5 of Σ|w x|.
      double mag = 0, bound = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad_kernel;
      // Reference vs f32: an activation moves by at most d/2 from rounding its code and by
      // |d_f16 - d| * 127 <= 2^-11 amax from the f16 scale, d = amax / 127.
      for (std::int64_t b = 0; b < k / 32; ++b) {
        float amax = 0, wsum = 0;
        for (int e = 0; e < 32; ++e) {
          amax = std::max(amax, std::fabs(x[i * k + b * 32 + e]));
          wsum += std::fabs(d[r * k + b * 32 + e]);
        }
        bound += amax * (1.0 / 254 + 1.0 / 2048) * wsum;
      }
      if (!(std::fabs(ref[j] - f32[j]) <= bound * 1.001 + 1e-6)) ++bad_bound;
    }
  CHECK(bad_kernel == 0);
  CHECK(bad_bound == 0);
}
}  // namespace

TEST_CASE("q4_0 x q8_0-activation products: VNNI kernel, reference and f32 bound") {
  check_q4_0(1, 37, 256);   // decode, rows not a multiple of the 64-row task
  check_q4_0(3, 70, 96);    // odd block count: the scalar tail block
  check_q4_0(6, 130, 768);  // 4 + 2 activation rows, two row tasks
  check_q4_0(2, 5, 32);     // a single block
  // GEMM path (8 or more rows): 16-row panels, ragged rows and columns, 8-row tiles + rest.
  check_q4_0(8, 37, 256);
  check_q4_0(19, 70, 96);
  check_q4_0(33, 130, 768);
}

TEST_CASE("q4_0 x q8_0 reference: integer block dots scaled by the f16 scales") {
  // One block, hand-checkable: x = 1..32 quantizes with d = 32/127 to round(j * 127/32).
  std::vector<float> xv(32), wv(32);
  for (int j = 0; j < 32; ++j) xv[j] = float(j + 1), wv[j] = (j % 2 ? 1.0f : -0.5f);
  const auto w = q4_0::quantize(wv, 1, 32);
  std::vector<float> y(1);
  qmatmul_q8(scalar{}, xv, 1, w, y);
  const auto dw = dequantize(w);
  const double dx = double(to_f32(to_f16(32.0f / 127.0f)));
  double want = 0;
  for (int j = 0; j < 32; ++j) want += double(dw[j]) * dx * std::round((j + 1) * (127.0 / 32.0));
  CHECK(y[0] == Approx(want).epsilon(1e-6));  // double sum of exact products, rounded to f32
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
TEST_CASE("the vectorised Q8_0 activation quantizer equals ggml's reference bit for bit") {
  // Random rows plus rows built on ties: with amax = 127 the scale is 1, so x = j + 0.5 are
  // exact halves that must round away from zero, and values just below a half must not.
  std::vector<std::vector<float>> rows;
  for (std::uint64_t s = 0; s < 20; ++s) rows.push_back(test::randn(96, 80 + s, float(s + 1)));
  std::vector<float> ties(96);
  for (int j = 0; j < 96; ++j) {
    const float h = float(j % 63) + 0.5f;
    ties[j] = j % 32 == 0 ? 127.0f : (j % 3 == 0 ? -h : (j % 3 == 1 ? h : std::nextafter(h, 0.0f)));
  }
  rows.push_back(ties);
  rows.push_back(std::vector<float>(96, 0.0f));  // d = 0: every code 0
  for (const auto& x : rows) {
    backend::detail::q8_0_row ref;
    backend::detail::quantize_q8_0_row(x.data(), 96, ref);
    backend::detail::avx512::q4_0_act got;
    backend::detail::avx512::prepare_q4_0_act(x.data(), 96, got);
    CHECK(got.q == ref.q);
    for (int l = 0; l < 24; ++l) {
      int s = 0;
      for (int j = 0; j < 4; ++j) s += ref.q[4 * l + j];
      CHECK(got.bias[l] == -8 * s);
      CHECK(got.dv[l] == ref.d[l / 8]);
    }
  }
}
#endif

TEST_CASE("q4_0 panels: lossless repacking, and the panel kernel equals the reference") {
  for (auto [m, n, k] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 37, 256},
                         {3, 70, 96},
                         {8, 16, 64},
                         {19, 130, 768},
                         {1, 5, 32}}) {
    const auto w = q4_0::quantize(test::randn(n * k, 90 + n, 0.05f), n, k);
    const auto p = pack_q4_0_panels(w);
    CHECK(unpack_q4_0_panels(p) == w);
    CHECK(p.bytes() == std::size_t((n + 15) / 16 * 16 * (k / 32) * 18));
    const auto x = test::randn(m * k, 91 + m);
    std::vector<float> ref(m * n), got(m * n, -1e30f);
    qmatmul_q8(scalar{}, x, m, w, ref);
    qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, p, got);
    const auto d = dequantize(w);
    INFO("m=" << m << " n=" << n << " k=" << k);
    std::size_t bad = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t r = 0; r < n; ++r) {
        double mag = 0;
        for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
        // Same exact integer block dots; f32 sums of k/32 scaled terms in another order.
        if (!(std::fabs(got[i * n + r] - ref[i * n + r]) <= 1e-5 * mag + 1e-6)) ++bad;
      }
    CHECK(bad == 0);
  }
  auto w = q4_0::quantize(test::randn(64, 1), 2, 32);
  w.codes.pop_back();
  CHECK_THROWS_AS(pack_q4_0_panels(w), error);  // truncated block data
  std::vector<float> x(32), y(2);
  CHECK_THROWS_AS(qmatmul_q8(scalar{}, x, 1, w, y), error);
  CHECK_THROWS_AS(qmatmul_q8(simd<xsimd::avx512bw>{}, x, 1, w, y), error);
}

namespace {
// int4 panels: lossless repacking, and the panel kernel (decode and prefill) against the
// scalar reference of the same arithmetic (activations quantized identically).
template <class F>
void check_int4_panels(std::int64_t m, std::int64_t n, std::int64_t k, bool permute) {
  auto w = F::quantize(test::randn(n * k, 80 + n, 0.05f), n, k);
  if (permute) {  // an act-order permutation: the activations follow it
    w.perm.resize(k);
    std::iota(w.perm.begin(), w.perm.end(), 0);
    std::reverse(w.perm.begin(), w.perm.end());
  }
  const auto p = pack_int4_panels(w);
  REQUIRE(unpack_int4_panels(p) == w);
  CHECK(p.bytes() == std::size_t((n + 15) / 16) * 16 * (k / F::group_size) *
                             (F::group_size / 2 + 4 + (F::symmetric ? 0 : 1)) +
                         w.perm.size() * 4);
  const auto x = test::randn(m * k, 81 + m);
  std::vector<float> ref(m * n), got(m * n, -1e30f), got2(m * n, -1e30f);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, p, got);  // VNNI kernel
  qmatmul_q8(simd<xsimd::avx2>{}, x, m, p, got2);     // AVX2 kernel (vpmaddubsw)
  const auto d = dequantize(w);
  INFO(F::name << " panels m=" << m << " n=" << n << " k=" << k);
  std::size_t bad = 0, bad2 = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      double mag = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      // Same exact integer block dots; f32 sums of the scaled terms (the reference sums in
      // double): 1e-5 of Σ|w x|.
      const auto j = std::size_t(i * n + r);
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad;
      if (!(std::fabs(got2[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad2;
    }
  CHECK(bad == 0);
  CHECK(bad2 == 0);
}
}  // namespace

TEST_CASE("int4 panels: lossless repacking, and the panel kernel equals the reference") {
  check_int4_panels<int4_g128>(1, 37, 256, false);  // decode, a partial last panel
  check_int4_panels<int4_g128>(8, 16, 512, false);  // one whole panel, one 8-row tile
  check_int4_panels<int4_g128>(19, 70, 384, true);  // 8 + 8 + 3 activation rows, act-order
  check_int4_panels<int4_g128_asym>(3, 33, 256, false);
  check_int4_panels<int4_group<64, false>>(9, 65, 320, true);
  check_int4_panels<int4_g32>(2, 1, 64, false);  // a single weight row
  // Bad sizes: truncated codes when packing, mismatched activations when multiplying.
  auto w = int4_g128::quantize(test::randn(2 * 128, 1), 2, 128);
  w.codes.pop_back();
  CHECK_THROWS_AS(pack_int4_panels(w), error);
  const auto p = pack_int4_panels(int4_g128::quantize(test::randn(16 * 256, 2), 16, 256));
  std::vector<float> x(255), y(16);
  CHECK_THROWS_AS(qmatmul_q8(simd<xsimd::avx512bw>{}, x, 1, p, y), error);
}

TEST_CASE("int8_channel x q8_0 activations: panel kernel, reference and f32 bound") {
  for (auto [m, n, k] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 37, 256},
                         {8, 16, 64},
                         {19, 70, 96},
                         {3, 1, 32}}) {
    const auto w = int8_channel::quantize(test::randn(n * k, 100 + n, 0.05f), n, k);
    const auto p = pack_int8_panels(w);
    REQUIRE(unpack_int8_panels(p) == w);
    const auto x = test::randn(m * k, 101 + m);
    std::vector<float> ref(m * n), got(m * n, -1e30f), viaq(m * n, -1e30f), f32(m * n);
    qmatmul_q8(scalar{}, x, m, w, ref);
    qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, p, got);
    qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, w, viaq);  // the qtensor overload packs per call
    qmatmul(scalar{}, x, m, w, f32);
    const auto d = dequantize(w);
    INFO("int8_channel m=" << m << " n=" << n << " k=" << k);
    std::size_t bad_kernel = 0, bad_bound = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t r = 0; r < n; ++r) {
        const auto j = std::size_t(i * n + r);
        double mag = 0, bound = 0;
        for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
        // Same exact integer block dots; f32 sums of k/32 scaled terms (the reference: double).
        if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad_kernel;
        if (viaq[j] != got[j]) ++bad_kernel;
        // Reference vs f32: each activation moves by at most d/2 (rounding its code) plus
        // 2^-11 amax (the f16 scale), d = amax / 127.
        for (std::int64_t b = 0; b < k / 32; ++b) {
          float amax = 0, wsum = 0;
          for (int e = 0; e < 32; ++e) {
            amax = std::max(amax, std::fabs(x[i * k + b * 32 + e]));
            wsum += std::fabs(d[r * k + b * 32 + e]);
          }
          bound += amax * (1.0 / 254 + 1.0 / 2048) * wsum;
        }
        if (!(std::fabs(ref[j] - f32[j]) <= bound * 1.001 + 1e-6)) ++bad_bound;
      }
    CHECK(bad_kernel == 0);
    CHECK(bad_bound == 0);
  }
  // Codes the quantizer never writes (−128) survive the repacking and multiply correctly.
  auto w = int8_channel::quantize(test::randn(20 * 64, 7), 20, 64);
  for (std::size_t i = 0; i < w.codes.size(); i += 5) w.codes[i] = 0x80;
  const auto p = pack_int8_panels(w);
  CHECK(unpack_int8_panels(p) == w);
  const auto x = test::randn(2 * 64, 8);
  std::vector<float> ref(40), got(40);
  qmatmul_q8(scalar{}, x, 2, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, 2, p, got);
  for (std::size_t j = 0; j < 40; ++j) CHECK(got[j] == Approx(ref[j]).epsilon(1e-5).margin(1e-5));
  auto bad = w;
  bad.cols = 48;  // not whole 32-value blocks
  CHECK_THROWS_AS(pack_int8_panels(bad), error);
}

TEST_CASE("quantized_base_q8 holds panels: forward equals the reference, weight() round-trips") {
  using be = simd<xsimd::avx512bw>;
  const std::int64_t m = 9, n = 40, k = 256;  // 8 + 1 activation rows, a partial panel
  const auto x = test::randn(m * k, 120);
  auto run = [&](const auto& w) {
    using F = typename std::decay_t<decltype(w)>::format;
    const adapters::quantized_base_q8<be, F> base(w);
    CHECK(base.weight() == w);
    std::vector<float> ref(m * n), got(m * n, -1e30f);
    qmatmul_q8(scalar{}, x, m, w, ref);
    base.forward(x.data(), m, got.data());
    INFO(F::name);
    const auto d = dequantize(w);
    std::size_t bad = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t r = 0; r < n; ++r) {
        double mag = 0;
        for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
        // f32 against double sums of the same integer dots: 1e-5 of Σ|w x|.
        if (!(std::fabs(got[i * n + r] - ref[i * n + r]) <= 1e-5 * mag + 1e-6)) ++bad;
      }
    CHECK(bad == 0);
  };
  run(int4_g128::quantize(test::randn(n * k, 121, 0.05f), n, k));
  run(int8_channel::quantize(test::randn(n * k, 122, 0.05f), n, k));
  run(q4_k::quantize(test::randn(n * k, 123, 0.05f), n, k));
  run(q4_0::quantize(test::randn(n * k, 124, 0.05f), n, k));
  run(nf4::quantize(test::randn(n * k, 125, 0.05f), n, k));
}

namespace {
// NF4 x int8 activations: the panel kernel against the scalar reference of the same
// arithmetic (levels in 16-bit fixed point), and the reference against the f32 product.
template <class F>
void check_nf4(std::int64_t m, std::int64_t n, std::int64_t k) {
  const auto w = F::quantize(test::randn(n * k, 130 + n, 0.05f), n, k);
  const auto p = pack_nf4_panels(w);
  REQUIRE(unpack_nf4_panels(p) == w);
  const auto x = test::randn(m * k, 131 + m);
  std::vector<float> ref(m * n), got(m * n, -1e30f), viaq(m * n, -1e30f), f32(m * n);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, p, got);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, w, viaq);
  qmatmul(scalar{}, x, m, w, f32);
  const auto d = dequantize(w);
  INFO(F::name << " m=" << m << " n=" << n << " k=" << k);
  std::size_t bad_kernel = 0, bad_bound = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      const auto j = std::size_t(i * n + r);
      double mag = 0, bound = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      // Same exact integer dots; f32 sums of the scaled terms (the reference: double).
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad_kernel;
      if (viaq[j] != got[j]) ++bad_kernel;
      // Reference vs f32: an activation moves by at most d_s/2 = amax_s/254; a level by at
      // most 1/65534 of its block's absmax a_b (|w| <= a_b), times |x_q·d_s| <= amax_s.
      for (std::int64_t s = 0; s < k / 32; ++s) {
        float amax = 0, wsum = 0;
        for (int e = 0; e < 32; ++e) {
          amax = std::max(amax, std::fabs(x[i * k + s * 32 + e]));
          wsum += std::fabs(d[r * k + s * 32 + e]);
        }
        const double ab = F::block_absmax(w, std::size_t((r * k + s * 32) / 64));
        bound += amax / 254.0 * wsum + 32 * ab * amax / 65534.0;
      }
      if (!(std::fabs(ref[j] - f32[j]) <= bound * 1.001 + 1e-6)) ++bad_bound;
    }
  CHECK(bad_kernel == 0);
  CHECK(bad_bound == 0);
}
}  // namespace

TEST_CASE("nf4 x int8 activations: panel kernel, reference and f32 bound") {
  check_nf4<nf4>(1, 37, 256);  // decode, a partial panel
  check_nf4<nf4>(8, 16, 64);   // one panel, one 8-row tile
  check_nf4<nf4>(19, 70, 192);
  check_nf4<nf4_single>(3, 33, 128);
  check_nf4<nf4_single>(2, 1, 64);
  // The fixed-point levels are the rounded NF4 levels, within half a step.
  const auto& L = backend::detail::nf4_levels_q15();
  for (std::size_t c = 0; c < 16; ++c)
    CHECK(std::fabs(L[c] / 32767.0 - nf4_code[c]) <= 0.5 / 32767 + 1e-9);
  auto w = nf4::quantize(test::randn(2 * 64, 1), 2, 64);
  w.codes.pop_back();
  CHECK_THROWS_AS(pack_nf4_panels(w), error);
}
