#pragma once
// The bridge between host code compiled without nvcc (the pipeline's method policies, any
// program using forge's CPU headers) and the GPU trainer of lora_trainer.cuh. This header is
// plain C++: it declares abstract training sessions over host arrays — LoRA (lora_session)
// and full fine-tuning (full_session) — and the functions that open them. The definitions live
// in forge/backend/cuda/pipeline_impl.cuh, which exactly one .cu file of a program includes
// (nvcc compiles it; the rest of the program is ordinary C++). A program that never runs a
// stage on backend::cuda needs neither that file nor nvcc: the open_*_session functions are
// then never referenced.
//
//   // gpu.cu — the program's one CUDA translation unit
//   #include <forge/backend/cuda/pipeline_impl.cuh>
//
// Layouts are those of lora_trainer: LoRA A [rank, in] and B [out, rank], f32, per decoder
// layer and projection; token ids and targets [batch, seq] (targets −100 are not trained).

#include <cstdint>
#include <memory>

#include "forge/backend/cuda/llama_host.hpp"

namespace forge::cuda {

/// Storage and arithmetic precision of a session's activations and base weights.
enum class precision {
  f32,  ///< reference precision: matches the CPU backends to float rounding
  bf16  ///< training precision (bf16 storage, f32 accumulation and f32 LoRA masters)
};

/// What a session is planned for.
struct session_options {
  std::int64_t rank = 8;  ///< LoRA rank r
  double scale = 1.0;     ///< adapter output scale s (alpha / r, or alpha / √r for rsLoRA)
  base_storage base = base_storage::dense;  ///< dense, or NF4 (QLoRA)
  precision storage = precision::f32;       ///< activations and base weights
  std::int64_t max_batch = 1;               ///< sequences per forward, at most
  std::int64_t max_seq = 1;                 ///< tokens per sequence, at most
};

/// AdamW hyperparameters of one step (PyTorch's update order; learning rate after the
/// schedule).
struct session_step {
  double lr = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_scale = 1.0;  ///< gradients are multiplied by this first (clipping)
};

/// A LoRA training session on one GPU: the frozen base uploaded once, LoRA masters, gradients
/// and AdamW moments on the device. Every call takes and returns host arrays.
class lora_session {
 public:
  virtual ~lora_session() = default;
  /// Sets LoRA A [rank, in] and B [out, rank] of one projection.
  virtual void set_lora(std::int64_t layer, llama_proj p, const float* A, const float* B) = 0;
  /// Copies LoRA A and B of one projection to the host.
  virtual void get_lora(std::int64_t layer, llama_proj p, float* A, float* B) const = 0;
  /// Copies AdamW's first (second = false) or second moments of one projection to the host.
  virtual void get_moments(std::int64_t layer, llama_proj p, bool second, float* A,
                           float* B) const = 0;
  /// Sets AdamW's moments of one projection.
  virtual void set_moments(std::int64_t layer, llama_proj p, bool second, const float* A,
                           const float* B) = 0;
  /// Sets the AdamW step count (the next step is steps + 1).
  virtual void set_steps(std::int64_t steps) = 0;
  /// Zeroes the accumulated LoRA gradients.
  virtual void zero_grad() = 0;
  /// Forward and backward of one batch with per-row loss weights w [batch·seq]: accumulates
  /// the gradients of L = Σ_t w_t·CE_t and returns L.
  virtual double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                                  const std::int64_t* targets, const float* row_weights) = 0;
  /// Global L2 norm of the accumulated gradients.
  virtual double grad_norm() = 0;
  /// One AdamW step on every LoRA parameter.
  virtual void step(const session_step& s) = 0;
  /// Σ log p(target) per sequence (out [batch]); with_lora = false evaluates the base alone.
  virtual void sequence_logprobs(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                                 const std::int64_t* targets, bool with_lora, double* out) = 0;
  /// Input and output features of a projection.
  virtual std::int64_t in_features(llama_proj p) const = 0;
  virtual std::int64_t out_features(llama_proj p) const = 0;
};

/// What a full fine-tuning session is planned for.
struct full_session_options {
  precision storage = precision::f32;  ///< activations and the weights the products read
  std::int64_t max_batch = 1;          ///< sequences per forward, at most
  std::int64_t max_seq = 1;            ///< tokens per sequence, at most
};

/// A full fine-tuning session on one GPU: every weight tensor of the model (f32 masters,
/// gradients and AdamW moments) on the device, each trainable unless frozen. Weights are in
/// Hugging Face layout (llama_host.hpp); a head tied to the embedding is the embedding
/// (size(llama_tensor::lm_head) is then 0). Every call takes and returns host arrays.
class full_session {
 public:
  virtual ~full_session() = default;
  /// Elements of a weight tensor.
  virtual std::int64_t size(llama_tensor t) const = 0;
  /// Sets a weight (size(t) values); `layer` is ignored for the model-wide tensors.
  virtual void set_weight(llama_tensor t, std::int64_t layer, const float* w) = 0;
  /// Copies a weight (f32 master) to the host.
  virtual void get_weight(llama_tensor t, std::int64_t layer, float* w) const = 0;
  /// Copies a weight's accumulated gradient to the host.
  virtual void get_grad(llama_tensor t, std::int64_t layer, float* g) const = 0;
  /// Copies AdamW's first (second = false) or second moments of a weight to the host.
  virtual void get_moments(llama_tensor t, std::int64_t layer, bool second, float* m) const = 0;
  /// Sets AdamW's moments of a weight.
  virtual void set_moments(llama_tensor t, std::int64_t layer, bool second, const float* m) = 0;
  /// Freezes (false) or trains (true, the default) a weight: a frozen weight is left out of
  /// grad_norm and step.
  virtual void set_trainable(llama_tensor t, std::int64_t layer, bool on) = 0;
  /// Sets the AdamW step count (the next step is steps + 1).
  virtual void set_steps(std::int64_t steps) = 0;
  /// Zeroes the accumulated gradients.
  virtual void zero_grad() = 0;
  /// Forward and backward with per-row loss weights w [batch·seq]: accumulates the gradients
  /// of L = Σ_t w_t·CE_t of every weight and returns L.
  virtual double forward_backward(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                                  const std::int64_t* targets, const float* row_weights) = 0;
  /// Global L2 norm of the trainable weights' accumulated gradients.
  virtual double grad_norm() = 0;
  /// One AdamW step on every trainable weight.
  virtual void step(const session_step& s) = 0;
  /// Σ log p(target) per sequence (out [batch]) of the current weights.
  virtual void sequence_logprobs(std::int64_t batch, std::int64_t seq, const std::int64_t* ids,
                                 const std::int64_t* targets, double* out) = 0;
};

/// Opens a full fine-tuning session on GPU 0 from `w` (read during the call only; w.lm_head
/// == w.embed ties the head to the embedding). Defined in forge/backend/cuda/pipeline_impl.cuh;
/// throws forge::error on bad extents or a CUDA failure.
std::unique_ptr<full_session> open_full_session(const llama_dims& d, const llama_host_weights& w,
                                                const full_session_options& o);

/// Opens a session on GPU 0: uploads `w` (read during the call only), LoRA A and B zero.
/// Defined in forge/backend/cuda/pipeline_impl.cuh (one .cu file of the program includes it);
/// throws forge::error on bad extents or a CUDA failure.
std::unique_ptr<lora_session> open_lora_session(const llama_dims& d, const llama_host_weights& w,
                                                const session_options& o);

}  // namespace forge::cuda
