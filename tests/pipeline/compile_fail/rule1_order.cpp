// Rule 1: Align before Compress is not the paper's order. The allowed twin puts them the
// right way round.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  auto p = pipeline(compress<quantize_double>{}, align<preference_double>{});
#else
  auto p = pipeline(align<dense_preference_double>{}, compress<quantize_double>{});
#endif
  return static_cast<int>(p.size) - 2;
}
