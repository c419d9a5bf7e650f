#pragma once
// NF4 weights (QLoRA's 4-bit NormalFloat, quant/nf4.hpp) with activations quantized to int8 per
// 32 values (detail::quantize_activations, the int4 rule of backend/qmatmul_q8.hpp: each 32
// values' even columns then odd columns, which is the order of NF4's high then low nibbles).
//
// The NF4 levels are not integers; the integer dot products use them in 16-bit fixed point,
//   L16[q] = round(32767 · nf4_code[q])   (|L16/32767 − nf4_code| ≤ 1/65534),
// so that, with a_b the block's absmax (after double quantization, in f32 as dequantize gives
// it) and d_s the activation block scale,
//   y = (1/32767) Σ_b a_b Σ_{s in b} d_s Σ_j L16[q_j] x_q,j
// with exact integer inner sums. The level rounding moves y by at most Σ_j a_j |x_j| / 65534,
// about 250 times less than the activation rounding (d_s / 2 per activation).
//
// Integer dots: L16 = 256·h + l with h = L16 >> 8 in [−128, 127] and l = L16 & 255, looked up
// per nibble from two 16-entry byte tables (vpshufb) as h + 128 and l, both unsigned operands
// of vpdpbusd; Σ L16·x = 256 (Σ (h + 128)·x − 128 Σ x) + Σ l·x.
//
// Panels: for each 64-value block of 16 rows, the 16 f32 absmax values (64 bytes), then for its
// two 32-value halves four 64-byte vectors, vector w holding bytes 4w..4w+3 of each row's half
// side by side: 576 bytes per 16 x 64 weights (4.5 bits per weight; double quantization's
// smaller constants are kept aside only to give the tensor back: unpack_nf4_panels is lossless).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "forge/backend/qmatmul_q8.hpp"
#include "forge/quant/nf4.hpp"

namespace forge::backend {

namespace detail {
/// The NF4 levels in 16-bit fixed point, round(32767 · level).
inline const std::array<std::int32_t, 16>& nf4_levels_q15() {
  static const auto t = [] {
    std::array<std::int32_t, 16> l{};
    for (std::size_t i = 0; i < 16; ++i)
      l[i] = static_cast<std::int32_t>(std::lround(32767.0 * quant::nf4_code[i]));
    return l;
  }();
  return t;
}
}  // namespace detail

/// Reference: y (m x n) = x Wᵀ for NF4 weights with x quantized to int8 per 32 values and the
/// levels in 16-bit fixed point (see above); integer dots exact, the scaled sum in double.
template <bool D>
void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::nf4_format<D>>& w, std::span<float> y) {
  using F = quant::nf4_format<D>;
  detail::check_qmatmul(x.size(), m, w, y.size());
  detail::check_q8(w);
  const auto& L = detail::nf4_levels_q15();
  const std::int64_t k = w.cols;
  std::vector<float> absmax(static_cast<std::size_t>(w.rows * k / 64));
  for (std::size_t b = 0; b < absmax.size(); ++b) absmax[b] = F::block_absmax(w, b);
  for (std::int64_t i = 0; i < m; ++i) {
    const auto a = detail::quantize_activations(x.data() + i * k, w);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (std::int64_t s = 0; s < k / 32; ++s) {
        const auto* codes = w.codes.data() + (r * k + s * 32) / 2;
        const auto* q = a.q.data() + s * 32;
        std::int64_t dot = 0;
        for (int j = 0; j < 16; ++j)
          dot +=
              std::int64_t{L[codes[j] >> 4]} * q[j] + std::int64_t{L[codes[j] & 0x0f]} * q[16 + j];
        acc += static_cast<double>(absmax[static_cast<std::size_t>((r * k + s * 32) / 64)]) *
               a.d[static_cast<std::size_t>(s)] * static_cast<double>(dot);
      }
      y[static_cast<std::size_t>(i * w.rows + r)] = static_cast<float>(acc / 32767.0);
    }
  }
}

/// An NF4 matrix in 16-row VNNI panels (see the header comment).
template <bool D>
struct nf4_panels {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> data{};  ///< ceil(rows/16) panels of cols/64 blocks of 576 bytes
  quant::qtensor<quant::nf4_format<D>> constants{};  ///< the tensor's constants (no codes)

  /// Bytes of one panel block (16 rows x 64 weights).
  static constexpr std::int64_t block_bytes = 576;
  /// Bytes of weight memory (the panels and the kept constants).
  std::size_t bytes() const { return data.size() + constants.bytes(); }
  /// Number of 16-row panels.
  std::int64_t panels() const { return (rows + 15) / 16; }
  friend bool operator==(const nf4_panels&, const nf4_panels&) = default;
};

/// Repacks an NF4 tensor into panels; forge::error if its sizes disagree with its shape.
template <bool D>
nf4_panels<D> pack_nf4_panels(const quant::qtensor<quant::nf4_format<D>>& w) {
  using F = quant::nf4_format<D>;
  const auto blocks = static_cast<std::size_t>(w.rows * w.cols / 64);
  const bool sizes_ok =
      w.cols % 64 == 0 && w.codes.size() == static_cast<std::size_t>(w.rows * w.cols / 2) &&
      (D ? w.zeros.size() == blocks &&
               w.scales2.size() == (blocks + F::absmax_block - 1) / F::absmax_block
         : w.scales.size() == blocks);
  require(sizes_ok, {.what = "NF4 tensor sizes disagree with its shape",
                     .place = std::string("pack_nf4_panels ") + F::name,
                     .expected = std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                 ", in_features % 64 == 0",
                     .found = std::to_string(w.codes.size()) + " code bytes"});
  nf4_panels<D> p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.constants = w;
  p.constants.codes.clear();
  const std::int64_t nb = w.cols / 64;
  p.data.assign(static_cast<std::size_t>(p.panels() * nb * nf4_panels<D>::block_bytes), 0);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t j = r % 16;
    for (std::int64_t b = 0; b < nb; ++b) {
      auto* dst = p.data.data() + ((r / 16) * nb + b) * nf4_panels<D>::block_bytes;
      const float a = F::block_absmax(w, static_cast<std::size_t>(r * nb + b));
      std::memcpy(dst + 4 * j, &a, 4);
      const auto* src = w.codes.data() + (r * w.cols + b * 64) / 2;
      for (int h = 0; h < 2; ++h)
        for (int v = 0; v < 4; ++v)
          std::memcpy(dst + 64 + (h * 4 + v) * 64 + 4 * j, src + h * 16 + 4 * v, 4);
    }
  }
  return p;
}

/// The NF4 tensor a panel set holds.
template <bool D>
quant::qtensor<quant::nf4_format<D>> unpack_nf4_panels(const nf4_panels<D>& p) {
  auto w = p.constants;
  w.rows = p.rows;
  w.cols = p.cols;
  w.codes.assign(static_cast<std::size_t>(p.rows * p.cols / 2), 0);
  const std::int64_t nb = p.cols / 64;
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t b = 0; b < nb; ++b) {
      const auto* src = p.data.data() + ((r / 16) * nb + b) * nf4_panels<D>::block_bytes;
      auto* dst = w.codes.data() + (r * p.cols + b * 64) / 2;
      for (int h = 0; h < 2; ++h)
        for (int v = 0; v < 4; ++v)
          std::memcpy(dst + h * 16 + 4 * v, src + 64 + (h * 4 + v) * 64 + 4 * (r % 16), 4);
    }
  return w;
}

/// Reference: the panels' tensor through qmatmul_q8(scalar, ...).
template <bool D>
void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m, const nf4_panels<D>& p,
                std::span<float> y) {
  qmatmul_q8(scalar{}, x, m, unpack_nf4_panels(p), y);
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// y[i][0, valid) for MR activation rows against one panel of nb blocks. xq: codes in the
/// int4 activation order; dx: per 32 values the scale; sx: −128·Σ x_q per 32 values.
template <int MR>
inline void nf4_panel_rows(const std::uint8_t* panel, std::int64_t nb, const std::int8_t* const* xq,
                           const float* const* dx, const std::int32_t* const* sx, float* y,
                           std::int64_t ldy, int valid) {
  const auto& L = nf4_levels_q15();
  alignas(16) std::uint8_t th[16], tl[16];
  for (int c = 0; c < 16; ++c) {
    th[c] = static_cast<std::uint8_t>((L[static_cast<std::size_t>(c)] >> 8) + 128);
    tl[c] = static_cast<std::uint8_t>(L[static_cast<std::size_t>(c)] & 255);
  }
  const __m512i tab_h =
      _mm512_maskz_broadcast_i32x4(all16, _mm_load_si128(reinterpret_cast<const __m128i*>(th)));
  const __m512i tab_l =
      _mm512_maskz_broadcast_i32x4(all16, _mm_load_si128(reinterpret_cast<const __m128i*>(tl)));
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (std::int64_t b = 0; b < nb; ++b, panel += nf4_panels<true>::block_bytes) {
    for (int l = 0; l < nf4_panels<true>::block_bytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * nf4_panels<true>::block_bytes + l),
                   _MM_HINT_T0);
    __m512 bacc[MR];
    for (int i = 0; i < MR; ++i) bacc[i] = _mm512_setzero_ps();
    for (int h = 0; h < 2; ++h) {
      const std::int64_t s = b * 2 + h;
      __m512i sh[MR], sl[MR];
      for (int i = 0; i < MR; ++i)
        sh[i] = _mm512_set1_epi32(sx[i][s]), sl[i] = _mm512_setzero_si512();
      for (int v = 0; v < 4; ++v) {
        const __m512i c = _mm512_loadu_si512(panel + 64 + (h * 4 + v) * 64);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);  // positions 4v..
        const __m512i lo = _mm512_and_si512(c, low4);                        // 16 + 4v..
        const __m512i hh = _mm512_shuffle_epi8(tab_h, hi), hl = _mm512_shuffle_epi8(tab_l, hi);
        const __m512i lh = _mm512_shuffle_epi8(tab_h, lo), ll = _mm512_shuffle_epi8(tab_l, lo);
        for (int i = 0; i < MR; ++i) {
          std::int32_t a0, a1;
          std::memcpy(&a0, xq[i] + s * 32 + 4 * v, 4);
          std::memcpy(&a1, xq[i] + s * 32 + 16 + 4 * v, 4);
          const __m512i x0 = _mm512_set1_epi32(a0), x1 = _mm512_set1_epi32(a1);
          sh[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sh[i], hh, x0), lh, x1);
          sl[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sl[i], hl, x0), ll, x1);
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(sh[i], 8), sl[i]);
        bacc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, dot), _mm512_set1_ps(dx[i][s]),
                                  bacc[i]);
      }
    }
    const __m512 am = _mm512_loadu_ps(reinterpret_cast<const float*>(panel));
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(bacc[i], am, acc[i]);
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  const __m512 inv = _mm512_set1_ps(1.0f / 32767.0f);
  for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy, mask, _mm512_mul_ps(acc[i], inv));
}

}  // namespace detail::avx512
#endif

/// SIMD: y (m x n) = x Wᵀ with x quantized to int8 per 32 values, W in NF4 panels: decode and
/// prefill run the same panel kernel, 8 activation rows at a time; 64-row tasks on OpenMP
/// threads. Without AVX-512 VNNI in the translation unit: the reference.
template <class Arch, bool D>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m, const nf4_panels<D>& p,
                std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    require(p.cols % 64 == 0 &&
                p.data.size() == static_cast<std::size_t>(p.panels() * (p.cols / 64) *
                                                          nf4_panels<D>::block_bytes) &&
                x.size() == static_cast<std::size_t>(m * p.cols) &&
                y.size() == static_cast<std::size_t>(m * p.rows),
            {.what = "activation, output or panel size disagrees with the weight",
             .place = "qmatmul_q8 nf4 panels",
             .expected = std::to_string(m) + " x " + std::to_string(p.cols) + " in, " +
                         std::to_string(m) + " x " + std::to_string(p.rows) + " out",
             .found = std::to_string(x.size()) + " in, " + std::to_string(y.size()) + " out, " +
                      std::to_string(p.data.size()) + " panel bytes"});
    const std::int64_t n = p.rows, k = p.cols, nb = k / 64, ns = k / 32;
    std::vector<detail::q8_row> acts(static_cast<std::size_t>(m));
    std::vector<std::int32_t> sxb(static_cast<std::size_t>(m * ns));
    std::vector<const std::int8_t*> xq(static_cast<std::size_t>(m));
    std::vector<const float*> dxp(static_cast<std::size_t>(m));
    std::vector<const std::int32_t*> sxp(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      auto& a = acts[static_cast<std::size_t>(i)];
      a = detail::quantize_activations(x.data() + i * k, k, {});
      for (std::int64_t s = 0; s < ns; ++s)
        sxb[static_cast<std::size_t>(i * ns + s)] = -128 * a.sum[static_cast<std::size_t>(s)];
      xq[static_cast<std::size_t>(i)] = a.q.data();
      dxp[static_cast<std::size_t>(i)] = a.d.data();
      sxp[static_cast<std::size_t>(i)] = sxb.data() + i * ns;
    }
    const std::uint8_t* data = p.data.data();
    detail::for_each_panel_tile(
        m, n, k, data, nb * nf4_panels<D>::block_bytes, y.data(),
        [&]<int MR>(const std::uint8_t* panel, std::int64_t i0, float* yo, int valid) {
          const auto u = static_cast<std::size_t>(i0);
          detail::avx512::nf4_panel_rows<MR>(panel, nb, xq.data() + u, dxp.data() + u,
                                             sxp.data() + u, yo, n, valid);
        });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, p, y);
}

/// SIMD on the qtensor itself: repacks into panels for this call (hold the weight as
/// nf4_panels, as adapters::quantized_base_q8 does, to repack once).
template <class Arch, bool D>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::nf4_format<D>>& w, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  qmatmul_q8(simd<Arch>{}, x, m, pack_nf4_panels(w), y);
}

}  // namespace forge::backend
