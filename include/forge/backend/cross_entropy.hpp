#pragma once
// Softmax cross-entropy over logits with an ignore index (PyTorch's CrossEntropyLoss with
// reduction="mean", ignore_index=-100, as transformers' ForCausalLMLoss uses it):
//   ℓ_t = logsumexp(z_t) − z_t[y_t],   L = (1/n) Σ_{t: y_t ≠ ignore} ℓ_t
// backward:  dz_t = (softmax(z_t) − onehot(y_t)) · dL / n  for kept rows, 0 for ignored.
// Shapes: logits, dlogits [rows, vocab]; targets [rows]. n = number of kept rows; with
// n = 0 the loss is 0 (PyTorch gives NaN; a batch of ignored rows must not poison training).

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/backend/backend.hpp"
#include "forge/core/error.hpp"

namespace forge::backend {

/// The label that marks a row as not contributing to the loss.
inline constexpr std::int64_t ignore_index = -100;

namespace detail {
inline void check_target(std::int64_t y, std::int64_t vocab, std::int64_t row) {
  if (y != ignore_index && (y < 0 || y >= vocab))
    throw error({.what = "target token out of range",
                 .place = "row " + std::to_string(row),
                 .expected = "in [0, " + std::to_string(vocab) + ") or -100",
                 .found = std::to_string(y)});
}
}  // namespace detail

/// Mean cross-entropy; writes dlogits (if non-null) for dL = 1 scaled by `grad_scale`.
/// Returns the loss accumulated in double. OpenMP across rows for the simd backend.
template <class T, class B>
double cross_entropy(B, std::int64_t rows, std::int64_t vocab, const T* logits,
                     const std::int64_t* targets, T* dlogits, double grad_scale = 1.0) {
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < rows; ++t) {
    detail::check_target(targets[t], vocab, t);
    n += targets[t] != ignore_index;
  }
  double total = 0;
  const double inv_n = n > 0 ? 1.0 / double(n) : 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (is_simd_v<B> && rows * vocab > 65536)
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* z = logits + t * vocab;
    T* dz = dlogits ? dlogits + t * vocab : nullptr;
    if (targets[t] == ignore_index) {
      if (dz)
        for (std::int64_t i = 0; i < vocab; ++i) dz[i] = 0;
      continue;
    }
    T mx = z[0];
    for (std::int64_t i = 1; i < vocab; ++i) mx = z[i] > mx ? z[i] : mx;
    T sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(z[i] - mx);
    const T lse = mx + std::log(sum);
    total += double(lse - z[targets[t]]);
    if (dz) {
      const T g = T(grad_scale * inv_n);
      for (std::int64_t i = 0; i < vocab; ++i) dz[i] = std::exp(z[i] - lse) * g;
      dz[targets[t]] -= g;
    }
  }
  return total * inv_n;
}

}  // namespace forge::backend
