// int4_group accepts only the group sizes the kernels and GPTQ layouts support.
#include "forge/quant/int4.hpp"
int main() {
  return forge::quant::int4_group<48, true>::group_size;
}
