#pragma once
// Quantization formats as types, and the quantized matrix they produce.
//
// A format is a policy type (int8_channel, int4_group<G, Sym>, nf4, q8_0, q4_0) that knows its
// bit width, group size, symmetry and packing, and provides round-to-nearest quantization of a
// row-major weight matrix W (rows = output features, cols = input features) and the exact
// inverse map of one row. Every quantized weight is held in a qtensor<Format>: the packed codes
// plus the per-group constants the format needs, nothing else, so bytes() is the memory the
// weights really take.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::quant {

/// A quantized row-major matrix of shape rows x cols in format F. Which fields are used depends
/// on F (each format documents its own); unused fields stay empty.
template <class F>
struct qtensor {
  using format = F;
  std::int64_t rows = 0;  ///< output features
  std::int64_t cols = 0;  ///< input features
  /// Packed codes (int8 values, 4-bit pairs, or whole GGUF blocks), row-major.
  std::vector<std::uint8_t> codes{};
  /// One scale per row / group / block (f32; for int4 the value is exactly an f16).
  std::vector<float> scales{};
  /// int4 asymmetric zero points (one per group) or nf4 double-quantized absmax codes.
  std::vector<std::uint8_t> zeros{};
  /// nf4 double quantization: the f32 scale of each block of 256 absmax codes.
  std::vector<float> scales2{};
  /// nf4 double quantization: the mean subtracted from absmax before quantizing it.
  float offset = 0.0f;
  /// int4 act-order: stored column k holds input column perm[k] (empty = identity).
  std::vector<std::int32_t> perm{};

  /// Bytes of weight memory this tensor holds (codes + constants).
  std::size_t bytes() const {
    return codes.size() + scales.size() * sizeof(float) + zeros.size() + scales2.size() * 4 +
           (scales2.empty() ? 0 : sizeof(float)) + perm.size() * sizeof(std::int32_t);
  }
  friend bool operator==(const qtensor&, const qtensor&) = default;
};

/// A quantization format policy: bits, group size, byte count, RTN quantization and the
/// row dequantizer that every kernel and reference uses.
template <class F>
concept QuantFormat = requires(std::span<const float> w, std::int64_t n, const qtensor<F>& t,
                               std::span<float> out) {
  { F::bits } -> std::convertible_to<int>;
  { F::group_size } -> std::convertible_to<int>;
  { F::symmetric } -> std::convertible_to<bool>;
  { F::name } -> std::convertible_to<std::string>;
  { F::bytes_for(n, n) } -> std::same_as<std::size_t>;
  { F::quantize(w, n, n) } -> std::same_as<qtensor<F>>;
  { F::dequantize_row(t, n, out) } -> std::same_as<void>;
};

namespace detail {

/// Checks the matrix extents against the buffer and the format's grouping.
inline void check_shape(std::size_t size, std::int64_t rows, std::int64_t cols, int group,
                        const std::string& fmt) {
  require(rows >= 0 && cols >= 0, {.what = "negative matrix extent",
                                   .place = fmt + " quantize",
                                   .found = std::to_string(rows) + "x" + std::to_string(cols)});
  require(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) == size,
          {.what = "weight buffer size disagrees with the shape",
           .place = fmt + " quantize",
           .expected = std::to_string(rows * cols) + " values",
           .found = std::to_string(size)});
  require(group <= 0 || cols % group == 0,
          {.what = "input features are not a multiple of the group size",
           .place = fmt + " quantize",
           .expected = "cols % " + std::to_string(group) + " == 0",
           .found = "cols = " + std::to_string(cols)});
}

/// Checks that `out` can hold one row and `r` is a row of `t`.
template <class F>
void check_row(const qtensor<F>& t, std::int64_t r, std::size_t out_size) {
  require(r >= 0 && r < t.rows, {.what = "row index out of range",
                                 .place = std::string(F::name) + " dequantize_row",
                                 .expected = "0 <= r < " + std::to_string(t.rows),
                                 .found = std::to_string(r)});
  require(out_size >= static_cast<std::size_t>(t.cols),
          {.what = "output row too short",
           .place = std::string(F::name) + " dequantize_row",
           .expected = std::to_string(t.cols) + " values",
           .found = std::to_string(out_size)});
}

}  // namespace detail

/// Dequantizes the whole matrix (row-major rows x cols). For tests and export only: kernels
/// never materialise the f32 weights.
template <QuantFormat F>
std::vector<float> dequantize(const qtensor<F>& t) {
  std::vector<float> w(static_cast<std::size_t>(t.rows * t.cols));
  for (std::int64_t r = 0; r < t.rows; ++r)
    F::dequantize_row(t, r, std::span<float>(w).subspan(static_cast<std::size_t>(r * t.cols)));
  return w;
}

}  // namespace forge::quant
