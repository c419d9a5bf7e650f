#pragma once
// LoRA on a frozen quantized base (QLoRA, Dettmers et al. 2023, eq. 5; LoRA, Hu et al. 2021):
//
//   forward   y  = x Wᵀ + s (x Aᵀ) Bᵀ            x: m x k, W: n x k (quantized),
//                                               A: r x k, B: n x r, y: m x n, s = alpha / r
//   backward  dx = dy W + s (dy B) A            (through the dequantized base, W frozen)
//             dA = s (dy B)ᵀ x
//             dB = s dyᵀ (x Aᵀ)
//
// The SIMD forward computes u = x Aᵀ first (m x r, small) and adds s u Bᵀ to each block of
// output columns right after the quantized product finishes it, in the same pass over W's
// rows. dy W uses the same tiled kernel with W decoded column-slab by column-slab. The scalar
// versions are the reference (double accumulation).

#include <span>
#include <vector>

#include "forge/backend/qmatmul.hpp"

namespace forge::backend {

/// A LoRA adapter seen by the kernels: A (rank x in), B (out x rank), and the scale alpha/r.
struct lora_view {
  std::span<const float> a{};
  std::span<const float> b{};
  std::int64_t rank = 0;
  float scale = 1.0f;
};

/// Gradient outputs of qmatmul_lora_backward (any may be empty to skip it).
struct lora_grads {
  std::span<float> dx{};  ///< m x in
  std::span<float> da{};  ///< rank x in
  std::span<float> db{};  ///< out x rank
};

namespace detail {

template <class F>
void check_lora(const quant::qtensor<F>& w, const lora_view& l) {
  require(l.rank > 0 && l.a.size() == static_cast<std::size_t>(l.rank * w.cols) &&
              l.b.size() == static_cast<std::size_t>(w.rows * l.rank),
          {.what = "LoRA factors disagree with the base weight",
           .place = "qmatmul_lora",
           .expected = "A " + std::to_string(l.rank) + " x " + std::to_string(w.cols) + ", B " +
                       std::to_string(w.rows) + " x " + std::to_string(l.rank),
           .found = "A " + std::to_string(l.a.size()) + ", B " + std::to_string(l.b.size()) +
                    " values"});
}

/// C (m x n) = A (m x k) · Bᵀ with B (n x k) dense f32, through the tiled kernel.
template <class Arch>
void dense_abt(const float* a, std::int64_t m, std::int64_t k, const float* b, std::int64_t n,
               float* c) {
  tiled_gemm<Arch>(
      a, m, k, n, k, 1,
      [&](std::int64_t r0, std::int64_t rows, std::int64_t k0, std::int64_t k1, float* out,
          std::int64_t ld) {
        for (std::int64_t r = 0; r < rows; ++r)
          std::copy(b + (r0 + r) * k + k0, b + (r0 + r) * k + k1, out + r * ld);
      },
      c, n);
}

inline std::vector<float> transpose(const float* a, std::int64_t rows, std::int64_t cols) {
  std::vector<float> t(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j)
      t[static_cast<std::size_t>(j * rows + i)] = a[i * cols + j];
  return t;
}

}  // namespace detail

/// Reference: dx (m x k) = dy (m x n) · W, through the dequantized weight in input order.
template <quant::QuantFormat F>
void qmatmul_transposed(scalar, std::span<const float> dy, std::int64_t m,
                        const quant::qtensor<F>& w, std::span<float> dx) {
  detail::check_qmatmul(dx.size(), m, w, dy.size());
  std::vector<double> acc(dx.size(), 0.0);
  std::vector<float> row(static_cast<std::size_t>(w.cols));
  for (std::int64_t r = 0; r < w.rows; ++r) {
    F::dequantize_row(w, r, row);
    for (std::int64_t i = 0; i < m; ++i) {
      const double g = dy[static_cast<std::size_t>(i * w.rows + r)];
      for (std::int64_t k = 0; k < w.cols; ++k)
        acc[static_cast<std::size_t>(i * w.cols + k)] += g * row[static_cast<std::size_t>(k)];
    }
  }
  for (std::size_t j = 0; j < acc.size(); ++j) dx[j] = static_cast<float>(acc[j]);
}

/// SIMD: dx (m x k) = dy (m x n) · W, W decoded in slabs into the tiled kernel.
template <class Arch, quant::QuantFormat F>
void qmatmul_transposed(simd<Arch>, std::span<const float> dy, std::int64_t m,
                        const quant::qtensor<F>& w, std::span<float> dx) {
  detail::check_qmatmul(dx.size(), m, w, dy.size());
  const std::int64_t step = detail::decode_step<F>();
  std::vector<float> stored(w.perm.empty() ? 0 : dx.size());
  float* out = w.perm.empty() ? dx.data() : stored.data();
  detail::tiled_gemm<Arch>(
      dy.data(), m, w.rows, w.cols, w.rows, 1,
      [&](std::int64_t c0, std::int64_t cols, std::int64_t n0, std::int64_t n1, float* o,
          std::int64_t ld) {
        // Output rows are W's columns [c0, c0 + cols); decode the aligned range of each W row.
        const std::int64_t a0 = c0 / step * step;
        const std::int64_t a1 = std::min(w.cols, (c0 + cols + step - 1) / step * step);
        std::vector<float> tmp(static_cast<std::size_t>(a1 - a0));
        for (std::int64_t n = n0; n < n1; ++n) {
          detail::decode(w, n, a0, a1, tmp.data());
          for (std::int64_t c = 0; c < cols; ++c)
            o[c * ld + (n - n0)] = tmp[static_cast<std::size_t>(c0 + c - a0)];
        }
      },
      out, w.cols);
  if (!w.perm.empty())
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t k = 0; k < w.cols; ++k)
        dx[static_cast<std::size_t>(i * w.cols + w.perm[static_cast<std::size_t>(k)])] =
            stored[static_cast<std::size_t>(i * w.cols + k)];
}

/// Reference: y (m x n) = x Wᵀ + s (x Aᵀ) Bᵀ.
template <quant::QuantFormat F>
void qmatmul_lora(scalar be, std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
                  const lora_view& l, std::span<float> y) {
  detail::check_lora(w, l);
  qmatmul(be, x, m, w, y);
  for (std::int64_t i = 0; i < m; ++i) {
    std::vector<double> u(static_cast<std::size_t>(l.rank), 0.0);
    for (std::int64_t j = 0; j < l.rank; ++j)
      for (std::int64_t k = 0; k < w.cols; ++k)
        u[static_cast<std::size_t>(j)] +=
            static_cast<double>(x[static_cast<std::size_t>(i * w.cols + k)]) *
            l.a[static_cast<std::size_t>(j * w.cols + k)];
    for (std::int64_t n = 0; n < w.rows; ++n) {
      double t = 0.0;
      for (std::int64_t j = 0; j < l.rank; ++j)
        t += u[static_cast<std::size_t>(j)] * l.b[static_cast<std::size_t>(n * l.rank + j)];
      y[static_cast<std::size_t>(i * w.rows + n)] += static_cast<float>(l.scale * t);
    }
  }
}

/// SIMD: y (m x n) = x Wᵀ + s (x Aᵀ) Bᵀ, the LoRA term fused into the quantized pass.
template <class Arch, quant::QuantFormat F>
void qmatmul_lora(simd<Arch>, std::span<const float> x, std::int64_t m, const quant::qtensor<F>& w,
                  const lora_view& l, std::span<float> y) {
  detail::check_qmatmul(x.size(), m, w, y.size());
  detail::check_lora(w, l);
  const std::int64_t r = l.rank, n = w.rows;
  std::vector<float> u(static_cast<std::size_t>(m * r));
  detail::dense_abt<Arch>(x.data(), m, w.cols, l.a.data(), r, u.data());
  detail::qmatmul_fused<Arch>(x, m, w, y, [&](std::int64_t n0, std::int64_t n1) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t c = n0; c < n1; ++c) {
        float t = 0.0f;
        for (std::int64_t j = 0; j < r; ++j)
          t += u[static_cast<std::size_t>(i * r + j)] * l.b[static_cast<std::size_t>(c * r + j)];
        y[static_cast<std::size_t>(i * n + c)] += l.scale * t;
      }
  });
}

/// Reference backward of qmatmul_lora (see the header comment for the formulas).
template <quant::QuantFormat F>
void qmatmul_lora_backward(scalar be, std::span<const float> x, std::int64_t m,
                           const quant::qtensor<F>& w, const lora_view& l,
                           std::span<const float> dy, lora_grads g) {
  detail::check_lora(w, l);
  detail::check_qmatmul(x.size(), m, w, dy.size());
  const std::int64_t k = w.cols, n = w.rows, r = l.rank;
  auto X = [&](std::int64_t i, std::int64_t c) {
    return static_cast<double>(x[static_cast<std::size_t>(i * k + c)]);
  };
  auto DY = [&](std::int64_t i, std::int64_t c) {
    return static_cast<double>(dy[static_cast<std::size_t>(i * n + c)]);
  };
  std::vector<double> v(static_cast<std::size_t>(m * r), 0.0),
      u(static_cast<std::size_t>(m * r), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < r; ++j) {
      for (std::int64_t c = 0; c < n; ++c)
        v[static_cast<std::size_t>(i * r + j)] +=
            DY(i, c) * l.b[static_cast<std::size_t>(c * r + j)];
      for (std::int64_t c = 0; c < k; ++c)
        u[static_cast<std::size_t>(i * r + j)] +=
            X(i, c) * l.a[static_cast<std::size_t>(j * k + c)];
    }
  if (!g.dx.empty()) {
    require(g.dx.size() == x.size(),
            {.what = "dx size disagrees with x", .place = "qmatmul_lora_backward"});
    qmatmul_transposed(be, dy, m, w, g.dx);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t c = 0; c < k; ++c) {
        double t = 0.0;
        for (std::int64_t j = 0; j < r; ++j)
          t += v[static_cast<std::size_t>(i * r + j)] * l.a[static_cast<std::size_t>(j * k + c)];
        g.dx[static_cast<std::size_t>(i * k + c)] += static_cast<float>(l.scale * t);
      }
  }
  if (!g.da.empty()) {
    require(g.da.size() == l.a.size(),
            {.what = "dA size disagrees with A", .place = "qmatmul_lora_backward"});
    for (std::int64_t j = 0; j < r; ++j)
      for (std::int64_t c = 0; c < k; ++c) {
        double t = 0.0;
        for (std::int64_t i = 0; i < m; ++i) t += v[static_cast<std::size_t>(i * r + j)] * X(i, c);
        g.da[static_cast<std::size_t>(j * k + c)] = static_cast<float>(l.scale * t);
      }
  }
  if (!g.db.empty()) {
    require(g.db.size() == l.b.size(),
            {.what = "dB size disagrees with B", .place = "qmatmul_lora_backward"});
    for (std::int64_t c = 0; c < n; ++c)
      for (std::int64_t j = 0; j < r; ++j) {
        double t = 0.0;
        for (std::int64_t i = 0; i < m; ++i) t += DY(i, c) * u[static_cast<std::size_t>(i * r + j)];
        g.db[static_cast<std::size_t>(c * r + j)] = static_cast<float>(l.scale * t);
      }
  }
}

/// SIMD backward of qmatmul_lora.
template <class Arch, quant::QuantFormat F>
void qmatmul_lora_backward(simd<Arch> be, std::span<const float> x, std::int64_t m,
                           const quant::qtensor<F>& w, const lora_view& l,
                           std::span<const float> dy, lora_grads g) {
  detail::check_lora(w, l);
  detail::check_qmatmul(x.size(), m, w, dy.size());
  const std::int64_t k = w.cols, n = w.rows, r = l.rank;
  // v = dy B (m x r), u = x Aᵀ (m x r).
  std::vector<float> v(static_cast<std::size_t>(m * r)), u(v.size());
  const auto bt = detail::transpose(l.b.data(), n, r);
  detail::dense_abt<Arch>(dy.data(), m, n, bt.data(), r, v.data());
  if (!g.dx.empty()) {
    require(g.dx.size() == x.size(),
            {.what = "dx size disagrees with x", .place = "qmatmul_lora_backward"});
    qmatmul_transposed(be, dy, m, w, g.dx);
    std::vector<float> t(g.dx.size());
    const auto at = detail::transpose(l.a.data(), r, k);
    detail::dense_abt<Arch>(v.data(), m, r, at.data(), k, t.data());
    for (std::size_t j = 0; j < t.size(); ++j) g.dx[j] += l.scale * t[j];
  }
  if (!g.da.empty()) {
    require(g.da.size() == l.a.size(),
            {.what = "dA size disagrees with A", .place = "qmatmul_lora_backward"});
    const auto vt = detail::transpose(v.data(), m, r);
    const auto xt = detail::transpose(x.data(), m, k);
    detail::dense_abt<Arch>(vt.data(), r, m, xt.data(), k, g.da.data());
    for (auto& e : g.da) e *= l.scale;
  }
  if (!g.db.empty()) {
    require(g.db.size() == l.b.size(),
            {.what = "dB size disagrees with B", .place = "qmatmul_lora_backward"});
    detail::dense_abt<Arch>(x.data(), m, k, l.a.data(), r, u.data());
    const auto dyt = detail::transpose(dy.data(), m, n);
    const auto ut = detail::transpose(u.data(), m, r);
    detail::dense_abt<Arch>(dyt.data(), n, m, ut.data(), r, g.db.data());
    for (auto& e : g.db) e *= l.scale;
  }
}

}  // namespace forge::backend
