// GPTQ produces int4 group tensors; asking it for NF4 must fail with a sentence.
#include "forge/quant/gptq.hpp"
#include "forge/quant/nf4.hpp"
int main() {
  std::vector<float> w(64);
  forge::quant::hessian_accumulator h(64);
  auto t = forge::quant::quantize_gptq<forge::quant::nf4>(w, 1, 64, h.get());
  return static_cast<int>(t.rows);
}
