#pragma once
// GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2023, "GPTQ: Accurate Post-Training Quantization
// for Generative Pre-trained Transformers", Algorithm 1), as in IST-DASLab/gptq's fasterquant:
//
//   dead inputs (H_ii = 0): H_ii = 1, W[:, i] = 0
//   act-order (optional): columns in order of descending H_ii
//   H += percdamp * mean(diag H) * I;   U = upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU)
//   for each block of B columns, for each column i in it:
//       (at a group start) scale/zero of the group from the current, updated weights
//       q = quant(w_i);  e = (w_i - q) / U_ii;  w_j -= e U_ij for the block's j > i
//   after the block: W[:, later] -= E · U[block, later]      (lazy batch update)
//
// Differences from the reference, on purpose: group constants are taken from the fully
// updated weights at the group's first column (the reference reads the matrix without the
// current block's updates, so its groups inside a block see stale weights and the result
// depends on B); the quantizer is this library's int4_group (f16-exact scales). With
// act-order and static groups, groups follow the original column index (the reference's
// static_groups); with act-order alone they follow the quantization order and the tensor
// keeps the permutation (g_idx on export).

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "forge/quant/hessian.hpp"
#include "forge/quant/int4.hpp"

namespace forge::quant {

/// GPTQ hyperparameters; defaults are the reference tool's (GPTQModel / AutoGPTQ).
struct gptq_params {
  double percdamp = 0.01;         ///< damping, as a fraction of the mean diagonal of H
  bool act_order = false;         ///< quantize columns in order of descending H_ii (desc_act)
  bool static_groups = false;     ///< group constants from the original weights, by column index
  std::int64_t block_size = 128;  ///< columns per lazy-update block (a multiple of the group)
};

namespace detail {

/// In-place lower Cholesky factor of the n x n symmetric matrix a (row-major); false when a
/// is not positive definite.
inline bool cholesky_lower(std::vector<double>& a, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) {
    double* aj = a.data() + j * n;
    double d = aj[j];
    for (std::int64_t k = 0; k < j; ++k) d -= aj[k] * aj[k];
    if (!(d > 0.0)) return false;
    d = std::sqrt(d);
    aj[j] = d;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double* ai = a.data() + i * n;
      double s = ai[j];
      for (std::int64_t k = 0; k < j; ++k) s -= ai[k] * aj[k];
      ai[j] = s / d;
    }
    for (std::int64_t k = j + 1; k < n; ++k) aj[k] = 0.0;
  }
  return true;
}

/// U (upper, row-major) with H⁻¹ = Uᵀ U, from H (n x n): L = chol(H), H⁻¹ = L⁻ᵀ L⁻¹, and U
/// the transposed lower Cholesky factor of H⁻¹ — the reference's cholesky, cholesky_inverse,
/// cholesky(upper=True) sequence.
inline std::vector<double> inverse_cholesky_upper(std::vector<double> h, std::int64_t n) {
  auto fail = [] {
    throw error({.what = "GPTQ Hessian is not positive definite after damping",
                 .place = "quantize_gptq",
                 .expected = "a positive definite H (increase percdamp or add calibration data)"});
  };
  if (!cholesky_lower(h, n)) fail();
  // Linv = L⁻¹ by forward substitution, column by column (lower triangular).
  std::vector<double> li(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t j = 0; j < n; ++j) {
    li[static_cast<std::size_t>(j * n + j)] = 1.0 / h[static_cast<std::size_t>(j * n + j)];
    for (std::int64_t i = j + 1; i < n; ++i) {
      double s = 0.0;
      for (std::int64_t k = j; k < i; ++k)
        s += h[static_cast<std::size_t>(i * n + k)] * li[static_cast<std::size_t>(k * n + j)];
      li[static_cast<std::size_t>(i * n + j)] = -s / h[static_cast<std::size_t>(i * n + i)];
    }
  }
  // H⁻¹ = Linvᵀ Linv: (i, j) = Σ_{k >= max(i,j)} Linv[k][i] Linv[k][j].
  std::vector<double> inv(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t k = 0; k < n; ++k) {
    const double* lk = li.data() + k * n;
    for (std::int64_t i = 0; i <= k; ++i) {
      const double v = lk[i];
      if (v == 0.0) continue;
      double* row = inv.data() + i * n;
      for (std::int64_t j = 0; j <= i; ++j) row[j] += v * lk[j];
    }
  }
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < i; ++j)
      inv[static_cast<std::size_t>(j * n + i)] = inv[static_cast<std::size_t>(i * n + j)];
  if (!cholesky_lower(inv, n)) fail();
  // U = Lᵀ of H⁻¹.
  std::vector<double> u(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j <= i; ++j)
      u[static_cast<std::size_t>(j * n + i)] = inv[static_cast<std::size_t>(i * n + j)];
  return u;
}

template <class F>
inline constexpr bool is_int4_group_v = false;
template <int G, bool S>
inline constexpr bool is_int4_group_v<int4_group<G, S>> = true;

}  // namespace detail

/// GPTQ quantization of W (rows x cols, row-major, out x in) with the layer Hessian H
/// (cols x cols) into the int4 group format F.
template <class F>
qtensor<F> quantize_gptq(std::span<const float> w, std::int64_t rows, std::int64_t cols,
                         const hessian& hs, const gptq_params& p = {}) {
  static_assert(detail::is_int4_group_v<F>,
                "quantize_gptq produces int4_group<G, Sym> tensors (e.g. int4_g128); use "
                "quantize_rtn for the other formats");
  constexpr std::int64_t G = F::group_size;
  detail::check_shape(w.size(), rows, cols, static_cast<int>(G), "gptq");
  require(hs.n == cols && hs.h.size() == static_cast<std::size_t>(cols * cols),
          {.what = "Hessian size disagrees with the input features",
           .place = "quantize_gptq",
           .expected = std::to_string(cols) + " x " + std::to_string(cols),
           .found = std::to_string(hs.n) + " x " + std::to_string(hs.n)});
  require(p.block_size > 0 && p.block_size % G == 0,
          {.what = "GPTQ block size must be a positive multiple of the group size",
           .place = "quantize_gptq",
           .expected = "a multiple of " + std::to_string(G),
           .found = std::to_string(p.block_size)});
  require(p.percdamp >= 0.0, {.what = "percdamp must be non-negative",
                              .place = "quantize_gptq",
                              .found = std::to_string(p.percdamp)});
  const std::int64_t n = cols;
  std::vector<double> W(w.begin(), w.end());
  std::vector<double> H = hs.h;
  for (std::int64_t i = 0; i < n; ++i)
    if (H[static_cast<std::size_t>(i * n + i)] == 0.0) {
      H[static_cast<std::size_t>(i * n + i)] = 1.0;
      for (std::int64_t r = 0; r < rows; ++r) W[static_cast<std::size_t>(r * n + i)] = 0.0;
    }
  auto t = F::empty(rows, cols);
  // Static groups: constants from the original (dead-zeroed) weights, by original column.
  std::vector<detail::int4_params> fixed;
  if (p.static_groups) {
    std::vector<float> col(static_cast<std::size_t>(G));
    fixed.resize(static_cast<std::size_t>(rows * (n / G)));
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < n / G; ++g) {
        for (std::int64_t i = 0; i < G; ++i)
          col[static_cast<std::size_t>(i)] =
              static_cast<float>(W[static_cast<std::size_t>(r * n + g * G + i)]);
        fixed[static_cast<std::size_t>(r * (n / G) + g)] =
            detail::int4_find_params(col.data(), G, 1, F::symmetric);
      }
  }
  // Quantization order.
  std::vector<std::int32_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (p.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](std::int32_t a, std::int32_t b) {
      return H[static_cast<std::size_t>(a * n + a)] > H[static_cast<std::size_t>(b * n + b)];
    });
  // Permuted copies: Wp (rows x n) and Hp (n x n) in quantization order.
  std::vector<double> Wp(W.size()), Hp(H.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t k = 0; k < n; ++k)
      Wp[static_cast<std::size_t>(r * n + k)] =
          W[static_cast<std::size_t>(r * n + perm[static_cast<std::size_t>(k)])];
  double mean_diag = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < n; ++j)
      Hp[static_cast<std::size_t>(i * n + j)] = H[static_cast<std::size_t>(
          perm[static_cast<std::size_t>(i)] * n + perm[static_cast<std::size_t>(j)])];
    mean_diag += Hp[static_cast<std::size_t>(i * n + i)];
  }
  const double damp = p.percdamp * mean_diag / static_cast<double>(n);
  for (std::int64_t i = 0; i < n; ++i) Hp[static_cast<std::size_t>(i * n + i)] += damp;
  const auto U = detail::inverse_cholesky_upper(std::move(Hp), n);

  // Storage order: act-order without static groups keeps the quantization order (groups are
  // contiguous in it); otherwise columns are stored in input order.
  const bool store_permuted = p.act_order && !p.static_groups;
  if (store_permuted) t.perm = perm;
  std::vector<detail::int4_params> cur(static_cast<std::size_t>(rows));
  std::vector<float> gbuf(static_cast<std::size_t>(G));
  const std::int64_t B = p.block_size;
  std::vector<double> err(static_cast<std::size_t>(rows * B));
  for (std::int64_t i1 = 0; i1 < n; i1 += B) {
    const std::int64_t i2 = std::min(n, i1 + B);
    for (std::int64_t i = i1; i < i2; ++i) {
      const std::int64_t orig = perm[static_cast<std::size_t>(i)];
      const std::int64_t stored = store_permuted ? i : orig;
      if (!p.static_groups && i % G == 0) {
        for (std::int64_t r = 0; r < rows; ++r) {
          for (std::int64_t k = 0; k < G; ++k)
            gbuf[static_cast<std::size_t>(k)] =
                static_cast<float>(Wp[static_cast<std::size_t>(r * n + i + k)]);
          cur[static_cast<std::size_t>(r)] =
              detail::int4_find_params(gbuf.data(), G, 1, F::symmetric);
          F::set_group(t, r, i / G, cur[static_cast<std::size_t>(r)]);
        }
      }
      const double d = U[static_cast<std::size_t>(i * n + i)];
      for (std::int64_t r = 0; r < rows; ++r) {
        const auto& prm = p.static_groups ? fixed[static_cast<std::size_t>(r * (n / G) + orig / G)]
                                          : cur[static_cast<std::size_t>(r)];
        if (p.static_groups && stored % G == 0) F::set_group(t, r, stored / G, prm);
        const double wv = Wp[static_cast<std::size_t>(r * n + i)];
        const auto code = detail::int4_code(static_cast<float>(wv), prm);
        F::set_code(t, r, stored, code);
        const double q = static_cast<double>(prm.scale) * (static_cast<double>(code) - prm.zero);
        const double e = (wv - q) / d;
        err[static_cast<std::size_t>(r * B + (i - i1))] = e;
        double* wr = Wp.data() + r * n;
        const double* ui = U.data() + i * n;
        for (std::int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
      }
    }
    // Lazy batch update of the remaining columns: W[:, i2:] -= E · U[i1:i2, i2:].
    for (std::int64_t r = 0; r < rows; ++r) {
      double* wr = Wp.data() + r * n;
      for (std::int64_t i = i1; i < i2; ++i) {
        const double e = err[static_cast<std::size_t>(r * B + (i - i1))];
        const double* ui = U.data() + i * n;
        for (std::int64_t j = i2; j < n; ++j) wr[j] -= e * ui[j];
      }
    }
  }
  return t;
}

}  // namespace forge::quant
