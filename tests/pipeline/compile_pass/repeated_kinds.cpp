// Allowed: a kind may repeat (distil, then quantize; two adapt stages).
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
  auto p = pipeline(adapt<fine_tune_double>{}, adapt<fine_tune_double>{}, compress<distil_double>{},
                    compress<quantize_double>{}, align<preference_double>{},
                    align<preference_double>{}, deploy<release_double>{});
  static_assert(decltype(p)::size == 7);
  return 0;
}
