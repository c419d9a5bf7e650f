#pragma once
// The host-side vocabulary of the GPU trainer: a Llama-family model's extents and its f32
// weights as plain host pointers in Hugging Face layout. Plain C++ (no CUDA types), so host
// code compiled without nvcc can fill it and hand it to the GPU through
// forge/backend/cuda/session.hpp; lora_trainer.cuh takes the same types.

#include <array>
#include <cstdint>
#include <vector>

namespace forge::cuda {

/// Extents of a Llama-family model (the fields of a Hugging Face config.json).
struct llama_dims {
  std::int64_t vocab = 0;         ///< vocabulary size
  std::int64_t hidden = 0;        ///< model width
  std::int64_t intermediate = 0;  ///< MLP width
  std::int64_t layers = 0;        ///< decoder layers
  std::int64_t heads = 0;         ///< query heads
  std::int64_t kv_heads = 0;      ///< key/value heads (grouped-query attention)
  std::int64_t head_dim = 0;      ///< features per head (even)
  float rms_eps = 1e-5f;          ///< RMSNorm epsilon
  float rope_theta = 10000.0f;    ///< RoPE base
};

/// The seven LoRA-adapted linear layers of a decoder layer, in PEFT's names.
enum class llama_proj : int { q, k, v, o, gate, up, down };
/// All seven projections, in order.
inline constexpr std::array<llama_proj, 7> llama_projs = {
    llama_proj::q,    llama_proj::k,  llama_proj::v,   llama_proj::o,
    llama_proj::gate, llama_proj::up, llama_proj::down};
/// PEFT's module name of a projection ("q_proj" …).
inline const char* llama_proj_name(llama_proj p) {
  constexpr const char* n[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                "gate_proj", "up_proj", "down_proj"};
  return n[int(p)];
}

/// The weight tensors of a Llama-family model, for full fine-tuning: the three model-wide
/// ones (layer index ignored) and the nine of every decoder layer.
enum class llama_tensor : int {
  embed,       ///< model.embed_tokens.weight [vocab, hidden]
  final_norm,  ///< model.norm.weight [hidden]
  lm_head,     ///< lm_head.weight [vocab, hidden] (the embedding when tied)
  input_norm,  ///< model.layers.N.input_layernorm.weight [hidden]
  post_norm,   ///< model.layers.N.post_attention_layernorm.weight [hidden]
  q,           ///< self_attn.q_proj.weight [heads·head_dim, hidden]
  k,           ///< self_attn.k_proj.weight [kv_heads·head_dim, hidden]
  v,           ///< self_attn.v_proj.weight [kv_heads·head_dim, hidden]
  o,           ///< self_attn.o_proj.weight [hidden, heads·head_dim]
  gate,        ///< mlp.gate_proj.weight [intermediate, hidden]
  up,          ///< mlp.up_proj.weight [intermediate, hidden]
  down         ///< mlp.down_proj.weight [hidden, intermediate]
};
/// Whether a tensor belongs to a decoder layer (else it is model-wide).
inline constexpr bool per_layer(llama_tensor t) {
  return int(t) >= int(llama_tensor::input_norm);
}

/// Host f32 weights of one decoder layer, Hugging Face layout (projections [out, in]).
struct llama_layer_host {
  const float* input_norm = nullptr;  ///< [hidden]
  const float* q = nullptr;           ///< [heads·head_dim, hidden]
  const float* k = nullptr;           ///< [kv_heads·head_dim, hidden]
  const float* v = nullptr;           ///< [kv_heads·head_dim, hidden]
  const float* o = nullptr;           ///< [hidden, heads·head_dim]
  const float* post_norm = nullptr;   ///< [hidden]
  const float* gate = nullptr;        ///< [intermediate, hidden]
  const float* up = nullptr;          ///< [intermediate, hidden]
  const float* down = nullptr;        ///< [hidden, intermediate]
};

/// Host f32 weights of a whole model; read once by the trainer's constructor.
struct llama_host_weights {
  const float* embed = nullptr;       ///< [vocab, hidden]
  const float* final_norm = nullptr;  ///< [hidden]
  const float* lm_head = nullptr;     ///< [vocab, hidden]
  std::vector<llama_layer_host> layers{};
};

/// How the frozen projections are stored on the device.
enum class base_storage {
  dense,  ///< in T
  nf4     ///< NF4, expanded to T before each product (QLoRA)
};

}  // namespace forge::cuda
