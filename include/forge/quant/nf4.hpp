#pragma once
// NF4: 4-bit NormalFloat with blockwise absmax (Dettmers et al. 2023, "QLoRA", section 3 and
// appendix E), bit-compatible with bitsandbytes' quantize_4bit / dequantize_4bit:
//
//   block of 64 consecutive weights (flat row-major order), a = max |x| over the block
//   q = number of NF4 midpoints m_i = (c_i + c_{i+1})/2 with m_i < clamp(x * (1/a), -1, 1)
//       (torch.bucketize over the midpoints: a value on a midpoint takes the lower code)
//   x' = c_q * a
//   two codes per byte, the FIRST weight in the HIGH nibble (bitsandbytes' packing).
//
// Double quantization (QLoRA section 3, "Double Quantization"; bitsandbytes
// quantize_4bit(compress_statistics=True)): the f32 absmax constants lose their mean
// (offset = mean(a)) and are quantized blockwise (256 per block) to 8 bits with the signed
// "dynamic" code of create_dynamic_map(): b = max |a - offset| over the block,
// code index = nearest dynamic code value to (a - offset) * (1/b) (ties to the lower index).
// Dequantized a' = d[code] * b + offset. Memory: 4 + 8/64 + 32/(64*256) = 4.127 bits per weight.
//
// qtensor<nf4_format<Double>>: codes rows*cols/2 bytes; without double quant scales = absmax
// per block; with it zeros = 8-bit absmax codes, scales2 = b per 256 blocks, offset.

#include <algorithm>
#include <array>
#include <cmath>

#include "forge/quant/format.hpp"

namespace forge::quant {

/// The 16 NF4 code values (bitsandbytes csrc, the QLoRA paper's appendix E), as f32.
inline constexpr std::array<float, 16> nf4_code = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};

namespace detail {

/// torch.linspace(start, end, steps, dtype=float32) on the CPU: the first half counts up from
/// start, the second half down from end, in f32 arithmetic.
inline std::vector<float> linspace_f32(float start, float end, int steps) {
  std::vector<float> v(static_cast<std::size_t>(steps));
  if (steps == 1) {
    v[0] = start;
    return v;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int half = steps / 2;
  for (int i = 0; i < steps; ++i) {
    volatile float prod = step * static_cast<float>(i < half ? i : steps - i - 1);
    v[static_cast<std::size_t>(i)] = i < half ? start + prod : end - prod;
  }
  return v;
}

/// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
/// 256 sorted f32 values in [-1, 1] — for exponent i = 0..6 the midpoints of
/// linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), both signs, plus 0 and 1.
inline std::array<float, 256> make_dynamic_map() {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const auto b = linspace_f32(0.1f, 1.0f, (1 << i) + 1);
    const float scale = static_cast<float>(std::pow(10.0, i - 6));
    std::vector<float> means;
    for (std::size_t k = 0; k + 1 < b.size(); ++k) means.push_back((b[k] + b[k + 1]) / 2.0f);
    for (float m : means) data.push_back(scale * m);
    for (float m : means) data.push_back(-scale * m);
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

/// NF4 code of a value already scaled into [-1, 1].
inline std::uint8_t nf4_index(float v) {
  static const auto mid = [] {
    std::array<float, 15> m{};
    for (int i = 0; i < 15; ++i) m[static_cast<std::size_t>(i)] = (nf4_code[i] + nf4_code[i + 1]) / 2.0f;
    return m;
  }();
  std::uint8_t q = 0;
  for (float m : mid) q += m < v ? 1 : 0;
  return q;
}

/// Nearest entry of a sorted 256-value code (ties to the lower index), as bitsandbytes'
/// lookup_code_index.
inline std::uint8_t nearest_code(const std::array<float, 256>& code, float v) {
  v = std::clamp(v, -1.0f, 1.0f);
  const auto right = std::lower_bound(code.begin(), code.end(), v);
  if (right == code.begin()) return 0;
  if (right == code.end()) return 255;
  const auto left = right - 1;
  const auto idx = static_cast<std::uint8_t>(right - code.begin());
  return std::fabs(*right - v) < std::fabs(v - *left) ? idx : static_cast<std::uint8_t>(idx - 1);
}

}  // namespace detail

/// The signed 8-bit dynamic code bitsandbytes uses for double quantization (256 sorted values).
inline const std::array<float, 256>& dynamic_map() {
  static const auto m = detail::make_dynamic_map();
  return m;
}

/// NF4 blocks of 64; Double selects double quantization of the absmax constants.
template <bool Double>
struct nf4_format {
  static constexpr int bits = 4;
  static constexpr int group_size = 64;
  static constexpr int absmax_block = 256;  ///< absmax constants per double-quant block
  static constexpr bool symmetric = true;
  static constexpr bool double_quant = Double;
  static constexpr const char* name = Double ? "nf4_dq" : "nf4";

  /// Bytes taken: half a byte per weight plus the absmax constants (f32 each, or with double
  /// quantization one byte each plus an f32 per 256 of them and the f32 offset).
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    const auto n = static_cast<std::size_t>(rows * cols);
    const auto blocks = n / 64;
    if (!Double) return n / 2 + blocks * 4;
    return n / 2 + blocks + (blocks + absmax_block - 1) / absmax_block * 4 + 4;
  }

  /// Quantizes W (rows x cols, row-major) as bitsandbytes' quantize_4bit(quant_type="nf4",
  /// blocksize=64, compress_statistics=Double); cols % 64 == 0.
  static qtensor<nf4_format> quantize(std::span<const float> w, std::int64_t rows,
                                      std::int64_t cols) {
    detail::check_shape(w.size(), rows, cols, 64, name);
    qtensor<nf4_format> t;
    t.rows = rows;
    t.cols = cols;
    const std::size_t n = w.size(), blocks = n / 64;
    t.codes.resize(n / 2);
    std::vector<float> absmax(blocks);
    for (std::size_t b = 0; b < blocks; ++b) {
      const float* x = w.data() + b * 64;
      float a = 0.0f;
      for (int i = 0; i < 64; ++i) a = std::max(a, std::fabs(x[i]));
      absmax[b] = a;
      const float inv = 1.0f / std::max(a, 1e-38f);
      for (int i = 0; i < 64; i += 2) {
        const auto hi = detail::nf4_index(std::clamp(x[i] * inv, -1.0f, 1.0f));
        const auto lo = detail::nf4_index(std::clamp(x[i + 1] * inv, -1.0f, 1.0f));
        t.codes[b * 32 + static_cast<std::size_t>(i / 2)] = static_cast<std::uint8_t>(hi << 4 | lo);
      }
    }
    if constexpr (!Double) {
      t.scales = std::move(absmax);
    } else {
      // torch's f32 mean; summed here in double and rounded once (see docs/compress.md).
      double sum = 0.0;
      for (float a : absmax) sum += a;
      t.offset = blocks ? static_cast<float>(sum / static_cast<double>(blocks)) : 0.0f;
      const auto& code = dynamic_map();
      t.zeros.resize(blocks);
      t.scales2.resize((blocks + absmax_block - 1) / absmax_block);
      for (std::size_t b2 = 0; b2 < t.scales2.size(); ++b2) {
        const std::size_t lo = b2 * absmax_block, hi = std::min(blocks, lo + absmax_block);
        float m = 0.0f;
        for (std::size_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(absmax[i] - t.offset));
        t.scales2[b2] = m;
        if (m == 0.0f) {
          // bitsandbytes writes code 0 for an all-zero block.
          for (std::size_t i = lo; i < hi; ++i) t.zeros[i] = 0;
          continue;
        }
        const float inv = 1.0f / m;
        for (std::size_t i = lo; i < hi; ++i)
          t.zeros[i] = detail::nearest_code(code, (absmax[i] - t.offset) * inv);
      }
    }
    return t;
  }

  /// absmax of flat block b (dequantized through the double quantization when Double).
  static float block_absmax(const qtensor<nf4_format>& t, std::size_t b) {
    if constexpr (!Double) {
      return t.scales[b];
    } else {
      // Two roundings, as bitsandbytes (dequantize_blockwise, then += offset): no FMA.
      volatile float a = dynamic_map()[t.zeros[b]] * t.scales2[b / absmax_block];
      return a + t.offset;
    }
  }

  /// Row r of the dequantized matrix into out[0, cols).
  static void dequantize_row(const qtensor<nf4_format>& t, std::int64_t r, std::span<float> out) {
    detail::check_row(t, r, out.size());
    const auto base = static_cast<std::size_t>(r * t.cols);
    for (std::int64_t k = 0; k < t.cols; k += 2) {
      const auto i = base + static_cast<std::size_t>(k);
      const float a = block_absmax(t, i / 64);
      const auto b = t.codes[i / 2];
      out[k] = nf4_code[b >> 4] * a;
      out[k + 1] = nf4_code[b & 0x0f] * a;
    }
  }
};

/// NF4 with double quantization, the QLoRA default (4.127 bits per weight).
using nf4 = nf4_format<true>;
/// NF4 with f32 absmax constants (4.5 bits per weight).
using nf4_single = nf4_format<false>;

}  // namespace forge::quant
