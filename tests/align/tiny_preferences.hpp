#pragma once
// Test support (not library code): a generated preference set over the character vocabulary
// of tests/train/tiny_task.hpp. Prompt "w=" (bos, four lower-case letters, '='); the chosen
// answer is the word upper-cased, the rejected one the word copied as is (each + eos). A
// policy prefers the chosen answer once it has learned "upper-case after '='".

#include <cstdint>
#include <string>
#include <vector>

#include "../train/tiny_task.hpp"
#include "forge/adapters/qlora.hpp"
#include "forge/data/preference.hpp"
#include "forge/quant/rtn.hpp"

namespace forge::test {

inline std::vector<std::int32_t> tiny_ids(const std::string& s, bool eos) {
  std::vector<std::int32_t> v;
  for (char c : s) v.push_back(tiny_id(c));
  if (eos) v.push_back(tiny_eos);
  return v;
}

/// n pairs from Philox stream `stream` (train and held-out sets use different streams).
inline std::vector<data::preference_example> tiny_preferences(std::size_t n, std::uint64_t seed,
                                                              std::uint64_t stream) {
  philox g(seed, stream);
  std::vector<data::preference_example> out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto w = random_word(g, 4, true);
    data::preference_example e;
    e.id = w;
    e.prompt = {tiny_bos};
    for (auto t : tiny_ids(w + "=", false)) e.prompt.push_back(t);
    e.chosen = tiny_ids(upper(w), true);
    e.rejected = tiny_ids(w, true);
    out.push_back(std::move(e));
  }
  return out;
}

/// Replaces every decoder projection's dense weight by an asymmetric int4 RTN quantization
/// with groups of 32 (the GPTQ storage format; GPTQ itself only changes the values), held by
/// adapters::quantized_base as a Compress stage leaves it.
template <class Bk>
void quantize_base_int4_test(Bk, model::causal_lm<float>& m) {
  using F = quant::int4_group<32, false>;
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (key == "lm_head") continue;
    auto q = quant::quantize_rtn<F>(lin->weight.value, lin->out, lin->in);
    lin->base = std::make_shared<adapters::quantized_base<Bk, F>>(std::move(q));
    lin->weight.value = {};
    lin->weight.grad = {};
    lin->weight.trainable = false;
  }
}

}  // namespace forge::test
