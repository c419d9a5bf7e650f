#pragma once
// int4 with groups of G input features, symmetric or asymmetric: the GPTQ quantizer
// (Frantar et al. 2023; IST-DASLab/gptq quant.py) applied group by group.
//
//   asymmetric: lo = min(min x, 0), hi = max(max x, 0), s = (hi - lo) / 15, z = round(-lo / s)
//   symmetric:  m = max |x|,        s = 2m / 15,                            z = 8
//   q = clamp(round(x / s) + z, 0, 15),   x' = s (q - z)          (round: to nearest, ties even)
// An all-zero group gets lo = -1, hi = 1 as in the reference. The scale is rounded to f16
// before the codes are computed, so the f16 scales of the GPTQ checkpoint layout reproduce
// these values exactly. (The reference computes codes with the f32 scale and stores f16; its
// symmetric rule also differs from ours for a group with no negative value, where it keeps
// lo = 0 and clips — we use the symmetric range in every case.)
//
// qtensor<int4_group<G, Sym>>:
//   codes  rows * cols/2 bytes; stored column k of a row sits in byte k/2, low nibble for even
//          k (the nibble order of GPTQ's int32 packing)
//   scales rows * cols/G, row-major (row r, group g at r*(cols/G)+g)
//   zeros  asymmetric only: one code 0..15 per group, same indexing; symmetric: empty (z = 8)
//   perm   empty, or (GPTQ act-order) stored column k holds input column perm[k], so the
//          groups are contiguous in stored order; dequantize_row undoes the permutation.

#include <algorithm>
#include <cmath>

#include "forge/core/dtype.hpp"
#include "forge/quant/format.hpp"

namespace forge::quant {

namespace detail {

/// Scale and zero point of one int4 group (see the header comment).
struct int4_params {
  float scale = 1.0f;
  float zero = 8.0f;
};

inline int4_params int4_find_params(const float* x, std::int64_t n, std::int64_t stride,
                                    bool symmetric) {
  float lo = 0.0f, hi = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  if (symmetric) {
    const float m = std::max(-lo, hi);
    lo = -m;
    hi = m;
  }
  if (lo == 0.0f && hi == 0.0f) {
    lo = -1.0f;
    hi = 1.0f;
  }
  int4_params p;
  p.scale = to_f32(to_f16((hi - lo) / 15.0f));
  p.zero = symmetric ? 8.0f : std::clamp(std::nearbyint(-lo / p.scale), 0.0f, 15.0f);
  return p;
}

/// The 4-bit code of x under p.
inline std::uint8_t int4_code(float x, int4_params p) {
  return static_cast<std::uint8_t>(std::clamp(std::nearbyint(x / p.scale) + p.zero, 0.0f, 15.0f));
}

}  // namespace detail

/// int4 with one scale (and for asymmetric, one zero point) per G consecutive input features.
template <int G, bool Sym>
struct int4_group {
  static_assert(G == 32 || G == 64 || G == 128,
                "int4_group supports groups of 32, 64 or 128 input features");
  static constexpr int bits = 4;
  static constexpr int group_size = G;
  static constexpr bool symmetric = Sym;
  /// "int4_g<G>_sym" or "int4_g<G>_asym".
  static constexpr const char* name = G == 32   ? (Sym ? "int4_g32_sym" : "int4_g32_asym")
                                      : G == 64 ? (Sym ? "int4_g64_sym" : "int4_g64_asym")
                                                : (Sym ? "int4_g128_sym" : "int4_g128_asym");

  /// Bytes taken: half a byte per weight, an f32 scale per group, a zero byte per group if
  /// asymmetric.
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    const auto groups = static_cast<std::size_t>(rows * (cols / G));
    return static_cast<std::size_t>(rows * cols / 2) + groups * 4 + (Sym ? 0 : groups);
  }

  /// Round-to-nearest quantization of W (rows x cols, row-major); cols % G == 0.
  static qtensor<int4_group> quantize(std::span<const float> w, std::int64_t rows,
                                      std::int64_t cols) {
    detail::check_shape(w.size(), rows, cols, G, name);
    auto t = empty(rows, cols);
    const std::int64_t ng = cols / G;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < ng; ++g) {
        const float* x = w.data() + r * cols + g * G;
        const auto p = detail::int4_find_params(x, G, 1, Sym);
        set_group(t, r, g, p);
        for (int i = 0; i < G; ++i) set_code(t, r, g * G + i, detail::int4_code(x[i], p));
      }
    return t;
  }

  /// Row r of the dequantized matrix, in input-feature order, into out[0, cols).
  static void dequantize_row(const qtensor<int4_group>& t, std::int64_t r, std::span<float> out) {
    detail::check_row(t, r, out.size());
    for (std::int64_t k = 0; k < t.cols; ++k) {
      const auto p = group(t, r, k / G);
      const float v = p.scale * (static_cast<float>(code(t, r, k)) - p.zero);
      out[t.perm.empty() ? k : t.perm[static_cast<std::size_t>(k)]] = v;
    }
  }

  /// An all-zero-code tensor of the right sizes (for quantizers that fill it column by column).
  static qtensor<int4_group> empty(std::int64_t rows, std::int64_t cols) {
    qtensor<int4_group> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.assign(static_cast<std::size_t>(rows * cols / 2), 0);
    t.scales.assign(static_cast<std::size_t>(rows * (cols / G)), 1.0f);
    if (!Sym) t.zeros.assign(t.scales.size(), 0);
    return t;
  }
  /// Code of stored column k of row r.
  static std::uint8_t code(const qtensor<int4_group>& t, std::int64_t r, std::int64_t k) {
    const auto b = t.codes[static_cast<std::size_t>((r * t.cols + k) / 2)];
    return (k & 1) ? (b >> 4) : (b & 0x0f);
  }
  /// Sets the code of stored column k of row r.
  static void set_code(qtensor<int4_group>& t, std::int64_t r, std::int64_t k, std::uint8_t q) {
    auto& b = t.codes[static_cast<std::size_t>((r * t.cols + k) / 2)];
    b = (k & 1) ? static_cast<std::uint8_t>((b & 0x0f) | (q << 4))
                : static_cast<std::uint8_t>((b & 0xf0) | q);
  }
  /// Scale and zero of group g (in stored order) of row r.
  static detail::int4_params group(const qtensor<int4_group>& t, std::int64_t r, std::int64_t g) {
    const auto i = static_cast<std::size_t>(r * (t.cols / G) + g);
    return {t.scales[i], Sym ? 8.0f : static_cast<float>(t.zeros[i])};
  }
  /// Sets scale and zero of group g of row r.
  static void set_group(qtensor<int4_group>& t, std::int64_t r, std::int64_t g,
                        detail::int4_params p) {
    const auto i = static_cast<std::size_t>(r * (t.cols / G) + g);
    t.scales[i] = p.scale;
    if (!Sym) t.zeros[i] = static_cast<std::uint8_t>(p.zero);
  }
};

/// The common GPTQ/AWQ configuration: symmetric int4, groups of 128.
using int4_g128 = int4_group<128, true>;
/// Symmetric int4, groups of 64.
using int4_g64 = int4_group<64, true>;
/// Symmetric int4, groups of 32.
using int4_g32 = int4_group<32, true>;
/// Asymmetric (zero-point) int4, groups of 128.
using int4_g128_asym = int4_group<128, false>;

}  // namespace forge::quant
