#pragma once
// Quantized matrix products: y = x · Wᵀ with W (n x k, out x in) held in a quantization
// format and x (m x k) in f32; y is m x n, all row-major.
//
//   backend::scalar     the reference: each weight row dequantized, dot products in double.
//   backend::simd<Arch> m < 16 (decode, matvec): every weight byte read once, decoded in
//                       registers and used for all m activation rows (AVX-512: vpermps table
//                       decode; other architectures: decode 512 weights into an L1 tile, then
//                       xsimd FMAs). m >= 16 (prefill, training): rows of W decoded into
//                       64 x 256 f32 tiles (64 KiB, L2-resident) fed to a register-blocked
//                       micro-kernel (qmatmul_gemm.hpp); the weights are never expanded whole.
// Rows of W are split across OpenMP threads. Results differ from the reference only by f32
// summation order (tests state the tolerance).

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "forge/backend/backend.hpp"
#include "forge/backend/qmatmul_avx512.hpp"
#include "forge/backend/qmatmul_decode.hpp"
#include "forge/backend/qmatmul_gemm.hpp"
#include "forge/core/error.hpp"
#include "forge/core/parallel.hpp"

namespace forge::backend {

namespace detail {

template <class F>
void check_qmatmul(std::size_t xs, std::int64_t m, const quant::qtensor<F>& w, std::size_t ys) {
  require(m >= 0 && xs == static_cast<std::size_t>(m * w.cols),
          {.what = "activation size disagrees with the weight's input features",
           .place = std::string("qmatmul ") + F::name,
           .expected = std::to_string(m) + " x " + std::to_string(w.cols) + " values",
           .found = std::to_string(xs)});
  require(ys == static_cast<std::size_t>(m * w.rows),
          {.what = "output size disagrees with the weight's output features",
           .place = std::string("qmatmul ") + F::name,
           .expected = std::to_string(m) + " x " + std::to_string(w.rows) + " values",
           .found = std::to_string(ys)});
}

template <class Arch>
inline constexpr bool is_avx512_v = std::is_base_of_v<xsimd::avx512f, Arch>;

/// x with its columns gathered into stored order (x[:, perm[k]]), or x itself.
template <class F>
std::span<const float> gather_columns(std::span<const float> x, std::int64_t m,
                                      const quant::qtensor<F>& w, std::vector<float>& buf) {
  if (w.perm.empty()) return x;
  buf.resize(x.size());
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t k = 0; k < w.cols; ++k)
      buf[static_cast<std::size_t>(i * w.cols + k)] =
          x[static_cast<std::size_t>(i * w.cols + w.perm[static_cast<std::size_t>(k)])];
  return buf;
}

/// Prefill path: W decoded into f32 tiles multiplied by the register-blocked micro-kernel.
template <class Arch, class F, class Done = no_epilogue>
void qgemm_tiled(std::span<const float> xs, std::int64_t m, const quant::qtensor<F>& w,
                 std::span<float> y, Done&& done = {}) {
  std::vector<float> xbuf;
  const auto x = gather_columns(xs, m, w, xbuf);
  tiled_gemm<Arch>(
      x.data(), m, w.cols, w.rows, w.cols, decode_step<F>(),
      [&](std::int64_t r0, std::int64_t rows, std::int64_t k0, std::int64_t k1, float* out,
          std::int64_t ld) {
        for (std::int64_t r = 0; r < rows; ++r) decode(w, r0 + r, k0, k1, out + r * ld);
      },
      y.data(), w.rows, done);
}

/// Decode path for architectures without a register decoder: 512-weight L1 tiles + xsimd.
template <class Arch, class F, class Done = no_epilogue>
void qgemv_generic(std::span<const float> xs, std::int64_t m, const quant::qtensor<F>& w,
                   std::span<float> y, Done&& done = {}) {
  using batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t lanes = batch::size;
  const std::int64_t step = decode_step<F>();
  const std::int64_t kc = std::max<std::int64_t>(step, 512 / step * step);
  std::vector<float> xbuf;
  const auto x = gather_columns(xs, m, w, xbuf);
  const std::int64_t n = w.rows, k = w.cols;
  parallel_blocks(n, 64, [&](std::int64_t lo, std::int64_t hi) {
    alignas(64) float t[512 + 128];
    std::vector<float> acc(static_cast<std::size_t>(m));
    for (std::int64_t r = lo; r < hi; ++r) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t k0 = 0; k0 < k; k0 += kc) {
        const std::int64_t k1 = std::min(k, k0 + kc), len = k1 - k0;
        decode(w, r, k0, k1, t);
        for (std::int64_t i = 0; i < m; ++i) {
          const float* xi = x.data() + i * k + k0;
          batch a(0.0f);
          std::int64_t j = 0;
          for (; j + lanes <= len; j += lanes)
            a = xsimd::fma(batch::load_aligned(t + j), batch::load_unaligned(xi + j), a);
          float s = xsimd::hadd(a);
          for (; j < len; ++j) s += t[j] * xi[j];
          acc[static_cast<std::size_t>(i)] += s;
        }
      }
      for (std::int64_t i = 0; i < m; ++i)
        y[static_cast<std::size_t>(i * n + r)] = acc[static_cast<std::size_t>(i)];
    }
    done(lo, hi);
  });
}

#if defined(__AVX512F__)
/// Decode path with AVX-512 register decoding (see qmatmul_avx512.hpp), up to 4 x rows at once.
template <class F, class Done = no_epilogue>
void qgemv_avx512(std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
                  std::span<float> y, Done&& done = {}) {
  const std::int64_t n = w.rows, k = w.cols;
  std::vector<float> xd;
  const float* xp = x.data();
  if constexpr (is_int4_v<F> || is_nf4_v<F>) {  // nibble layouts read x deinterleaved
    xd.resize(x.size());
    for (std::int64_t i = 0; i < m; ++i)
      avx512::deinterleave(x.data() + i * k, k, w.perm.empty() ? nullptr : w.perm.data(),
                           xd.data() + i * k);
    xp = xd.data();
  }
  auto rows = [&]<int MR>(std::int64_t r, std::int64_t i0) {
    const float* xi = xp + i0 * k;
    float* yi = y.data() + i0 * n + r;
    if constexpr (std::is_same_v<F, quant::int8_channel>) {
      avx512::int8_row<MR>(w.codes.data() + r * k, w.scales[static_cast<std::size_t>(r)], k, xi, k,
                           yi, n);
    } else if constexpr (std::is_same_v<F, quant::q8_0>) {
      // GGUF Q8_0 blocks (f16 scale, 32 int8 codes): widen 16 codes at a time, scale, FMA.
      const std::uint8_t* src = w.codes.data() + r * (k / 32) * quant::q8_0::block_bytes;
      __m512 acc[MR];
      for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
      for (std::int64_t b = 0; b < k / 32; ++b, src += quant::q8_0::block_bytes) {
        const __m512 d = _mm512_set1_ps(quant::detail::load_f16(src));
        const __m512 w0 = _mm512_mul_ps(
            avx512::widen_s8_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2))), d);
        const __m512 w1 = _mm512_mul_ps(
            avx512::widen_s8_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 18))), d);
        for (int i = 0; i < MR; ++i) {
          acc[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xi + i * k + 32 * b), acc[i]);
          acc[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xi + i * k + 32 * b + 16), acc[i]);
        }
      }
      for (int i = 0; i < MR; ++i) yi[i * n] = avx512::hsum(acc[i]);
    } else if constexpr (is_int4_v<F>) {
      constexpr int G = F::group_size;
      const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      avx512::nibble_row<MR, G, true>(
          w.codes.data() + r * k / 2, k, xi, k,
          [&](std::int64_t g) {
            const auto p = F::group(w, r, g);
            return _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(p.zero)),
                                 _mm512_set1_ps(p.scale));
          },
          yi, n);
    } else {
      const __m512 code = _mm512_loadu_ps(quant::nf4_code.data());
      avx512::nibble_row<MR, 64, false>(
          w.codes.data() + r * k / 2, k, xi, k,
          [&](std::int64_t g) {
            const auto b = static_cast<std::size_t>((r * k) / 64 + g);
            return _mm512_mul_ps(code, _mm512_set1_ps(F::block_absmax(w, b)));
          },
          yi, n);
    }
  };
  parallel_blocks(n, 64, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) {
      std::int64_t i = 0;
      for (; i + 4 <= m; i += 4) rows.template operator()<4>(r, i);
      switch (m - i) {
        case 3:
          rows.template operator()<3>(r, i);
          break;
        case 2:
          rows.template operator()<2>(r, i);
          break;
        case 1:
          rows.template operator()<1>(r, i);
          break;
        default:
          break;
      }
    }
    done(lo, hi);
  });
}
#endif

}  // namespace detail

/// Reference: y (m x n) = x (m x k) · Wᵀ, each weight row dequantized in input order and each
/// dot product summed in double. Shapes: x m*k, y m*n values, row-major.
template <quant::QuantFormat F>
void qmatmul(scalar, std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
             std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  std::vector<float> row(static_cast<std::size_t>(w.cols));
  for (std::int64_t r = 0; r < w.rows; ++r) {
    F::dequantize_row(w, r, row);
    for (std::int64_t i = 0; i < m; ++i) {
      double s = 0.0;
      for (std::int64_t k = 0; k < w.cols; ++k)
        s += static_cast<double>(row[static_cast<std::size_t>(k)]) *
             x[static_cast<std::size_t>(i * w.cols + k)];
      y[static_cast<std::size_t>(i * w.rows + r)] = static_cast<float>(s);
    }
  }
}

namespace detail {
/// The SIMD product with an epilogue done(n0, n1), called on the worker thread once output
/// columns [n0, n1) are final (used to fuse LoRA's B·u into the same pass).
template <class Arch, class F, class Done>
void qmatmul_fused(std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
                   std::span<float> y, Done&& done) {
  if (m >= 16) return qgemm_tiled<Arch>(x, m, w, y, done);
  if constexpr (is_avx512_v<Arch>) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<F, quant::int8_channel> || std::is_same_v<F, quant::q8_0> ||
                  is_int4_v<F> || is_nf4_v<F>)
      return qgemv_avx512(x, m, w, y, done);
#else
    static_assert(!detail::is_avx512_v<Arch>,
                  "simd<avx512...> needs a compiler targeting AVX-512 (-mavx512f or "
                  "-march=native on an AVX-512 machine); use simd<xsimd::avx2> otherwise");
#endif
  }
  qgemv_generic<Arch>(x, m, w, y, done);
}
}  // namespace detail

/// SIMD: y (m x n) = x (m x k) · Wᵀ (see the header comment for the two paths).
template <class Arch, quant::QuantFormat F>
void qmatmul(simd<Arch>, std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
             std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  detail::qmatmul_fused<Arch>(x, m, w, y, detail::no_epilogue{});
}

/// y (n) = W · x (k): the matrix-vector product of decoding (m = 1).
template <Backend B, quant::QuantFormat F>
void qmatvec(B b, std::span<const float> x, const quant::qtensor<F>& w, std::span<float> y) {
  qmatmul(b, x, 1, w, y);
}

}  // namespace forge::backend
