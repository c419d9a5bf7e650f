#pragma once
// Q4_0 weights repacked once into 16-row panels for VNNI products with Q8_0 activations (the
// arithmetic of qmatmul_q8.hpp: y = Σ_b d_w,b · d_x,b · Σ_j (q_j − 8)·x_q,j, x quantized as
// ggml's quantize_row_q8_0_ref).
//
// Layout. A Q4_0 block's byte t (0..15) holds element t in its low nibble and element t + 16
// in its high nibble, so its 4-byte word g (bytes 4g..4g+3) holds the four elements 4g..4g+3
// (low nibbles) and 16+4g..19+4g (high nibbles). A panel stores, for each block b of its 16
// rows, the 16 f16 scales (32 bytes) and then four 64-byte vectors: vector g is word g of each
// of the 16 rows side by side. Masked, a vector is 16 rows x 4 consecutive codes: exactly one
// vpdpbusd operand against a broadcast 4-byte group of activations. 288 bytes per 16 x 32
// weights, the same 18 bytes per block as the GGUF layout (rows past the matrix are zero).
//
// Per block and 16 rows the product costs 1 scale conversion, 4 loads, 12 unpack operations,
// 8·MR vpdpbusd and 3·MR conversions/FMAs for MR activation rows: decode (MR = 1) does ~28
// vector operations per 512 weights instead of ~110 for a row-streaming kernel.

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "forge/backend/qmatmul_q8.hpp"

namespace forge::backend {

/// A Q4_0 matrix in 16-row VNNI panels (see the header comment). Lossless: unpack() gives
/// back the GGUF blocks.
struct q4_0_panels {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> data{};  ///< ceil(rows/16) panels of cols/32 blocks of 288 bytes

  /// Bytes of weight memory.
  std::size_t bytes() const { return data.size(); }
  /// Panels x blocks.
  std::int64_t panels() const { return (rows + 15) / 16; }
  friend bool operator==(const q4_0_panels&, const q4_0_panels&) = default;
};

/// Repacks a Q4_0 tensor into panels.
inline q4_0_panels pack_q4_0_panels(const quant::qtensor<quant::q4_0>& w) {
  require(w.cols % 32 == 0 && w.codes.size() == quant::q4_0::bytes_for(w.rows, w.cols),
          {.what = "Q4_0 block data has the wrong size",
           .place = "pack_q4_0_panels",
           .expected = std::to_string(quant::q4_0::bytes_for(w.rows, w.cols)) + " bytes",
           .found = std::to_string(w.codes.size()) + " bytes"});
  q4_0_panels p;
  p.rows = w.rows;
  p.cols = w.cols;
  const std::int64_t nb = w.cols / 32;
  p.data.assign(static_cast<std::size_t>(p.panels() * nb * 288), 0);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t panel = r / 16, j = r % 16;
    for (std::int64_t b = 0; b < nb; ++b) {
      const auto* src = w.codes.data() + (r * nb + b) * 18;
      auto* dst = p.data.data() + (panel * nb + b) * 288;
      std::memcpy(dst + 2 * j, src, 2);
      for (int g = 0; g < 4; ++g) std::memcpy(dst + 32 + g * 64 + 4 * j, src + 2 + 4 * g, 4);
    }
  }
  return p;
}

/// The GGUF Q4_0 tensor a panel set holds.
inline quant::qtensor<quant::q4_0> unpack_q4_0_panels(const q4_0_panels& p) {
  quant::qtensor<quant::q4_0> w;
  w.rows = p.rows;
  w.cols = p.cols;
  const std::int64_t nb = p.cols / 32;
  w.codes.resize(quant::q4_0::bytes_for(p.rows, p.cols));
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t b = 0; b < nb; ++b) {
      auto* dst = w.codes.data() + (r * nb + b) * 18;
      const auto* src = p.data.data() + ((r / 16) * nb + b) * 288;
      std::memcpy(dst, src + 2 * (r % 16), 2);
      for (int g = 0; g < 4; ++g) std::memcpy(dst + 2 + 4 * g, src + 32 + g * 64 + 4 * (r % 16), 4);
    }
  return w;
}

/// Reference: the panels' Q4_0 tensor through qmatmul_q8(scalar, ...).
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m, const q4_0_panels& p,
                       std::span<float> y) {
  qmatmul_q8(scalar{}, x, m, unpack_q4_0_panels(p), y);
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// y[i][r0 + 0..valid) for MR activation rows against one panel of nb blocks.
template <int MR>
inline void q4_0_panel_rows(const std::uint8_t* panel, std::int64_t nb,
                            const std::int8_t* const* xq, const float* const* dx,
                            const std::int32_t* const* sx, float* y, std::int64_t ldy, int valid) {
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (std::int64_t b = 0; b < nb; ++b, panel += 288) {
    _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * 288), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * 288 + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * 288 + 128), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * 288 + 192), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * 288 + 256), _MM_HINT_T0);
    __m512i s[MR];
    for (int i = 0; i < MR; ++i) s[i] = _mm512_set1_epi32(sx[i][b]);
    for (int g = 0; g < 4; ++g) {
      const __m512i v = _mm512_loadu_si512(panel + 32 + g * 64);
      const __m512i lo = _mm512_and_si512(v, low4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      for (int i = 0; i < MR; ++i) {
        std::int32_t a0, a1;
        std::memcpy(&a0, xq[i] + b * 32 + 4 * g, 4);
        std::memcpy(&a1, xq[i] + b * 32 + 16 + 4 * g, 4);
        s[i] = _mm512_dpbusd_epi32(s[i], lo, _mm512_set1_epi32(a0));
        s[i] = _mm512_dpbusd_epi32(s[i], hi, _mm512_set1_epi32(a1));
      }
    }
    const __m512 dw =
        _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel)));
    for (int i = 0; i < MR; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, s[i]),
                               _mm512_mul_ps(dw, _mm512_set1_ps(dx[i][b])), acc[i]);
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy, mask, acc[i]);
}

}  // namespace detail::avx512
#endif

/// SIMD: y (m x n) = x Wᵀ with x quantized to Q8_0, W in panels: every m (decode and prefill)
/// runs the same panel kernel, 8 activation rows at a time; 64-row tasks on OpenMP threads.
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m, const q4_0_panels& p,
                std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    require(x.size() == static_cast<std::size_t>(m * p.cols) &&
                y.size() == static_cast<std::size_t>(m * p.rows),
            {.what = "activation or output size disagrees with the weight",
             .place = "qmatmul_q8 q4_0 panels",
             .expected = std::to_string(m) + " x " + std::to_string(p.cols) + " in, " +
                         std::to_string(m) + " x " + std::to_string(p.rows) + " out",
             .found = std::to_string(x.size()) + " in, " + std::to_string(y.size()) + " out"});
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
        std::int32_t t = 0;
        for (int l = 0; l < 8; ++l) t += a.bias[static_cast<std::size_t>(b * 8 + l)];
        dxb[static_cast<std::size_t>(i * nb + b)] = a.dv[static_cast<std::size_t>(b * 8)];
        sxb[static_cast<std::size_t>(i * nb + b)] = t;
      }
      xq[static_cast<std::size_t>(i)] = a.q.data();
      dxp[static_cast<std::size_t>(i)] = dxb.data() + i * nb;
      sxp[static_cast<std::size_t>(i)] = sxb.data() + i * nb;
    }
    // (thread_locals are not captured by the lambda: the workers use these pointers.)
    const std::uint8_t* data = p.data.data();
    detail::for_each_panel_tile(
        m, n, k, data, nb * 288, y.data(),
        [&]<int MR>(const std::uint8_t* panel, std::int64_t i0, float* yo, int valid) {
          const auto u = static_cast<std::size_t>(i0);
          detail::avx512::q4_0_panel_rows<MR>(panel, nb, xq.data() + u, dxp.data() + u,
                                              sxp.data() + u, yo, n, valid);
        });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, p, y);
}

}  // namespace forge::backend
