// Rule 4: refusal accuracy is measured by Align, not Adapt. The allowed twin gates the adapt
// stage on exact match.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  adapt<fine_tune_double> s{{.tag = "sft"}, {"sft"}, accept(exact_match >= 0.8)};
#else
  adapt<fine_tune_double> s{{.tag = "sft"}, {"sft"}, accept(refusal_accuracy >= 0.9)};
#endif
  return static_cast<int>(s.criteria().size()) - 1;
}
