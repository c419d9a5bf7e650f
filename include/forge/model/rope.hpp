#pragma once
// Rotary embedding frequencies and cos/sin tables for every rope type we load, following
// transformers' modeling_rope_utils.py (rope init functions) with D = head_dim:
//   default:  f_i = θ^(−2i/D),  i = 0 … D/2−1
//   linear:   f_i / factor                           (Chen et al. 2023, position interpolation)
//   dynamic:  θ' = θ·(factor·L/max_pos − (factor−1))^(D/(D−2)) when the longest position
//             L = max position id + 1 exceeds max_position_embeddings, else θ (NTK-aware)
//   llama3:   wavelength λ_i = 2π/f_i; λ > old/low_ff → f/factor; λ < old/high_ff → f;
//             in between s = (old/λ − low_ff)/(high_ff − low_ff), f ← (1−s)·f/factor + s·f
// None of these types rescale attention (attention_factor = 1).

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "forge/model/config.hpp"

namespace forge::model {

/// Inverse frequencies [head_dim/2] for a call whose largest position id is max_pos_id.
inline std::vector<double> rope_inv_freq(const model_config& c, std::int64_t max_pos_id) {
  const std::int64_t D = c.head_dim;
  double theta = c.rope.theta;
  if (c.rope.type == "dynamic") {
    const double L = double(std::max(max_pos_id + 1, c.max_position_embeddings));
    const double M = double(c.max_position_embeddings);
    theta *= std::pow(c.rope.factor * L / M - (c.rope.factor - 1.0), double(D) / double(D - 2));
  }
  std::vector<double> f(static_cast<std::size_t>(D / 2));
  for (std::int64_t i = 0; i < D / 2; ++i) f[i] = 1.0 / std::pow(theta, double(2 * i) / double(D));
  if (c.rope.type == "linear") {
    for (auto& x : f) x /= c.rope.factor;
  } else if (c.rope.type == "llama3") {
    const double old = double(c.rope.original_max_position_embeddings);
    const double low_wl = old / c.rope.low_freq_factor, high_wl = old / c.rope.high_freq_factor;
    for (auto& x : f) {
      const double wl = 2.0 * std::numbers::pi / x;
      if (wl > low_wl) {
        x /= c.rope.factor;
      } else if (wl >= high_wl) {
        const double s = (old / wl - c.rope.low_freq_factor) /
                         (c.rope.high_freq_factor - c.rope.low_freq_factor);
        x = (1.0 - s) * x / c.rope.factor + s * x;
      }
    }
  }
  return f;
}

/// cos/sin tables [rows, head_dim/2] for the given position ids.
template <class T>
void rope_tables(const model_config& c, const std::int64_t* positions, std::int64_t rows,
                 std::vector<T>& cos, std::vector<T>& sin) {
  std::int64_t mx = 0;
  for (std::int64_t t = 0; t < rows; ++t) mx = std::max(mx, positions[t]);
  const auto f = rope_inv_freq(c, mx);
  const std::int64_t h2 = c.head_dim / 2;
  cos.resize(static_cast<std::size_t>(rows * h2));
  sin.resize(static_cast<std::size_t>(rows * h2));
  for (std::int64_t t = 0; t < rows; ++t)
    for (std::int64_t i = 0; i < h2; ++i) {
      const double a = double(positions[t]) * f[i];
      cos[t * h2 + i] = T(std::cos(a));
      sin[t * h2 + i] = T(std::sin(a));
    }
}

}  // namespace forge::model
