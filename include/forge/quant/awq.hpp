#pragma once
// AWQ: activation-aware weight quantization (Lin et al. 2024, "AWQ: Activation-aware Weight
// Quantization for LLM Compression and Acceleration", section 3.2), as mit-han-lab/llm-awq's
// auto_scale does it:
//
//   a_c   = mean over calibration tokens of |x_c|            (get_act_scale)
//   for α in {0, 1/20, ..., 19/20}:
//       s_c = max(a_c^α, 1e-4);  s /= sqrt(max(s) * min(s))
//       loss(α) = mean over outputs of (X Wᵀ - (X / s) Q(W diag(s))ᵀ)²
//   keep the s of the smallest loss (α = 0 is plain RTN, so AWQ never does worse on X)
//
// Several linears that read the same input (q, k, v after one RMSNorm; gate and up) share one
// s: pass them together and the loss is over their concatenated outputs. (The reference
// measures the whole attention/MLP block's output for that; at the level of single matrices we
// use the linears' own outputs.) Q is the chosen format's RTN. The caller folds 1/s into the
// op that produces the input — fold_scales_into_rmsnorm / fold_scales_into_linear — and
// quantizes W diag(s) with quantize_awq. The reference's second step, weight clipping
// (auto_clip), is not part of this header.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "forge/backend/qmatmul.hpp"
#include "forge/quant/format.hpp"

namespace forge::quant {

/// One weight matrix (rows x cols, row-major, out x in) taking part in the AWQ search.
struct awq_linear {
  std::span<const float> weight{};
  std::int64_t rows = 0;
};

/// The outcome of the AWQ scale search.
struct awq_result {
  std::vector<float> scales{};   ///< s, one per input feature (multiply W's columns by it)
  double ratio = 0.0;            ///< the chosen exponent α
  double loss = 0.0;             ///< mean squared output error at α
  std::vector<double> losses{};  ///< loss of every grid point, α = i / grid
};

/// Grid search of AWQ's per-input-channel scales for linears sharing the input x
/// (m x cols, row-major calibration activations), quantized in format F.
template <QuantFormat F, class B = backend::simd<>>
awq_result awq_search(std::span<const awq_linear> linears, std::int64_t cols,
                      std::span<const float> x, std::int64_t m, int grid = 20, B be = {}) {
  require(!linears.empty() && grid > 0,
          {.what = "AWQ needs at least one linear and a positive grid", .place = "awq_search"});
  require(x.size() == static_cast<std::size_t>(m * cols) && m > 0,
          {.what = "activation size disagrees with the input features",
           .place = "awq_search",
           .expected = std::to_string(m) + " x " + std::to_string(cols),
           .found = std::to_string(x.size()) + " values"});
  for (const auto& l : linears)
    require(l.weight.size() == static_cast<std::size_t>(l.rows * cols),
            {.what = "weight size disagrees with the input features",
             .place = "awq_search",
             .expected = std::to_string(l.rows) + " x " + std::to_string(cols),
             .found = std::to_string(l.weight.size()) + " values"});
  // a_c = mean |x_c|.
  std::vector<double> act(static_cast<std::size_t>(cols), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < cols; ++c)
      act[static_cast<std::size_t>(c)] += std::fabs(x[static_cast<std::size_t>(i * cols + c)]);
  for (auto& a : act) a /= static_cast<double>(m);
  // Reference outputs X Wᵀ (f32 weights through the same tiled kernel, a copying decoder).
  std::vector<std::vector<float>> ref;
  for (const auto& l : linears) {
    ref.emplace_back(static_cast<std::size_t>(m * l.rows));
    backend::detail::tiled_gemm<typename B::arch>(
        x.data(), m, cols, l.rows, cols, 1,
        [&](std::int64_t r0, std::int64_t rows, std::int64_t k0, std::int64_t k1, float* out,
            std::int64_t ld) {
          for (std::int64_t r = 0; r < rows; ++r)
            std::copy(l.weight.begin() + (r0 + r) * cols + k0,
                      l.weight.begin() + (r0 + r) * cols + k1, out + r * ld);
        },
        ref.back().data(), l.rows);
  }
  awq_result best;
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<std::size_t>(cols)), ws, xs(x.size()), y;
  for (int gi = 0; gi < grid; ++gi) {
    const double ratio = static_cast<double>(gi) / grid;
    float smax = 0.0f, smin = std::numeric_limits<float>::infinity();
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v =
          std::max(static_cast<float>(std::pow(act[static_cast<std::size_t>(c)], ratio)), 1e-4f);
      s[static_cast<std::size_t>(c)] = v;
      smax = std::max(smax, v);
      smin = std::min(smin, v);
    }
    const float norm = std::sqrt(smax * smin);
    for (auto& v : s) v /= norm;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t c = 0; c < cols; ++c)
        xs[static_cast<std::size_t>(i * cols + c)] =
            x[static_cast<std::size_t>(i * cols + c)] / s[static_cast<std::size_t>(c)];
    double err = 0.0;
    std::size_t count = 0;
    for (std::size_t li = 0; li < linears.size(); ++li) {
      const auto& l = linears[li];
      ws.assign(l.weight.begin(), l.weight.end());
      for (std::int64_t r = 0; r < l.rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c)
          ws[static_cast<std::size_t>(r * cols + c)] *= s[static_cast<std::size_t>(c)];
      const auto q = F::quantize(ws, l.rows, cols);
      y.resize(static_cast<std::size_t>(m * l.rows));
      backend::qmatmul(be, xs, m, q, y);
      for (std::size_t j = 0; j < y.size(); ++j) {
        const double d = static_cast<double>(ref[li][j]) - y[j];
        err += d * d;
      }
      count += y.size();
    }
    const double loss = err / static_cast<double>(count);
    best.losses.push_back(loss);
    if (loss < best.loss) {
      best.loss = loss;
      best.ratio = ratio;
      best.scales = s;
    }
  }
  return best;
}

/// Quantizes W diag(s) (rows x cols) in format F: the weight AWQ deploys.
template <QuantFormat F>
qtensor<F> quantize_awq(std::span<const float> w, std::int64_t rows, std::int64_t cols,
                        std::span<const float> scales) {
  require(scales.size() == static_cast<std::size_t>(cols),
          {.what = "one AWQ scale per input feature expected",
           .place = "quantize_awq",
           .expected = std::to_string(cols),
           .found = std::to_string(scales.size())});
  std::vector<float> ws(w.begin(), w.end());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      ws[static_cast<std::size_t>(r * cols + c)] *= scales[static_cast<std::size_t>(c)];
  return F::quantize(ws, rows, cols);
}

/// Folds 1/s into an RMSNorm weight (in place): norm(x) * (g / s) feeds W diag(s) unchanged.
inline void fold_scales_into_rmsnorm(std::span<float> weight, std::span<const float> scales) {
  require(weight.size() == scales.size(), {.what = "RMSNorm weight and AWQ scales differ in length",
                                           .place = "fold_scales_into_rmsnorm",
                                           .expected = std::to_string(scales.size()),
                                           .found = std::to_string(weight.size())});
  for (std::size_t c = 0; c < weight.size(); ++c) weight[c] /= scales[c];
}

/// Folds 1/s into the previous linear (in place): its output features (rows of prev, rows x
/// cols) and optional bias are divided by s, so its output divided by s feeds W diag(s).
inline void fold_scales_into_linear(std::span<float> prev, std::int64_t rows, std::int64_t cols,
                                    std::span<const float> scales, std::span<float> bias = {}) {
  require(scales.size() == static_cast<std::size_t>(rows) &&
              prev.size() == static_cast<std::size_t>(rows * cols) &&
              (bias.empty() || bias.size() == static_cast<std::size_t>(rows)),
          {.what = "previous linear's output features and AWQ scales differ",
           .place = "fold_scales_into_linear",
           .expected = std::to_string(scales.size()) + " output features",
           .found = std::to_string(rows)});
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c)
      prev[static_cast<std::size_t>(r * cols + c)] /= scales[static_cast<std::size_t>(r)];
    if (!bias.empty()) bias[static_cast<std::size_t>(r)] /= scales[static_cast<std::size_t>(r)];
  }
}

}  // namespace forge::quant
