#pragma once
// Round-to-nearest (RTN) quantization: every weight mapped to its format's nearest code with
// the group constants computed from the group alone — no calibration data. The baseline GPTQ
// and AWQ are measured against.

#include "forge/quant/format.hpp"
#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/int4.hpp"
#include "forge/quant/int8.hpp"
#include "forge/quant/nf4.hpp"

namespace forge::quant {

/// Round-to-nearest quantization of W (rows x cols, row-major, out x in) in format F.
template <QuantFormat F>
qtensor<F> quantize_rtn(std::span<const float> w, std::int64_t rows, std::int64_t cols) {
  return F::quantize(w, rows, cols);
}

}  // namespace forge::quant
