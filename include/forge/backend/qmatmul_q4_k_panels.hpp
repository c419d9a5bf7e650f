#pragma once
// Q4_K weights repacked once into 16-row panels for VNNI products with activations quantized
// to int8 per 32 values (the arithmetic of qmatmul_q8's Q4_K reference, backend/qmatmul_q8.hpp):
//   y = Σ_sub (d·sc)·d_x·Σ_l q_l·x_q,l − (dmin·m)·d_x·Σ_l x_q,l
// with d·sc and dmin·m rounded to f32 as ggml's dequantize_row_q4_K does, x quantized as ggml's
// quantize_row_q8_0_ref (d_x rounded to f16). The min term goes through the activation block
// sums Σ x_q, as llama.cpp's ggml_vec_dot_q4_K_q8_K does with its bsums; unlike q8_K (one
// activation scale per 256 values) the activation scale here is per 32-value sub-block, so the
// scale products stay in f32 (one FMA per sub-block and 16 weight rows).
//
// Layout. A Q4_K block's 32-byte code group t holds sub-block 2t in its low nibbles and 2t + 1
// in its high nibbles, element l at byte l; so the group's 4-byte word g holds elements
// 4g..4g+3 of both sub-blocks. A panel stores, for each 256-value block b of its 16 rows:
//   16 f16 d (32 bytes), 16 f16 dmin (32 bytes),
//   sc[8][16] and m[8][16] (the 6-bit scales and mins unpacked to bytes, sub-block-major),
//   codes[4][8][64]: for group t and word g the 16 rows' word g side by side,
// 2368 bytes per 16 x 256 weights (4.625 bits per weight; GGUF's 144-byte blocks are 4.5).
// Masked, a code vector is 16 rows x 4 consecutive codes of sub-block 2t (shifted: 2t + 1), one
// vpdpbusd operand against a broadcast group of 4 activation bytes. Rows past the matrix are
// zero. The packing is lossless: unpack_q4_k_panels re-encodes the 12 scale bytes, a bijection
// of the 16 six-bit values.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "forge/backend/qmatmul_q8.hpp"
#include "forge/quant/k_quants.hpp"

namespace forge::backend {

/// A Q4_K matrix in 16-row VNNI panels (see the header comment).
struct q4_k_panels {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> data{};  ///< ceil(rows/16) panels of cols/256 blocks of 2368 bytes

  /// Bytes of one panel block (16 rows x 256 weights).
  static constexpr std::int64_t block_bytes = 2368;
  /// Bytes of weight memory.
  std::size_t bytes() const { return data.size(); }
  /// Number of 16-row panels.
  std::int64_t panels() const { return (rows + 15) / 16; }
  friend bool operator==(const q4_k_panels&, const q4_k_panels&) = default;
};

namespace detail::q4k {
inline constexpr std::int64_t off_dmin = 32, off_sc = 64, off_m = 192, off_codes = 320;
}  // namespace detail::q4k

/// Repacks a Q4_K tensor into panels; forge::error if its block data has the wrong size.
inline q4_k_panels pack_q4_k_panels(const quant::qtensor<quant::q4_k>& w) {
  quant::q4_k::check_blocks(w);
  using namespace detail::q4k;
  q4_k_panels p;
  p.rows = w.rows;
  p.cols = w.cols;
  const std::int64_t nb = w.cols / 256;
  p.data.assign(static_cast<std::size_t>(p.panels() * nb * q4_k_panels::block_bytes), 0);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t j = r % 16;
    for (std::int64_t b = 0; b < nb; ++b) {
      const auto* src = w.codes.data() + (r * nb + b) * quant::q4_k::block_bytes;
      auto* dst = p.data.data() + ((r / 16) * nb + b) * q4_k_panels::block_bytes;
      std::memcpy(dst + 2 * j, src, 2);
      std::memcpy(dst + off_dmin + 2 * j, src + 2, 2);
      for (int s = 0; s < 8; ++s)
        quant::detail::scale_min_k4(s, src + 4, dst[off_sc + s * 16 + j], dst[off_m + s * 16 + j]);
      for (int t = 0; t < 4; ++t)
        for (int g = 0; g < 8; ++g)
          std::memcpy(dst + off_codes + (t * 8 + g) * 64 + 4 * j, src + 16 + 32 * t + 4 * g, 4);
    }
  }
  return p;
}

/// The GGUF Q4_K tensor a panel set holds (the exact blocks pack_q4_k_panels was given).
inline quant::qtensor<quant::q4_k> unpack_q4_k_panels(const q4_k_panels& p) {
  using namespace detail::q4k;
  quant::qtensor<quant::q4_k> w;
  w.rows = p.rows;
  w.cols = p.cols;
  const std::int64_t nb = p.cols / 256;
  w.codes.assign(quant::q4_k::bytes_for(p.rows, p.cols), 0);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t j = r % 16;
    for (std::int64_t b = 0; b < nb; ++b) {
      auto* dst = w.codes.data() + (r * nb + b) * quant::q4_k::block_bytes;
      const auto* src = p.data.data() + ((r / 16) * nb + b) * q4_k_panels::block_bytes;
      std::memcpy(dst, src + 2 * j, 2);
      std::memcpy(dst + 2, src + off_dmin + 2 * j, 2);
      std::uint8_t* s12 = dst + 4;  // inverse of quant::detail::scale_min_k4
      for (int s = 0; s < 8; ++s) {
        const std::uint8_t sc = src[off_sc + s * 16 + j], mn = src[off_m + s * 16 + j];
        if (s < 4) {
          s12[s] = static_cast<std::uint8_t>(s12[s] | sc);
          s12[s + 4] = static_cast<std::uint8_t>(s12[s + 4] | mn);
        } else {
          s12[s + 4] = static_cast<std::uint8_t>((sc & 0xF) | ((mn & 0xF) << 4));
          s12[s - 4] = static_cast<std::uint8_t>(s12[s - 4] | ((sc >> 4) << 6));
          s12[s] = static_cast<std::uint8_t>(s12[s] | ((mn >> 4) << 6));
        }
      }
      for (int t = 0; t < 4; ++t)
        for (int g = 0; g < 8; ++g)
          std::memcpy(dst + 16 + 32 * t + 4 * g, src + off_codes + (t * 8 + g) * 64 + 4 * j, 4);
    }
  }
  return w;
}

/// Reference: the panels' Q4_K tensor through qmatmul_q8(scalar, ...).
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m, const q4_k_panels& p,
                       std::span<float> y) {
  qmatmul_q8(scalar{}, x, m, unpack_q4_k_panels(p), y);
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// y[i][0, valid) for MR activation rows against one panel of nb blocks. xq: codes (natural
/// order); dx: per 32-value sub-block the f16-rounded scale; cx: d_x·Σ x_q per sub-block.
template <int MR>
inline void q4_k_panel_rows(const std::uint8_t* panel, std::int64_t nb,
                            const std::int8_t* const* xq, const float* const* dx,
                            const float* const* cx, float* y, std::int64_t ldy, int valid) {
  using namespace detail::q4k;
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (std::int64_t b = 0; b < nb; ++b, panel += q4_k_panels::block_bytes) {
    for (int l = 0; l < q4_k_panels::block_bytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(panel + 2 * q4_k_panels::block_bytes + l),
                   _MM_HINT_T0);
    const __m512 d =
        _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel)));
    const __m512 dmin = _mm512_maskz_cvtph_ps(
        all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + off_dmin)));
    for (int s = 0; s < 8; ++s) {
      const std::uint8_t* codes = panel + off_codes + (s / 2) * 512;
      __m512i dot[MR];
      for (int i = 0; i < MR; ++i) dot[i] = _mm512_setzero_si512();
      const std::int64_t xo = b * 256 + (s / 2) * 64 + (s % 2) * 32;
      for (int g = 0; g < 8; ++g) {
        const __m512i v = _mm512_loadu_si512(codes + g * 64);
        const __m512i q =
            (s % 2) ? _mm512_and_si512(_mm512_srli_epi16(v, 4), low4) : _mm512_and_si512(v, low4);
        for (int i = 0; i < MR; ++i) {
          std::int32_t a;
          std::memcpy(&a, xq[i] + xo + 4 * g, 4);
          dot[i] = _mm512_dpbusd_epi32(dot[i], q, _mm512_set1_epi32(a));
        }
      }
      // d·sc and dmin·m in f32, as the reference (and ggml's dequantization) rounds them.
      const __m512 dsc = _mm512_mul_ps(
          d, _mm512_maskz_cvtepi32_ps(
                 all16,
                 _mm512_maskz_cvtepu8_epi32(all16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                                                       panel + off_sc + s * 16)))));
      const __m512 dmn = _mm512_mul_ps(
          dmin, _mm512_maskz_cvtepi32_ps(
                    all16, _mm512_maskz_cvtepu8_epi32(
                               all16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                                          panel + off_m + s * 16)))));
      const std::int64_t sb = b * 8 + s;
      for (int i = 0; i < MR; ++i) {
        const __m512 t =
            _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(all16, dot[i]), _mm512_set1_ps(dx[i][sb]));
        acc[i] = _mm512_fnmadd_ps(dmn, _mm512_set1_ps(cx[i][sb]), _mm512_fmadd_ps(t, dsc, acc[i]));
      }
    }
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy, mask, acc[i]);
}

}  // namespace detail::avx512
#endif

/// SIMD: y (m x n) = x Wᵀ with x quantized to int8 per 32 values, W in Q4_K panels: decode and
/// prefill run the same panel kernel, 8 activation rows at a time; 64-row tasks on OpenMP
/// threads. Without AVX-512 VNNI in the translation unit: the reference.
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m, const q4_k_panels& p,
                std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    require(p.cols % 256 == 0 &&
                p.data.size() == static_cast<std::size_t>(p.panels() * (p.cols / 256) *
                                                          q4_k_panels::block_bytes) &&
                x.size() == static_cast<std::size_t>(m * p.cols) &&
                y.size() == static_cast<std::size_t>(m * p.rows),
            {.what = "activation, output or panel size disagrees with the weight",
             .place = "qmatmul_q8 q4_k panels",
             .expected = std::to_string(m) + " x " + std::to_string(p.cols) + " in, " +
                         std::to_string(m) + " x " + std::to_string(p.rows) + " out",
             .found = std::to_string(x.size()) + " in, " + std::to_string(y.size()) + " out, " +
                      std::to_string(p.data.size()) + " panel bytes"});
    const std::int64_t n = p.rows, k = p.cols, nb = k / 256, ns = k / 32;
    thread_local std::vector<detail::avx512::q4_0_act> act_buf;
    thread_local std::vector<float> dxb, cxb;
    if (act_buf.size() < static_cast<std::size_t>(m)) act_buf.resize(static_cast<std::size_t>(m));
    dxb.resize(static_cast<std::size_t>(m * ns));
    cxb.resize(static_cast<std::size_t>(m * ns));
    std::vector<const std::int8_t*> xq(static_cast<std::size_t>(m));
    std::vector<const float*> dxp(static_cast<std::size_t>(m)), cxp(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      auto& a = act_buf[static_cast<std::size_t>(i)];
      detail::avx512::prepare_q4_0_act(x.data() + i * k, k, a);
      for (std::int64_t s = 0; s < ns; ++s) {
        std::int32_t t = 0;  // bias lanes hold −8·(sum of 4 codes)
        for (int l = 0; l < 8; ++l) t += a.bias[static_cast<std::size_t>(s * 8 + l)];
        const float dv = a.dv[static_cast<std::size_t>(s * 8)];
        dxb[static_cast<std::size_t>(i * ns + s)] = dv;
        cxb[static_cast<std::size_t>(i * ns + s)] = dv * static_cast<float>(-t / 8);
      }
      xq[static_cast<std::size_t>(i)] = a.q.data();
      dxp[static_cast<std::size_t>(i)] = dxb.data() + i * ns;
      cxp[static_cast<std::size_t>(i)] = cxb.data() + i * ns;
    }
    // (thread_locals are not captured by the lambda: the workers use these pointers.)
    const std::uint8_t* data = p.data.data();
    detail::for_each_panel_tile(
        m, n, k, data, nb * q4_k_panels::block_bytes, y.data(),
        [&]<int MR>(const std::uint8_t* panel, std::int64_t i0, float* yo, int valid) {
          const auto u = static_cast<std::size_t>(i0);
          detail::avx512::q4_k_panel_rows<MR>(panel, nb, xq.data() + u, dxp.data() + u,
                                              cxp.data() + u, yo, n, valid);
        });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, p, y);
}

}  // namespace forge::backend
