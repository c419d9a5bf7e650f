// Rule 2 holds inside research_order too: Deploy stays terminal. The allowed twin reorders
// compress and adapt (a research order) and deploys last.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  auto p = research_order(compress<distil_double>{}, adapt<fine_tune_double>{},
                          deploy<release_double>{});
#else
  auto p = research_order(deploy<release_double>{}, compress<distil_double>{},
                          adapt<fine_tune_double>{});
#endif
  return static_cast<int>(p.size) - 3;
}
