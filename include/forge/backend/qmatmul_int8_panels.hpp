#pragma once
// int8_channel weights with activations quantized to int8 per 32 values (ggml's Q8_0 rule,
// backend/qmatmul_q8.hpp: natural column order, d_b = max|x|/127 rounded to f16, codes rounded
// half away from zero), llama.cpp's Q8_0 x Q8_0 arithmetic with one f32 scale per weight row:
//   y_r = s_r · Σ_b d_b · Σ_j w_j x_q,j
// the inner sums exact integers. The activation rounding moves y by at most
// s_r Σ_b (d_b/2 + 2^-11·max_b|x|) Σ_j |w_j| (d_b f16-rounded).
//
// The SIMD kernel runs on 16-row panels repacked once: for each 32-value block, eight 64-byte
// vectors, vector g holding bytes 4g..4g+3 of the 16 rows side by side, each code stored as
// w + 128 (an unsigned byte, the u8 operand of vpdpbusd); the panel starts with the 16 rows'
// f32 scales. Σ (w + 128)·x = Σ w·x + 128 Σ x, so each block's accumulator starts at −128 Σ x_q
// (an activation-side constant). 1 byte per weight plus 4 per row, as the qtensor; lossless.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "forge/backend/qmatmul_q8.hpp"
#include "forge/quant/int8.hpp"

namespace forge::backend {

/// Reference: y (m x n) = x Wᵀ for int8_channel weights with x quantized to Q8_0 blocks (see
/// above); integer block dots exact, the scaled sum in double. in_features % 32 == 0.
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m,
                       const quant::qtensor<quant::int8_channel>& w, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  require(w.cols % 32 == 0, {.what = "int8-activation products need in_features % 32 == 0",
                             .place = "qmatmul_q8 int8_channel",
                             .found = std::to_string(w.cols)});
  const std::int64_t nb = w.cols / 32;
  detail::q8_0_row a;
  for (std::int64_t i = 0; i < m; ++i) {
    detail::quantize_q8_0_row(x.data() + i * w.cols, w.cols, a);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      const auto* q = w.codes.data() + r * w.cols;
      for (std::int64_t b = 0; b < nb; ++b) {
        std::int64_t dot = 0;
        for (int j = 0; j < 32; ++j)
          dot +=
              static_cast<std::int8_t>(q[b * 32 + j]) * a.q[static_cast<std::size_t>(b * 32 + j)];
        acc += static_cast<double>(a.d[static_cast<std::size_t>(b)]) * static_cast<double>(dot);
      }
      y[static_cast<std::size_t>(i * w.rows + r)] =
          static_cast<float>(static_cast<double>(w.scales[static_cast<std::size_t>(r)]) * acc);
    }
  }
}

/// An int8_channel matrix in 16-row VNNI panels (see the header comment).
struct int8_panels {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> data{};  ///< ceil(rows/16) panels of 64 + 16·cols bytes

  /// Bytes of one panel.
  std::int64_t panel_bytes() const { return 64 + 16 * cols; }
  /// Bytes of weight memory.
  std::size_t bytes() const { return data.size(); }
  /// Number of 16-row panels.
  std::int64_t panels() const { return (rows + 15) / 16; }
  friend bool operator==(const int8_panels&, const int8_panels&) = default;
};

/// Repacks an int8_channel tensor into panels; forge::error unless in_features % 32 == 0 and
/// the sizes agree with the shape.
inline int8_panels pack_int8_panels(const quant::qtensor<quant::int8_channel>& w) {
  require(w.cols % 32 == 0 && w.codes.size() == static_cast<std::size_t>(w.rows * w.cols) &&
              w.scales.size() == static_cast<std::size_t>(w.rows),
          {.what = "int8_channel tensor cannot be repacked into panels",
           .place = "pack_int8_panels",
           .expected = std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                       " codes and scales, in_features % 32 == 0",
           .found = std::to_string(w.codes.size()) + " codes, " + std::to_string(w.scales.size()) +
                    " scales"});
  int8_panels p;
  p.rows = w.rows;
  p.cols = w.cols;
  const std::int64_t pb = p.panel_bytes(), nb = w.cols / 32;
  p.data.assign(static_cast<std::size_t>(p.panels() * pb), 0x80);  // zero codes past the rows
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t j = r % 16;
    auto* panel = p.data.data() + (r / 16) * pb;
    std::memcpy(panel + 4 * j, &w.scales[static_cast<std::size_t>(r)], 4);
    const auto* src = w.codes.data() + r * w.cols;
    for (std::int64_t b = 0; b < nb; ++b)
      for (int g = 0; g < 8; ++g)
        for (int e = 0; e < 4; ++e)
          panel[64 + b * 512 + g * 64 + 4 * j + e] =
              static_cast<std::uint8_t>(src[b * 32 + 4 * g + e] ^ 0x80);
  }
  for (std::int64_t r = w.rows; r < p.panels() * 16; ++r)  // scales of padding rows: 0
    std::memset(p.data.data() + (r / 16) * pb + 4 * (r % 16), 0, 4);
  return p;
}

/// The int8_channel tensor a panel set holds.
inline quant::qtensor<quant::int8_channel> unpack_int8_panels(const int8_panels& p) {
  quant::qtensor<quant::int8_channel> w;
  w.rows = p.rows;
  w.cols = p.cols;
  w.codes.resize(static_cast<std::size_t>(p.rows * p.cols));
  w.scales.resize(static_cast<std::size_t>(p.rows));
  const std::int64_t pb = p.panel_bytes(), nb = p.cols / 32;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t j = r % 16;
    const auto* panel = p.data.data() + (r / 16) * pb;
    std::memcpy(&w.scales[static_cast<std::size_t>(r)], panel + 4 * j, 4);
    auto* dst = w.codes.data() + r * p.cols;
    for (std::int64_t b = 0; b < nb; ++b)
      for (int g = 0; g < 8; ++g)
        for (int e = 0; e < 4; ++e)
          dst[b * 32 + 4 * g + e] =
              static_cast<std::uint8_t>(panel[64 + b * 512 + g * 64 + 4 * j + e] ^ 0x80);
  }
  return w;
}

/// Reference: the panels' tensor through qmatmul_q8(scalar, ...).
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m, const int8_panels& p,
                       std::span<float> y) {
  qmatmul_q8(scalar{}, x, m, unpack_int8_panels(p), y);
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// y[i][0, valid) for MR activation rows against one panel of nb blocks. xq: Q8_0 codes;
/// dx: block scales; sx: −128·Σ x_q per block.
template <int MR>
inline void int8_panel_rows(const std::uint8_t* panel, std::int64_t nb,
                            const std::int8_t* const* xq, const float* const* dx,
                            const std::int32_t* const* sx, float* y, std::int64_t ldy, int valid) {
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  const __m512 scale = _mm512_loadu_ps(reinterpret_cast<const float*>(panel));
  const std::uint8_t* codes = panel + 64;
  for (std::int64_t b = 0; b < nb; ++b, codes += 512) {
    for (int l = 0; l < 512; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(codes + 2048 + l), _MM_HINT_T0);
    __m512i s[MR];
    for (int i = 0; i < MR; ++i) s[i] = _mm512_set1_epi32(sx[i][b]);
    for (int g = 0; g < 8; ++g) {
      const __m512i v = _mm512_loadu_si512(codes + g * 64);
      for (int i = 0; i < MR; ++i) {
        std::int32_t a;
        std::memcpy(&a, xq[i] + b * 32 + 4 * g, 4);
        s[i] = _mm512_dpbusd_epi32(s[i], v, _mm512_set1_epi32(a));
      }
    }
    for (int i = 0; i < MR; ++i)
      acc[i] =
          _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, s[i]), _mm512_set1_ps(dx[i][b]), acc[i]);
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MR; ++i)
    _mm512_mask_storeu_ps(y + i * ldy, mask, _mm512_mul_ps(acc[i], scale));
}

}  // namespace detail::avx512
#endif

/// SIMD: y (m x n) = x Wᵀ with x quantized to Q8_0, W in int8 panels: decode and prefill run
/// the same panel kernel, 8 activation rows at a time; 64-row tasks on OpenMP threads.
/// Without AVX-512 VNNI in the translation unit: the reference.
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m, const int8_panels& p,
                std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    require(p.cols % 32 == 0 &&
                p.data.size() == static_cast<std::size_t>(p.panels() * p.panel_bytes()) &&
                x.size() == static_cast<std::size_t>(m * p.cols) &&
                y.size() == static_cast<std::size_t>(m * p.rows),
            {.what = "activation, output or panel size disagrees with the weight",
             .place = "qmatmul_q8 int8_channel panels",
             .expected = std::to_string(m) + " x " + std::to_string(p.cols) + " in, " +
                         std::to_string(m) + " x " + std::to_string(p.rows) + " out",
             .found = std::to_string(x.size()) + " in, " + std::to_string(y.size()) + " out, " +
                      std::to_string(p.data.size()) + " panel bytes"});
    const std::int64_t n = p.rows, k = p.cols, nb = k / 32;
    thread_local std::vector<detail::avx512::q4_0_act> act_buf;
    thread_local std::vector<float> dxb;
    thread_local std::vector<std::int32_t> sxb;
    if (act_buf.size() < static_cast<std::size_t>(m)) act_buf.resize(static_cast<std::size_t>(m));
    dxb.resize(static_cast<std::size_t>(m * nb));
    sxb.resize(static_cast<std::size_t>(m * nb));
    std::vector<const std::int8_t*> xq(static_cast<std::size_t>(m));
    std::vector<const float*> dxp(static_cast<std::size_t>(m));
    std::vector<const std::int32_t*> sxp(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      auto& a = act_buf[static_cast<std::size_t>(i)];
      detail::avx512::prepare_q4_0_act(x.data() + i * k, k, a);
      for (std::int64_t b = 0; b < nb; ++b) {
        std::int32_t t = 0;  // bias lanes hold −8·(sum of 4 codes): 16× their sum is −128 Σ
        for (int l = 0; l < 8; ++l) t += a.bias[static_cast<std::size_t>(b * 8 + l)];
        dxb[static_cast<std::size_t>(i * nb + b)] = a.dv[static_cast<std::size_t>(b * 8)];
        sxb[static_cast<std::size_t>(i * nb + b)] = 16 * t;
      }
      xq[static_cast<std::size_t>(i)] = a.q.data();
      dxp[static_cast<std::size_t>(i)] = dxb.data() + i * nb;
      sxp[static_cast<std::size_t>(i)] = sxb.data() + i * nb;
    }
    // (thread_locals are not captured by the lambda: the workers use these pointers.)
    const std::uint8_t* data = p.data.data();
    const std::int64_t pb = p.panel_bytes();
    detail::for_each_panel_tile(
        m, n, k, data, pb, y.data(),
        [&]<int MR>(const std::uint8_t* panel, std::int64_t i0, float* yo, int valid) {
          const auto u = static_cast<std::size_t>(i0);
          detail::avx512::int8_panel_rows<MR>(panel, nb, xq.data() + u, dxp.data() + u,
                                              sxp.data() + u, yo, n, valid);
        });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, p, y);
}

/// SIMD on the qtensor itself: repacks into panels for this call (hold the weight as
/// int8_panels, as adapters::quantized_base_q8 does, to repack once).
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::int8_channel>& w, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  qmatmul_q8(simd<Arch>{}, x, m, pack_int8_panels(w), y);
}

}  // namespace forge::backend
