#pragma once
// Element types and exact conversions between f32 and the two 16-bit float formats.
//
// bf16: the upper 16 bits of an IEEE-754 binary32; f32 -> bf16 rounds to nearest, ties to
//       even, keeps NaN a (quiet) NaN and keeps the sign of zero.
// f16:  IEEE-754 binary16 (1 sign, 5 exponent, 10 mantissa bits) with subnormals;
//       f32 -> f16 rounds to nearest, ties to even, overflows to infinity.
// Both widen to f32 exactly. These are the conversions PyTorch, safetensors and the F16C /
// AVX512-BF16 instructions implement (the tests check all 65,536 patterns of each).

#include <bit>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string_view>

#include "forge/core/error.hpp"

namespace forge {

/// Storage type of a tensor as it lies in a file or buffer.
enum class dtype : std::uint8_t {
  f32,
  f16,
  bf16,
  f64,
  i8,
  u8,
  i16,
  i32,
  i64,
  u16,
  u32,
  u64,
  boolean
};

/// Bytes per element.
constexpr std::size_t size_of(dtype t) {
  switch (t) {
    case dtype::f64:
    case dtype::i64:
    case dtype::u64:
      return 8;
    case dtype::f32:
    case dtype::i32:
    case dtype::u32:
      return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16:
    case dtype::u16:
      return 2;
    case dtype::i8:
    case dtype::u8:
    case dtype::boolean:
      return 1;
  }
  return 0;
}

/// The safetensors spelling of a dtype ("F32", "BF16", "I64", "BOOL", ...).
constexpr std::string_view name(dtype t) {
  switch (t) {
    case dtype::f32:
      return "F32";
    case dtype::f16:
      return "F16";
    case dtype::bf16:
      return "BF16";
    case dtype::f64:
      return "F64";
    case dtype::i8:
      return "I8";
    case dtype::u8:
      return "U8";
    case dtype::i16:
      return "I16";
    case dtype::i32:
      return "I32";
    case dtype::i64:
      return "I64";
    case dtype::u16:
      return "U16";
    case dtype::u32:
      return "U32";
    case dtype::u64:
      return "U64";
    case dtype::boolean:
      return "BOOL";
  }
  return "?";
}

/// Parses a safetensors dtype name; forge::error naming the value if unknown.
inline dtype parse_dtype(std::string_view s) {
  for (int i = 0; i <= static_cast<int>(dtype::boolean); ++i) {
    auto t = static_cast<dtype>(i);
    if (name(t) == s) return t;
  }
  throw error({.what = "unknown dtype",
               .expected = "one of F32 F16 BF16 F64 I8 U8 I16 I32 I64 U16 U32 U64 BOOL",
               .found = std::string(s)});
}

inline std::ostream& operator<<(std::ostream& os, dtype t) {
  return os << name(t);
}

/// A bfloat16 value held as its bit pattern.
struct bf16 {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(bf16, bf16) = default;
};

/// An IEEE binary16 value held as its bit pattern.
struct f16 {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(f16, f16) = default;
};

/// bf16 -> f32, exact.
constexpr float to_f32(bf16 h) {
  return std::bit_cast<float>(std::uint32_t(h.bits) << 16);
}

/// f32 -> bf16, round to nearest even; NaN stays NaN (quieted), infinities and zeros kept.
constexpr bf16 to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((u >> 16) | 0x0040u)};
  // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent
  // is the correct rounding up (to the next binade or to infinity).
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{std::uint16_t(u >> 16)};
}

/// f16 -> f32, exact (subnormals and infinities included; NaNs keep their payload, quieted).
constexpr float to_f32(f16 h) {
  const std::uint32_t sign = std::uint32_t(h.bits & 0x8000u) << 16;
  std::uint32_t exp = (h.bits >> 10) & 0x1fu;
  std::uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) {
    // Infinity, or NaN with its payload kept and quieted, as IEEE conversion (and F16C) do.
    return std::bit_cast<float>(sign | 0x7f800000u | (man ? 0x00400000u : 0u) | (man << 13));
  }
  if (exp == 0) {
    if (man == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalise the mantissa into an f32 normal number.
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while ((man & 0x400u) == 0);
    man &= 0x3ffu;
    return std::bit_cast<float>(sign | (std::uint32_t(127 - 15 - e) << 23) | (man << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

/// f32 -> f16, round to nearest even; overflow gives infinity, NaN stays NaN (quieted).
constexpr f16 to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{std::uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};
  if (a >= 0x47800000u) return f16{std::uint16_t(sign | 0x7c00u)};  // >= 65536: inf
  if (a < 0x38800000u) {
    // Result is subnormal (or zero) in f16: value = a_real / 2^-24 rounded to an integer.
    if (a < 0x33000000u) return f16{sign};  // below half the smallest subnormal: +-0
    const std::uint32_t e = a >> 23;        // biased f32 exponent, 102..112
    const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // bits to drop so the unit is 2^-24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return f16{std::uint16_t(sign | r)};
  }
  // Normal range: rebias the exponent and round the 13 dropped mantissa bits.
  std::uint32_t v = a - ((127u - 15u) << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return f16{std::uint16_t(sign | (v >> 13))};
}

/// Reads element i of a buffer of dtype `t` as f32 (floating types only).
inline float load_f32(const void* base, dtype t, std::size_t i) {
  const auto* p = static_cast<const unsigned char*>(base);
  switch (t) {
    case dtype::f32: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case dtype::bf16: {
      bf16 h;
      std::memcpy(&h.bits, p + 2 * i, 2);
      return to_f32(h);
    }
    case dtype::f16: {
      f16 h;
      std::memcpy(&h.bits, p + 2 * i, 2);
      return to_f32(h);
    }
    case dtype::f64: {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      return static_cast<float>(v);
    }
    default:
      throw error({.what = "not a floating-point dtype",
                   .expected = "F32, F16, BF16 or F64",
                   .found = std::string(name(t))});
  }
}

/// Converts n elements of dtype `t` at `src` to f32 at `dst`.
inline void convert_to_f32(const void* src, dtype t, std::size_t n, float* dst) {
  if (t == dtype::f32) {
    std::memcpy(dst, src, 4 * n);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) dst[i] = load_f32(src, t, i);
}

/// Converts n f32 values to dtype `t` (f32, f16 or bf16) at `dst`.
inline void convert_from_f32(const float* src, std::size_t n, dtype t, void* dst) {
  auto* p = static_cast<unsigned char*>(dst);
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, src, 4 * n);
      return;
    case dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        auto h = to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h.bits, 2);
      }
      return;
    case dtype::f16:
      for (std::size_t i = 0; i < n; ++i) {
        auto h = to_f16(src[i]);
        std::memcpy(p + 2 * i, &h.bits, 2);
      }
      return;
    default:
      throw error({.what = "cannot store floats as this dtype",
                   .expected = "F32, F16 or BF16",
                   .found = std::string(name(t))});
  }
}

}  // namespace forge
