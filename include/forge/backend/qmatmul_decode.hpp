#pragma once
// Decoding quantized weights into small f32 tiles, in stored column order: the shared step
// of every quantized kernel. A tile is a few rows by a K-range of one matrix (a few KiB to a
// few hundred KiB), never the whole matrix.

#include <algorithm>
#include <cstdint>

#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/int4.hpp"
#include "forge/quant/int8.hpp"
#include "forge/quant/k_quants.hpp"
#include "forge/quant/nf4.hpp"

namespace forge::backend::detail {

template <class F>
inline constexpr bool is_int4_v = false;
template <int G, bool S>
inline constexpr bool is_int4_v<quant::int4_group<G, S>> = true;
template <class F>
inline constexpr bool is_nf4_v = false;
template <bool D>
inline constexpr bool is_nf4_v<quant::nf4_format<D>> = true;

/// The K granularity a decoder needs: tiles start and end on multiples of it.
template <class F>
constexpr std::int64_t decode_step() {
  if constexpr (std::is_same_v<F, quant::int8_channel>)
    return 1;
  else if constexpr (is_int4_v<F> || is_nf4_v<F> || std::is_same_v<F, quant::q4_k>)
    return F::group_size;
  else
    return 32;
}

/// Writes the f32 weights of row r, stored columns [k0, k1), to out[0, k1 - k0). k0 and k1
/// are multiples of decode_step<F>() (k1 may also be cols).
template <class F>
void decode(const quant::qtensor<F>& t, std::int64_t r, std::int64_t k0, std::int64_t k1,
            float* out) {
  if constexpr (std::is_same_v<F, quant::int8_channel>) {
    const float s = t.scales[static_cast<std::size_t>(r)];
    const auto* q = t.codes.data() + r * t.cols;
    for (std::int64_t k = k0; k < k1; ++k) out[k - k0] = s * static_cast<std::int8_t>(q[k]);
  } else if constexpr (is_int4_v<F>) {
    constexpr int G = F::group_size;
    for (std::int64_t g = k0 / G; g < k1 / G; ++g) {
      const auto p = F::group(t, r, g);
      float lut[16];
      for (int c = 0; c < 16; ++c) lut[c] = p.scale * (static_cast<float>(c) - p.zero);
      const auto* b = t.codes.data() + (r * t.cols + g * G) / 2;
      float* o = out + (g * G - k0);
      for (int j = 0; j < G / 2; ++j) {
        o[2 * j] = lut[b[j] & 0x0f];
        o[2 * j + 1] = lut[b[j] >> 4];
      }
    }
  } else if constexpr (is_nf4_v<F>) {
    for (std::int64_t k = k0; k < k1; k += 64) {
      const auto i = static_cast<std::size_t>(r * t.cols + k);
      const float a = F::block_absmax(t, i / 64);
      float lut[16];
      for (int c = 0; c < 16; ++c) lut[c] = quant::nf4_code[static_cast<std::size_t>(c)] * a;
      const auto* b = t.codes.data() + i / 2;
      float* o = out + (k - k0);
      for (int j = 0; j < 32; ++j) {
        o[2 * j] = lut[b[j] >> 4];
        o[2 * j + 1] = lut[b[j] & 0x0f];
      }
    }
  } else if constexpr (std::is_same_v<F, quant::q4_k>) {
    // Whole 256-value super-blocks: x = (d·sc)·q − dmin·m per sub-block of 32. The products
    // may be fused here (kernels are tested against the reference within summation tolerance);
    // q4_k::dequantize_row keeps ggml's separate roundings.
    quant::q4_k::check_blocks(t);
    for (std::int64_t k = k0; k < k1; k += 256) {
      const auto* blk = t.codes.data() + (r * (t.cols / 256) + k / 256) * quant::q4_k::block_bytes;
      const float d = quant::detail::load_f16(blk), dmin = quant::detail::load_f16(blk + 2);
      float* o = out + (k - k0);
      for (int j = 0; j < 4; ++j) {
        std::uint8_t s0, m0, s1, m1;
        quant::detail::scale_min_k4(2 * j, blk + 4, s0, m0);
        quant::detail::scale_min_k4(2 * j + 1, blk + 4, s1, m1);
        const float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
        const std::uint8_t* q = blk + 16 + 32 * j;
        for (int l = 0; l < 32; ++l) o[64 * j + l] = d0 * float(q[l] & 0xF) - n0;
        for (int l = 0; l < 32; ++l) o[64 * j + 32 + l] = d1 * float(q[l] >> 4) - n1;
      }
    }
  } else {
    // GGUF blocks: decode whole blocks of 32 through the format's own row decoder.
    float blk[32];
    for (std::int64_t k = k0; k < k1; k += 32) {
      const auto* src = t.codes.data() + (r * (t.cols / 32) + k / 32) * F::block_bytes;
      if constexpr (std::is_same_v<F, quant::q8_0>) {
        const float d = quant::detail::load_f16(src);
        for (int j = 0; j < 32; ++j) blk[j] = static_cast<std::int8_t>(src[2 + j]) * d;
      } else {
        const float d = quant::detail::load_f16(src);
        for (int j = 0; j < 16; ++j) {
          blk[j] = static_cast<float>((src[2 + j] & 0x0f) - 8) * d;
          blk[j + 16] = static_cast<float>((src[2 + j] >> 4) - 8) * d;
        }
      }
      std::copy(blk, blk + 32, out + (k - k0));
    }
  }
}

}  // namespace forge::backend::detail
