#pragma once
// Test doubles: minimal reference quantizers for Q8_0 and Q4_0 written from the block
// definitions in llama.cpp's ggml-quants.c (quantize_row_q8_0_ref, quantize_row_q4_0_ref),
// used only to produce quantized bytes for the GGUF tests. The library's quantizers live in
// forge/quant/ and are tested there.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "forge/core/dtype.hpp"

namespace forge::test {

/// Q8_0: per 32 values, d = amax / 127 stored as f16, q = round(x / d).
inline std::vector<std::byte> test_quantize_q8_0(std::span<const float> x) {
  std::vector<std::byte> out(x.size() / 32 * 34);
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const float* v = x.data() + 32 * b;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const auto h = to_f16(d);
    std::memcpy(out.data() + 34 * b, &h.bits, 2);
    for (int i = 0; i < 32; ++i)
      out[34 * b + 2 + i] =
          std::byte(static_cast<std::uint8_t>(static_cast<std::int8_t>(std::lround(v[i] * id))));
  }
  return out;
}

/// Q4_0: per 32 values, d = (signed value of largest magnitude) / -8 stored as f16,
/// q = min(15, int(x / d + 8.5)); value j in the low nibble of byte j, j+16 in the high.
inline std::vector<std::byte> test_quantize_q4_0(std::span<const float> x) {
  std::vector<std::byte> out(x.size() / 32 * 18);
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const float* v = x.data() + 32 * b;
    float amax = 0, max = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(v[i]) > amax) {
        amax = std::fabs(v[i]);
        max = v[i];
      }
    const float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const auto h = to_f16(d);
    std::memcpy(out.data() + 18 * b, &h.bits, 2);
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, static_cast<int>(v[j] * id + 8.5f));
      const int hi = std::min(15, static_cast<int>(v[j + 16] * id + 8.5f));
      out[18 * b + 2 + j] = std::byte(static_cast<std::uint8_t>(lo | (hi << 4)));
    }
  }
  return out;
}

}  // namespace forge::test
