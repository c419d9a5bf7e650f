#pragma once
// int4 products with activations dynamically quantized to int8, as llama.cpp's decode path
// does (its Q8_0 activation blocks): each activation row is split into blocks of 32 input
// features (in the weight's stored, nibble-pair order), quantized symmetrically
//   d_b = max |x| / 127,  x_q = round(x / d_b)            (ties away from zero, as roundf)
// and the product of group g, sub-blocks b, is
//   y = Σ_g s_g ( Σ_b d_b Σ_k q_k x_q,k  −  z_g Σ_b d_b Σ_k x_q,k )
// with the inner Σ q·x_q an exact integer dot product (AVX-512 VNNI vpdpbusd: unsigned 4-bit
// codes times signed int8 activations, 64 per instruction). The result differs from the f32
// product by the activation rounding, |Δy| <= Σ_b d_b/2 Σ_k |w_k| per output.
//
// qmatmul_q8(scalar, ...) is the reference of the same arithmetic (integer dots exact, float
// sums in double); qmatmul_q8(simd<Arch>, ...) uses VNNI when the translation unit targets
// AVX-512 VNNI and Arch is an AVX-512 architecture, the reference loops otherwise.

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "forge/backend/qmatmul.hpp"

namespace forge::backend {

namespace detail {

/// One activation row quantized to int8 in blocks of 32 (stored, deinterleaved order).
struct q8_row {
  std::vector<std::int8_t> q{};     ///< k values: per 32, the 16 even then the 16 odd columns
  std::vector<float> d{};           ///< k / 32 block scales
  std::vector<std::int32_t> sum{};  ///< k / 32 sums of the block's codes
};

template <class F>
q8_row quantize_activations(const float* x, const quant::qtensor<F>& w) {
  const std::int64_t k = w.cols;
  q8_row r;
  r.q.resize(static_cast<std::size_t>(k));
  r.d.resize(static_cast<std::size_t>(k / 32));
  r.sum.resize(static_cast<std::size_t>(k / 32));
  for (std::int64_t b = 0; b < k / 32; ++b) {
    float v[32];
    for (int j = 0; j < 16; ++j) {
      const auto e = b * 32 + 2 * j, o = e + 1;
      v[j] = w.perm.empty() ? x[e] : x[w.perm[static_cast<std::size_t>(e)]];
      v[16 + j] = w.perm.empty() ? x[o] : x[w.perm[static_cast<std::size_t>(o)]];
    }
    float amax = 0.0f;
    for (float e : v) amax = std::max(amax, std::fabs(e));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    std::int32_t s = 0;
    for (int j = 0; j < 32; ++j) {
      const auto q = static_cast<std::int8_t>(std::round(v[j] * id));
      r.q[static_cast<std::size_t>(b * 32 + j)] = q;
      s += q;
    }
    r.d[static_cast<std::size_t>(b)] = d;
    r.sum[static_cast<std::size_t>(b)] = s;
  }
  return r;
}

template <class F>
void check_q8(const quant::qtensor<F>& w) {
  require(w.cols % 64 == 0, {.what = "int8-activation products need in_features % 64 == 0",
                             .place = std::string("qmatmul_q8 ") + F::name,
                             .found = std::to_string(w.cols)});
}

}  // namespace detail

/// Reference: y (m x n) = x Wᵀ with x quantized to int8 per block of 32 (see above).
template <int G, bool Sym>
void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::int4_group<G, Sym>>& w, std::span<float> y) {
  using F = quant::int4_group<G, Sym>;
  detail::check_qmatmul(x.size(), m, w, y.size());
  detail::check_q8(w);
  for (std::int64_t i = 0; i < m; ++i) {
    const auto a = detail::quantize_activations(x.data() + i * w.cols, w);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (std::int64_t b = 0; b < w.cols / 32; ++b) {
        const auto p = F::group(w, r, b * 32 / G);
        std::int64_t dot = 0;
        const auto* codes = w.codes.data() + (r * w.cols + b * 32) / 2;
        for (int j = 0; j < 16; ++j) {
          dot += (codes[j] & 0x0f) * a.q[static_cast<std::size_t>(b * 32 + j)];
          dot += (codes[j] >> 4) * a.q[static_cast<std::size_t>(b * 32 + 16 + j)];
        }
        acc += static_cast<double>(p.scale) * a.d[static_cast<std::size_t>(b)] *
               (static_cast<double>(dot) -
                static_cast<double>(p.zero) * a.sum[static_cast<std::size_t>(b)]);
      }
      y[static_cast<std::size_t>(i * w.rows + r)] = static_cast<float>(acc);
    }
  }
}

/// SIMD: the same product with VNNI integer dot products (64 weights per vpdpbusd).
template <class Arch, int G, bool Sym>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::int4_group<G, Sym>>& w, std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    using F = quant::int4_group<G, Sym>;
    detail::check_qmatmul(x.size(), m, w, y.size());
    detail::check_q8(w);
    const std::int64_t n = w.rows, k = w.cols, chunks = k / 64;
    for (std::int64_t i = 0; i < m; ++i) {
      const auto a = detail::quantize_activations(x.data() + i * k, w);
      // Per 64-chunk: lane scales d (8 lanes per 32-block), and the zero-point term per block.
      std::vector<float> dv(static_cast<std::size_t>(chunks * 16));
      std::vector<float> t(a.d.size());
      for (std::int64_t c = 0; c < chunks; ++c)
        for (int l = 0; l < 16; ++l)
          dv[static_cast<std::size_t>(c * 16 + l)] = a.d[static_cast<std::size_t>(2 * c + l / 8)];
      for (std::size_t b = 0; b < t.size(); ++b) t[b] = a.d[b] * static_cast<float>(a.sum[b]);
      float* yi = y.data() + i * n;
      detail::parallel_blocks(n, 64, [&](std::int64_t lo, std::int64_t hi) {
        const __m256i low4 = _mm256_set1_epi8(0x0f);
        for (std::int64_t r = lo; r < hi; ++r) {
          const auto* codes = w.codes.data() + r * k / 2;
          __m512 acc = _mm512_setzero_ps();
          float zterm = 0.0f;
          for (std::int64_t c = 0; c < chunks; ++c) {
            const auto pa = F::group(w, r, c * 64 / G), pb = F::group(w, r, (c * 64 + 32) / G);
            zterm += pa.scale * pa.zero * t[static_cast<std::size_t>(2 * c)] +
                     pb.scale * pb.zero * t[static_cast<std::size_t>(2 * c + 1)];
            const __m256i bytes =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + c * 32));
            const __m256i lo = _mm256_and_si256(bytes, low4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
            // [lo of bytes 0-15, hi of 0-15, lo of 16-31, hi of 16-31] = the activations' order.
            const __m512i both = _mm512_maskz_inserti64x4(0xff, _mm512_castsi256_si512(lo), hi, 1);
            const __m512i wq =
                _mm512_maskz_shuffle_i64x2(0xff, both, both, _MM_SHUFFLE(3, 1, 2, 0));
            const __m512i xq = _mm512_loadu_si512(a.q.data() + c * 64);
            const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq);
            const __m512 sv =
                _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(pa.scale), _mm512_set1_ps(pb.scale));
            const __m512 scale = _mm512_mul_ps(sv, _mm512_loadu_ps(dv.data() + c * 16));
            acc = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xffff, dot), scale, acc);
          }
          yi[r] = detail::avx512::hsum(acc) - zterm;
        }
      });
    }
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, w, y);
}

}  // namespace forge::backend
