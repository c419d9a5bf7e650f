#pragma once
// Randomly initialised models of any supported architecture, as transformers'
// _init_weights does for these classes: linear and embedding weights ~ N(0, σ²) with
// σ = initializer_range (0.02 by default), biases 0, RMSNorm weights 1. Every tensor draws
// from its own stream keyed by its name, so the values do not depend on visiting order
// and one seed gives bit-identical models on every machine.

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/model/causal_lm.hpp"

namespace forge::model {

namespace detail {
// SplitMix64 (Steele, Lea & Flood 2014): a counter-based generator, value = mix(key + i·γ).
inline std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
}  // namespace detail

/// A counter-based stream of random numbers: draw i of (seed, stream) is a pure function.
class counter_rng {
 public:
  counter_rng(std::uint64_t seed, std::uint64_t stream)
      : key_(detail::splitmix(seed ^ detail::splitmix(stream))) {}
  /// The next 64 random bits.
  std::uint64_t next_u64() { return detail::splitmix(key_ + 0x9e3779b97f4a7c15ull * counter_++); }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  /// Standard normal (Box–Muller).
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t key_, counter_ = 0;
};

/// Options of random_model.
struct init_options {
  std::uint64_t seed = 0;
  double initializer_range = 0.02;  ///< σ of the normal weights (transformers' default)
};

/// A randomly initialised model of config `c` (any supported architecture).
template <class T = float>
causal_lm<T> random_model(const model_config& c, const init_options& o = {}) {
  return make_model<T>(c, [&](const parameter_spec& s, std::vector<T>& v) {
    const bool norm = s.name.ends_with("norm.weight");
    const bool bias = s.name.ends_with(".bias");
    if (norm || bias) {
      for (auto& x : v) x = norm ? T(1) : T(0);
      return;
    }
    counter_rng r(o.seed, detail::fnv1a(s.name));
    for (auto& x : v) x = T(r.normal() * o.initializer_range);
  });
}

}  // namespace forge::model
