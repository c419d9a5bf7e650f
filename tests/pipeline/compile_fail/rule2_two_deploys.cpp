// Rule 2: Deploy at most once. The allowed twin has one deploy.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  auto p = pipeline(adapt<fine_tune_double>{}, deploy<release_double>{});
#else
  auto p = pipeline(adapt<fine_tune_double>{}, deploy<release_double>{}, deploy<release_double>{});
#endif
  return static_cast<int>(p.size) - 2;
}
