#pragma once
// AVX-512 kernels for quantized products with f32 activations. Each weight byte is read once
// and decoded in registers: two 4-bit codes per byte index a 16-entry f32 table
// (vpermps) holding the group's dequantized levels, s * (c - z) for int4 or code_c * absmax
// for NF4, so one permute yields 16 dequantized weights that go straight into an FMA. int8
// codes are widened (vpmovsxbd) and converted. Used by backend::simd<Arch> when Arch is an
// AVX-512 architecture; the scalar backend is the reference they are tested against.

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

#include "forge/backend/qmatmul_decode.hpp"

namespace forge::backend::detail::avx512 {

/// Reorders x for nibble-pair kernels: in each chunk of 32, the 16 even-indexed values then
/// the 16 odd-indexed ones (bytes hold the pairs (2j, 2j+1)). `perm` (may be null) gathers
/// x[perm[k]] first, for act-order int4.
inline void deinterleave(const float* x, std::int64_t k, const std::int32_t* perm, float* xd) {
  for (std::int64_t c = 0; c < k; c += 32)
    for (int j = 0; j < 16; ++j) {
      const auto e = c + 2 * j, o = e + 1;
      xd[c + j] = perm ? x[perm[e]] : x[e];
      xd[c + 16 + j] = perm ? x[perm[o]] : x[o];
    }
}

// GCC 12's unmasked forms of these intrinsics pass an _mm512_undefined_*() operand that
// -Wmaybe-uninitialized flags once inlined; the zero-masked forms with a full mask are the
// same instructions without it.
constexpr __mmask16 all16 = 0xffff;
inline __m512i widen_u8(const std::uint8_t* p) {
  return _mm512_maskz_cvtepu8_epi32(all16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m512 widen_s8_ps(__m128i b) {
  return _mm512_maskz_cvtepi32_ps(all16, _mm512_maskz_cvtepi8_epi32(all16, b));
}
inline __m512 table(__m512i idx, __m512 lut) {
  return _mm512_maskz_permutexvar_ps(all16, idx, lut);
}

inline float hsum(__m512 v) {
  // Through memory: GCC 12's in-register reductions use _mm*_undefined_* and trip
  // -Wuninitialized; this runs once per output, not in the inner loop.
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float s = 0.0f;
  for (float e : t) s += e;
  return s;
}

/// y[i] = sum_k W[r, k] xd_i[k] for MR activation rows (deinterleaved, stride ld) and one
/// nibble-packed weight row. `lut_of(g)` returns the 16-level table of group g (G weights);
/// LowEven: the low nibble holds the even column (int4) or the odd one (NF4).
template <int MR, int G, bool LowEven, class Lut>
inline void nibble_row(const std::uint8_t* codes, std::int64_t k, const float* xd, std::int64_t ld,
                       Lut&& lut_of, float* y, std::int64_t ystride) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi32(0x0f);
  for (std::int64_t g = 0; g < k / G; ++g) {
    const __m512 lut = lut_of(g);
    for (int c = 0; c < G; c += 32) {
      const std::int64_t kk = g * G + c;
      const __m512i v = widen_u8(codes + kk / 2);
      const __m512 wlo = table(_mm512_and_si512(v, mask), lut);
      const __m512 whi = table(_mm512_maskz_srli_epi32(all16, v, 4), lut);
      const __m512 we = LowEven ? wlo : whi, wo = LowEven ? whi : wlo;
      for (int i = 0; i < MR; ++i) {
        acc[i][0] = _mm512_fmadd_ps(we, _mm512_loadu_ps(xd + i * ld + kk), acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xd + i * ld + kk + 16), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) y[i * ystride] = hsum(_mm512_add_ps(acc[i][0], acc[i][1]));
}

/// The same for int8 codes (x in natural order, any k; the tail is scalar).
template <int MR>
inline void int8_row(const std::uint8_t* codes, float s, std::int64_t k, const float* x,
                     std::int64_t ld, float* y, std::int64_t ystride) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  std::int64_t kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + kk));
    const __m512 w0 = widen_s8_ps(_mm256_castsi256_si128(b));
    const __m512 w1 = widen_s8_ps(_mm256_extracti128_si256(b, 1));
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * ld + kk), acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i * ld + kk + 16), acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float t = 0.0f;
    for (std::int64_t j = kk; j < k; ++j)
      t += static_cast<float>(static_cast<std::int8_t>(codes[j])) * x[i * ld + j];
    y[i * ystride] = s * (hsum(_mm512_add_ps(acc[i][0], acc[i][1])) + t);
  }
}

}  // namespace forge::backend::detail::avx512
#endif
