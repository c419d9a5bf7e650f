#pragma once
// Randomly initialised models of any supported architecture, as transformers'
// _init_weights does for these classes: linear and embedding weights ~ N(0, σ²) with
// σ = initializer_range (0.02 by default), biases 0, RMSNorm weights 1. Every tensor draws
// from its own Philox stream keyed by a hash of its name, so the values do not depend on
// visiting order and one seed gives bit-identical models on every machine.

#include <cmath>
#include <cstdint>
#include <string>

#include "forge/core/rng.hpp"
#include "forge/model/causal_lm.hpp"

namespace forge::model {

namespace detail {
// FNV-1a over the tensor name: the stream id of its initial values.
inline std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
}  // namespace detail

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
    philox r(o.seed, detail::fnv1a(s.name));
    for (auto& x : v) x = T(r.normal() * o.initializer_range);
  });
}

}  // namespace forge::model
