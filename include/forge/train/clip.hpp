#pragma once
// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: the L2 norm over all
// gradients together, then every gradient times min(1, max_norm / (norm + 1e-6)).

#include <cmath>
#include <vector>

#include "forge/train/parameters.hpp"

namespace forge::train {

/// The global L2 norm of all gradients (accumulated in double).
template <class T>
double global_grad_norm(const std::vector<trainable<T>>& ps) {
  double s = 0;
  for (auto& p : ps)
    for (T g : p.grad) s += double(g) * double(g);
  return std::sqrt(s);
}

/// Clips the gradients to global norm `max_norm` (≤ 0: no clipping); returns the norm
/// before clipping, as PyTorch does.
template <class T>
double clip_grad_norm(const std::vector<trainable<T>>& ps, double max_norm) {
  const double norm = global_grad_norm(ps);
  if (max_norm <= 0) return norm;
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  if (coef < 1.0)
    for (auto& p : ps)
      for (T& g : p.grad) g = T(double(g) * coef);
  return norm;
}

}  // namespace forge::train
