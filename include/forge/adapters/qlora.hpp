#pragma once
// QLoRA (Dettmers et al. 2023): the frozen base projections stored as NF4 — the 16
// bitsandbytes code values, blockwise absmax with blocks of 64, the absmax constants double
// quantized to 8 bits in blocks of 256 (≈ 4.127 bits per weight, paper §3) — and LoRA
// adapters in f32 on top. The base is dequantized on the fly in the forward (y = x·Wᵀ) and
// in the backward (dx += dy·W); it never has a weight gradient.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/backend/qmatmul_lora.hpp"
#include "forge/quant/nf4.hpp"

namespace forge::adapters {

/// A quantized base weight: what callers may ask of it besides the products.
class quantized_weight : public model::linear_base<float> {
 public:
  /// Bytes of weight memory (codes and constants).
  virtual std::size_t bytes() const = 0;
  /// The stored bytes in a fixed order (codes, constants), e.g. for content digests.
  virtual std::vector<std::span<const std::byte>> storage() const = 0;
  /// The dequantized matrix W [out, in], row-major: the exact values the format stores.
  virtual std::vector<float> dequantized() const = 0;
  /// The format's name (quant formats' F::name, e.g. "q8_0").
  virtual std::string_view format() const = 0;
};

/// A linear layer's base weight in quantized format F, multiplied with kernels of `Bk`.
template <class Bk, class F = quant::nf4>
class quantized_base final : public quantized_weight {
 public:
  explicit quantized_base(quant::qtensor<F> w) : w_(std::move(w)) {}
  void forward(const float* x, std::int64_t rows, float* y) const override {
    backend::qmatmul(Bk{}, std::span<const float>(x, std::size_t(rows * w_.cols)), rows, w_,
                     std::span<float>(y, std::size_t(rows * w_.rows)));
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
  std::vector<float> dequantized() const override { return quant::dequantize(w_); }
  std::string_view format() const override { return F::name; }

 private:
  quant::qtensor<F> w_;
};

/// A token-embedding table held as the rows of a quantized matrix [vocab, hidden] (e.g.
/// Q8_0 blocks), each row dequantized on lookup. It shares the matrix with the output head
/// when the embeddings are tied (one copy in memory).
class quantized_table : public model::embedding_table<float> {
 public:
  /// The quantized matrix whose rows are the embeddings.
  virtual const std::shared_ptr<const quantized_weight>& source() const = 0;
};

/// quantized_table over a quantized_base<Bk, F>.
template <class Bk, class F>
class quantized_embedding final : public quantized_table {
 public:
  explicit quantized_embedding(std::shared_ptr<const quantized_base<Bk, F>> w)
      : typed_(w), source_(std::move(w)) {}
  void row(std::int64_t id, float* out) const override {
    const auto& t = typed_->weight();
    F::dequantize_row(t, id, std::span<float>(out, std::size_t(t.cols)));
  }
  const std::shared_ptr<const quantized_weight>& source() const override { return source_; }

 private:
  std::shared_ptr<const quantized_base<Bk, F>> typed_;
  std::shared_ptr<const quantized_weight> source_;
};

/// Replaces the dense weight of every decoder projection (q/k/v/o, gate/up/down; embeddings,
/// norms and the head stay dense as in QLoRA) with NF4 + double quantization; the dense
/// buffers are freed. Returns the bytes of quantized base memory. forge::error when an input
/// width is not a multiple of 64 (the NF4 block), naming the layer.
template <class Bk>
std::size_t quantize_base_nf4(Bk, model::causal_lm<float>& m) {
  std::size_t bytes = 0;
  for (auto [key, lin] : linear_layers(m)) {
    if (key == "lm_head") continue;
    require(!lin->base, {.what = "layer is already quantized", .place = key});
    require(lin->in % 64 == 0,
            {.what = "NF4 needs input widths that are multiples of its 64-value block",
             .place = key,
             .expected = "in % 64 == 0",
             .found = "in = " + std::to_string(lin->in)});
    auto q = quant::nf4::quantize(lin->weight.value, lin->out, lin->in);
    auto b = std::make_shared<quantized_base<Bk>>(std::move(q));
    bytes += b->bytes();
    lin->base = b;
    lin->weight.value = {};
    lin->weight.grad = {};
    lin->weight.trainable = false;
  }
  return bytes;
}

/// Every distinct quantized matrix of `m`: projection and head bases, then the embedding
/// table's (a tied head and embedding share one, listed once).
inline std::vector<const quantized_weight*> quantized_weights(const model::causal_lm<float>& m) {
  std::vector<const quantized_weight*> out;
  auto add = [&](const quantized_weight* q) {
    if (q && std::find(out.begin(), out.end(), q) == out.end()) out.push_back(q);
  };
  for (auto [key, lin] : linear_layers(const_cast<model::causal_lm<float>&>(m)))
    add(dynamic_cast<const quantized_weight*>(lin->base.get()));
  if (auto* t = dynamic_cast<const quantized_table*>(m.embed_base.get())) add(t->source().get());
  return out;
}

/// Bytes of weight memory the quantized matrices of `m` hold (projections, head, embedding;
/// 0 for a dense model).
inline std::size_t quantized_base_bytes(const model::causal_lm<float>& m) {
  std::size_t bytes = 0;
  for (auto* q : quantized_weights(m)) bytes += q->bytes();
  return bytes;
}

}  // namespace forge::adapters
