// Allowed: any stage but Deploy may be absent, Deploy too (a pipeline without a release).
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
  auto only_compress = pipeline(compress<quantize_double>{});
  auto adapt_then_deploy = pipeline(adapt<fine_tune_double>{}, deploy<release_double>{});
  auto compress_align = pipeline(compress<quantize_double>{}, align<preference_double>{});
  auto only_deploy = pipeline(deploy<release_double>{});
  return static_cast<int>(only_compress.size + adapt_then_deploy.size + compress_align.size +
                          only_deploy.size) -
         6;
}
