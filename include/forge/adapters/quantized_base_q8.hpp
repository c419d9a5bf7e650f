#pragma once
// A quantized base weight for inference whose forward quantizes the activations to int8
// blocks, as llama.cpp does (its Q8_0 activation blocks), and multiplies with
// backend::qmatmul_q8 (VNNI integer dot products where the backend has them: a streaming
// kernel for decode, a packed-panel GEMM for prefill). The price is a bounded activation
// rounding error (backend/qmatmul_q8.hpp states it). The input gradient is the f32 product of
// the same weights, so training through it would see a straight-through estimate: train on
// adapters::quantized_base instead.

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "forge/adapters/qlora.hpp"
#include "forge/backend/qmatmul_q4_0_panels.hpp"
#include "forge/backend/qmatmul_q4_k_panels.hpp"
#include "forge/backend/qmatmul_q8.hpp"

namespace forge::adapters {

/// A linear layer's base weight in format F (one that backend::qmatmul_q8 accepts), with
/// int8-quantized activations.
template <class Bk, class F>
class quantized_base_q8 final : public quantized_weight {
  // Q4_0 and Q4_K are held as 16-row VNNI panels (backend/qmatmul_q4_0_panels.hpp,
  // qmatmul_q4_k_panels.hpp), repacked once here: one kernel for decode and prefill. Other
  // formats as they are.
  static constexpr bool is_q4_0 = std::is_same_v<F, quant::q4_0>;
  static constexpr bool is_q4_k = std::is_same_v<F, quant::q4_k>;
  static constexpr bool panels = is_q4_0 || is_q4_k;
  using stored =
      std::conditional_t<is_q4_0, backend::q4_0_panels,
                         std::conditional_t<is_q4_k, backend::q4_k_panels, quant::qtensor<F>>>;
  static stored pack(quant::qtensor<F> w) {
    if constexpr (is_q4_0)
      return backend::pack_q4_0_panels(w);
    else if constexpr (is_q4_k)
      return backend::pack_q4_k_panels(w);
    else
      return w;
  }

 public:
  explicit quantized_base_q8(quant::qtensor<F> w) : w_(pack(std::move(w))) {}
  void forward(const float* x, std::int64_t rows, float* y) const override {
    backend::qmatmul_q8(Bk{}, std::span<const float>(x, std::size_t(rows * w_.cols)), rows, w_,
                        std::span<float>(y, std::size_t(rows * w_.rows)));
  }
  void backward_input(const float* dy, std::int64_t rows, float* dx) const override {
    const auto w = weight();
    std::vector<float> t(std::size_t(rows * w.cols));
    backend::qmatmul_transposed(Bk{}, std::span<const float>(dy, std::size_t(rows * w.rows)), rows,
                                w, std::span<float>(t));
    for (std::size_t i = 0; i < t.size(); ++i) dx[i] += t[i];
  }
  /// The quantized weight (for Q4_0 and Q4_K rebuilt from the panels: the same GGUF blocks).
  quant::qtensor<F> weight() const {
    if constexpr (is_q4_0)
      return backend::unpack_q4_0_panels(w_);
    else if constexpr (is_q4_k)
      return backend::unpack_q4_k_panels(w_);
    else
      return w_;
  }
  std::size_t bytes() const override { return w_.bytes(); }
  std::vector<std::span<const std::byte>> storage() const override {
    if constexpr (panels)
      return {std::as_bytes(std::span(w_.data))};
    else
      return {std::as_bytes(std::span(w_.codes)), std::as_bytes(std::span(w_.scales)),
              std::as_bytes(std::span(w_.zeros)), std::as_bytes(std::span(w_.scales2)),
              std::as_bytes(std::span(&w_.offset, 1))};
  }

 private:
  stored w_;
};

}  // namespace forge::adapters
