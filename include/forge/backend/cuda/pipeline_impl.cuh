#pragma once
// The definitions of forge::cuda::open_lora_session and open_full_session (session.hpp):
// include this header in exactly one .cu file of a program that runs pipeline stages on
// backend::cuda.
// It defines a non-inline function, so a second inclusion is a duplicate-symbol link error
// and a missing one an undefined reference to the open_*_session functions.

#include <memory>

#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/lora_trainer.cuh"
#include "forge/backend/cuda/session.hpp"

namespace forge::cuda {

namespace detail {

// A session over lora_trainer<T>; the context is declared first so it outlives the trainer.
template <class T>
class lora_session_impl final : public lora_session {
 public:
  lora_session_impl(const llama_dims& d, const llama_host_weights& w, const session_options& o)
      : ctx_(),
        tr_(ctx_, d, w,
            {.rank = o.rank,
             .alpha = float(o.scale * double(o.rank)),
             .base = o.base,
             .max_batch = o.max_batch,
             .max_seq = o.max_seq}) {}

  void set_lora(std::int64_t layer, llama_proj p, const float* A, const float* B) override {
    tr_.set_lora(layer, p, A, B);
  }
  void get_lora(std::int64_t layer, llama_proj p, float* A, float* B) const override {
    tr_.get_lora(layer, p, A, B);
  }
  void get_moments(std::int64_t layer, llama_proj p, bool second, float* A,
                   float* B) const override {
    tr_.get_moments(layer, p, second, A, B);
  }
  void set_moments(std::int64_t layer, llama_proj p, bool second, const float* A,
                   const float* B) override {
    tr_.set_moments(layer, p, second, A, B);
  }
  void set_steps(std::int64_t steps) override { tr_.set_steps(steps); }
  void zero_grad() override { tr_.zero_grad(); }
  double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                          const std::int64_t* targets, const float* row_weights) override {
    return tr_.forward_backward(batch, seq, ids, targets, row_weights);
  }
  double grad_norm() override { return tr_.grad_norm(); }
  void step(const session_step& s) override {
    tr_.step({.lr = float(s.lr),
              .beta1 = float(s.beta1),
              .beta2 = float(s.beta2),
              .eps = float(s.eps),
              .weight_decay = float(s.weight_decay)},
             float(s.grad_scale));
  }
  void sequence_logprobs(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                         const std::int64_t* targets, bool with_lora, double* out) override {
    tr_.sequence_logprobs(batch, seq, ids, targets, with_lora, out);
  }
  std::int64_t in_features(llama_proj p) const override { return tr_.in_features(p); }
  std::int64_t out_features(llama_proj p) const override { return tr_.out_features(p); }

 private:
  context ctx_;
  lora_trainer<T> tr_;
};

// A full fine-tuning session over lora_trainer<T> with options.full (adapters off; rank 1
// keeps the unused LoRA buffers small).
template <class T>
class full_session_impl final : public full_session {
 public:
  full_session_impl(const llama_dims& d, const llama_host_weights& w, const full_session_options& o)
      : ctx_(),
        tr_(ctx_, d, w,
            {.rank = 1,
             .alpha = 1.0f,
             .max_batch = o.max_batch,
             .max_seq = o.max_seq,
             .full = true}) {}

  std::int64_t size(llama_tensor t) const override { return tr_.tensor_size(t); }
  void set_weight(llama_tensor t, std::int64_t layer, const float* w) override {
    tr_.set_weight(t, layer, w);
  }
  void get_weight(llama_tensor t, std::int64_t layer, float* w) const override {
    tr_.get_weight(t, layer, w);
  }
  void get_grad(llama_tensor t, std::int64_t layer, float* g) const override {
    tr_.get_weight_grad(t, layer, g);
  }
  void get_moments(llama_tensor t, std::int64_t layer, bool second, float* m) const override {
    tr_.get_weight_moments(t, layer, second, m);
  }
  void set_moments(llama_tensor t, std::int64_t layer, bool second, const float* m) override {
    tr_.set_weight_moments(t, layer, second, m);
  }
  void set_trainable(llama_tensor t, std::int64_t layer, bool on) override {
    tr_.set_trainable(t, layer, on);
  }
  void set_steps(std::int64_t steps) override { tr_.set_steps(steps); }
  void zero_grad() override { tr_.zero_grad(); }
  double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                          const std::int64_t* targets, const float* row_weights) override {
    return tr_.forward_backward(batch, seq, ids, targets, row_weights);
  }
  double grad_norm() override { return tr_.grad_norm(); }
  void step(const session_step& s) override {
    tr_.step({.lr = float(s.lr),
              .beta1 = float(s.beta1),
              .beta2 = float(s.beta2),
              .eps = float(s.eps),
              .weight_decay = float(s.weight_decay)},
             float(s.grad_scale));
  }
  void sequence_logprobs(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                         const std::int64_t* targets, double* out) override {
    tr_.sequence_logprobs(batch, seq, ids, targets, false, out);
  }

 private:
  context ctx_;
  lora_trainer<T> tr_;
};

}  // namespace detail

std::unique_ptr<full_session> open_full_session(const llama_dims& d, const llama_host_weights& w,
                                                const full_session_options& o) {
  if (o.storage == precision::bf16)
    return std::make_unique<detail::full_session_impl<__nv_bfloat16>>(d, w, o);
  return std::make_unique<detail::full_session_impl<float>>(d, w, o);
}

std::unique_ptr<lora_session> open_lora_session(const llama_dims& d, const llama_host_weights& w,
                                                const session_options& o) {
  if (o.storage == precision::bf16)
    return std::make_unique<detail::lora_session_impl<__nv_bfloat16>>(d, w, o);
  return std::make_unique<detail::lora_session_impl<float>>(d, w, o);
}

}  // namespace forge::cuda
