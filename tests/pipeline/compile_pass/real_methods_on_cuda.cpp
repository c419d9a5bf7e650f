// Allowed: the quickstart's pipeline type on backend::cuda. Adapt (lora, qlora, full_finetune),
// the pairwise Align methods and KTO train on the GPU; Compress and Deploy list backend::cuda and
// run their work on the CPU (on_cpu), so one pipeline type serves both backends. Methods without a
// GPU path list only the CPU backends, and rule 5 rejects them there.
#include "forge/adapters/methods.hpp"
#include "forge/deploy/signed_release.hpp"
#include "forge/quant/methods.hpp"
#include "forge/train/align_methods.hpp"
using namespace forge;

using int4 = quant::int4_group<64, true>;
static_assert(supports_backend_v<lora, backend::cuda>);
static_assert(supports_backend_v<qlora, backend::cuda>);
static_assert(supports_backend_v<rtn_as<int4>, backend::cuda>);
static_assert(supports_backend_v<gptq_as<int4>, backend::cuda>);
static_assert(supports_backend_v<awq_as<int4>, backend::cuda>);
static_assert(supports_backend_v<distill, backend::cuda>);
static_assert(supports_backend_v<dpo<repr::int4_group<64>>, backend::cuda>);
static_assert(supports_backend_v<signed_release, backend::cuda>);
static_assert(supports_backend_v<full_finetune, backend::cuda>);
static_assert(supports_backend_v<kto<repr::int4_group<64>>, backend::cuda>);
static_assert(!supports_backend_v<dora, backend::cuda>);
static_assert(!supports_backend_v<grpo<repr::int4_group<64>>, backend::cuda>);

int main() {
  // The CPU branch of each Compress and Deploy method is instantiated for backend::cuda.
  auto a = &gptq_as<int4>::apply<backend::cuda>;
  auto b = &rtn_as<int4>::apply<backend::cuda>;
  auto c = &awq_as<int4>::apply<backend::cuda>;
  auto d = &distill::apply<backend::cuda>;
  auto e = &signed_release::apply<backend::cuda>;
  return (a && b && c && d && e) ? 0 : 1;
}
