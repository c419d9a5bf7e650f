// Exhaustive checks of the 16-bit float conversions: all 65,536 bit patterns of bf16 and of
// f16 are widened and compared with a value computed independently in double precision from
// the format's definition; narrowing is checked on every representable value, on every
// midpoint between neighbours (ties go to even) and just off each midpoint, against a
// nearest-value search in double precision; f16 is also checked against the F16C hardware
// instructions where the build has them. Exact equality throughout: these conversions are
// exact by definition.

#include "forge/core/dtype.hpp"

#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>
#if defined(__F16C__)
#include <immintrin.h>
#endif

using namespace forge;

namespace {
// The value of a binary float with `eb` exponent bits and `mb` mantissa bits, from its
// definition (no bit tricks): +-2^(e-bias) * (1.m), subnormals +-2^(1-bias) * (0.m).
double decode(std::uint32_t bits, int eb, int mb) {
  const int bias = (1 << (eb - 1)) - 1;
  const bool neg = (bits >> (eb + mb)) & 1;
  const std::uint32_t e = (bits >> mb) & ((1u << eb) - 1);
  const std::uint32_t m = bits & ((1u << mb) - 1);
  double v;
  if (e == (1u << eb) - 1)
    v = m ? NAN : INFINITY;
  else if (e == 0)
    v = std::ldexp(double(m), 1 - bias - mb);
  else
    v = std::ldexp(double(m + (1u << mb)), int(e) - bias - mb);
  return neg ? -v : v;
}

// Nearest representable value by search over all finite patterns of one sign, ties to the
// pattern with an even mantissa; values beyond the largest finite by half an ulp or more
// become infinity (IEEE round-to-nearest overflow rule).
std::uint16_t nearest(double x, int eb, int mb, const std::vector<double>& positive_values) {
  const std::uint16_t sign = std::signbit(x) ? std::uint16_t(1u << (eb + mb)) : 0;
  const double a = std::fabs(x);
  const std::uint32_t inf = ((1u << eb) - 1) << mb;
  const double maxv = positive_values[inf - 1];
  const double ulp = maxv - positive_values[inf - 2];
  if (a >= maxv + ulp / 2) return std::uint16_t(sign | inf);
  // positive_values is increasing over finite patterns 0..inf-1: binary search.
  auto it = std::lower_bound(positive_values.begin(), positive_values.begin() + inf, a);
  std::uint32_t hi = std::uint32_t(it - positive_values.begin());
  if (hi >= inf) return std::uint16_t(sign | (inf - 1));
  if (hi == 0 || positive_values[hi] == a) return std::uint16_t(sign | hi);
  const std::uint32_t lo = hi - 1;
  const double dlo = a - positive_values[lo], dhi = positive_values[hi] - a;
  if (dlo < dhi) return std::uint16_t(sign | lo);
  if (dhi < dlo) return std::uint16_t(sign | hi);
  return std::uint16_t(sign | ((lo & 1) ? hi : lo));
}

std::vector<double> positives(int eb, int mb) {
  std::vector<double> v(1u << (eb + mb));
  for (std::uint32_t b = 0; b < v.size(); ++b) v[b] = decode(b, eb, mb);
  return v;
}

// Candidate f32 inputs around representable 16-bit values: the value, the midpoint to the
// next one, and the f32 neighbours of that midpoint.
std::vector<float> probes(const std::vector<double>& pos, std::uint32_t inf) {
  std::vector<float> out;
  for (std::uint32_t b = 0; b + 1 <= inf; ++b) {
    const double v = pos[b];
    const double next = b + 1 < inf ? pos[b + 1] : 2 * pos[b] - pos[b - 1];
    const float mid = float((v + next) / 2);  // exact in f32 for both formats' spacing
    for (float f : {float(v), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      out.push_back(f);
      out.push_back(-f);
    }
  }
  return out;
}
}  // namespace

TEST_CASE("bf16 widening is exact for all 65536 patterns") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = to_f32(bf16{std::uint16_t(b)});
    const double ref = decode(b, 8, 7);
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(f));
    } else {
      REQUIRE(double(f) == ref);
      REQUIRE(std::signbit(f) == bool(b & 0x8000));
      REQUIRE(to_bf16(f).bits == b);  // and narrowing it back is the identity
    }
  }
}

TEST_CASE("f16 widening is exact for all 65536 patterns") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = to_f32(f16{std::uint16_t(b)});
    const double ref = decode(b, 5, 10);
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(f));
      REQUIRE(std::isnan(to_f32(to_f16(f))));
    } else {
      REQUIRE(double(f) == ref);
      REQUIRE(std::signbit(f) == bool(b & 0x8000));
      REQUIRE(to_f16(f).bits == b);
    }
#if defined(__F16C__)
    const float hw = _cvtsh_ss(std::uint16_t(b));
    REQUIRE(std::memcmp(&hw, &f, 4) == 0);  // same bits, NaN payloads included
#endif
  }
}

TEST_CASE("f32 to bf16 rounds to nearest even at every midpoint") {
  const auto pos = positives(8, 7);
  std::size_t checked = 0;
  for (float x : probes(pos, 0x7f80)) {
    REQUIRE(to_bf16(x).bits == nearest(double(x), 8, 7, pos));
    ++checked;
  }
  CHECK(checked > 250'000);
  CHECK(to_bf16(INFINITY).bits == 0x7f80);
  CHECK(to_bf16(-INFINITY).bits == 0xff80);
  CHECK(std::isnan(to_f32(to_bf16(NAN))));
  CHECK(
      std::isnan(to_f32(to_bf16(std::bit_cast<float>(0x7f800001u)))));  // low-payload NaN stays NaN
}

TEST_CASE("f32 to f16 rounds to nearest even at every midpoint, subnormals and overflow included") {
  const auto pos = positives(5, 10);
  std::size_t checked = 0;
  for (float x : probes(pos, 0x7c00)) {
    const std::uint16_t got = to_f16(x).bits;
    REQUIRE(got == nearest(double(x), 5, 10, pos));
#if defined(__F16C__)
    REQUIRE(got == _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
#endif
    ++checked;
  }
  CHECK(checked > 250'000);
  CHECK(to_f16(1e-10f).bits == 0);  // far below the smallest subnormal
  CHECK(to_f16(-1e9f).bits == 0xfc00);
  CHECK(std::isnan(to_f32(to_f16(NAN))));
}

TEST_CASE("dtype names round-trip and unknown names are errors") {
  for (auto t : {dtype::f32, dtype::f16, dtype::bf16, dtype::f64, dtype::i8, dtype::u8, dtype::i16,
                 dtype::i32, dtype::i64, dtype::u16, dtype::u32, dtype::u64, dtype::boolean})
    CHECK(parse_dtype(name(t)) == t);
  CHECK(size_of(dtype::bf16) == 2);
  CHECK(size_of(dtype::i64) == 8);
  CHECK_THROWS_WITH(parse_dtype("F8_E4M3"),
                    Catch::Contains("unknown dtype") && Catch::Contains("F8_E4M3"));
}

TEST_CASE("buffer conversions agree with the element conversions") {
  std::vector<float> src = {0.1f, -2.5f, 65519.0f, 6e-8f, 3.0e38f};
  std::vector<std::uint16_t> h(src.size());
  std::vector<float> back(src.size());
  convert_from_f32(src.data(), src.size(), dtype::bf16, h.data());
  convert_to_f32(h.data(), dtype::bf16, h.size(), back.data());
  for (std::size_t i = 0; i < src.size(); ++i) CHECK(back[i] == to_f32(to_bf16(src[i])));
  convert_from_f32(src.data(), src.size(), dtype::f16, h.data());
  convert_to_f32(h.data(), dtype::f16, h.size(), back.data());
  for (std::size_t i = 0; i < src.size(); ++i) CHECK(back[i] == to_f32(to_f16(src[i])));
  CHECK_THROWS_AS(convert_from_f32(src.data(), 1, dtype::i32, h.data()), forge::error);
}
