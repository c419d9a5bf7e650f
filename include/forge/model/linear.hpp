#pragma once
// The linear layer y = x·Wᵀ + b of every projection, and its two extension points:
//   * linear_base:    replaces the dense weight with another representation (a quantized
//                     matrix): forward y = x·Wᵀ and the input gradient dx += dy·W.
//   * linear_adapter: adds a trainable term to the output (LoRA adds x·Aᵀ·Bᵀ·scale) and
//                     computes its own parameter gradients in backward.
// Forward:  y = base(x) + b + Σ_adapters a(x)
// Backward: dx += dy·W + Σ a'(x)ᵀ·dy;  dW += dyᵀ·x and db += Σ_rows dy, only if trainable.
// Shapes: x [rows, in]; y, dy [rows, out]; W [out, in] (the Hugging Face layout).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "forge/backend/gemm.hpp"
#include "forge/core/dtype.hpp"

namespace forge::model {

/// A named parameter tensor with an optional gradient buffer of the same shape.
template <class T>
struct parameter {
  std::string name;                 ///< Hugging Face key, e.g. "model.norm.weight"
  std::vector<std::int64_t> shape;  ///< row-major extents
  std::vector<T> value;             ///< numel() elements
  std::vector<T> grad;              ///< empty, or numel() elements when gradients are on
  bool trainable = true;            ///< false: no gradient is allocated or computed
  dtype stored = dtype::f32;        ///< dtype it was loaded as / will be saved as
  /// Number of elements (product of the shape).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  /// True when backward accumulates a gradient into `grad`.
  bool has_grad() const { return trainable && !grad.empty(); }
};

/// Replaces a linear layer's dense weight with another representation (e.g. quantized).
template <class T>
class linear_base {
 public:
  virtual ~linear_base() = default;
  /// y[rows, out] = x[rows, in]·Wᵀ (overwrites y).
  virtual void forward(const T* x, std::int64_t rows, T* y) const = 0;
  /// dx[rows, in] += dy[rows, out]·W.
  virtual void backward_input(const T* dy, std::int64_t rows, T* dx) const = 0;
};

/// Adds a term to a linear layer's output and trains its own parameters (LoRA, DoRA, ...).
/// Both calls must depend only on x (gradient checkpointing re-runs forward).
template <class T>
class linear_adapter {
 public:
  virtual ~linear_adapter() = default;
  /// y[rows, out] += a(x[rows, in]).
  virtual void forward(const T* x, std::int64_t rows, T* y) = 0;
  /// dx[rows, in] += (∂a/∂x)ᵀ·dy (dx may be null: no input gradient wanted) and
  /// accumulates the adapter's own parameter gradients.
  virtual void backward(const T* x, const T* dy, std::int64_t rows, T* dx) = 0;
};

/// One projection of the model (q/k/v/o, gate/up/down or the head).
template <class T>
struct linear {
  std::int64_t in = 0, out = 0;
  parameter<T> weight;                         ///< [out, in]; empty if `base` is set or tied
  std::optional<parameter<T>> bias;            ///< [out]
  std::shared_ptr<const linear_base<T>> base;  ///< replaces `weight` when set
  std::vector<std::shared_ptr<linear_adapter<T>>> adapters;
};

/// y = x·Wᵀ + b + adapters(x). `w` overrides the layer's own weight (tied embeddings).
template <class T, class B>
void linear_forward(B be, const linear<T>& l, const T* x, std::int64_t rows, T* y,
                    const parameter<T>* w = nullptr) {
  if (l.base) {
    l.base->forward(x, rows, y);
  } else {
    const auto& W = w ? *w : l.weight;
    backend::gemm_nt(be, rows, l.out, l.in, x, W.value.data(), y, false);
  }
  if (l.bias)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < l.out; ++o) y[r * l.out + o] += l.bias->value[o];
  for (const auto& a : l.adapters) a->forward(x, rows, y);
}

/// Backward of linear_forward: dx (+)= (accumulate_dx) input gradient if dx is non-null;
/// weight and bias gradients accumulate only where trainable and allocated.
template <class T, class B>
void linear_backward(B be, linear<T>& l, const T* x, const T* dy, std::int64_t rows, T* dx,
                     bool accumulate_dx, parameter<T>* w = nullptr) {
  auto& W = w ? *w : l.weight;
  if (dx) {
    if (l.base) {
      if (!accumulate_dx)
        for (std::int64_t i = 0; i < rows * l.in; ++i) dx[i] = 0;
      l.base->backward_input(dy, rows, dx);
    } else {
      backend::gemm_nn(be, rows, l.out, l.in, dy, W.value.data(), dx, accumulate_dx);
    }
  }
  if (!l.base && W.has_grad()) backend::gemm_tn(be, rows, l.out, l.in, dy, x, W.grad.data(), true);
  if (l.bias && l.bias->has_grad())
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < l.out; ++o) l.bias->grad[o] += dy[r * l.out + o];
  for (const auto& a : l.adapters) a->backward(x, dy, rows, dx);
}

}  // namespace forge::model
