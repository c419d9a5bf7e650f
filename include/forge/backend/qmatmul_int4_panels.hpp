#pragma once
// int4_group<G, Sym> weights repacked once into 16-row panels for VNNI products with int8
// activations: the arithmetic of qmatmul_q8's int4 reference (backend/qmatmul_q8.hpp),
//   y = Σ_g s_g ( Σ_b d_b Σ_k q_k x_q,k  −  z_g Σ_b d_b Σ_k x_q,k ),
// activations quantized per 32 stored columns by detail::quantize_activations (the weight's
// act-order permutation applied), the inner sums exact integers.
//
// Layout. In the int4 layout byte j of a 32-value block holds stored columns 2j (low nibble)
// and 2j + 1 (high nibble), and the activations are quantized in the order [16 even columns,
// 16 odd columns]; so the block's 4-byte word w holds activation positions 4w..4w+3 (low
// nibbles) and 16+4w..19+4w (high nibbles), as in a GGUF Q4_0 block. A panel stores, for each
// group g of its 16 rows: the 16 f32 scales (64 bytes), for asymmetric groups the 16 zero
// points (16 bytes), then for each of the group's G/32 blocks four 64-byte vectors, vector w
// holding word w of the 16 rows side by side: masked (or shifted) one vpdpbusd operand of
// 16 rows x 4 codes. The same bytes per weight as the qtensor (rows past the matrix are zero),
// and lossless: unpack_int4_panels gives the tensor back.
//
// Per 32 weights and 16 rows the product costs 4 loads, 12 unpack operations, 8·MR vpdpbusd
// and 2·MR conversions/FMAs for MR activation rows, plus 3·MR + 2 per group: decode needs
// about 30 vector operations per 512 weights where the row-streaming kernel of qmatmul_q8
// needs about 100.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "forge/backend/qmatmul_q8.hpp"
#include "forge/quant/int4.hpp"

namespace forge::backend {

/// An int4_group<G, Sym> matrix in 16-row VNNI panels (see the header comment).
template <int G, bool Sym>
struct int4_panels {
  using format = quant::int4_group<G, Sym>;
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> data{};  ///< ceil(rows/16) panels of cols/G groups
  std::vector<std::int32_t> perm{};  ///< the tensor's act-order permutation (empty: identity)

  /// Bytes of one panel group (16 rows x G weights): scales, zeros, codes.
  static constexpr std::int64_t group_bytes = 64 + (Sym ? 0 : 16) + G / 32 * 256;
  /// Offset of the codes inside a panel group.
  static constexpr std::int64_t codes_offset = 64 + (Sym ? 0 : 16);
  /// Bytes of weight memory (codes, scales, zeros and the permutation).
  std::size_t bytes() const { return data.size() + perm.size() * sizeof(std::int32_t); }
  /// Number of 16-row panels.
  std::int64_t panels() const { return (rows + 15) / 16; }
  friend bool operator==(const int4_panels&, const int4_panels&) = default;
};

/// Repacks an int4_group tensor into panels; forge::error if its sizes disagree with its shape.
template <int G, bool Sym>
int4_panels<G, Sym> pack_int4_panels(const quant::qtensor<quant::int4_group<G, Sym>>& w) {
  using P = int4_panels<G, Sym>;
  const auto groups = static_cast<std::size_t>(w.rows * (w.cols / G));
  require(
      w.cols % G == 0 && w.codes.size() == static_cast<std::size_t>(w.rows * w.cols / 2) &&
          w.scales.size() == groups && w.zeros.size() == (Sym ? 0 : groups) &&
          (w.perm.empty() || w.perm.size() == static_cast<std::size_t>(w.cols)),
      {.what = "int4 tensor sizes disagree with its shape",
       .place = std::string("pack_int4_panels ") + quant::int4_group<G, Sym>::name,
       .expected = std::to_string(w.rows) + " x " + std::to_string(w.cols) + ", groups of " +
                   std::to_string(G),
       .found = std::to_string(w.codes.size()) + " code bytes, " + std::to_string(w.scales.size()) +
                " scales, " + std::to_string(w.zeros.size()) + " zeros"});
  P p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.perm = w.perm;
  const std::int64_t ng = w.cols / G;
  p.data.assign(static_cast<std::size_t>(p.panels() * ng * P::group_bytes), 0);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t j = r % 16;
    for (std::int64_t g = 0; g < ng; ++g) {
      auto* dst = p.data.data() + ((r / 16) * ng + g) * P::group_bytes;
      const auto gi = static_cast<std::size_t>(r * ng + g);
      std::memcpy(dst + 4 * j, &w.scales[gi], 4);
      if constexpr (!Sym) dst[64 + j] = w.zeros[gi];
      const auto* src = w.codes.data() + (r * w.cols + g * G) / 2;
      for (int b = 0; b < G / 32; ++b)
        for (int v = 0; v < 4; ++v)
          std::memcpy(dst + P::codes_offset + (b * 4 + v) * 64 + 4 * j, src + b * 16 + 4 * v, 4);
    }
  }
  return p;
}

/// The int4_group tensor a panel set holds.
template <int G, bool Sym>
quant::qtensor<quant::int4_group<G, Sym>> unpack_int4_panels(const int4_panels<G, Sym>& p) {
  using P = int4_panels<G, Sym>;
  quant::qtensor<quant::int4_group<G, Sym>> w;
  w.rows = p.rows;
  w.cols = p.cols;
  w.perm = p.perm;
  const std::int64_t ng = p.cols / G;
  w.codes.assign(static_cast<std::size_t>(p.rows * p.cols / 2), 0);
  w.scales.assign(static_cast<std::size_t>(p.rows * ng), 0.0f);
  if constexpr (!Sym) w.zeros.assign(w.scales.size(), 0);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t j = r % 16;
    for (std::int64_t g = 0; g < ng; ++g) {
      const auto* src = p.data.data() + ((r / 16) * ng + g) * P::group_bytes;
      const auto gi = static_cast<std::size_t>(r * ng + g);
      std::memcpy(&w.scales[gi], src + 4 * j, 4);
      if constexpr (!Sym) w.zeros[gi] = src[64 + j];
      auto* dst = w.codes.data() + (r * p.cols + g * G) / 2;
      for (int b = 0; b < G / 32; ++b)
        for (int v = 0; v < 4; ++v)
          std::memcpy(dst + b * 16 + 4 * v, src + P::codes_offset + (b * 4 + v) * 64 + 4 * j, 4);
    }
  }
  return w;
}

/// Reference: the panels' tensor through qmatmul_q8(scalar, ...).
template <int G, bool Sym>
void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m, const int4_panels<G, Sym>& p,
                std::span<float> y) {
  qmatmul_q8(scalar{}, x, m, unpack_int4_panels(p), y);
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// y[i][0, valid) for MR activation rows against one panel of ng groups. xq: codes in stored
/// order; dx: per 32-value block scale; cz: per group Σ_b d_b·Σ x_q.
template <int MR, int G, bool Sym>
inline void int4_panel_rows(const std::uint8_t* panel, std::int64_t ng,
                            const std::int8_t* const* xq, const float* const* dx,
                            const float* const* cz, float* y, std::int64_t ldy, int valid) {
  using P = int4_panels<G, Sym>;
  constexpr int nbg = G / 32;
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (std::int64_t g = 0; g < ng; ++g, panel += P::group_bytes) {
    for (int l = 0; l < P::group_bytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(panel + 4 * P::group_bytes + l), _MM_HINT_T0);
    __m512 gacc[MR];
    for (int i = 0; i < MR; ++i) gacc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nbg; ++b) {
      const std::uint8_t* codes = panel + P::codes_offset + b * 256;
      const std::int64_t blk = g * nbg + b;
      __m512i s[MR];
      for (int i = 0; i < MR; ++i) s[i] = _mm512_setzero_si512();
      for (int v = 0; v < 4; ++v) {
        const __m512i c = _mm512_loadu_si512(codes + v * 64);
        const __m512i lo = _mm512_and_si512(c, low4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
        for (int i = 0; i < MR; ++i) {
          std::int32_t a0, a1;
          std::memcpy(&a0, xq[i] + blk * 32 + 4 * v, 4);
          std::memcpy(&a1, xq[i] + blk * 32 + 16 + 4 * v, 4);
          s[i] = _mm512_dpbusd_epi32(s[i], lo, _mm512_set1_epi32(a0));
          s[i] = _mm512_dpbusd_epi32(s[i], hi, _mm512_set1_epi32(a1));
        }
      }
      for (int i = 0; i < MR; ++i)
        gacc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, s[i]), _mm512_set1_ps(dx[i][blk]),
                                  gacc[i]);
    }
    const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(panel));
    __m512 sz;
    if constexpr (Sym)
      sz = _mm512_mul_ps(sc, _mm512_set1_ps(8.0f));
    else
      sz = _mm512_mul_ps(
          sc,
          _mm512_maskz_cvtepi32_ps(
              all16, _mm512_maskz_cvtepu8_epi32(
                         all16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + 64)))));
    for (int i = 0; i < MR; ++i)
      acc[i] = _mm512_fnmadd_ps(sz, _mm512_set1_ps(cz[i][g]), _mm512_fmadd_ps(gacc[i], sc, acc[i]));
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy, mask, acc[i]);
}

}  // namespace detail::avx512
#endif

#if defined(__AVX2__) && defined(__FMA__)
namespace detail::avx2 {

/// AVX2 version of the panel kernel (no VNNI): each 64-byte vector as two halves of 8 rows, the
/// 4-code dot of a lane as vpmaddubsw + vpmaddwd (exact: |code·x| <= 15·128, so the 16-bit
/// pair sums never saturate). MR <= 4 activation rows.
template <int MR, int G, bool Sym>
inline void int4_panel_rows(const std::uint8_t* panel, std::int64_t ng,
                            const std::int8_t* const* xq, const float* const* dx,
                            const float* const* cz, float* y, std::int64_t ldy, int valid) {
  using P = int4_panels<G, Sym>;
  constexpr int nbg = G / 32;
  __m256 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::int64_t g = 0; g < ng; ++g, panel += P::group_bytes) {
    __m256 gacc[MR][2];
    for (int i = 0; i < MR; ++i) gacc[i][0] = gacc[i][1] = _mm256_setzero_ps();
    for (int b = 0; b < nbg; ++b) {
      const std::uint8_t* codes = panel + P::codes_offset + b * 256;
      const std::int64_t blk = g * nbg + b;
      for (int h = 0; h < 2; ++h) {
        __m256i s[MR];
        for (int i = 0; i < MR; ++i) s[i] = _mm256_setzero_si256();
        for (int v = 0; v < 4; ++v) {
          const __m256i c =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + v * 64 + h * 32));
          const __m256i lo = _mm256_and_si256(c, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), low4);
          for (int i = 0; i < MR; ++i) {
            std::int32_t a0, a1;
            std::memcpy(&a0, xq[i] + blk * 32 + 4 * v, 4);
            std::memcpy(&a1, xq[i] + blk * 32 + 16 + 4 * v, 4);
            const __m256i pr = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(a0)),
                                                _mm256_maddubs_epi16(hi, _mm256_set1_epi32(a1)));
            s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(pr, ones));
          }
        }
        for (int i = 0; i < MR; ++i)
          gacc[i][h] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), _mm256_set1_ps(dx[i][blk]), gacc[i][h]);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 sc = _mm256_loadu_ps(reinterpret_cast<const float*>(panel) + 8 * h);
      __m256 sz;
      if constexpr (Sym)
        sz = _mm256_mul_ps(sc, _mm256_set1_ps(8.0f));
      else
        sz = _mm256_mul_ps(sc, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                   reinterpret_cast<const __m128i*>(panel + 64 + 8 * h)))));
      for (int i = 0; i < MR; ++i)
        acc[i][h] = _mm256_fnmadd_ps(sz, _mm256_set1_ps(cz[i][g]),
                                     _mm256_fmadd_ps(gacc[i][h], sc, acc[i][h]));
    }
  }
  for (int i = 0; i < MR; ++i) {
    alignas(32) float t[16];
    _mm256_store_ps(t, acc[i][0]);
    _mm256_store_ps(t + 8, acc[i][1]);
    std::memcpy(y + i * ldy, t, static_cast<std::size_t>(valid) * sizeof(float));
  }
}

}  // namespace detail::avx2
#endif

/// SIMD: y (m x n) = x Wᵀ with x quantized to int8 per 32 stored columns, W in int4 panels:
/// decode and prefill run the same panel kernel, 8 activation rows at a time; 64-row tasks on
/// OpenMP threads. AVX-512 VNNI for AVX-512 architectures, vpmaddubsw + vpmaddwd for
/// simd<xsimd::avx2> (in a translation unit targeting AVX2 and FMA), else the reference.
template <class Arch, int G, bool Sym>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m, const int4_panels<G, Sym>& p,
                std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  constexpr bool vnni = detail::is_avx512_v<Arch>;
#else
  constexpr bool vnni = false;
#endif
#if defined(__AVX2__) && defined(__FMA__)
  constexpr bool avx2 = std::is_base_of_v<xsimd::avx2, Arch>;
#else
  constexpr bool avx2 = false;
#endif
  if constexpr (vnni || avx2) {
    using P = int4_panels<G, Sym>;
    require(
        p.cols % G == 0 && p.cols % 64 == 0 &&
            p.data.size() == static_cast<std::size_t>(p.panels() * (p.cols / G) * P::group_bytes) &&
            x.size() == static_cast<std::size_t>(m * p.cols) &&
            y.size() == static_cast<std::size_t>(m * p.rows),
        {.what = "activation, output or panel size disagrees with the weight",
         .place = std::string("qmatmul_q8 int4 panels ") + P::format::name,
         .expected = std::to_string(m) + " x " + std::to_string(p.cols) + " in, " +
                     std::to_string(m) + " x " + std::to_string(p.rows) +
                     " out, in_features % 64 == 0 (as the reference)",
         .found = std::to_string(x.size()) + " in, " + std::to_string(y.size()) + " out, " +
                  std::to_string(p.data.size()) + " panel bytes"});
    const std::int64_t n = p.rows, k = p.cols, ng = k / G;
    std::vector<detail::q8_row> acts(static_cast<std::size_t>(m));
    std::vector<float> czb(static_cast<std::size_t>(m * ng));
    std::vector<const std::int8_t*> xq(static_cast<std::size_t>(m));
    std::vector<const float*> dxp(static_cast<std::size_t>(m)), czp(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      auto& a = acts[static_cast<std::size_t>(i)];
      a = detail::quantize_activations(x.data() + i * k, k, p.perm);
      for (std::int64_t g = 0; g < ng; ++g) {
        float c = 0.0f;
        for (int b = 0; b < G / 32; ++b) {
          const auto blk = static_cast<std::size_t>(g * (G / 32) + b);
          c += a.d[blk] * static_cast<float>(a.sum[blk]);
        }
        czb[static_cast<std::size_t>(i * ng + g)] = c;
      }
      xq[static_cast<std::size_t>(i)] = a.q.data();
      dxp[static_cast<std::size_t>(i)] = a.d.data();
      czp[static_cast<std::size_t>(i)] = czb.data() + i * ng;
    }
    const std::uint8_t* data = p.data.data();
    detail::for_each_panel_tile(
        m, n, k, data, ng * P::group_bytes, y.data(),
        [&]<int MR>(const std::uint8_t* panel, std::int64_t i0, float* yo, int valid) {
          const auto u = static_cast<std::size_t>(i0);
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
          if constexpr (vnni)
            detail::avx512::int4_panel_rows<MR, G, Sym>(panel, ng, xq.data() + u, dxp.data() + u,
                                                        czp.data() + u, yo, n, valid);
#endif
#if defined(__AVX2__) && defined(__FMA__)
          if constexpr (!vnni) {  // AVX2: up to 4 activation rows per weight pass
            for (int i = 0; i < MR; i += 4) {
              const auto v = u + static_cast<std::size_t>(i);
              detail::with_rows<4>(MR - i, [&]<int R>() {
                detail::avx2::int4_panel_rows<R, G, Sym>(panel, ng, xq.data() + v, dxp.data() + v,
                                                         czp.data() + v, yo + i * n, n, valid);
              });
            }
          }
#endif
        });
  } else {
    qmatmul_q8(scalar{}, x, m, p, y);
  }
}

}  // namespace forge::backend
