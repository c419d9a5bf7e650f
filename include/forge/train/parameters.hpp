#pragma once
// The tensors an optimizer updates: a name, the values and the gradient, as spans over
// buffers owned elsewhere (the model's parameters or the adapter modules).

#include <span>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/model/causal_lm.hpp"

namespace forge::train {

/// One trainable tensor: values and gradient of the same length.
template <class T>
struct trainable {
  std::string name;      ///< checkpoint key (PEFT module key + ".lora_A" ..., or HF name)
  std::span<T> value{};  ///< the parameter
  std::span<T> grad{};   ///< its gradient, accumulated by backward
};

/// The adapter parameters of a LoRA/DoRA set (A, B and, for DoRA, the magnitude m).
template <class T>
std::vector<trainable<T>> lora_parameters(adapters::lora_set<T>& set) {
  std::vector<trainable<T>> out;
  for (auto& mod : set.modules) {
    out.push_back({mod->name + ".lora_A", mod->A, mod->dA});
    out.push_back({mod->name + ".lora_B", mod->B, mod->dB});
    if (mod->dora) out.push_back({mod->name + ".lora_magnitude_vector", mod->m, mod->dm});
  }
  return out;
}

/// Full fine-tuning: marks the parameters whose name fully matches `pattern` (".*" = all)
/// trainable and the rest frozen, allocates gradients and returns the trainable ones.
/// forge::error when nothing matches.
template <class T>
std::vector<trainable<T>> model_parameters(model::causal_lm<T>& m,
                                           const std::string& pattern = ".*") {
  const adapters::detail::full_match re(pattern, "fine-tuning parameters");
  m.for_each_parameter([&](model::parameter<T>& p) { p.trainable = re(p.name); });
  m.enable_grads();
  std::vector<trainable<T>> out;
  m.for_each_parameter([&](model::parameter<T>& p) {
    if (p.trainable) out.push_back({p.name, p.value, p.grad});
  });
  require(!out.empty(), {.what = "no parameter matches the fine-tuning pattern",
                         .place = "parameters",
                         .found = pattern});
  return out;
}

/// Sets every gradient to zero.
template <class T>
void zero_grads(const std::vector<trainable<T>>& ps) {
  for (auto& p : ps) std::fill(p.grad.begin(), p.grad.end(), T(0));
}

}  // namespace forge::train
