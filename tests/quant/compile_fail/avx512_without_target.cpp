// simd<avx512bw> in a translation unit compiled without AVX-512 must say what to do.
#include "forge/backend/qmatmul.hpp"
int main() {
  auto w = forge::quant::int8_channel::quantize(std::vector<float>(16, 1.0f), 1, 16);
  std::vector<float> x(16), y(1);
  forge::backend::qmatvec(forge::backend::simd<xsimd::avx512bw>{}, x, w, y);
  return 0;
}
