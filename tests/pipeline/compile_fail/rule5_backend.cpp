// Rule 5: a CUDA-only method cannot run on the SIMD backend. The allowed twin runs it on
// CUDA (the code is only compiled, never run).
#include "doubles_run.hpp"
using namespace forge;
using namespace forge::test;

int main(int argc, char**) {
  auto p = pipeline(compress<cuda_only_double>{});
  if (argc > 100) {  // never true: the run is here to be type-checked, not executed
#ifdef FORGE_ALLOWED_VARIANT
    auto r = p.run(toy_model_double{}, backend::cuda{});
#else
    auto r = p.run(toy_model_double{}, backend::simd<>{});
#endif
    return r.passed ? 0 : 1;
  }
  return 0;
}
