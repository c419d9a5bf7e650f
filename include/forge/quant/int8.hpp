#pragma once
// int8 per-channel symmetric quantization: one f32 scale per output row,
//   s_r = max_j |W_rj| / 127,   q_rj = clamp(round(W_rj / s_r), -127, 127),   W'_rj = s_r q_rj.
// -128 is never produced, so the code range is symmetric (as in LLM.int8's vector-wise
// quantization, Dettmers et al. 2022, section 3). Rounding is to nearest, ties to even.
//
// qtensor<int8_channel>: codes = rows*cols int8 values (two's complement bytes), row-major;
// scales = one per row.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "forge/quant/format.hpp"

namespace forge::quant {

/// int8, one symmetric scale per output channel (row).
struct int8_channel {
  static constexpr int bits = 8;
  static constexpr int group_size = 0;  ///< 0: the whole row is one group
  static constexpr bool symmetric = true;
  static constexpr const char* name = "int8_channel";

  /// Bytes taken by a rows x cols matrix: one byte per weight plus an f32 scale per row.
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    return static_cast<std::size_t>(rows * cols + rows * 4);
  }

  /// Round-to-nearest quantization of W (rows x cols, row-major).
  static qtensor<int8_channel> quantize(std::span<const float> w, std::int64_t rows,
                                        std::int64_t cols) {
    detail::check_shape(w.size(), rows, cols, 0, name);
    qtensor<int8_channel> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.resize(static_cast<std::size_t>(rows * cols));
    t.scales.resize(static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* x = w.data() + r * cols;
      float amax = 0.0f;
      for (std::int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float s = amax / 127.0f;
      t.scales[static_cast<std::size_t>(r)] = s;
      for (std::int64_t j = 0; j < cols; ++j) {
        const float q = s > 0 ? std::clamp(std::nearbyint(x[j] / s), -127.0f, 127.0f) : 0.0f;
        t.codes[static_cast<std::size_t>(r * cols + j)] =
            static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
      }
    }
    return t;
  }

  /// Row r of the dequantized matrix into out[0, cols).
  static void dequantize_row(const qtensor<int8_channel>& t, std::int64_t r, std::span<float> out) {
    detail::check_row(t, r, out.size());
    const float s = t.scales[static_cast<std::size_t>(r)];
    const auto* q = t.codes.data() + r * t.cols;
    for (std::int64_t j = 0; j < t.cols; ++j) out[j] = s * static_cast<std::int8_t>(q[j]);
  }
};

}  // namespace forge::quant
