#pragma once
// The 16 NF4 code values (Dettmers et al. 2023, "QLoRA", appendix E; bitsandbytes csrc), as
// f32. One table for the CPU format (quant/nf4.hpp) and the CUDA kernels
// (backend/cuda/nf4.cuh): this header depends on nothing, so nvcc and the host compiler both
// read it.

namespace forge::quant {

/// NF4 code value of each 4-bit index 0..15 (ascending, -1 .. 1, index 7 is exactly 0).
inline constexpr float nf4_code_values[16] = {-1.0f,
                                              -0.6961928009986877f,
                                              -0.5250730514526367f,
                                              -0.39491748809814453f,
                                              -0.28444138169288635f,
                                              -0.18477343022823334f,
                                              -0.09105003625154495f,
                                              0.0f,
                                              0.07958029955625534f,
                                              0.16093020141124725f,
                                              0.24611230194568634f,
                                              0.33791524171829224f,
                                              0.44070982933044434f,
                                              0.5626170039176941f,
                                              0.7229568362236023f,
                                              1.0f};

}  // namespace forge::quant
