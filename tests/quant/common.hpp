#pragma once
// Shared helpers of the quantization tests: seeded random matrices.

#include <cstdint>
#include <vector>

#include "forge/core/rng.hpp"

namespace forge::test {

/// n standard-normal floats times `scale`, from a fixed seed.
inline std::vector<float> randn(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  philox g(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * g.normal();
  return v;
}

}  // namespace forge::test
