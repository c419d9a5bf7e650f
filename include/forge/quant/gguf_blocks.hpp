#pragma once
// GGUF block formats Q8_0 and Q4_0, byte-identical to ggml's reference quantizers
// (llama.cpp ggml/src/ggml-quants.c: quantize_row_q8_0_ref, quantize_row_q4_0_ref; block
// layouts in ggml-common.h). Blocks of 32 consecutive weights along a row:
//
//   Q8_0 (34 bytes): f16 d, int8 qs[32];  d = max|x| / 127, qs = roundf(x / d) (ties away
//        from zero), computed with id = 1/d in f32 and d stored as f16.
//   Q4_0 (18 bytes): f16 d, u8 qs[16];   m = the element of largest magnitude (first one on a
//        tie, with its sign), d = m / -8, q = min(15, trunc(x * (1/d) + 8.5)),
//        qs[j] = q[j] | q[j + 16] << 4;  x' = d (q - 8).
// Products x * id and the + 8.5 are rounded separately, as in gguf-py's numpy quantizer.
//
// qtensor<q8_0 / q4_0>: codes = rows * cols/32 blocks, row-major, exactly as in a GGUF file.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "forge/core/dtype.hpp"
#include "forge/quant/format.hpp"

namespace forge::quant {

namespace detail {
inline void store_f16(std::uint8_t* p, float v) {
  const std::uint16_t h = to_f16(v).bits;
  p[0] = static_cast<std::uint8_t>(h & 0xff);
  p[1] = static_cast<std::uint8_t>(h >> 8);
}
inline float load_f16(const std::uint8_t* p) {
  return to_f32(f16{static_cast<std::uint16_t>(p[0] | (p[1] << 8))});
}
}  // namespace detail

/// GGUF Q8_0: blocks of 32 int8 values with an f16 scale (8.5 bits per weight).
struct q8_0 {
  static constexpr int bits = 8;
  static constexpr int group_size = 32;
  static constexpr bool symmetric = true;
  static constexpr int block_bytes = 34;
  static constexpr const char* name = "q8_0";

  /// Bytes taken by a rows x cols matrix (34 bytes per 32 weights).
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    return static_cast<std::size_t>(rows * (cols / 32) * block_bytes);
  }

  /// Quantizes one block of 32 values into 34 bytes (ggml quantize_row_q8_0_ref).
  static void quantize_block(const float* x, std::uint8_t* out) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    detail::store_f16(out, d);
    for (int j = 0; j < 32; ++j) {
      volatile float v = x[j] * id;
      out[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(v)));
    }
  }

  /// Quantizes W (rows x cols, row-major) into Q8_0 blocks; cols % 32 == 0.
  static qtensor<q8_0> quantize(std::span<const float> w, std::int64_t rows, std::int64_t cols) {
    detail::check_shape(w.size(), rows, cols, 32, name);
    qtensor<q8_0> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.resize(bytes_for(rows, cols));
    for (std::size_t b = 0; b < w.size() / 32; ++b)
      quantize_block(w.data() + b * 32, t.codes.data() + b * block_bytes);
    return t;
  }

  /// Row r of the dequantized matrix into out[0, cols) (ggml dequantize_row_q8_0).
  static void dequantize_row(const qtensor<q8_0>& t, std::int64_t r, std::span<float> out) {
    detail::check_row(t, r, out.size());
    const auto* blk = t.codes.data() + static_cast<std::size_t>(r * (t.cols / 32)) * block_bytes;
    for (std::int64_t b = 0; b < t.cols / 32; ++b, blk += block_bytes) {
      const float d = detail::load_f16(blk);
      for (int j = 0; j < 32; ++j) out[b * 32 + j] = static_cast<std::int8_t>(blk[2 + j]) * d;
    }
  }
};

/// GGUF Q4_0: blocks of 32 4-bit values with an f16 scale (4.5 bits per weight).
struct q4_0 {
  static constexpr int bits = 4;
  static constexpr int group_size = 32;
  static constexpr bool symmetric = true;
  static constexpr int block_bytes = 18;
  static constexpr const char* name = "q4_0";

  /// Bytes taken by a rows x cols matrix (18 bytes per 32 weights).
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    return static_cast<std::size_t>(rows * (cols / 32) * block_bytes);
  }

  /// Quantizes one block of 32 values into 18 bytes (ggml quantize_row_q4_0_ref).
  static void quantize_block(const float* x, std::uint8_t* out) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    detail::store_f16(out, d);
    auto code = [&](float v) {
      volatile float p = v * id;
      volatile float s = p + 8.5f;
      return static_cast<std::uint8_t>(std::min(15, static_cast<int>(static_cast<std::int8_t>(s))));
    };
    for (int j = 0; j < 16; ++j)
      out[2 + j] = static_cast<std::uint8_t>(code(x[j]) | (code(x[j + 16]) << 4));
  }

  /// Quantizes W (rows x cols, row-major) into Q4_0 blocks; cols % 32 == 0.
  static qtensor<q4_0> quantize(std::span<const float> w, std::int64_t rows, std::int64_t cols) {
    detail::check_shape(w.size(), rows, cols, 32, name);
    qtensor<q4_0> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.resize(bytes_for(rows, cols));
    for (std::size_t b = 0; b < w.size() / 32; ++b)
      quantize_block(w.data() + b * 32, t.codes.data() + b * block_bytes);
    return t;
  }

  /// Row r of the dequantized matrix into out[0, cols) (ggml dequantize_row_q4_0).
  static void dequantize_row(const qtensor<q4_0>& t, std::int64_t r, std::span<float> out) {
    detail::check_row(t, r, out.size());
    const auto* blk = t.codes.data() + static_cast<std::size_t>(r * (t.cols / 32)) * block_bytes;
    for (std::int64_t b = 0; b < t.cols / 32; ++b, blk += block_bytes) {
      const float d = detail::load_f16(blk);
      for (int j = 0; j < 16; ++j) {
        out[b * 32 + j] = static_cast<float>((blk[2 + j] & 0x0f) - 8) * d;
        out[b * 32 + j + 16] = static_cast<float>((blk[2 + j] >> 4) - 8) * d;
      }
    }
  }
};

}  // namespace forge::quant
