#pragma once
// GGUF K-quant Q4_K, byte-identical to ggml's reference quantizer (llama.cpp
// ggml/src/ggml-quants.c: quantize_row_q4_K_ref, make_qkx2_quants, get_scale_min_k4,
// dequantize_row_q4_K; block_q4_K in ggml-common.h). This is what llama.cpp's
// llama_model_quantize writes for a Q4_K tensor when no importance matrix is given.
//
// Block of QK_K = 256 weights along a row, 144 bytes (4.5 bits per weight):
//   f16 d, f16 dmin, u8 scales[12], u8 qs[128]
// The block is 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc_j and a 6-bit min m_j:
//   j < 4: sc = scales[j] & 63, m = scales[j + 4] & 63
//   j ≥ 4: sc = (scales[j + 4] & 15) | (scales[j − 4] >> 6) << 4,
//          m  = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4
// and weight i of sub-block j is  x = (d·sc_j)·q − (dmin·m_j),  q in 0..15. Codes: for each
// 64 weights (sub-blocks 2t, 2t + 1), qs[32t + l] holds sub-block 2t's element l in its low
// nibble and sub-block 2t + 1's element l in its high nibble.
//
// Quantization (quantize_row_q4_K_ref): per sub-block, weights w_i = sqrt(mean x²) + |x_i|
// and make_qkx2_quants(nmax 15, rmin −1, rdelta 0.1, 20 steps): a weighted least-squares fit
// of scale and min over 21 candidate grids, keeping the best; the 8 scales and mins are then
// quantized to 6 bits against the largest of each (d = max_scale/63, dmin = max_min/63, f16),
// and every weight is re-quantized with the stored constants:
//   q = clamp(nearest_int((x + dmin·m)/(d·sc)), 0, 15).
// nearest_int is ggml's round-half-to-even through the 1.5·2^23 magic constant. Every product
// that ggml adds to something is rounded on its own here (detail::mul): ggml's quantizer is
// built without FMA, and a compiler that fused them would change results in rare ties.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "forge/core/dtype.hpp"
#include "forge/core/error.hpp"
#include "forge/quant/format.hpp"
#include "forge/quant/gguf_blocks.hpp"

namespace forge::quant {

namespace detail {

/// a·b rounded to f32 on its own (never fused into a following addition).
inline float mul(float a, float b) {
  volatile float p = a * b;
  return p;
}

/// ggml's nearest_int: round half to even by adding 1.5·2^23 and reading the mantissa (exact
/// for |v| ≤ 2^22 − 1; larger values give ggml's wrapped result, which callers clamp).
inline int nearest_int(float v) {
  volatile float s = v + 12582912.0f;
  const float t = s;
  std::int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

/// Sub-block j's 6-bit scale and min from the 12 packed bytes (ggml get_scale_min_k4).
inline void scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

/// ggml make_qkx2_quants: codes L[0, n) in 0..nmax for x with weights w, returns the scale
/// and stores the (positive) min in `the_min`; x ≈ scale·L − the_min.
inline float make_qkx2_quants(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                              float* the_min, std::uint8_t* laux, float rmin, float rdelta,
                              int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = mul(sum_w, x[0]);
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += mul(w[i], x[i]);
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(mul(iscale, x[i] - min));
    L[i] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = mul(scale, float(L[i])) + min - x[i];
    diff = mul(diff, diff);
    best_error += mul(w[i], diff);
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + mul(rdelta, float(is)) + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(mul(iscale, x[i] - min));
      l = std::max(0, std::min(nmax, l));
      laux[i] = static_cast<std::uint8_t>(l);
      const float wl = mul(w[i], float(l));
      sum_l += wl;
      sum_l2 += mul(wl, float(l));
      sum_xl += mul(wl, x[i]);
    }
    const float D = mul(sum_w, sum_l2) - mul(sum_l, sum_l);
    if (D > 0) {
      float this_scale = (mul(sum_w, sum_xl) - mul(sum_x, sum_l)) / D;
      float this_min = (mul(sum_l2, sum_x) - mul(sum_l, sum_xl)) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = mul(this_scale, float(laux[i])) + this_min - x[i];
        diff = mul(diff, diff);
        cur_error += mul(w[i], diff);
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

}  // namespace detail

/// GGUF Q4_K: super-blocks of 256 weights, 8 sub-blocks of 32 with 6-bit scales and mins, f16
/// d and dmin (144 bytes per 256 weights, 4.5 bits per weight).
struct q4_k {
  static constexpr int bits = 4;
  static constexpr int group_size = 256;
  static constexpr bool symmetric = false;
  static constexpr int block_bytes = 144;
  static constexpr const char* name = "q4_k";

  /// Bytes taken by a rows x cols matrix (144 bytes per 256 weights).
  static std::size_t bytes_for(std::int64_t rows, std::int64_t cols) {
    return static_cast<std::size_t>(rows * (cols / 256) * block_bytes);
  }

  /// Quantizes 256 values into one 144-byte block (ggml quantize_row_q4_K_ref).
  static void quantize_block(const float* x, std::uint8_t* out) {
    std::uint8_t L[256], laux[32], scales[12] = {};
    float weights[32], mins[8], sc[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += detail::mul(x[32 * j + l], x[32 * j + l]);
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      sc[j] = detail::make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], laux,
                                       -1.0f, 0.1f, 20);
      if (sc[j] > max_scale) max_scale = sc[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; ++j) {
      // ggml stores nearest_int into a uint8_t before clamping: the value wraps modulo 256.
      auto ls = static_cast<std::uint8_t>(detail::nearest_int(detail::mul(inv_scale, sc[j])));
      auto lm = static_cast<std::uint8_t>(detail::nearest_int(detail::mul(inv_min, mins[j])));
      ls = std::min<std::uint8_t>(63, ls);
      lm = std::min<std::uint8_t>(63, lm);
      if (j < 4) {
        scales[j] = ls;
        scales[j + 4] = lm;
      } else {
        scales[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
        scales[j - 4] |= static_cast<std::uint8_t>((ls >> 4) << 6);
        scales[j - 0] |= static_cast<std::uint8_t>((lm >> 4) << 6);
      }
    }
    detail::store_f16(out, max_scale / 63.0f);
    detail::store_f16(out + 2, max_min / 63.0f);
    std::memcpy(out + 4, scales, 12);
    const float d_all = detail::load_f16(out), m_all = detail::load_f16(out + 2);
    for (int j = 0; j < 8; ++j) {
      std::uint8_t s, m;
      detail::scale_min_k4(j, scales, s, m);
      const float d = detail::mul(d_all, float(s));
      if (d == 0.0f) continue;  // ggml keeps the codes of the fit for such a sub-block
      const float dm = detail::mul(m_all, float(m));
      for (int ii = 0; ii < 32; ++ii) {
        const int l = detail::nearest_int((x[32 * j + ii] + dm) / d);
        L[32 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(15, l)));
      }
    }
    std::uint8_t* q = out + 16;
    for (int j = 0; j < 256; j += 64, q += 32)
      for (int l = 0; l < 32; ++l)
        q[l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }

  /// Quantizes W (rows x cols, row-major) into Q4_K blocks; cols % 256 == 0.
  static qtensor<q4_k> quantize(std::span<const float> w, std::int64_t rows, std::int64_t cols) {
    quant::detail::check_shape(w.size(), rows, cols, 256, name);
    qtensor<q4_k> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.resize(bytes_for(rows, cols));
    for (std::size_t b = 0; b < w.size() / 256; ++b)
      quantize_block(w.data() + b * 256, t.codes.data() + b * block_bytes);
    return t;
  }

  /// The 256 values of one block (ggml dequantize_row_q4_K: x = (d·sc)·q − dmin·m, each
  /// product rounded to f32).
  static void dequantize_block(const std::uint8_t* blk, float* y) {
    const float d = detail::load_f16(blk), dmin = detail::load_f16(blk + 2);
    const std::uint8_t* q = blk + 16;
    for (int j = 0; j < 4; ++j, q += 32) {
      std::uint8_t s, m;
      detail::scale_min_k4(2 * j, blk + 4, s, m);
      const float d1 = detail::mul(d, float(s)), m1 = detail::mul(dmin, float(m));
      detail::scale_min_k4(2 * j + 1, blk + 4, s, m);
      const float d2 = detail::mul(d, float(s)), m2 = detail::mul(dmin, float(m));
      for (int l = 0; l < 32; ++l) *y++ = detail::mul(d1, float(q[l] & 0xF)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = detail::mul(d2, float(q[l] >> 4)) - m2;
    }
  }

  /// Row r of the dequantized matrix into out[0, cols); forge::error if the tensor's block
  /// data does not hold rows x cols/256 whole blocks (a truncated or padded buffer).
  static void dequantize_row(const qtensor<q4_k>& t, std::int64_t r, std::span<float> out) {
    check_blocks(t);
    quant::detail::check_row(t, r, out.size());
    const auto* blk = t.codes.data() + static_cast<std::size_t>(r * (t.cols / 256)) * block_bytes;
    for (std::int64_t b = 0; b < t.cols / 256; ++b, blk += block_bytes)
      dequantize_block(blk, out.data() + b * 256);
  }

  /// forge::error unless `t` holds exactly rows x cols/256 blocks with cols % 256 == 0.
  static void check_blocks(const qtensor<q4_k>& t) {
    // Called by every decode: build the message only on failure.
    if (t.cols % 256 != 0 || t.rows < 0)
      throw error({.what = "Q4_K rows must be whole 256-value blocks",
                   .place = "q4_k tensor",
                   .expected = "cols % 256 == 0",
                   .found = std::to_string(t.rows) + " x " + std::to_string(t.cols)});
    if (t.codes.size() != bytes_for(t.rows, t.cols))
      throw error(
          {.what = "Q4_K block data has the wrong size",
           .place = "q4_k tensor " + std::to_string(t.rows) + " x " + std::to_string(t.cols),
           .expected = std::to_string(bytes_for(t.rows, t.cols)) + " bytes",
           .found = std::to_string(t.codes.size()) + " bytes"});
  }

  /// A Q4_K tensor over a copy of `blocks` (e.g. a GGUF tensor's data); forge::error naming
  /// `what` when the size is not rows x cols/256 blocks of 144 bytes.
  static qtensor<q4_k> from_blocks(std::span<const std::uint8_t> blocks, std::int64_t rows,
                                   std::int64_t cols, const std::string& what = "q4_k tensor") {
    qtensor<q4_k> t;
    t.rows = rows;
    t.cols = cols;
    t.codes.assign(blocks.begin(), blocks.end());
    try {
      check_blocks(t);
    } catch (const error&) {
      throw error({.what = "Q4_K block data has the wrong size or shape",
                   .place = what,
                   .expected = std::to_string(rows) + " x " + std::to_string(cols) +
                               " with cols % 256 == 0: " + std::to_string(bytes_for(rows, cols)) +
                               " bytes",
                   .found = std::to_string(blocks.size()) + " bytes"});
    }
    return t;
  }
};

}  // namespace forge::quant
