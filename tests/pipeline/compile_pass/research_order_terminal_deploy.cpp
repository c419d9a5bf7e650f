// Allowed: research orders (align before compress, compress before adapt) with a terminal
// deploy, and the backend rule satisfied on both CPU backends.
#include "doubles_run.hpp"
using namespace forge;
using namespace forge::test;

int main(int argc, char**) {
  auto a = research_order(align<dense_preference_double>{}, compress<quantize_double>{},
                          deploy<release_double>{});
  auto b = research_order(compress<distil_double>{}, adapt<fine_tune_double>{},
                          align<preference_double>{}, deploy<release_double>{});
  if (argc > 100) {  // type-checked only
    auto r = b.run(toy_model_double{}, backend::scalar{});
    auto s = b.run(toy_model_double{}, backend::simd<>{});
    return r.passed && s.passed ? 0 : 1;
  }
  return static_cast<int>(a.size + b.size) - 7;
}
