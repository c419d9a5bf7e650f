#pragma once
// The layer Hessian of GPTQ's objective ||W X - Q X||² (Frantar et al. 2023, section 3):
// H = 2 X Xᵀ / N over N calibration activations of the layer input, accumulated batch by batch
// exactly as the reference's add_batch does (running mean: H <- H * N/(N+m) + 2/(N+m) XᵀX).
// Held in double: the Cholesky factorisations that follow lose digits on ill-conditioned H.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::quant {

/// A symmetric in x in matrix (row-major, double) and the number of samples it averages.
struct hessian {
  std::int64_t n = 0;        ///< input features
  std::int64_t samples = 0;  ///< activation rows accumulated
  std::vector<double> h{};   ///< n * n values
  /// Entry (i, j).
  double operator()(std::int64_t i, std::int64_t j) const {
    return h[static_cast<std::size_t>(i * n + j)];
  }
};

/// Accumulates H = 2/N Σ x xᵀ over batches of activation rows.
class hessian_accumulator {
 public:
  /// An empty accumulator for a layer with `in_features` inputs.
  explicit hessian_accumulator(std::int64_t in_features) {
    require(in_features > 0, {.what = "hessian needs at least one input feature",
                              .found = std::to_string(in_features)});
    h_.n = in_features;
    h_.h.assign(static_cast<std::size_t>(in_features * in_features), 0.0);
  }

  /// Adds a batch x (rows x in_features, row-major) of layer inputs.
  void add_batch(std::span<const float> x, std::int64_t rows) {
    const auto n = h_.n;
    require(rows >= 0 && x.size() == static_cast<std::size_t>(rows * n),
            {.what = "activation batch size disagrees with the input features",
             .place = "hessian_accumulator::add_batch",
             .expected = std::to_string(rows) + " x " + std::to_string(n) + " values",
             .found = std::to_string(x.size())});
    if (rows == 0) return;
    const double total = static_cast<double>(h_.samples + rows);
    const double keep = static_cast<double>(h_.samples) / total;
    for (auto& v : h_.h) v *= keep;
    h_.samples += rows;
    const double c = 2.0 / total;
    std::vector<double> xr(static_cast<std::size_t>(n));
    for (std::int64_t b = 0; b < rows; ++b) {
      for (std::int64_t j = 0; j < n; ++j)
        xr[static_cast<std::size_t>(j)] = x[static_cast<std::size_t>(b * n + j)];
      for (std::int64_t i = 0; i < n; ++i) {
        const double xi = c * xr[static_cast<std::size_t>(i)];
        if (xi == 0.0) continue;
        double* hi = h_.h.data() + i * n;
        for (std::int64_t j = 0; j < n; ++j) hi[j] += xi * xr[static_cast<std::size_t>(j)];
      }
    }
  }

  /// The accumulated Hessian.
  const hessian& get() const { return h_; }

 private:
  hessian h_;
};

}  // namespace forge::quant
