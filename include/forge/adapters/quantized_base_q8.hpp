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
#include <vector>

#include "forge/adapters/qlora.hpp"
#include "forge/backend/qmatmul_q8.hpp"

namespace forge::adapters {

/// A linear layer's base weight in format F (one that backend::qmatmul_q8 accepts), with
/// int8-quantized activations.
template <class Bk, class F>
class quantized_base_q8 final : public quantized_weight {
 public:
  explicit quantized_base_q8(quant::qtensor<F> w) : w_(std::move(w)) {}
  void forward(const float* x, std::int64_t rows, float* y) const override {
    const std::span<const float> xs(x, std::size_t(rows * w_.cols));
    const std::span<float> ys(y, std::size_t(rows * w_.rows));
    backend::qmatmul_q8(Bk{}, xs, rows, w_, ys);
  }
  void backward_input(const float* dy, std::int64_t rows, float* dx) const override {
    std::vector<float> t(std::size_t(rows * w_.cols));
    backend::qmatmul_transposed(Bk{}, std::span<const float>(dy, std::size_t(rows * w_.rows)), rows,
                                w_, std::span<float>(t));
    for (std::size_t i = 0; i < t.size(); ++i) dx[i] += t[i];
  }
  /// The quantized weight.
  const quant::qtensor<F>& weight() const { return w_; }
  std::size_t bytes() const override { return w_.bytes(); }
  std::vector<std::span<const std::byte>> storage() const override {
    return {std::as_bytes(std::span(w_.codes)), std::as_bytes(std::span(w_.scales)),
            std::as_bytes(std::span(w_.zeros)), std::as_bytes(std::span(w_.scales2)),
            std::as_bytes(std::span(&w_.offset, 1))};
  }

 private:
  quant::qtensor<F> w_;
};

}  // namespace forge::adapters
