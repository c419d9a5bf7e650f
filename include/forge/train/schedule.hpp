#pragma once
// Learning-rate schedules as transformers' get_*_schedule_with_warmup: the factor applied to
// the base rate at optimizer step k (0-based, the number of steps already taken):
//   warmup       k < W:  k / W
//   linear       max(0, (N − k) / (N − W))
//   cosine       max(0, ½·(1 + cos(π·(k − W) / (N − W))))
//   constant     1

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "forge/core/error.hpp"

namespace forge::train {

/// The schedule's shape after warmup.
enum class schedule_kind { constant, linear, cosine };

/// A learning-rate schedule over `total_steps` optimizer steps with `warmup_steps` of warmup.
struct schedule {
  schedule_kind kind = schedule_kind::linear;  ///< transformers' default lr_scheduler_type
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  ///< 0: taken from the trainer's max_steps

  /// The factor for step k (0-based).
  double factor(std::int64_t k) const {
    const double W = double(warmup_steps), N = double(total_steps);
    if (k < warmup_steps) return double(k) / std::max(1.0, W);
    if (kind == schedule_kind::constant) return 1.0;
    if (kind == schedule_kind::linear) return std::max(0.0, (N - double(k)) / std::max(1.0, N - W));
    const double progress = (double(k) - W) / std::max(1.0, N - W);
    return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
};

/// "constant", "linear" or "cosine"; forge::error otherwise.
inline schedule_kind parse_schedule_kind(const std::string& s) {
  if (s == "constant") return schedule_kind::constant;
  if (s == "linear") return schedule_kind::linear;
  if (s == "cosine") return schedule_kind::cosine;
  throw error({.what = "unknown learning-rate schedule",
               .place = "schedule",
               .expected = "constant, linear or cosine",
               .found = s});
}

}  // namespace forge::train
