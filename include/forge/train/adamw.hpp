#pragma once
// AdamW (Loshchilov & Hutter 2019) exactly as torch.optim.AdamW (single-tensor path, no
// amsgrad), for step t = 1, 2, ... with learning rate lr:
//   θ ← θ·(1 − lr·λ)                               decoupled weight decay
//   m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²
//   θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
// Optionally the states m and v are kept in 8 bits as bitsandbytes' 8-bit optimizers do
// (Dettmers et al. 2022): blockwise dynamic quantization, 256 values per block with an f32
// absmax each, through the signed dynamic code; each step dequantizes a block, updates it in
// f32 and quantizes it again. Memory: 2 bytes + 8/256 per parameter instead of 8.

#include <cmath>
#include <cstdint>
#include <vector>

#include "forge/quant/nf4.hpp"
#include "forge/train/parameters.hpp"

namespace forge::train {

/// AdamW hyperparameters; defaults are torch.optim.AdamW's.
struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool eight_bit = false;  ///< blockwise 8-bit m and v
};

/// One optimizer state tensor, in f32 or blockwise 8-bit.
struct adam_state {
  static constexpr std::size_t block = 256;  ///< values per absmax block (8-bit)
  std::vector<float> f32;                    ///< full-precision state, or empty
  std::vector<std::uint8_t> codes;           ///< 8-bit codes into quant::dynamic_map()
  std::vector<float> absmax;                 ///< one per block

  /// Bytes of memory the state takes.
  std::size_t bytes() const { return f32.size() * 4 + codes.size() + absmax.size() * 4; }
  /// Values [b·block, ...) of block b into out.
  void load_block(std::size_t b, std::size_t n, float* out) const {
    if (!f32.empty()) {
      std::copy_n(f32.data() + b * block, n, out);
      return;
    }
    const auto& code = quant::dynamic_map();
    for (std::size_t i = 0; i < n; ++i) out[i] = code[codes[b * block + i]] * absmax[b];
  }
  /// Stores block b from in.
  void store_block(std::size_t b, std::size_t n, const float* in) {
    if (!f32.empty()) {
      std::copy_n(in, n, f32.data() + b * block);
      return;
    }
    float a = 0;
    for (std::size_t i = 0; i < n; ++i) a = std::max(a, std::abs(in[i]));
    absmax[b] = a;
    const float inv = a > 0 ? 1.0f / a : 0.0f;
    for (std::size_t i = 0; i < n; ++i)
      codes[b * block + i] = quant::detail::nearest_code(quant::dynamic_map(), in[i] * inv);
  }
  /// A zero state of n values.
  static adam_state zeros(std::size_t n, bool eight_bit) {
    adam_state s;
    if (!eight_bit) {
      s.f32.assign(n, 0.0f);
    } else {
      s.codes.assign(n, quant::detail::nearest_code(quant::dynamic_map(), 0.0f));
      s.absmax.assign((n + block - 1) / block, 0.0f);
    }
    return s;
  }
};

/// AdamW over a fixed list of trainable tensors.
template <class T>
class adamw {
 public:
  adamw(std::vector<trainable<T>> params, adamw_options o) : params_(std::move(params)), opt_(o) {
    for (auto& p : params_) {
      m_.push_back(adam_state::zeros(p.value.size(), o.eight_bit));
      v_.push_back(adam_state::zeros(p.value.size(), o.eight_bit));
    }
  }

  /// One update with learning rate `lr` from the current gradients.
  void step(double lr) {
    ++t_;
    const double b1 = opt_.beta1, b2 = opt_.beta2;
    const double bc1 = 1 - std::pow(b1, double(t_)), bc2 = 1 - std::pow(b2, double(t_));
    const double step_size = lr / bc1, bc2_sqrt = std::sqrt(bc2);
    const T decay = T(1 - lr * opt_.weight_decay);
    float mb[adam_state::block], vb[adam_state::block];
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      const std::size_t n = p.value.size();
      for (std::size_t b = 0; b * adam_state::block < n; ++b) {
        const std::size_t lo = b * adam_state::block, cnt = std::min(adam_state::block, n - lo);
        m_[i].load_block(b, cnt, mb);
        v_[i].load_block(b, cnt, vb);
        for (std::size_t j = 0; j < cnt; ++j) {
          T& th = p.value[lo + j];
          const float g = float(p.grad[lo + j]);
          th *= decay;
          mb[j] += (g - mb[j]) * float(1 - b1);  // torch: exp_avg.lerp_(grad, 1 - β₁)
          vb[j] = vb[j] * float(b2) + float(1 - b2) * g * g;
          const float denom = std::sqrt(vb[j]) / float(bc2_sqrt) + float(opt_.eps);
          th -= T(float(step_size) * (mb[j] / denom));
        }
        m_[i].store_block(b, cnt, mb);
        v_[i].store_block(b, cnt, vb);
      }
    }
  }

  /// Steps taken so far.
  std::int64_t steps() const { return t_; }
  void set_steps(std::int64_t t) { t_ = t; }
  const std::vector<trainable<T>>& params() const { return params_; }
  std::vector<adam_state>& first_moments() { return m_; }
  std::vector<adam_state>& second_moments() { return v_; }
  const adamw_options& options() const { return opt_; }
  /// Bytes held by the optimizer states.
  std::size_t state_bytes() const {
    std::size_t s = 0;
    for (std::size_t i = 0; i < m_.size(); ++i) s += m_[i].bytes() + v_[i].bytes();
    return s;
  }

 private:
  std::vector<trainable<T>> params_;
  adamw_options opt_;
  std::vector<adam_state> m_, v_;
  std::int64_t t_ = 0;
};

}  // namespace forge::train
