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
// code index = nearest dynamic code value to (a - offset) * (1/b), found by bucketizing over
// the code's f32 midpoints (a value on a midpoint takes the lower index).
// Dequantized a' = d[code] * b + offset. Memory: 4 + 8/64 + 32/(64*256) = 4.127 bits per weight.
//
// qtensor<nf4_format<Double>>: codes rows*cols/2 bytes; without double quant scales = absmax
// per block; with it zeros = 8-bit absmax codes, scales2 = b per 256 blocks, offset.

#include <algorithm>
#include <array>
#include <cmath>

#include "forge/quant/format.hpp"
#include "forge/quant/nf4_code.hpp"

namespace forge::quant {

/// The 16 NF4 code values as a std::array (the table lives in quant/nf4_code.hpp).
inline constexpr std::array<float, 16> nf4_code = std::to_array(nf4_code_values);

namespace detail {

/// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
/// exponent i = 0..6 the midpoints of linspace(0.1, 1, 2^i + 1) times 10^(i-6), both signs,
/// plus 0 and 1, sorted. The f32 values are those torch computes (its vectorised f32 linspace
/// rounds some midpoints differently from a plain formula), as produced by
/// tests/quant/data/make_bnb_nf4.py; the test suite checks them against that output.
inline constexpr std::array<float, 256> dynamic_code = {
    -9.9296874e-01f, -9.789063e-01f,  -9.6484375e-01f, -9.507812e-01f,
    -9.3671876e-01f, -9.2265624e-01f, -9.085938e-01f,  -8.9453125e-01f,
    -8.804687e-01f,  -8.6640626e-01f, -8.5234374e-01f, -8.382813e-01f,
    -8.2421875e-01f, -8.101562e-01f,  -7.9609376e-01f, -7.8203124e-01f,
    -7.679688e-01f,  -7.5390625e-01f, -7.398437e-01f,  -7.2578126e-01f,
    -7.117188e-01f,  -6.976563e-01f,  -6.8359375e-01f, -6.695312e-01f,
    -6.5546876e-01f, -6.414063e-01f,  -6.273438e-01f,  -6.1328125e-01f,
    -5.992187e-01f,  -5.8515626e-01f, -5.710938e-01f,  -5.570313e-01f,
    -5.4296875e-01f, -5.289062e-01f,  -5.148437e-01f,  -5.0078124e-01f,
    -4.867187e-01f,  -4.7265625e-01f, -4.5859373e-01f, -4.4453126e-01f,
    -4.3046874e-01f, -4.1640624e-01f, -4.0234375e-01f, -3.8828123e-01f,
    -3.7421876e-01f, -3.6015624e-01f, -3.4609374e-01f, -3.3203125e-01f,
    -3.1796873e-01f, -3.0390626e-01f, -2.8984374e-01f, -2.7578127e-01f,
    -2.6171875e-01f, -2.4765624e-01f, -2.3359375e-01f, -2.1953125e-01f,
    -2.0546874e-01f, -1.9140625e-01f, -1.7734376e-01f, -1.6328125e-01f,
    -1.4921875e-01f, -1.3515624e-01f, -1.2109375e-01f, -1.07031256e-01f,
    -9.859375e-02f,  -9.578126e-02f,  -9.2968754e-02f, -9.015625e-02f,
    -8.734375e-02f,  -8.453125e-02f,  -8.171876e-02f,  -7.890625e-02f,
    -7.609375e-02f,  -7.328125e-02f,  -7.0468746e-02f, -6.7656256e-02f,
    -6.484375e-02f,  -6.203125e-02f,  -5.9218753e-02f, -5.640625e-02f,
    -5.359375e-02f,  -5.078125e-02f,  -4.796875e-02f,  -4.515625e-02f,
    -4.2343747e-02f, -3.953125e-02f,  -3.6718752e-02f, -3.390625e-02f,
    -3.109375e-02f,  -2.8281251e-02f, -2.546875e-02f,  -2.265625e-02f,
    -1.9843752e-02f, -1.703125e-02f,  -1.421875e-02f,  -1.140625e-02f,
    -9.71875e-03f,   -9.156249e-03f,  -8.59375e-03f,   -8.03125e-03f,
    -7.46875e-03f,   -6.90625e-03f,   -6.34375e-03f,   -5.78125e-03f,
    -5.2187503e-03f, -4.6562497e-03f, -4.09375e-03f,   -3.5312497e-03f,
    -2.96875e-03f,   -2.40625e-03f,   -1.84375e-03f,   -1.2812499e-03f,
    -9.437501e-04f,  -8.3125e-04f,    -7.1875006e-04f, -6.062501e-04f,
    -4.9375003e-04f, -3.8125002e-04f, -2.6875004e-04f, -1.5625001e-04f,
    -8.875e-05f,     -6.625e-05f,     -4.375e-05f,     -2.1249998e-05f,
    -7.75e-06f,      -3.2500002e-06f, -5.5000004e-07f, 0.0f,
    5.5000004e-07f,  3.2500002e-06f,  7.75e-06f,       2.1249998e-05f,
    4.375e-05f,      6.625e-05f,      8.875e-05f,      1.5625001e-04f,
    2.6875004e-04f,  3.8125002e-04f,  4.9375003e-04f,  6.062501e-04f,
    7.1875006e-04f,  8.3125e-04f,     9.437501e-04f,   1.2812499e-03f,
    1.84375e-03f,    2.40625e-03f,    2.96875e-03f,    3.5312497e-03f,
    4.09375e-03f,    4.6562497e-03f,  5.2187503e-03f,  5.78125e-03f,
    6.34375e-03f,    6.90625e-03f,    7.46875e-03f,    8.03125e-03f,
    8.59375e-03f,    9.156249e-03f,   9.71875e-03f,    1.140625e-02f,
    1.421875e-02f,   1.703125e-02f,   1.9843752e-02f,  2.265625e-02f,
    2.546875e-02f,   2.8281251e-02f,  3.109375e-02f,   3.390625e-02f,
    3.6718752e-02f,  3.953125e-02f,   4.2343747e-02f,  4.515625e-02f,
    4.796875e-02f,   5.078125e-02f,   5.359375e-02f,   5.640625e-02f,
    5.9218753e-02f,  6.203125e-02f,   6.484375e-02f,   6.7656256e-02f,
    7.0468746e-02f,  7.328125e-02f,   7.609375e-02f,   7.890625e-02f,
    8.171876e-02f,   8.453125e-02f,   8.734375e-02f,   9.015625e-02f,
    9.2968754e-02f,  9.578126e-02f,   9.859375e-02f,   1.07031256e-01f,
    1.2109375e-01f,  1.3515624e-01f,  1.4921875e-01f,  1.6328125e-01f,
    1.7734376e-01f,  1.9140625e-01f,  2.0546874e-01f,  2.1953125e-01f,
    2.3359375e-01f,  2.4765624e-01f,  2.6171875e-01f,  2.7578127e-01f,
    2.8984374e-01f,  3.0390626e-01f,  3.1796873e-01f,  3.3203125e-01f,
    3.4609374e-01f,  3.6015624e-01f,  3.7421876e-01f,  3.8828123e-01f,
    4.0234375e-01f,  4.1640624e-01f,  4.3046874e-01f,  4.4453126e-01f,
    4.5859373e-01f,  4.7265625e-01f,  4.867187e-01f,   5.0078124e-01f,
    5.148437e-01f,   5.289062e-01f,   5.4296875e-01f,  5.570313e-01f,
    5.710938e-01f,   5.8515626e-01f,  5.992187e-01f,   6.1328125e-01f,
    6.273438e-01f,   6.414063e-01f,   6.5546876e-01f,  6.695312e-01f,
    6.8359375e-01f,  6.976563e-01f,   7.117188e-01f,   7.2578126e-01f,
    7.398437e-01f,   7.5390625e-01f,  7.679688e-01f,   7.8203124e-01f,
    7.9609376e-01f,  8.101562e-01f,   8.2421875e-01f,  8.382813e-01f,
    8.5234374e-01f,  8.6640626e-01f,  8.804687e-01f,   8.9453125e-01f,
    9.085938e-01f,   9.2265624e-01f,  9.3671876e-01f,  9.507812e-01f,
    9.6484375e-01f,  9.789063e-01f,   9.9296874e-01f,  1.e+00f};

/// NF4 code of a value already scaled into [-1, 1]: the number of NF4 midpoints below it.
inline std::uint8_t nf4_index(float v) {
  static constexpr auto mid = [] {
    std::array<float, 15> m{};
    for (std::size_t i = 0; i < 15; ++i) m[i] = (nf4_code[i] + nf4_code[i + 1]) / 2.0f;
    return m;
  }();
  std::uint8_t q = 0;
  for (float m : mid) q += m < v ? 1 : 0;
  return q;
}

/// Index of the code value nearest to v in a sorted 256-value code: the number of the code's
/// f32 midpoints below clamp(v, -1, 1) (torch.bucketize, as bitsandbytes' quantize_blockwise
/// in its torch-op backend; a value on a midpoint takes the lower index).
inline std::uint8_t nearest_code(const std::array<float, 256>& code, float v) {
  v = std::clamp(v, -1.0f, 1.0f);
  int lo = 0, hi = 255;  // answer in [lo, hi]: first i with midpoint(i) >= v, or 255
  while (lo < hi) {
    const int m = (lo + hi) / 2;
    const float mid =
        (code[static_cast<std::size_t>(m)] + code[static_cast<std::size_t>(m + 1)]) / 2;
    if (mid < v)
      lo = m + 1;
    else
      hi = m;
  }
  return static_cast<std::uint8_t>(lo);
}

}  // namespace detail

/// The signed 8-bit dynamic code bitsandbytes uses for double quantization (256 sorted values).
inline const std::array<float, 256>& dynamic_map() {
  return detail::dynamic_code;
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
      // torch takes the f32 mean with its own vectorised reduction, whose last bit depends on
      // the CPU's vector width; we use the correctly rounded mean (see docs/compress.md).
      double sum = 0.0;
      for (float a : absmax) sum += a;
      double_quantize(absmax, blocks ? static_cast<float>(sum / static_cast<double>(blocks)) : 0.0f,
                      t);
    }
    return t;
  }

  /// Double quantization of the absmax constants with a given offset: fills t.zeros (8-bit
  /// codes), t.scales2 (one per 256 constants) and t.offset.
  static void double_quantize(std::span<const float> absmax, float offset,
                              qtensor<nf4_format>& t) requires Double {
    const auto& code = dynamic_map();
    const std::size_t blocks = absmax.size();
    t.offset = offset;
    t.zeros.resize(blocks);
    t.scales2.resize((blocks + absmax_block - 1) / absmax_block);
    for (std::size_t b2 = 0; b2 < t.scales2.size(); ++b2) {
      const std::size_t lo = b2 * absmax_block, hi = std::min(blocks, lo + absmax_block);
      float m = 0.0f;
      for (std::size_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(absmax[i] - offset));
      t.scales2[b2] = m;
      const float inv = 1.0f / std::max(m, 1e-38f);
      for (std::size_t i = lo; i < hi; ++i) {
        volatile float centred = absmax[i] - offset;  // rounded before scaling, as in torch
        t.zeros[i] = detail::nearest_code(code, centred * inv);
      }
    }
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
