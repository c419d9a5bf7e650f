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
#include "forge/backend/qmatmul_int4_panels.hpp"
#include "forge/backend/qmatmul_int8_panels.hpp"
#include "forge/backend/qmatmul_nf4_panels.hpp"
#include "forge/backend/qmatmul_q4_0_panels.hpp"
#include "forge/backend/qmatmul_q4_k_panels.hpp"
#include "forge/backend/qmatmul_q8.hpp"

namespace forge::adapters {

namespace detail {
/// How quantized_base_q8 holds format F: as it is, or (Q4_0, Q4_K, int4_group, int8_channel,
/// NF4) as 16-row VNNI panels repacked once, one kernel for decode and prefill
/// (backend/qmatmul_*_panels.hpp).
template <class F>
struct q8_storage {
  static constexpr bool panels = false, has_perm = false;
  using type = quant::qtensor<F>;
  static type pack(quant::qtensor<F> w) { return w; }
  static quant::qtensor<F> unpack(const type& w) { return w; }
};
template <>
struct q8_storage<quant::q4_0> {
  static constexpr bool panels = true, has_perm = false;
  using type = backend::q4_0_panels;
  static type pack(const quant::qtensor<quant::q4_0>& w) { return backend::pack_q4_0_panels(w); }
  static quant::qtensor<quant::q4_0> unpack(const type& p) {
    return backend::unpack_q4_0_panels(p);
  }
};
template <>
struct q8_storage<quant::q4_k> {
  static constexpr bool panels = true, has_perm = false;
  using type = backend::q4_k_panels;
  static type pack(const quant::qtensor<quant::q4_k>& w) { return backend::pack_q4_k_panels(w); }
  static quant::qtensor<quant::q4_k> unpack(const type& p) {
    return backend::unpack_q4_k_panels(p);
  }
};
template <>
struct q8_storage<quant::int8_channel> {
  static constexpr bool panels = true, has_perm = false;
  using type = backend::int8_panels;
  static type pack(const quant::qtensor<quant::int8_channel>& w) {
    return backend::pack_int8_panels(w);
  }
  static quant::qtensor<quant::int8_channel> unpack(const type& p) {
    return backend::unpack_int8_panels(p);
  }
};
template <bool D>
struct q8_storage<quant::nf4_format<D>> {
  static constexpr bool panels = true, has_perm = false;
  using type = backend::nf4_panels<D>;
  static type pack(const quant::qtensor<quant::nf4_format<D>>& w) {
    return backend::pack_nf4_panels(w);
  }
  static quant::qtensor<quant::nf4_format<D>> unpack(const type& p) {
    return backend::unpack_nf4_panels(p);
  }
};
template <int G, bool Sym>
struct q8_storage<quant::int4_group<G, Sym>> {
  static constexpr bool panels = true, has_perm = true;
  using type = backend::int4_panels<G, Sym>;
  static type pack(const quant::qtensor<quant::int4_group<G, Sym>>& w) {
    return backend::pack_int4_panels(w);
  }
  static quant::qtensor<quant::int4_group<G, Sym>> unpack(const type& p) {
    return backend::unpack_int4_panels(p);
  }
};
}  // namespace detail

/// A linear layer's base weight in format F (one that backend::qmatmul_q8 accepts), with
/// int8-quantized activations.
template <class Bk, class F>
class quantized_base_q8 final : public quantized_weight {
  using S = detail::q8_storage<F>;

 public:
  explicit quantized_base_q8(quant::qtensor<F> w) : w_(S::pack(std::move(w))) {}
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
  /// The quantized weight (for panel formats rebuilt from the panels: the same tensor).
  quant::qtensor<F> weight() const { return S::unpack(w_); }
  std::size_t bytes() const override { return w_.bytes(); }
  std::vector<std::span<const std::byte>> storage() const override {
    if constexpr (S::has_perm)
      return {std::as_bytes(std::span(w_.data)), std::as_bytes(std::span(w_.perm))};
    else if constexpr (requires { w_.constants; })
      return {std::as_bytes(std::span(w_.data)), std::as_bytes(std::span(w_.constants.scales)),
              std::as_bytes(std::span(w_.constants.zeros)),
              std::as_bytes(std::span(w_.constants.scales2)),
              std::as_bytes(std::span(&w_.constants.offset, 1))};
    else if constexpr (S::panels)
      return {std::as_bytes(std::span(w_.data))};
    else
      return {std::as_bytes(std::span(w_.codes)), std::as_bytes(std::span(w_.scales)),
              std::as_bytes(std::span(w_.zeros)), std::as_bytes(std::span(w_.scales2)),
              std::as_bytes(std::span(&w_.offset, 1))};
  }
  std::vector<float> dequantized() const override { return quant::dequantize(weight()); }
  std::string_view format() const override { return F::name; }

 private:
  typename S::type w_;
};

}  // namespace forge::adapters
