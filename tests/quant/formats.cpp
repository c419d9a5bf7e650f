// Quantization formats: hand-worked blocks, the published algorithms' invariants, byte counts.

#include <catch2/catch.hpp>
#include <cmath>
#include <set>

#include "common.hpp"
#include "forge/quant/rtn.hpp"

using namespace forge;
using namespace forge::quant;

TEST_CASE("int8_channel codes are the nearest multiples of the row scale") {
  auto w = test::randn(7 * 45, 1);
  auto t = quantize_rtn<int8_channel>(w, 7, 45);
  REQUIRE(t.bytes() == int8_channel::bytes_for(7, 45));
  auto d = dequantize(t);
  for (int r = 0; r < 7; ++r) {
    float amax = 0;
    for (int j = 0; j < 45; ++j) amax = std::max(amax, std::fabs(w[r * 45 + j]));
    CHECK(t.scales[r] == amax / 127.0f);
    for (int j = 0; j < 45; ++j) {
      const int q = static_cast<std::int8_t>(t.codes[r * 45 + j]);
      CHECK(std::abs(q) <= 127);
      // Nearest code: the error is at most half a step (plus f32 rounding of w/s).
      CHECK(std::fabs(d[r * 45 + j] - w[r * 45 + j]) <= 0.5f * t.scales[r] * (1 + 1e-5f));
    }
  }
}

TEST_CASE("int4_group symmetric and asymmetric follow the GPTQ quantizer") {
  auto w = test::randn(5 * 256, 2);
  w[3] = 0;  // an all-zero group gets the reference's [-1, 1] range
  for (int i = 128; i < 256; ++i) w[i] = 0;
  SECTION("symmetric, g128") {
    auto t = quantize_rtn<int4_g128>(w, 5, 256);
    REQUIRE(t.codes.size() == 5 * 128);
    REQUIRE(t.scales.size() == 10);
    REQUIRE(t.zeros.empty());
    CHECK(t.scales[1] == to_f32(to_f16(2.0f / 15.0f)));  // the all-zero group
    auto d = dequantize(t);
    for (int r = 0; r < 5; ++r)
      for (int g = 0; g < 2; ++g) {
        float m = 0;
        for (int i = 0; i < 128; ++i) m = std::max(m, std::fabs(w[r * 256 + g * 128 + i]));
        if (m == 0) continue;
        const float s = t.scales[r * 2 + g];
        CHECK(s == to_f32(to_f16(2 * m / 15)));
        for (int i = 0; i < 128; ++i) {
          const auto k = r * 256 + g * 128 + i;
          // Inside [-8s, 7s] the code is the nearest level; above 7s it clips to 7s.
          const float x = w[k];
          const float bound = x > 7 * s ? x - 7 * s + 1e-6f : 0.5f * s * (1 + 1e-5f);
          CHECK(std::fabs(d[k] - x) <= bound);
        }
      }
  }
  SECTION("asymmetric, g32") {
    auto t = quantize_rtn<int4_group<32, false>>(w, 5, 256);
    REQUIRE(t.zeros.size() == 40);
    auto d = dequantize(t);
    for (int r = 0; r < 5; ++r)
      for (int g = 0; g < 8; ++g) {
        float lo = 0, hi = 0;
        for (int i = 0; i < 32; ++i) {
          lo = std::min(lo, w[r * 256 + g * 32 + i]);
          hi = std::max(hi, w[r * 256 + g * 32 + i]);
        }
        if (lo == 0 && hi == 0) continue;
        const float s = t.scales[r * 8 + g];
        CHECK(s == to_f32(to_f16((hi - lo) / 15)));
        CHECK(t.zeros[r * 8 + g] == std::nearbyint(-lo / s));
        for (int i = 0; i < 32; ++i) {
          const auto k = r * 256 + g * 32 + i;
          // f16 rounding of s moves the grid ends by up to 15 * s * 2^-11.
          CHECK(std::fabs(d[k] - w[k]) <= 0.5f * s + 16 * s / 2048);
        }
      }
  }
}

TEST_CASE("int4 packing puts even columns in the low nibble") {
  std::vector<float> w(128, 0.0f);
  w[0] = -8.0f * 1.0f;  // scale = 2*8/15
  w[1] = 8.0f;
  auto t = quantize_rtn<int4_g128>(w, 1, 128);
  const float s = t.scales[0];
  CHECK((t.codes[0] & 0x0f) ==
        static_cast<int>(std::clamp(std::nearbyint(-8.0f / s) + 8, 0.f, 15.f)));
  CHECK((t.codes[0] >> 4) == 15);  // +8 / s = 7.5 -> 8 -> clipped to 7 + 8
  CHECK(t.codes[1] == 0x88);       // zeros sit on the zero point
}

TEST_CASE("nf4 quantizes a hand-worked block like bitsandbytes") {
  // Block of 64: the 16 code values times 2.5, repeated; absmax = 2.5.
  std::vector<float> w(64);
  for (int i = 0; i < 64; ++i) w[i] = nf4_code[i % 16] * 2.5f;
  auto t = quantize_rtn<nf4_single>(w, 1, 64);
  REQUIRE(t.scales.size() == 1);
  CHECK(t.scales[0] == 2.5f);
  // The first of each pair is the high nibble: codes (0,1) -> 0x01, (2,3) -> 0x23 ...
  for (int i = 0; i < 32; ++i) CHECK(t.codes[i] == ((2 * i % 16) << 4 | (2 * i + 1) % 16));
  auto d = dequantize(t);
  for (int i = 0; i < 64; ++i) CHECK(d[i] == nf4_code[i % 16] * 2.5f);

  // Values on a midpoint go to the lower code (torch.bucketize, right=False); just above goes up.
  std::vector<float> m(64, 0.0f);
  m[0] = 1.0f;  // absmax 1: scaled values are the values themselves
  const float mid = (nf4_code[8] + nf4_code[9]) / 2.0f;
  m[2] = mid;
  m[3] = std::nextafter(mid, 1.0f);
  m[4] = -1e-30f;  // below the 0 / -0.091 midpoint? no: -0.0455 < -1e-30, so code 7 (zero)
  auto tm = quantize_rtn<nf4_single>(m, 1, 64);
  CHECK((tm.codes[1] >> 4) == 8);
  CHECK((tm.codes[1] & 0x0f) == 9);
  CHECK((tm.codes[2] >> 4) == 7);
  CHECK((tm.codes[0] >> 4) == 15);
}

TEST_CASE("the dynamic map is bitsandbytes' signed 8-bit code") {
  const auto& c = dynamic_map();
  CHECK(std::is_sorted(c.begin(), c.end()));
  CHECK(std::set<float>(c.begin(), c.end()).size() == 256);  // no duplicates
  CHECK(c[255] == 1.0f);
  CHECK(std::count(c.begin(), c.end(), 0.0f) == 1);
  // Largest below 1: midpoint of the last two points of linspace(0.1, 1, 65), times 10^0.
  CHECK(c[254] == (0.9859375f + 1.0f) / 2.0f);
  // Smallest magnitude: 10^-6 * (0.1 + 1) / 2, both signs.
  const float small = static_cast<float>(1e-6) * ((0.1f + 1.0f) / 2.0f);
  CHECK(c[128] == small);
  CHECK(c[127] == 0.0f);
  CHECK(c[126] == -small);
  CHECK(c[0] == -c[254]);
}

TEST_CASE("nf4 double quantization: 4.127 bits per weight and absmax within one code step") {
  // QLoRA section 3: 4 + 8/64 + 32/(64*256) bits per parameter.
  const double bits = 8.0 * static_cast<double>(nf4::bytes_for(4096, 4096)) / (4096.0 * 4096.0);
  CHECK(bits == Approx(4.127).margin(0.0005));
  const std::int64_t rows = 512, cols = 512;
  auto w = test::randn(rows * cols, 3, 0.02f);
  auto t = quantize_rtn<nf4>(w, rows, cols);
  CHECK(t.bytes() == nf4::bytes_for(rows, cols));
  CHECK(t.bytes() == 131072 + 4096 + 16 * 4 + 4);
  CHECK(t.zeros.size() == 4096);
  CHECK(t.scales2.size() == 16);
  // Reference absmax per block from the plain format; the double-quantized value is the
  // nearest dynamic-code level: its error is at most half the largest gap of the code times b.
  auto single = quantize_rtn<nf4_single>(w, rows, cols);
  CHECK(single.codes == t.codes);  // double quantization only touches the constants
  const auto& c = dynamic_map();
  float max_gap = 0;
  for (int i = 0; i + 1 < 256; ++i) max_gap = std::max(max_gap, c[i + 1] - c[i]);
  double mean = 0;
  for (float a : single.scales) mean += a;
  CHECK(t.offset == static_cast<float>(mean / 4096));  // correctly rounded mean
  for (std::size_t b = 0; b < 4096; ++b) {
    const float b2 = t.scales2[b / 256];
    CHECK(std::fabs(nf4::block_absmax(t, b) - single.scales[b]) <=
          0.5f * max_gap * b2 * 1.0001f + 1e-9f);
  }
}

TEST_CASE("q8_0 and q4_0 hand-worked blocks") {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  // Q4_0: the largest magnitude is -16 (j = 0) -> d = 2, q = trunc(x/2 + 8.5) capped at 15.
  auto t4 = quantize_rtn<q4_0>(x, 1, 32);
  REQUIRE(t4.codes.size() == 18);
  CHECK(t4.codes[0] == 0x00);  // f16 2.0 = 0x4000, little-endian
  CHECK(t4.codes[1] == 0x40);
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>((j - 16) / 2.0f + 8.5f));
    const int hi = std::min(15, static_cast<int>((j) / 2.0f + 8.5f));
    CHECK(t4.codes[2 + j] == (lo | hi << 4));
  }
  CHECK(t4.codes[2] == (0 | 8 << 4));
  CHECK(t4.codes[17] == (8 | 15 << 4));  // x = -1 -> 8, x = 15 -> 16 -> 15
  auto d4 = dequantize(t4);
  CHECK(d4[0] == -16.0f);
  CHECK(d4[31] == 14.0f);  // 15 clipped: (15 - 8) * 2
  // Q8_0: d = 16/127, q = round(x * 127/16) with ties away from zero.
  auto t8 = quantize_rtn<q8_0>(x, 1, 32);
  REQUIRE(t8.codes.size() == 34);
  const std::uint16_t h = to_f16(16.0f / 127.0f).bits;
  CHECK(t8.codes[0] == (h & 0xff));
  CHECK(t8.codes[1] == (h >> 8));
  for (int j = 0; j < 32; ++j)
    CHECK(static_cast<std::int8_t>(t8.codes[2 + j]) == std::lround((j - 16) * 127.0 / 16.0));
  // An all-zero block: d = 0 and every code 0 (q4_0: code 8).
  std::vector<float> z(32, 0.0f);
  auto z4 = quantize_rtn<q4_0>(z, 1, 32);
  CHECK(z4.codes[0] == 0);
  CHECK(z4.codes[2] == 0x88);
}

TEST_CASE("bad shapes are reported with what was expected") {
  std::vector<float> w(100);
  CHECK_THROWS_WITH(quantize_rtn<int4_g128>(w, 1, 100),
                    Catch::Contains("multiple of the group size"));
  CHECK_THROWS_WITH(quantize_rtn<q8_0>(w, 2, 60), Catch::Contains("disagrees with the shape"));
  auto t = quantize_rtn<int8_channel>(w, 10, 10);
  std::vector<float> row(5);
  CHECK_THROWS_WITH(int8_channel::dequantize_row(t, 0, row), Catch::Contains("too short"));
}
