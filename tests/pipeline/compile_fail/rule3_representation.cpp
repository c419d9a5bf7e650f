// Rule 3: full fine-tuning cannot take the int4 base a quantizer produces; LoRA on the
// quantized base (the allowed twin) can.
#include "doubles.hpp"
using namespace forge;
using namespace forge::test;

int main() {
#ifdef FORGE_ALLOWED_VARIANT
  auto p = research_order(compress<quantize_double>{}, adapt<lora_on_quantized_double>{});
#else
  auto p = research_order(compress<quantize_double>{}, adapt<full_fine_tune_double>{});
#endif
  return static_cast<int>(p.size) - 2;
}
