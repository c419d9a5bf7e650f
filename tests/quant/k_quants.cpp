// GGUF Q4_K: block layout and round trip, the SIMD products against the scalar reference, and
// bad block data. Bit-exactness with llama.cpp's own quantizer is tested against the reference
// tool in k_quants_llama_cpp.cpp.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "../support/fixtures.hpp"
#include "common.hpp"
#include "forge/backend/qmatmul.hpp"
#include "forge/backend/qmatmul_lora.hpp"
#include "forge/backend/qmatmul_q4_k_panels.hpp"
#include "forge/backend/qmatmul_q8.hpp"
#include "forge/core/error.hpp"
#include "forge/io/gguf.hpp"
#include "forge/quant/k_quants.hpp"

using namespace forge;
using namespace forge::quant;
using namespace forge::backend;

namespace {
// The round-trip bound of one sub-block from its stored constants: inside the representable
// range [−dmin·m, 15·d·sc − dmin·m] a value is off by at most half a step d·sc/2. The fit
// (make_qkx2_quants) tries grids of up to 16 steps over [min, max], whose top value then
// clamps to code 15: one more half step at the ends. The 6-bit rounding of sc and m (steps d
// and dmin) can move the range by 15·d/2 + dmin/2. A 1e-6 relative slack covers f32 rounding.
double sub_block_bound(const std::uint8_t* blk, int j) {
  const double d = to_f32(f16{std::uint16_t(blk[0] | blk[1] << 8)});
  const double dmin = to_f32(f16{std::uint16_t(blk[2] | blk[3] << 8)});
  std::uint8_t sc, m;
  quant::detail::scale_min_k4(j, blk + 4, sc, m);
  return (d * sc + 15 * d / 2 + dmin / 2) * (1 + 1e-6) + 1e-12;
}
}  // namespace

TEST_CASE("q4_k block layout: constants, packed 6-bit scales and nibbles as ggml reads them") {
  // Sub-block j spans a 16-level grid of step (j + 1)/100 shifted by −j/50.
  std::vector<float> x(256);
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l)
      x[32 * j + l] = float(j + 1) * 0.01f * float((l * 7 + j) % 16) - 0.02f * float(j);
  const auto t = q4_k::quantize(x, 1, 256);
  REQUIRE(t.codes.size() == 144);
  CHECK(q4_k::bytes_for(3, 512) == 3u * 2 * 144);
  const auto y = dequantize(t);
  // Codes: the nibble of element l of sub-block 2t is the low half of qs[32t + l], of
  // sub-block 2t + 1 the high half; values are (d·sc)·q − dmin·m.
  const float d = to_f32(f16{std::uint16_t(t.codes[0] | t.codes[1] << 8)});
  const float dmin = to_f32(f16{std::uint16_t(t.codes[2] | t.codes[3] << 8)});
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    quant::detail::scale_min_k4(j, t.codes.data() + 4, sc, m);
    CHECK(sc > 0);
    for (int l = 0; l < 32; ++l) {
      const std::uint8_t byte = t.codes[16 + 32 * (j / 2) + l];
      const int q = j % 2 ? byte >> 4 : byte & 15;
      // ggml's arithmetic: each product rounded to f32 (quant::detail::mul: no fused FMA).
      using quant::detail::mul;
      CHECK(y[32 * j + l] == mul(mul(d, float(sc)), float(q)) - mul(dmin, float(m)));
      CHECK(std::fabs(y[32 * j + l] - x[32 * j + l]) <= sub_block_bound(t.codes.data(), j));
    }
  }
}

TEST_CASE("q4_k round trip on random rows stays within each sub-block's bound") {
  const std::int64_t rows = 6, cols = 512;
  auto w = test::randn(rows * cols, 21, 0.05f);
  for (int i = 0; i < 32; ++i) w[i] = 0.0f;                       // an all-zero sub-block
  for (int i = 256; i < 288; ++i) w[i] = 1e-7f;                   // a tiny constant sub-block
  for (int i = 512; i < 544; ++i) w[i] = std::fabs(w[i]) + 1.0f;  // all positive: min 0
  const auto t = q4_k::quantize(w, rows, cols);
  const auto y = dequantize(t);
  for (std::int64_t b = 0; b < rows * cols / 32; ++b) {
    const auto* blk = t.codes.data() + (b / 8) * 144;
    INFO("sub-block " << b);
    for (int l = 0; l < 32; ++l)
      CHECK(std::fabs(y[b * 32 + l] - w[b * 32 + l]) <= sub_block_bound(blk, int(b % 8)));
  }
  for (int i = 0; i < 32; ++i) CHECK(y[i] == 0.0f);
}

namespace {
void check_products(std::int64_t m, std::int64_t n, std::int64_t k) {
  const auto w = q4_k::quantize(test::randn(n * k, 30 + n, 0.05f), n, k);
  const auto x = test::randn(m * k, 31 + m);
  std::vector<float> ref(m * n), got(m * n, -1e30f);
  qmatmul(scalar{}, x, m, w, ref);
  qmatmul(simd<>{}, x, m, w, got);
  const auto d = dequantize(w);
  INFO("q4_k m=" << m << " n=" << n << " k=" << k);
  std::size_t bad = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      double mag = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      // The same dequantized weights; f32 sums of k products in another order than the
      // reference's double sum: 1e-5 of Σ|w x| (k ≤ 1024 terms).
      if (!(std::fabs(got[i * n + r] - ref[i * n + r]) <= 1e-5 * mag + 1e-6)) ++bad;
    }
  CHECK(bad == 0);
  // The input gradient dy·W, tiled SIMD against the reference.
  const auto dy = test::randn(m * n, 32 + n);
  std::vector<float> dref(m * k), dgot(m * k);
  qmatmul_transposed(scalar{}, dy, m, w, dref);
  qmatmul_transposed(simd<>{}, dy, m, w, dgot);
  std::size_t bad_t = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) {
      double mag = 0;
      for (std::int64_t r = 0; r < n; ++r) mag += std::fabs(d[r * k + c] * dy[i * n + r]);
      if (!(std::fabs(dgot[i * k + c] - dref[i * k + c]) <= 1e-5 * mag + 1e-6)) ++bad_t;
    }
  CHECK(bad_t == 0);
}
}  // namespace

TEST_CASE("q4_k SIMD products equal the scalar reference on ragged shapes") {
  check_products(1, 37, 512);   // decode: L1-tile path, rows not a multiple of 64
  check_products(3, 70, 256);   // one super-block per row
  check_products(17, 65, 768);  // prefill: tiled path, ragged m and n
  check_products(33, 130, 1024);
}

TEST_CASE("q4_k bad block data is a forge::error, never a read past the buffer") {
  const auto t = q4_k::quantize(test::randn(4 * 512, 40), 4, 512);
  auto cut = t;
  cut.codes.resize(cut.codes.size() - 1);
  std::vector<float> row(512), y(4);
  CHECK_THROWS_AS(q4_k::dequantize_row(cut, 0, row), error);
  CHECK_THROWS_AS(qmatmul(simd<>{}, std::span<const float>(row), 1, cut, std::span<float>(y)),
                  error);
  const std::span<const std::uint8_t> blocks(t.codes);
  CHECK_THROWS_AS(q4_k::from_blocks(blocks.first(blocks.size() - 144), 4, 512), error);
  CHECK_THROWS_AS(q4_k::from_blocks(blocks, 4, 500), error);  // not whole 256-value blocks
  CHECK(q4_k::from_blocks(blocks, 4, 512) == t);
  CHECK_THROWS_AS(q4_k::quantize(std::vector<float>(4 * 320), 4, 320), error);

  // A GGUF file whose Q4_K tensor data is cut short: the reader refuses it, naming the tensor.
  io::gguf_metadata md;
  md.set("general.architecture", std::string("llama"));
  const std::vector<std::byte> bytes(
      reinterpret_cast<const std::byte*>(t.codes.data()),
      reinterpret_cast<const std::byte*>(t.codes.data()) + t.codes.size());
  const auto path = test::scratch("quant_k_quants") / "w.gguf";
  const std::vector<io::gguf_tensor_view> views = {{"w", io::ggml_type::q4_k, {4, 512}, bytes}};
  io::write_gguf(path, md, views);
  const auto whole = io::read_file(path);
  const auto f = io::gguf_file::parse(std::as_bytes(std::span(whole)), "w.gguf");
  const auto back = f.to_f32("w");
  CHECK(back == dequantize(t));
  for (std::size_t drop : {std::size_t(1), std::size_t(144), std::size_t(500)}) {
    const auto part = std::as_bytes(std::span(whole)).first(whole.size() - drop);
    CHECK_THROWS_AS(io::gguf_file::parse(part, "w.gguf"), error);
  }
}

namespace {
// Q4_K x int8-activation products (decode kernel) against their scalar reference, and the
// reference against the f32 product within the activation-rounding bound.
void check_q8(std::int64_t m, std::int64_t n, std::int64_t k) {
  const auto w = q4_k::quantize(test::randn(n * k, 50 + n, 0.05f), n, k);
  const auto x = test::randn(m * k, 51 + m);
  std::vector<float> ref(m * n), got(m * n, -1e30f), f32(m * n);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, w, got);
  qmatmul(scalar{}, x, m, w, f32);
  const auto d = dequantize(w);
  INFO("q4_k x q8 m=" << m << " n=" << n << " k=" << k);
  std::size_t bad_kernel = 0, bad_bound = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      const auto j = std::size_t(i * n + r);
      double mag = 0, bound = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      // Same exact integer sub-block dots; f32 sums of the scaled terms in another order.
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad_kernel;
      // Each activation moves by at most d_x/2 (rounding) + 2^-11·amax (f16 scale).
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

TEST_CASE("q4_k x int8-activation products: VNNI kernel, reference and f32 bound") {
  check_q8(1, 37, 512);
  check_q8(3, 70, 256);
  check_q8(5, 16, 768);  // 4 + 1 activation rows
  // 8 rows or more take the f32 tiled product: identical to qmatmul.
  const auto w = q4_k::quantize(test::randn(20 * 256, 60, 0.05f), 20, 256);
  const auto x = test::randn(9 * 256, 61);
  std::vector<float> a(9 * 20), b(9 * 20);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, 9, w, a);
  qmatmul(simd<xsimd::avx512bw>{}, x, 9, w, b);
  CHECK(a == b);
}

namespace {
// The Q4_K panel kernel (decode and prefill) against the scalar reference of the same
// arithmetic on random shapes: rows not a multiple of the 16-row panel, activation rows not a
// multiple of the kernel's 8, one to three 256-value blocks.
void check_panels(std::int64_t m, std::int64_t n, std::int64_t k) {
  const auto w = q4_k::quantize(test::randn(n * k, 70 + n, 0.05f), n, k);
  const auto p = pack_q4_k_panels(w);
  REQUIRE(unpack_q4_k_panels(p) == w);  // lossless: the very GGUF blocks come back
  const auto x = test::randn(m * k, 71 + m);
  std::vector<float> ref(m * n), got(m * n, -1e30f);
  qmatmul_q8(scalar{}, x, m, w, ref);
  qmatmul_q8(simd<xsimd::avx512bw>{}, x, m, p, got);
  const auto d = dequantize(w);
  INFO("q4_k panels m=" << m << " n=" << n << " k=" << k);
  std::size_t bad = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = 0; r < n; ++r) {
      double mag = 0;
      for (std::int64_t c = 0; c < k; ++c) mag += std::fabs(d[r * k + c] * x[i * k + c]);
      // Same exact integer sub-block dots; the scaled terms summed in f32 (the reference sums
      // in double): relative 1e-5 of Σ|w·x| bounds ~16 f32 roundings per sub-block term.
      const auto j = std::size_t(i * n + r);
      if (!(std::fabs(got[j] - ref[j]) <= 1e-5 * mag + 1e-6)) ++bad;
    }
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("q4_k panels: lossless repacking, VNNI kernel equals the reference on ragged shapes") {
  check_panels(1, 37, 512);   // decode, a partial panel
  check_panels(3, 16, 256);   // one whole panel
  check_panels(8, 70, 768);   // one 8-row tile, 5 panels (the last with 6 rows)
  check_panels(13, 33, 512);  // 8 + 5 activation rows
  check_panels(17, 100, 256);
  check_panels(2, 1, 256);  // a single weight row
  // The panel layout puts every byte of the GGUF blocks somewhere (a bijection): a random
  // block stream (any 6-bit scales, any f16 constants) survives the round trip too.
  quant::qtensor<q4_k> r;
  r.rows = 19;
  r.cols = 512;
  r.codes.resize(q4_k::bytes_for(19, 512));
  philox g(3);
  for (auto& b : r.codes) b = static_cast<std::uint8_t>(g.next_u32());
  CHECK(unpack_q4_k_panels(pack_q4_k_panels(r)) == r);
  // Bad sizes: truncated blocks when packing, mismatched activations when multiplying.
  auto cut = r;
  cut.codes.pop_back();
  CHECK_THROWS_AS(pack_q4_k_panels(cut), error);
  const auto p = pack_q4_k_panels(q4_k::quantize(test::randn(16 * 256, 72), 16, 256));
  std::vector<float> x(255), y(16);
  CHECK_THROWS_AS(qmatmul_q8(simd<xsimd::avx512bw>{}, x, 1, p, y), error);
}
