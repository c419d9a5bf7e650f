// Rule 2: a deploy stage followed by another stage. The allowed twin deploys last.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  auto p = pipeline(adapt<fine_tune_double>{}, deploy<release_double>{});
#else
  auto p = pipeline(deploy<release_double>{}, adapt<fine_tune_double>{});
#endif
  return static_cast<int>(p.size) - 2;
}
