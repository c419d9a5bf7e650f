#pragma once
// The parameters of a Llama-family causal language model (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM), named and shaped exactly as Hugging Face stores
// them:
//   model.embed_tokens.weight                       [vocab, hidden]
//   model.layers.N.input_layernorm.weight           [hidden]
//   model.layers.N.self_attn.{q,k,v,o}_proj.weight  [heads·D, hidden] / [kv·D, hidden] / [hidden,
//   heads·D] model.layers.N.self_attn.{q,k,v,o}_proj.bias    (Qwen2: q/k/v; Llama attention_bias:
//   all) model.layers.N.post_attention_layernorm.weight  [hidden]
//   model.layers.N.mlp.{gate,up,down}_proj.weight   [inter, hidden] / [inter, hidden] / [hidden,
//   inter] model.norm.weight                               [hidden] lm_head.weight [vocab, hidden]
//   (absent when tied)
// Scalar type T is float for real use and double for gradient checks.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "forge/model/config.hpp"
#include "forge/model/embedding.hpp"
#include "forge/model/linear.hpp"

namespace forge::model {

/// One transformer block: pre-norm attention and pre-norm SwiGLU MLP, each residual.
template <class T>
struct decoder_layer {
  parameter<T> input_layernorm;
  linear<T> q_proj, k_proj, v_proj, o_proj;
  parameter<T> post_attention_layernorm;
  linear<T> gate_proj, up_proj, down_proj;
};

/// A whole causal LM: embeddings, decoder layers, final norm and the output head.
template <class T>
struct causal_lm {
  model_config config;
  generation_config generation;
  parameter<T> embed_tokens;  ///< value empty when `embed_base` replaces it
  /// Replaces embed_tokens' dense values when set (a quantized table; frozen).
  std::shared_ptr<const embedding_table<T>> embed_base;
  std::vector<decoder_layer<T>> layers;
  parameter<T> norm;
  linear<T> lm_head;  ///< weight empty when config.tie_word_embeddings or `base` is set

  /// Writes the embedding of token `id` (hidden values) to `out`; `id` must be in range.
  void embed_row(std::int64_t id, T* out) const {
    if (embed_base) {
      embed_base->row(id, out);
    } else {
      const auto H = config.hidden_size;
      std::copy_n(embed_tokens.value.data() + id * H, H, out);
    }
  }

  /// The head's weight: lm_head.weight, or the embedding matrix when tied.
  parameter<T>& head_weight() { return config.tie_word_embeddings ? embed_tokens : lm_head.weight; }
  const parameter<T>& head_weight() const {
    return config.tie_word_embeddings ? embed_tokens : lm_head.weight;
  }

  /// Visits every dense parameter in Hugging Face key order (tied head skipped, and weights
  /// that a quantized base or embedding table replaces).
  template <class F>
  void for_each_parameter(F&& f) {
    if (!embed_base) f(embed_tokens);
    for (auto& L : layers) {
      f(L.input_layernorm);
      for (auto* l :
           {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj}) {
        if (!l->weight.value.empty()) f(l->weight);
        if (l->bias) f(*l->bias);
      }
      f(L.post_attention_layernorm);
    }
    f(norm);
    if (!config.tie_word_embeddings) {
      if (!lm_head.weight.value.empty()) f(lm_head.weight);
      if (lm_head.bias) f(*lm_head.bias);
    }
  }
  template <class F>
  void for_each_parameter(F&& f) const {
    const_cast<causal_lm*>(this)->for_each_parameter(
        [&](parameter<T>& p) { f(static_cast<const parameter<T>&>(p)); });
  }

  /// Allocates zeroed gradient buffers for trainable parameters and frees the others'.
  void enable_grads() {
    for_each_parameter([](parameter<T>& p) {
      if (p.trainable)
        p.grad.assign(static_cast<std::size_t>(p.numel()), T(0));
      else
        std::vector<T>().swap(p.grad);
    });
  }
  /// Sets every gradient buffer to zero (keeps allocations).
  void zero_grads() {
    for_each_parameter([](parameter<T>& p) { std::fill(p.grad.begin(), p.grad.end(), T(0)); });
  }
  /// Marks every parameter trainable or frozen (frozen ones get no gradient buffer).
  void set_trainable(bool on) {
    for_each_parameter([&](parameter<T>& p) { p.trainable = on; });
  }
};

/// The expected parameter list of a config: name and shape, in Hugging Face order.
struct parameter_spec {
  std::string name;
  std::vector<std::int64_t> shape;
};

/// Every tensor a checkpoint of config `c` must contain, and nothing else.
inline std::vector<parameter_spec> expected_parameters(const model_config& c) {
  std::vector<parameter_spec> out;
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const std::int64_t Q = c.num_attention_heads * D, K = c.num_key_value_heads * D;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (std::int64_t n = 0; n < c.num_hidden_layers; ++n) {
    const std::string p = "model.layers." + std::to_string(n) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    auto add = [&](const std::string& name, std::int64_t o, std::int64_t i, bool bias) {
      out.push_back({p + name + ".weight", {o, i}});
      if (bias) out.push_back({p + name + ".bias", {o}});
    };
    add("self_attn.q_proj", Q, H, c.qkv_bias);
    add("self_attn.k_proj", K, H, c.qkv_bias);
    add("self_attn.v_proj", K, H, c.qkv_bias);
    add("self_attn.o_proj", H, Q, c.o_bias);
    add("mlp.gate_proj", I, H, c.mlp_bias);
    add("mlp.up_proj", I, H, c.mlp_bias);
    add("mlp.down_proj", H, I, c.mlp_bias);
    out.push_back({p + "post_attention_layernorm.weight", {H}});
  }
  out.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

/// A model of config `c` with every parameter allocated and filled by `fill(spec, values)`.
template <class T>
causal_lm<T> make_model(const model_config& c,
                        const std::function<void(const parameter_spec&, std::vector<T>&)>& fill) {
  causal_lm<T> m;
  m.config = c;
  m.generation.eos_token_ids = c.eos_token_ids;
  m.generation.bos_token_id = c.bos_token_id;
  m.generation.pad_token_id = c.pad_token_id;
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const std::int64_t Q = c.num_attention_heads * D, K = c.num_key_value_heads * D;
  auto param = [&](std::string name, std::vector<std::int64_t> shape) {
    parameter<T> p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.stored = c.torch_dtype;
    p.value.assign(static_cast<std::size_t>(p.numel()), T(0));
    fill(parameter_spec{p.name, p.shape}, p.value);
    return p;
  };
  auto lin = [&](const std::string& name, std::int64_t o, std::int64_t i, bool bias) {
    linear<T> l;
    l.in = i;
    l.out = o;
    l.weight = param(name + ".weight", {o, i});
    if (bias) l.bias = param(name + ".bias", {o});
    return l;
  };
  m.embed_tokens = param("model.embed_tokens.weight", {c.vocab_size, H});
  for (std::int64_t n = 0; n < c.num_hidden_layers; ++n) {
    const std::string p = "model.layers." + std::to_string(n) + ".";
    decoder_layer<T> L;
    L.input_layernorm = param(p + "input_layernorm.weight", {H});
    L.q_proj = lin(p + "self_attn.q_proj", Q, H, c.qkv_bias);
    L.k_proj = lin(p + "self_attn.k_proj", K, H, c.qkv_bias);
    L.v_proj = lin(p + "self_attn.v_proj", K, H, c.qkv_bias);
    L.o_proj = lin(p + "self_attn.o_proj", H, Q, c.o_bias);
    L.gate_proj = lin(p + "mlp.gate_proj", I, H, c.mlp_bias);
    L.up_proj = lin(p + "mlp.up_proj", I, H, c.mlp_bias);
    L.down_proj = lin(p + "mlp.down_proj", H, I, c.mlp_bias);
    L.post_attention_layernorm = param(p + "post_attention_layernorm.weight", {H});
    m.layers.push_back(std::move(L));
  }
  m.norm = param("model.norm.weight", {H});
  m.lm_head.in = H;
  m.lm_head.out = c.vocab_size;
  if (!c.tie_word_embeddings) m.lm_head.weight = param("lm_head.weight", {c.vocab_size, H});
  return m;
}

}  // namespace forge::model
