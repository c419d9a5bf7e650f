#pragma once
// The prefill/training path of the quantized products: C (m x n) (+)= A (m x k) · Bᵀ where B
// (n x k) is produced tile by tile by a decoder (quantized weights decoded into f32), so the
// weights are never expanded whole. The register-blocked micro-kernel (6 rows of A by two
// vectors of B columns, 12 accumulators; Goto & van de Geijn's GEBP layout) is written once
// over xsimd batches, so simd<avx512bw> and simd<avx2> instantiate the same code.
//
// Tiling: each task owns 64 output columns (rows of B); for each K block of 256 it decodes a
// 64 x 256 f32 tile (64 KiB, L2), packs it into panels of 2 vectors width (k-major) and sweeps
// all rows of A through the micro-kernel, the 6 x 256 A block staying in L1.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "forge/core/parallel.hpp"

namespace forge::backend::detail {

/// C[mr x nr_valid] (+)= A[mr x kc] (row stride lda) · panel (kc x NR, k-major), MR <= 6.
template <class Arch, int MR>
inline void micro_kernel(const float* a, std::int64_t lda, const float* panel, std::int64_t kc,
                         float* c, std::int64_t ldc, int nr_valid, bool accumulate) {
  using batch = xsimd::batch<float, Arch>;
  constexpr int L = static_cast<int>(batch::size), NR = 2 * L;
  batch acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = batch(0.0f);
  for (std::int64_t k = 0; k < kc; ++k) {
    const batch b0 = batch::load_aligned(panel + k * NR);
    const batch b1 = batch::load_aligned(panel + k * NR + L);
    for (int i = 0; i < MR; ++i) {
      const batch ai(a[i * lda + k]);
      acc[i][0] = xsimd::fma(ai, b0, acc[i][0]);
      acc[i][1] = xsimd::fma(ai, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (nr_valid == NR) {
      if (accumulate) {
        (acc[i][0] + batch::load_unaligned(ci)).store_unaligned(ci);
        (acc[i][1] + batch::load_unaligned(ci + L)).store_unaligned(ci + L);
      } else {
        acc[i][0].store_unaligned(ci);
        acc[i][1].store_unaligned(ci + L);
      }
    } else {
      alignas(64) float t[NR];
      acc[i][0].store_aligned(t);
      acc[i][1].store_aligned(t + L);
      for (int j = 0; j < nr_valid; ++j) ci[j] = accumulate ? ci[j] + t[j] : t[j];
    }
  }
}

/// C (m x n, row stride ldc) = A (m x k, row stride lda) · Bᵀ, with B delivered by
/// decode_rows(r0, rows, k0, k1, out): rows r0..r0+rows of B, columns [k0, k1), written
/// row-major into out with row stride (k1 - k0) rounded up to `kc`. `step` is the decoder's K
/// granularity. Tasks over 64-column blocks of C run on OpenMP threads.
/// `done(n0, n1)` is called once columns [n0, n1) of C are final (a fused epilogue).
struct no_epilogue {
  void operator()(std::int64_t, std::int64_t) const {}
};

template <class Arch, class Decode, class Done = no_epilogue>
void tiled_gemm(const float* a, std::int64_t m, std::int64_t lda, std::int64_t n, std::int64_t k,
                std::int64_t step, Decode&& decode_rows, float* c, std::int64_t ldc,
                Done&& done = {}) {
  using batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t L = batch::size, NR = 2 * L, MR = 6, NT = 64;
  static_assert(NT % NR == 0, "the column tile must hold whole panels");
  const std::int64_t kc = std::max<std::int64_t>(step, 256 / step * step);
  const std::int64_t tiles = (n + NT - 1) / NT;
  parallel_for(0, tiles, [&](std::ptrdiff_t tile) {
    std::vector<float> rows_buf(static_cast<std::size_t>(NT * kc));
    std::vector<float, xsimd::aligned_allocator<float, 64>> panel(
        static_cast<std::size_t>(NT * kc));
    const std::int64_t n0 = tile * NT, nt = std::min(NT, n - n0);
    for (std::int64_t k0 = 0; k0 < k; k0 += kc) {
      const std::int64_t k1 = std::min(k, k0 + kc), len = k1 - k0;
      decode_rows(n0, nt, k0, k1, rows_buf.data(), kc);
      // Pack: panel p holds B rows n0 + p*NR .. +NR as k-major vectors (zero-padded).
      const std::int64_t panels = (nt + NR - 1) / NR;
      for (std::int64_t p = 0; p < panels; ++p) {
        float* dst = panel.data() + p * kc * NR;
        for (std::int64_t kk = 0; kk < len; ++kk)
          for (std::int64_t j = 0; j < NR; ++j) {
            const std::int64_t r = p * NR + j;
            dst[kk * NR + j] = r < nt ? rows_buf[static_cast<std::size_t>(r * kc + kk)] : 0.0f;
          }
      }
      for (std::int64_t i0 = 0; i0 < m; i0 += MR) {
        const std::int64_t mr = std::min(MR, m - i0);
        for (std::int64_t p = 0; p < panels; ++p) {
          const float* ap = a + i0 * lda + k0;
          const float* bp = panel.data() + p * kc * NR;
          float* cp = c + i0 * ldc + n0 + p * NR;
          const int valid = static_cast<int>(std::min(NR, nt - p * NR));
          const bool acc = k0 > 0;
          switch (mr) {
            case 6:
              micro_kernel<Arch, 6>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
            case 5:
              micro_kernel<Arch, 5>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
            case 4:
              micro_kernel<Arch, 4>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
            case 3:
              micro_kernel<Arch, 3>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
            case 2:
              micro_kernel<Arch, 2>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
            default:
              micro_kernel<Arch, 1>(ap, lda, bp, len, cp, ldc, valid, acc);
              break;
          }
        }
      }
    }
    done(n0, n0 + nt);
  });
}

}  // namespace forge::backend::detail
