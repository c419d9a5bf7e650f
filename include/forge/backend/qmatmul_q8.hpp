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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

/// One activation row of k values quantized in the stored order of a weight whose stored
/// column c holds input column perm[c] (perm empty: the identity).
inline q8_row quantize_activations(const float* x, std::int64_t k,
                                   std::span<const std::int32_t> perm) {
  q8_row r;
  r.q.resize(static_cast<std::size_t>(k));
  r.d.resize(static_cast<std::size_t>(k / 32));
  r.sum.resize(static_cast<std::size_t>(k / 32));
  for (std::int64_t b = 0; b < k / 32; ++b) {
    float v[32];
    for (int j = 0; j < 16; ++j) {
      const auto e = b * 32 + 2 * j, o = e + 1;
      v[j] = perm.empty() ? x[e] : x[perm[static_cast<std::size_t>(e)]];
      v[16 + j] = perm.empty() ? x[o] : x[perm[static_cast<std::size_t>(o)]];
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
q8_row quantize_activations(const float* x, const quant::qtensor<F>& w) {
  return quantize_activations(x, w.cols, w.perm);
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

// ---------------------------------------------------------------------------------------------
// GGUF Q4_0 weights with Q8_0 activations: llama.cpp's decode arithmetic (ggml-cpu
// ggml_vec_dot_q4_0_q8_0). Each activation row is quantized as ggml's quantize_row_q8_0_ref
// does, in natural column order: per block b of 32, d_b = max|x| / 127, x_q = round(x / d_b)
// (ties away from zero, with 1/d_b in f32), and the product uses d_b rounded to f16, as the
// Q8_0 block stores it. With the weight block's f16 scale d_w and codes q (0..15):
//   y = Σ_b d_w,b · d_b · Σ_j (q_j − 8) · x_q,j
// the inner sum an exact integer. The SIMD kernel computes Σ q·x_q − 8·Σ x_q with one VNNI
// vpdpbusd per 64 weights (its accumulator starts at −8·Σ x_q, precomputed per activation row).
// ---------------------------------------------------------------------------------------------

namespace detail {

/// One activation row as ggml Q8_0 blocks (natural order): codes, f16-rounded scales and the
/// per-block code sums.
struct q8_0_row {
  std::vector<std::int8_t> q{};     ///< k codes
  std::vector<float> d{};           ///< k / 32 scales (f16 values, as Q8_0 stores them)
  std::vector<std::int32_t> sum{};  ///< k / 32 sums of the block's codes
};

inline void quantize_q8_0_row(const float* x, std::int64_t k, q8_0_row& r) {
  r.q.resize(static_cast<std::size_t>(k));
  r.d.resize(static_cast<std::size_t>(k / 32));
  r.sum.resize(static_cast<std::size_t>(k / 32));
  std::uint8_t blk[34];
  for (std::int64_t b = 0; b < k / 32; ++b) {
    quant::q8_0::quantize_block(x + b * 32, blk);
    std::int32_t s = 0;
    for (int j = 0; j < 32; ++j) {
      const auto q = static_cast<std::int8_t>(blk[2 + j]);
      r.q[static_cast<std::size_t>(b * 32 + j)] = q;
      s += q;
    }
    r.d[static_cast<std::size_t>(b)] = quant::detail::load_f16(blk);
    r.sum[static_cast<std::size_t>(b)] = s;
  }
}

/// Rows of W per parallel task of the panel kernels: 64, or all of them (no threads forked) for
/// products under 2^18 multiply-adds, where waking a second thread costs more than it saves.
inline std::int64_t panel_task_rows(std::int64_t m, std::int64_t n, std::int64_t k) {
  return m * n * k < (std::int64_t{1} << 18) ? std::max<std::int64_t>(n, 1) : 64;
}

/// Calls f.template operator()<R>() for the run-time count r in 1..N (r < 1 runs R = 1).
template <int N, class F>
void with_rows(std::int64_t r, F&& f) {
  if constexpr (N > 1) {
    if (r >= N) return f.template operator()<N>();
    return with_rows<N - 1>(r, f);
  } else {
    f.template operator()<1>();
  }
}

/// The loop every 16-row panel kernel shares: threads over 64-row tasks of W's n rows (stored
/// as panels `panel_bytes` apart from `data`), and within a task, for each panel and each group
/// of up to 8 activation rows i0.., tile.template operator()<MR>(panel, i0, y + i0·n + r0,
/// valid rows of the panel).
template <class Tile>
void for_each_panel_tile(std::int64_t m, std::int64_t n, std::int64_t k, const std::uint8_t* data,
                         std::int64_t panel_bytes, float* y, Tile&& tile) {
  parallel_blocks(n, panel_task_rows(m, n, k), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r0 = lo; r0 < hi; r0 += 16) {
      const std::uint8_t* panel = data + (r0 / 16) * panel_bytes;
      const int valid = static_cast<int>(std::min<std::int64_t>(16, hi - r0));
      for (std::int64_t i0 = 0; i0 < m; i0 += 8) {
        float* yo = y + i0 * n + r0;
        with_rows<8>(m - i0, [&]<int MR>() { tile.template operator()<MR>(panel, i0, yo, valid); });
      }
    }
  });
}

/// forge::error unless the tensor holds rows x cols/32 whole Q4_0 blocks.
inline void check_q4_0_blocks(const quant::qtensor<quant::q4_0>& w) {
  require(w.cols % 32 == 0 && w.codes.size() == quant::q4_0::bytes_for(w.rows, w.cols),
          {.what = "Q4_0 block data has the wrong size",
           .place = "qmatmul_q8 q4_0 " + std::to_string(w.rows) + " x " + std::to_string(w.cols),
           .expected = std::to_string(quant::q4_0::bytes_for(w.rows, w.cols)) + " bytes",
           .found = std::to_string(w.codes.size()) + " bytes"});
}

}  // namespace detail

/// Reference: y (m x n) = x Wᵀ for Q4_0 weights with x quantized to Q8_0 (see above); integer
/// block dots exact, the scaled sum in double. Shapes as qmatmul.
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m,
                       const quant::qtensor<quant::q4_0>& w, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  detail::check_q4_0_blocks(w);
  const std::int64_t nb = w.cols / 32;
  detail::q8_0_row a;
  for (std::int64_t i = 0; i < m; ++i) {
    detail::quantize_q8_0_row(x.data() + i * w.cols, w.cols, a);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (std::int64_t b = 0; b < nb; ++b) {
        const auto* blk = w.codes.data() + (r * nb + b) * quant::q4_0::block_bytes;
        std::int64_t dot = 0;
        for (int j = 0; j < 16; ++j) {
          dot += ((blk[2 + j] & 0x0f) - 8) * a.q[static_cast<std::size_t>(b * 32 + j)];
          dot += ((blk[2 + j] >> 4) - 8) * a.q[static_cast<std::size_t>(b * 32 + 16 + j)];
        }
        acc += static_cast<double>(quant::detail::load_f16(blk)) *
               a.d[static_cast<std::size_t>(b)] * static_cast<double>(dot);
      }
      y[static_cast<std::size_t>(i * w.rows + r)] = static_cast<float>(acc);
    }
  }
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {

/// Activation row i prepared for the Q4_0 VNNI kernel: codes, the per-lane start value
/// −8·(sum of the lane's 4 codes), and per-lane scales (lanes 0–7: block 2c, 8–15: 2c + 1).
struct q4_0_act {
  std::vector<std::int8_t> q{};
  std::vector<std::int32_t> bias{};
  std::vector<float> dv{};
};

/// roundf(v) (half away from zero) lane by lane, exactly: the truncation, moved by one
/// towards ±∞ where the dropped fraction is at least one half (v − trunc(v) is exact).
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_maskz_roundscale_ps(all16, v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(v, t);
  const __mmask16 up = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __mmask16 down = _mm512_cmp_ps_mask(f, _mm512_set1_ps(-0.5f), _CMP_LE_OQ);
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_mask_sub_ps(_mm512_mask_add_ps(t, up, t, one), down, t, one);
}

/// Activation row for the Q4_0 kernel: ggml's quantize_row_q8_0_ref, vectorised (the same
/// f32 operations: max |x|, d = amax / 127 and 1/d in scalar f32, x · (1/d) per lane, round
/// half away from zero), then the lane start values and per-lane scales.
inline void prepare_q4_0_act(const float* x, std::int64_t k, q4_0_act& a) {
  a.q.resize(static_cast<std::size_t>(k));
  a.bias.resize(static_cast<std::size_t>(k / 4));
  a.dv.resize(static_cast<std::size_t>(k / 4));
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (std::int64_t b = 0; b < k / 32; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
    const __m512 m =
        _mm512_maskz_max_ps(all16, _mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
    alignas(64) float t[16];
    _mm512_store_ps(t, m);
    float amax = 0.0f;
    for (float e : t) amax = std::max(amax, e);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 idv = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_maskz_cvtps_epi32(all16, round_half_away(_mm512_mul_ps(v0, idv)));
    const __m512i q1 = _mm512_maskz_cvtps_epi32(all16, round_half_away(_mm512_mul_ps(v1, idv)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.q.data() + b * 32),
                     _mm512_maskz_cvtsepi32_epi8(all16, q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.q.data() + b * 32 + 16),
                     _mm512_maskz_cvtsepi32_epi8(all16, q1));
    const float dh = to_f32(to_f16(d));  // the scale as the Q8_0 block stores it
    _mm256_storeu_ps(a.dv.data() + b * 8, _mm256_set1_ps(dh));
  }
  // −8 · (sum of each 4 codes): vpdpbusd of the constant 8 with the codes, negated.
  for (std::int64_t c = 0; c + 64 <= k; c += 64) {
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8),
                                          _mm512_loadu_si512(a.q.data() + c));
    _mm512_storeu_si512(a.bias.data() + c / 4, _mm512_sub_epi32(_mm512_setzero_si512(), s));
  }
  for (std::int64_t l = k / 64 * 16; l < k / 4; ++l) {
    std::int32_t s = 0;
    for (int j = 0; j < 4; ++j) s += a.q[static_cast<std::size_t>(4 * l + j)];
    a.bias[static_cast<std::size_t>(l)] = -8 * s;
  }
}

/// From this many activation rows on, the Q4_0 x Q8_0 product runs as a GEMM on repacked
/// 16-row panels instead of streaming the weights once per 4 rows.
inline constexpr std::int64_t q8_gemm_rows = 8;

/// Rows of W per parallel task: 64, or all of them (no threads forked) for products under 2^18
/// multiply-adds, where waking a second thread costs more than it saves.
inline std::int64_t q8_task_rows(std::int64_t m, std::int64_t n, std::int64_t k) {
  return panel_task_rows(m, n, k);
}

/// Reads of the weight stream are prefetched this many bytes ahead (measured: 5–10% faster
/// decode on one core than the hardware prefetcher alone).
inline constexpr std::int64_t q4_0_prefetch = 1024;

/// Sum of the 16 lanes by halving (a short dependency chain).
inline float hsum_tree(__m512 v) {
  const __m512 h =
      _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(all16, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 q =
      _mm512_add_ps(h, _mm512_maskz_shuffle_f32x4(all16, h, h, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 x = _mm512_maskz_extractf32x4_ps(0xf, q, 0);
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

/// The 64 codes of blocks (blk, blk + 18) as unsigned bytes in the activations' order.
inline __m512i q4_0_codes(const std::uint8_t* blk) {
  // Bytes of block 0 in 128-bit lanes 0 and 1, of block 1 in lanes 2 and 3; lanes 1 and 3
  // are shifted right by 4 so that, masked, the lanes hold low nibbles (elements 0–15) then
  // high nibbles (16–31) of each block: the activations' natural order.
  const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  const __m256i b0 =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
  const __m256i b1 =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 20)));
  return _mm512_and_si512(
      _mm512_maskz_srlv_epi64(
          0xff, _mm512_maskz_inserti64x4(0xff, _mm512_castsi256_si512(b0), b1, 1), shift),
      _mm512_set1_epi8(0x0f));
}

/// The f16 scales of blocks (blk, blk + 18) widened over lanes 0–7 and 8–15.
inline __m512 q4_0_scales(const std::uint8_t* blk) {
  std::uint16_t h0, h1;
  std::memcpy(&h0, blk, 2);
  std::memcpy(&h1, blk + 18, 2);
  return _mm512_maskz_cvtph_ps(
      all16, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(static_cast<short>(h0))),
                                     _mm_set1_epi16(static_cast<short>(h1)), 1));
}

/// The lane sums of four vectors, [Σ a0, Σ a1, Σ a2, Σ a3].
inline __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  // 128-bit lanes: t01 = [a0.0+a0.2, a0.1+a0.3, a1.0+a1.2, a1.1+a1.3], likewise t23; then
  // u = [a0, a1, a2, a3] each reduced to one 128-bit lane, then within the lanes.
  const __m512 t01 =
      _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, a0, a1, _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_maskz_shuffle_f32x4(all16, a0, a1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 t23 =
      _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, a2, a3, _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_maskz_shuffle_f32x4(all16, a2, a3, _MM_SHUFFLE(3, 2, 3, 2)));
  __m512 u = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all16, t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_maskz_shuffle_f32x4(all16, t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
  u = _mm512_add_ps(u, _mm512_maskz_permute_ps(all16, u, _MM_SHUFFLE(2, 3, 0, 1)));
  u = _mm512_add_ps(u, _mm512_maskz_permute_ps(all16, u, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_maskz_extractf32x4_ps(0xf, _mm512_maskz_compress_ps(0x1111, u), 0);
}

/// y[i][j] = Σ_b d_w,b d_i,b (Σ q x_q − 8 Σ x_q) for MR activation rows and NR (1 or 4)
/// consecutive weight rows of nb blocks each (nb even; the caller handles an odd last block).
/// Rows are streamed one after the other (a sequential read; interleaving four rows measured
/// 30% slower), with two accumulators per row (even and odd chunks) for two FMA chains in
/// flight; four rows share one reduction.
template <int MR, int NR>
inline void q4_0_rows(const std::uint8_t* blk, std::int64_t row_bytes, std::int64_t nb,
                      const q4_0_act* const* a, float* y, std::int64_t ystride) {
  __m512 acc[MR][NR];
  for (int j = 0; j < NR; ++j) {
    __m512 part[MR][2];
    for (int i = 0; i < MR; ++i) part[i][0] = part[i][1] = _mm512_setzero_ps();
    const std::uint8_t* row = blk + j * row_bytes;
    auto chunk = [&](std::int64_t c, int u) {
      const __m512i wq = q4_0_codes(row + c * 36);
      const __m512 dw = q4_0_scales(row + c * 36);
      for (int i = 0; i < MR; ++i) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(a[i]->bias.data() + c * 16), wq,
                                                _mm512_loadu_si512(a[i]->q.data() + c * 64));
        part[i][u] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, dot),
                                     _mm512_mul_ps(dw, _mm512_loadu_ps(a[i]->dv.data() + c * 16)),
                                     part[i][u]);
      }
    };
    const std::int64_t chunks = nb / 2;
    std::int64_t c = 0;
    for (; c + 2 <= chunks; c += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(row + c * 36 + q4_0_prefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + c * 36 + q4_0_prefetch + 64), _MM_HINT_T0);
      chunk(c, 0);
      chunk(c + 1, 1);
    }
    if (c < chunks) chunk(c, 0);
    for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_add_ps(part[i][0], part[i][1]);
  }
  for (int i = 0; i < MR; ++i) {
    if constexpr (NR == 4)
      _mm_storeu_ps(y + i * ystride, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
    else
      y[i * ystride] = hsum_tree(acc[i][0]);
  }
}

/// Prefill (GEMM) path. Sixteen weight rows [r0, r0 + 16) repacked for vpdpbusd: for each
/// block b, eight groups of four consecutive codes, each group the 16 rows' 4 bytes side by
/// side (one 64-byte vector: 16 rows x 4 weights), then the rows' 16 scales. Rows past the
/// matrix are zero. 16·k bytes of codes (32 KiB for k = 2048), decoded once per call.
inline void pack_q4_0_panel(const quant::qtensor<quant::q4_0>& w, std::int64_t r0,
                            std::uint8_t* codes, float* scales) {
  const std::int64_t nb = w.cols / 32;
  alignas(32) std::uint8_t un[32];
  for (std::int64_t j = 0; j < 16; ++j) {
    const bool real = r0 + j < w.rows;
    const auto* row = w.codes.data() + (real ? (r0 + j) * nb * quant::q4_0::block_bytes : 0);
    for (std::int64_t b = 0; b < nb; ++b) {
      std::uint8_t* dst = codes + b * 512 + j * 4;
      if (!real) {
        for (int g = 0; g < 8; ++g) std::memset(dst + g * 64, 0, 4);
        scales[b * 16 + j] = 0.0f;
        continue;
      }
      const auto* blk = row + b * quant::q4_0::block_bytes;
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
      const __m128i low4 = _mm_set1_epi8(0x0f);
      _mm_store_si128(reinterpret_cast<__m128i*>(un), _mm_and_si128(v, low4));
      _mm_store_si128(reinterpret_cast<__m128i*>(un + 16),
                      _mm_and_si128(_mm_srli_epi16(v, 4), low4));
      for (int g = 0; g < 8; ++g) std::memcpy(dst + g * 64, un + 4 * g, 4);
      scales[b * 16 + j] = quant::detail::load_f16(blk);
    }
  }
}

/// C[i][0, valid) = Σ_b d_w,b · d_i,b · (Σ q·x_q − 8 Σ x_q) for MR activation rows against one
/// packed 16-row panel: per block, eight vpdpbusd (16 rows x 4 weights x one row's 4
/// activation bytes, broadcast) into an integer accumulator that starts at −8 Σ x_q, then one
/// conversion and FMA with the product of the scales. 8·MR dot instructions per 512·MR MACs.
template <int MR>
inline void q4_0_gemm_tile(const std::uint8_t* codes, const float* scales, std::int64_t nb,
                           const std::int8_t* const* xq, const float* const* dx,
                           const std::int32_t* const* sx, float* c, std::int64_t ldc, int valid) {
  __m512 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (std::int64_t b = 0; b < nb; ++b) {
    __m512i s[MR];
    for (int i = 0; i < MR; ++i) s[i] = _mm512_set1_epi32(sx[i][b]);
    const std::uint8_t* cb = codes + b * 512;
    for (int g = 0; g < 8; ++g) {
      const __m512i wv = _mm512_load_si512(cb + g * 64);
      for (int i = 0; i < MR; ++i) {
        std::int32_t xv;
        std::memcpy(&xv, xq[i] + b * 32 + 4 * g, 4);
        s[i] = _mm512_dpbusd_epi32(s[i], wv, _mm512_set1_epi32(xv));
      }
    }
    const __m512 dw = _mm512_load_ps(scales + b * 16);
    for (int i = 0; i < MR; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, s[i]),
                               _mm512_mul_ps(dw, _mm512_set1_ps(dx[i][b])), acc[i]);
  }
  const auto mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(c + i * ldc, mask, acc[i]);
}

}  // namespace detail::avx512
#endif

/// SIMD: the Q4_0 x Q8_0 product with VNNI integer dot products (64 weights per vpdpbusd);
/// m rows of activations share each weight byte (up to 4 at a time).
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::q4_0>& w, std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    detail::check_qmatmul(x.size(), m, w, y.size());
    detail::check_q4_0_blocks(w);
    const std::int64_t n = w.rows, k = w.cols, nb = k / 32;
    // Reused across calls on the same thread: decode quantizes ~80 small rows per token.
    // (A lambda does not capture a thread_local: the workers below must see this thread's
    // buffers through the reference `acts`.)
    thread_local std::vector<detail::avx512::q4_0_act> act_buf;
    if (act_buf.size() < static_cast<std::size_t>(m)) act_buf.resize(static_cast<std::size_t>(m));
    auto& acts = act_buf;
    for (std::int64_t i = 0; i < m; ++i)
      detail::avx512::prepare_q4_0_act(x.data() + i * k, k, acts[static_cast<std::size_t>(i)]);
    if (m >= detail::avx512::q8_gemm_rows) {
      // Prefill: per row and block, the scale and −8 Σ x_q, then 16-row panels.
      std::vector<float> dxb(static_cast<std::size_t>(m * nb));
      std::vector<std::int32_t> sxb(static_cast<std::size_t>(m * nb));
      std::vector<const std::int8_t*> xq(static_cast<std::size_t>(m));
      std::vector<const float*> dxp(static_cast<std::size_t>(m));
      std::vector<const std::int32_t*> sxp(static_cast<std::size_t>(m));
      for (std::int64_t i = 0; i < m; ++i) {
        const auto& a = acts[static_cast<std::size_t>(i)];
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
      detail::parallel_blocks(
          n, detail::avx512::q8_task_rows(m, n, k), [&](std::int64_t lo, std::int64_t hi) {
            thread_local std::vector<std::uint8_t, xsimd::aligned_allocator<std::uint8_t, 64>>
                codes;
            thread_local std::vector<float, xsimd::aligned_allocator<float, 64>> scales;
            codes.resize(static_cast<std::size_t>(nb * 512));
            scales.resize(static_cast<std::size_t>(nb * 16));
            for (std::int64_t r0 = lo; r0 < hi; r0 += 16) {
              detail::avx512::pack_q4_0_panel(w, r0, codes.data(), scales.data());
              const int valid = static_cast<int>(std::min<std::int64_t>(16, hi - r0));
              for (std::int64_t i0 = 0; i0 < m; i0 += 8) {
                const auto u = static_cast<std::size_t>(i0);
                float* c = y.data() + i0 * n + r0;
                auto tile = [&]<int MR>() {
                  detail::avx512::q4_0_gemm_tile<MR>(codes.data(), scales.data(), nb, xq.data() + u,
                                                     dxp.data() + u, sxp.data() + u, c, n, valid);
                };
                switch (std::min<std::int64_t>(8, m - i0)) {
                  case 8:
                    tile.template operator()<8>();
                    break;
                  case 7:
                    tile.template operator()<7>();
                    break;
                  case 6:
                    tile.template operator()<6>();
                    break;
                  case 5:
                    tile.template operator()<5>();
                    break;
                  case 4:
                    tile.template operator()<4>();
                    break;
                  case 3:
                    tile.template operator()<3>();
                    break;
                  case 2:
                    tile.template operator()<2>();
                    break;
                  default:
                    tile.template operator()<1>();
                    break;
                }
              }
            }
          });
      return;
    }
    const std::int64_t tail = nb % 2;  // an odd last block: scalar, the same integer arithmetic
    const std::int64_t row_bytes = nb * quant::q4_0::block_bytes;
    detail::parallel_blocks(
        n, detail::avx512::q8_task_rows(m, n, k), [&](std::int64_t lo, std::int64_t hi) {
          const detail::avx512::q4_0_act* ap[4];
          for (std::int64_t i0 = 0; i0 < m; i0 += 4) {
            const std::int64_t mr = std::min<std::int64_t>(4, m - i0);
            for (std::int64_t i = 0; i < mr; ++i) ap[i] = &acts[static_cast<std::size_t>(i0 + i)];
            auto rows = [&]<int NR>(std::int64_t r) {
              const auto* blk = w.codes.data() + r * row_bytes;
              float* yi = y.data() + i0 * n + r;
              switch (mr) {
                case 4:
                  detail::avx512::q4_0_rows<4, NR>(blk, row_bytes, nb - tail, ap, yi, n);
                  break;
                case 3:
                  detail::avx512::q4_0_rows<3, NR>(blk, row_bytes, nb - tail, ap, yi, n);
                  break;
                case 2:
                  detail::avx512::q4_0_rows<2, NR>(blk, row_bytes, nb - tail, ap, yi, n);
                  break;
                default:
                  detail::avx512::q4_0_rows<1, NR>(blk, row_bytes, nb - tail, ap, yi, n);
                  break;
              }
              if (tail)
                for (int j = 0; j < NR; ++j)
                  for (std::int64_t i = 0; i < mr; ++i) {
                    const auto* b = blk + j * row_bytes + (nb - 1) * quant::q4_0::block_bytes;
                    const auto* xq = ap[i]->q.data() + (nb - 1) * 32;
                    std::int32_t dot = 0;
                    for (int e = 0; e < 16; ++e)
                      dot += ((b[2 + e] & 0x0f) - 8) * xq[e] + ((b[2 + e] >> 4) - 8) * xq[16 + e];
                    yi[i * n + j] += quant::detail::load_f16(b) *
                                     ap[i]->dv[static_cast<std::size_t>((nb - 1) * 8)] *
                                     static_cast<float>(dot);
                  }
            };
            std::int64_t r = lo;
            for (; r + 4 <= hi; r += 4) rows.template operator()<4>(r);
            for (; r < hi; ++r) rows.template operator()<1>(r);
          }
        });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, w, y);
}

}  // namespace forge::backend

// ---------------------------------------------------------------------------------------------
// GGUF Q4_K weights with activations quantized to int8 per 32 values (the Q8_0 rule above; a
// Q4_K sub-block is 32 values, so each sub-block meets one activation block):
//   y = Σ_sub (d·sc)·d_x·Σ_l q_l·x_q,l − (dmin·m)·d_x·Σ_l x_q,l
// with d·sc and dmin·m the f32 products the dequantization uses. The two sub-blocks of a
// 32-byte code group (low nibbles: sub-block 2t, high: 2t + 1) are already in activation order,
// so one masked/shifted 64-byte vector meets 64 activation bytes in one vpdpbusd.
// ---------------------------------------------------------------------------------------------

namespace forge::backend {

namespace detail {
/// d·sc_j and dmin·m_j of the 8 sub-blocks of one Q4_K block.
inline void q4_k_scales(const std::uint8_t* blk, float* dsc, float* dmn) {
  const float d = quant::detail::load_f16(blk), dmin = quant::detail::load_f16(blk + 2);
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, mn;
    quant::detail::scale_min_k4(j, blk + 4, sc, mn);
    dsc[j] = d * float(sc);
    dmn[j] = dmin * float(mn);
  }
}
}  // namespace detail

/// Reference: y (m x n) = x Wᵀ for Q4_K weights with x quantized to int8 per 32 values;
/// integer sub-block dots exact, the scaled sum in double.
inline void qmatmul_q8(scalar, std::span<const float> x, std::int64_t m,
                       const quant::qtensor<quant::q4_k>& w, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  quant::q4_k::check_blocks(w);
  const std::int64_t nb = w.cols / 256;
  detail::q8_0_row a;
  float dsc[8], dmn[8];
  for (std::int64_t i = 0; i < m; ++i) {
    detail::quantize_q8_0_row(x.data() + i * w.cols, w.cols, a);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (std::int64_t b = 0; b < nb; ++b) {
        const auto* blk = w.codes.data() + (r * nb + b) * quant::q4_k::block_bytes;
        detail::q4_k_scales(blk, dsc, dmn);
        for (int j = 0; j < 8; ++j) {
          const auto* qs = blk + 16 + 32 * (j / 2);
          const auto s = static_cast<std::size_t>(b * 8 + j);
          std::int64_t dot = 0;
          for (int l = 0; l < 32; ++l)
            dot += (j % 2 ? qs[l] >> 4 : qs[l] & 0xF) * a.q[s * 32 + static_cast<std::size_t>(l)];
          acc += double(dsc[j]) * a.d[s] * double(dot) - double(dmn[j]) * a.d[s] * a.sum[s];
        }
      }
      y[static_cast<std::size_t>(i * w.rows + r)] = static_cast<float>(acc);
    }
  }
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
namespace detail::avx512 {
/// y_i for MR activation rows and one Q4_K weight row of nb blocks; c8_i[s] = d_x,s·Σx_q,s.
template <int MR>
inline void q4_k_row(const std::uint8_t* row, std::int64_t nb, const q4_0_act* const* a,
                     const float* const* c8, float* y, std::int64_t ystride) {
  __m512 acc[MR];
  __m256 macc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps(), macc[i] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  alignas(32) float dsc[8], dmn[8];
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::uint8_t* blk = row + b * quant::q4_k::block_bytes;
    _mm_prefetch(reinterpret_cast<const char*>(blk + 4 * 144), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(blk + 4 * 144 + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(blk + 4 * 144 + 128), _MM_HINT_T0);
    q4_k_scales(blk, dsc, dmn);
    const __m256 vmn = _mm256_load_ps(dmn);
    for (int i = 0; i < MR; ++i)
      macc[i] = _mm256_fmadd_ps(vmn, _mm256_loadu_ps(c8[i] + b * 8), macc[i]);
    for (int t = 0; t < 4; ++t) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * t));
      const __m512i wq =
          _mm512_maskz_inserti64x4(0xff, _mm512_castsi256_si512(_mm256_and_si256(v, low4)),
                                   _mm256_and_si256(_mm256_srli_epi16(v, 4), low4), 1);
      const __m512 sv =
          _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(dsc[2 * t]), _mm512_set1_ps(dsc[2 * t + 1]));
      const std::int64_t off = b * 256 + 64 * t;
      for (int i = 0; i < MR; ++i) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq,
                                                _mm512_loadu_si512(a[i]->q.data() + off));
        acc[i] =
            _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, dot),
                            _mm512_mul_ps(sv, _mm512_loadu_ps(a[i]->dv.data() + off / 4)), acc[i]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    alignas(32) float t[8];
    _mm256_store_ps(t, macc[i]);
    float mins = 0;
    for (float e : t) mins += e;
    y[i * ystride] = hsum_tree(acc[i]) - mins;
  }
}
}  // namespace detail::avx512
#endif

/// SIMD: decode-sized Q4_K products (fewer than 8 activation rows) with VNNI integer dots,
/// 4 activation rows per weight pass; 8 rows or more (prefill) take qmatmul's tiled f32 path.
template <class Arch>
void qmatmul_q8(simd<Arch>, std::span<const float> x, std::int64_t m,
                const quant::qtensor<quant::q4_k>& w, std::span<float> y) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (detail::is_avx512_v<Arch>) {
    detail::check_qmatmul(x.size(), m, w, y.size());
    quant::q4_k::check_blocks(w);
    if (m >= detail::avx512::q8_gemm_rows) return qmatmul(simd<Arch>{}, x, m, w, y);
    const std::int64_t n = w.rows, k = w.cols, nb = k / 256;
    std::vector<detail::avx512::q4_0_act> acts(static_cast<std::size_t>(m));
    std::vector<std::vector<float>> c8(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      auto& a = acts[static_cast<std::size_t>(i)];
      detail::avx512::prepare_q4_0_act(x.data() + i * k, k, a);
      auto& c = c8[static_cast<std::size_t>(i)];
      c.resize(static_cast<std::size_t>(k / 32));
      for (std::int64_t s = 0; s < k / 32; ++s) {
        std::int32_t t = 0;  // bias lanes hold −8·(sum of 4 codes)
        for (int l = 0; l < 8; ++l) t += a.bias[static_cast<std::size_t>(s * 8 + l)];
        c[static_cast<std::size_t>(s)] = a.dv[static_cast<std::size_t>(s * 8)] * float(-t / 8);
      }
    }
    const std::int64_t row_bytes = nb * quant::q4_k::block_bytes;
    detail::parallel_blocks(n, detail::avx512::q8_task_rows(m, n, k),
                            [&](std::int64_t lo, std::int64_t hi) {
                              const detail::avx512::q4_0_act* ap[4];
                              const float* cp[4];
                              for (std::int64_t i0 = 0; i0 < m; i0 += 4) {
                                const std::int64_t mr = std::min<std::int64_t>(4, m - i0);
                                for (std::int64_t i = 0; i < mr; ++i) {
                                  ap[i] = &acts[static_cast<std::size_t>(i0 + i)];
                                  cp[i] = c8[static_cast<std::size_t>(i0 + i)].data();
                                }
                                for (std::int64_t r = lo; r < hi; ++r) {
                                  const auto* row = w.codes.data() + r * row_bytes;
                                  float* yi = y.data() + i0 * n + r;
                                  switch (mr) {
                                    case 4:
                                      detail::avx512::q4_k_row<4>(row, nb, ap, cp, yi, n);
                                      break;
                                    case 3:
                                      detail::avx512::q4_k_row<3>(row, nb, ap, cp, yi, n);
                                      break;
                                    case 2:
                                      detail::avx512::q4_k_row<2>(row, nb, ap, cp, yi, n);
                                      break;
                                    default:
                                      detail::avx512::q4_k_row<1>(row, nb, ap, cp, yi, n);
                                      break;
                                  }
                                }
                              }
                            });
    return;
  }
#endif
  qmatmul_q8(scalar{}, x, m, w, y);
}

}  // namespace forge::backend
