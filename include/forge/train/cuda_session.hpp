#pragma once
// A model::causal_lm<float> and its LoRA set on one GPU: the host side of
// backend/cuda/session.hpp. open_cuda_session uploads the model's frozen weights (a quantized
// base dequantized first; adapters outside the trained set merged in, frozen) and the set's
// LoRA A and B; download_lora copies the trained adapters back into the set; the AdamW state
// goes to and from forge's checkpoint format (train/checkpoint.hpp), so a GPU run writes the
// same checkpoint.safetensors a CPU run does, and either resumes from it.
//
// open_cuda_full_session does the same for full fine-tuning: every weight of the model on the
// GPU with f32 masters, gradients and moments, the model's trainable parameters
// (train::model_parameters) trained and the rest frozen; download_weights copies them back and
// the checkpoint holds them as train_sft's full fine-tuning writes it.
//
// The GPU trainer trains LoRA on the seven decoder projections of a Llama-family model without
// biases, with default RoPE and full causal attention; a model or adapter outside that is a
// forge::error naming what does not fit, before anything is uploaded.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/adapters/qlora.hpp"
#include "forge/backend/backend.hpp"
#include "forge/backend/cuda/session.hpp"
#include "forge/quant/format.hpp"
#include "forge/train/checkpoint.hpp"
#include "forge/train/parameters.hpp"

namespace forge::train {

/// A GPU session over a model's LoRA set, with where each module of the set lives on it.
struct cuda_lora_session {
  std::unique_ptr<cuda::lora_session> gpu{};
  /// For each module of the set (same order): decoder layer and projection.
  std::vector<std::pair<std::int64_t, cuda::llama_proj>> where{};
};

namespace cuda_detail {

/// Layer and projection of a PEFT module key ("model.layers.3.mlp.down_proj").
inline std::pair<std::int64_t, cuda::llama_proj> module_place(const std::string& key) {
  const std::string pre = "model.layers.";
  if (key.rfind(pre, 0) == 0) {
    const auto dot = key.find('.', pre.size());
    if (dot != std::string::npos) {
      const std::string layer = key.substr(pre.size(), dot - pre.size());
      for (auto p : cuda::llama_projs)
        if (key.ends_with(std::string(".") + cuda::llama_proj_name(p)) && !layer.empty() &&
            layer.find_first_not_of("0123456789") == std::string::npos)
          return {std::stoll(layer), p};
    }
  }
  throw error({.what = "module the GPU trainer cannot adapt",
               .place = key,
               .expected = "a decoder projection (q/k/v/o_proj, gate/up/down_proj)",
               .found = key});
}

/// The model extents, checked against what the GPU trainer implements.
inline cuda::llama_dims dims_of(const model::model_config& c) {
  const auto bad = [](const char* what, std::string found) {
    throw error({.what = std::string("model the GPU trainer does not run: ") + what,
                 .place = "model config",
                 .expected = "a Llama-family model without biases, default RoPE, full attention",
                 .found = std::move(found)});
  };
  if (c.qkv_bias || c.o_bias || c.mlp_bias) bad("linear biases", "a projection with a bias");
  if (c.rope.type != "default") bad("RoPE scaling", "rope type " + c.rope.type);
  for (auto w : c.sliding_window)
    if (w > 0) bad("sliding-window attention", "window " + std::to_string(w));
  return {.vocab = c.vocab_size,
          .hidden = c.hidden_size,
          .intermediate = c.intermediate_size,
          .layers = c.num_hidden_layers,
          .heads = c.num_attention_heads,
          .kv_heads = c.num_key_value_heads,
          .head_dim = c.head_dim,
          .rms_eps = float(c.rms_norm_eps),
          .rope_theta = float(c.rope.theta)};
}

/// The f32 weight [out, in] a projection computes with: its dense weight, or its quantized
/// base dequantized (by multiplying the identity, which any base supports and which is exact:
/// each output is one weight times 1 plus zeros).
template <class Bk>
std::vector<float> base_weight(Bk, const model::linear<float>& l) {
  if (!l.base) return l.weight.value;
  if (auto* q = dynamic_cast<const adapters::quantized_base<Bk, quant::nf4>*>(l.base.get()))
    return quant::dequantize(q->weight());
  std::vector<float> W(std::size_t(l.out * l.in)), x(std::size_t(l.in * l.in), 0.0f),
      y(std::size_t(l.in * l.out));
  for (std::int64_t i = 0; i < l.in; ++i) x[std::size_t(i * l.in + i)] = 1.0f;
  l.base->forward(x.data(), l.in, y.data());  // y = I·Wᵀ = Wᵀ [in, out]
  for (std::int64_t i = 0; i < l.in; ++i)
    for (std::int64_t o = 0; o < l.out; ++o)
      W[std::size_t(o * l.in + i)] = y[std::size_t(i * l.out + o)];
  return W;
}

}  // namespace cuda_detail

/// Uploads `m` and the LoRA set `set` (attached to `m`) to GPU 0. Adapters of `m` outside
/// `set` are merged into the frozen weights (they are part of the base the set trains on);
/// `base` NF4 quantizes the projections on the device (QLoRA; a quantized base read from `m`
/// is re-quantized to the same codes: its values are NF4 code × block absmax). `Bk` is the
/// CPU backend whose kernels the model's quantized bases use. max_batch, max_seq: the largest
/// batch the session will see.
template <class Bk>
cuda_lora_session open_cuda_session(Bk be, const model::causal_lm<float>& m,
                                    const adapters::lora_set<float>& set, cuda::base_storage base,
                                    cuda::precision storage, std::int64_t max_batch,
                                    std::int64_t max_seq) {
  const auto dims = cuda_detail::dims_of(m.config);
  const auto& c = set.config;
  require(!c.use_dora, {.what = "DoRA is not trained on backend::cuda",
                        .place = "lora_config.use_dora",
                        .expected = "LoRA (use_dora = false)",
                        .found = "DoRA"});
  require(c.dropout == 0, {.what = "the GPU trainer has no LoRA dropout",
                           .place = "lora_config.dropout",
                           .expected = "0 on backend::cuda",
                           .found = str(c.dropout)});
  cuda_lora_session s;
  for (const auto& mod : set.modules) s.where.push_back(cuda_detail::module_place(mod->name));

  // Frozen weights: owned f32 copies where the stored form is not f32 [out, in] already.
  std::vector<std::vector<float>> owned;
  owned.reserve(std::size_t(dims.layers) * 7);
  auto& mm = const_cast<model::causal_lm<float>&>(m);
  auto projection = [&](std::int64_t layer, cuda::llama_proj p,
                        model::linear<float>& l) -> const float* {
    std::vector<float> W;
    bool changed = bool(l.base);
    if (l.base) W = cuda_detail::base_weight(be, l);
    for (const auto& a : l.adapters) {
      auto* lm = dynamic_cast<const adapters::lora_module<float>*>(a.get());
      require(lm != nullptr,
              {.what = "adapter the GPU trainer cannot run",
               .place = "model.layers." + std::to_string(layer) + " " + cuda::llama_proj_name(p),
               .expected = "LoRA modules",
               .found = "another adapter type"});
      bool trained = false;
      for (const auto& t : set.modules) trained = trained || t.get() == lm;
      if (trained) continue;
      // A frozen adapter from an earlier stage: W += s·B·A (merged, as PEFT's merge does).
      require(!lm->dora && !lm->merged, {.what = "adapter the GPU trainer cannot merge",
                                         .place = lm->name,
                                         .expected = "an unmerged LoRA module",
                                         .found = lm->dora ? "DoRA" : "a merged module"});
      if (!changed) W = l.weight.value, changed = true;
      for (std::int64_t o = 0; o < lm->out; ++o)
        for (std::int64_t k = 0; k < lm->rank; ++k) {
          const float b = lm->scale * lm->B[std::size_t(o * lm->rank + k)];
          if (b == 0.0f) continue;
          for (std::int64_t i = 0; i < lm->in; ++i)
            W[std::size_t(o * lm->in + i)] += b * lm->A[std::size_t(k * lm->in + i)];
        }
    }
    if (!changed) return l.weight.value.data();
    owned.push_back(std::move(W));
    return owned.back().data();
  };
  // A quantized embedding or head (Compress's q8_0, say) goes up dequantized: the GPU trainer
  // keeps them dense, and they are frozen either way.
  const float* embed = m.embed_tokens.value.data();
  if (m.embed_base) {
    const auto V = m.config.vocab_size, H = m.config.hidden_size;
    std::vector<float> E(std::size_t(V * H));
    for (std::int64_t v = 0; v < V; ++v) m.embed_row(v, E.data() + v * H);
    owned.push_back(std::move(E));
    embed = owned.back().data();
  }
  const float* head = m.config.tie_word_embeddings ? embed : m.lm_head.weight.value.data();
  if (auto* q = dynamic_cast<const adapters::quantized_weight*>(mm.lm_head.base.get());
      q && !m.config.tie_word_embeddings) {
    owned.push_back(q->dequantized());
    head = owned.back().data();
  }
  cuda::llama_host_weights w{.embed = embed, .final_norm = m.norm.value.data(), .lm_head = head};
  for (std::int64_t i = 0; i < dims.layers; ++i) {
    auto& L = mm.layers[std::size_t(i)];
    using P = cuda::llama_proj;
    w.layers.push_back({.input_norm = L.input_layernorm.value.data(),
                        .q = projection(i, P::q, L.q_proj),
                        .k = projection(i, P::k, L.k_proj),
                        .v = projection(i, P::v, L.v_proj),
                        .o = projection(i, P::o, L.o_proj),
                        .post_norm = L.post_attention_layernorm.value.data(),
                        .gate = projection(i, P::gate, L.gate_proj),
                        .up = projection(i, P::up, L.up_proj),
                        .down = projection(i, P::down, L.down_proj)});
  }
  require(mm.lm_head.adapters.empty() &&
              (!mm.lm_head.base ||
               dynamic_cast<const adapters::quantized_weight*>(mm.lm_head.base.get())),
          {.what = "the GPU trainer keeps the head frozen and unadapted",
           .place = "lm_head",
           .expected = "a plain or quantized weight",
           .found = "an adapter or another replaced base"});
  s.gpu = cuda::open_lora_session(dims, w,
                                  {.rank = c.rank,
                                   .scale = c.scaling(),
                                   .base = base,
                                   .storage = storage,
                                   .max_batch = max_batch,
                                   .max_seq = max_seq});
  // Projections outside the set get A = B = 0: their gradients are then exactly zero
  // (dA ∝ B, dB ∝ A), so AdamW never moves them and they add nothing to the output.
  std::vector<char> in_set(std::size_t(dims.layers) * 7, 0);
  for (std::size_t k = 0; k < set.modules.size(); ++k) {
    const auto [layer, p] = s.where[k];
    const auto& mod = *set.modules[k];
    s.gpu->set_lora(layer, p, mod.A.data(), mod.B.data());
    in_set[std::size_t(layer * 7 + int(p))] = 1;
  }
  for (std::int64_t l = 0; l < dims.layers; ++l)
    for (auto p : cuda::llama_projs)
      if (!in_set[std::size_t(l * 7 + int(p))]) {
        std::vector<float> A(std::size_t(c.rank * s.gpu->in_features(p)), 0.0f),
            B(std::size_t(c.rank * s.gpu->out_features(p)), 0.0f);
        s.gpu->set_lora(l, p, A.data(), B.data());
      }
  return s;
}

/// Copies the session's LoRA A and B (f32 masters) into the set's modules.
inline void download_lora(const cuda_lora_session& s, adapters::lora_set<float>& set) {
  for (std::size_t k = 0; k < set.modules.size(); ++k) {
    auto& mod = *set.modules[k];
    s.gpu->get_lora(s.where[k].first, s.where[k].second, mod.A.data(), mod.B.data());
  }
}

/// Writes forge's training checkpoint (values, AdamW moments, trainer state) from the session:
/// the same file train_sft writes, so a CPU run can resume a GPU run and the reverse.
inline void save_cuda_checkpoint(const std::filesystem::path& path, const cuda_lora_session& s,
                                 adapters::lora_set<float>& set, std::int64_t adam_steps,
                                 const trainer_state& st) {
  download_lora(s, set);
  adamw<float> opt(lora_parameters(set), {});
  for (std::size_t k = 0; k < set.modules.size(); ++k)
    for (bool second : {false, true}) {
      auto& st2 = second ? opt.second_moments() : opt.first_moments();
      s.gpu->get_moments(s.where[k].first, s.where[k].second, second, st2[2 * k].f32.data(),
                         st2[2 * k + 1].f32.data());
    }
  opt.set_steps(adam_steps);
  save_checkpoint(path, opt, st);
}

/// Restores values and moments from checkpoint `path` into the set and the session; returns
/// the trainer state.
inline trainer_state load_cuda_checkpoint(const std::filesystem::path& path, cuda_lora_session& s,
                                          adapters::lora_set<float>& set) {
  adamw<float> opt(lora_parameters(set), {});
  auto st = load_checkpoint(path, opt);
  for (std::size_t k = 0; k < set.modules.size(); ++k) {
    const auto [layer, p] = s.where[k];
    const auto& mod = *set.modules[k];
    s.gpu->set_lora(layer, p, mod.A.data(), mod.B.data());
    for (bool second : {false, true}) {
      auto& st2 = second ? opt.second_moments() : opt.first_moments();
      s.gpu->set_moments(layer, p, second, st2[2 * k].f32.data(), st2[2 * k + 1].f32.data());
    }
  }
  s.gpu->set_steps(opt.steps());
  return st;
}

/// A full fine-tuning GPU session over a model's trainable parameters.
struct cuda_full_session {
  std::unique_ptr<cuda::full_session> gpu{};
  std::vector<trainable<float>> params{};  ///< the trained parameters (spans into the model)
  /// For each of params (same order): tensor and decoder layer.
  std::vector<std::pair<cuda::llama_tensor, std::int64_t>> where{};
};

namespace cuda_detail {

/// Tensor and layer of a Hugging Face parameter name ("model.layers.3.mlp.down_proj.weight").
inline std::pair<cuda::llama_tensor, std::int64_t> tensor_place(const std::string& name) {
  using W = cuda::llama_tensor;
  if (name == "model.embed_tokens.weight") return {W::embed, 0};
  if (name == "model.norm.weight") return {W::final_norm, 0};
  if (name == "lm_head.weight") return {W::lm_head, 0};
  const std::string pre = "model.layers.";
  if (name.rfind(pre, 0) == 0) {
    const auto dot = name.find('.', pre.size());
    const std::string layer =
        dot == std::string::npos ? "" : name.substr(pre.size(), dot - pre.size());
    if (!layer.empty() && layer.find_first_not_of("0123456789") == std::string::npos) {
      const std::string rest = name.substr(dot + 1);
      const std::pair<const char*, W> known[] = {{"input_layernorm.weight", W::input_norm},
                                                 {"post_attention_layernorm.weight", W::post_norm},
                                                 {"self_attn.q_proj.weight", W::q},
                                                 {"self_attn.k_proj.weight", W::k},
                                                 {"self_attn.v_proj.weight", W::v},
                                                 {"self_attn.o_proj.weight", W::o},
                                                 {"mlp.gate_proj.weight", W::gate},
                                                 {"mlp.up_proj.weight", W::up},
                                                 {"mlp.down_proj.weight", W::down}};
      for (const auto& [n, t] : known)
        if (rest == n) return {t, std::stoll(layer)};
    }
  }
  throw error({.what = "parameter the GPU trainer does not train",
               .place = name,
               .expected = "a Llama weight (embedding, norms, decoder projections, head)",
               .found = name});
}

}  // namespace cuda_detail

/// Uploads every weight of `m` to GPU 0 for full fine-tuning of `params` (from
/// train::model_parameters(m, pattern)); the other weights are frozen. The model must be dense
/// and without adapters (forge::error naming what is not). max_batch, max_seq: the largest
/// batch the session will see.
inline cuda_full_session open_cuda_full_session(model::causal_lm<float>& m,
                                                std::vector<trainable<float>> params,
                                                cuda::precision storage, std::int64_t max_batch,
                                                std::int64_t max_seq) {
  const auto dims = cuda_detail::dims_of(m.config);
  for (auto [key, lin] : adapters::linear_layers(m))
    require(!lin->base && lin->adapters.empty(),
            {.what = "full fine-tuning on backend::cuda needs a dense model without adapters",
             .place = key,
             .expected = "a plain dense weight",
             .found = lin->base ? "a quantized base" : "an attached adapter"});
  require(!m.embed_base,
          {.what = "full fine-tuning on backend::cuda needs a dense model without adapters",
           .place = "model.embed_tokens.weight",
           .expected = "a plain dense weight",
           .found = "a quantized embedding table"});
  cuda::llama_host_weights w{.embed = m.embed_tokens.value.data(),
                             .final_norm = m.norm.value.data(),
                             .lm_head = m.head_weight().value.data()};
  for (auto& L : m.layers)
    w.layers.push_back({.input_norm = L.input_layernorm.value.data(),
                        .q = L.q_proj.weight.value.data(),
                        .k = L.k_proj.weight.value.data(),
                        .v = L.v_proj.weight.value.data(),
                        .o = L.o_proj.weight.value.data(),
                        .post_norm = L.post_attention_layernorm.value.data(),
                        .gate = L.gate_proj.weight.value.data(),
                        .up = L.up_proj.weight.value.data(),
                        .down = L.down_proj.weight.value.data()});
  cuda_full_session s;
  for (const auto& p : params) s.where.push_back(cuda_detail::tensor_place(p.name));
  s.gpu = cuda::open_full_session(dims, w,
                                  {.storage = storage, .max_batch = max_batch, .max_seq = max_seq});
  // Frozen: every tensor the parameter list does not name.
  using W = cuda::llama_tensor;
  std::vector<std::pair<W, std::int64_t>> all = {{W::embed, 0}, {W::final_norm, 0}};
  if (s.gpu->size(W::lm_head) > 0) all.push_back({W::lm_head, 0});
  for (std::int64_t l = 0; l < dims.layers; ++l)
    for (W t : {W::input_norm, W::post_norm, W::q, W::k, W::v, W::o, W::gate, W::up, W::down})
      all.push_back({t, l});
  for (const auto& tl : all)
    s.gpu->set_trainable(tl.first, tl.second,
                         std::find(s.where.begin(), s.where.end(), tl) != s.where.end());
  s.params = std::move(params);
  return s;
}

/// Copies the session's trained weights (f32 masters) into the model's parameters.
inline void download_weights(const cuda_full_session& s) {
  for (std::size_t k = 0; k < s.params.size(); ++k)
    s.gpu->get_weight(s.where[k].first, s.where[k].second, s.params[k].value.data());
}

/// Writes forge's training checkpoint of a full fine-tuning from the session (train_sft's
/// format: the parameters' values and AdamW moments by Hugging Face name).
inline void save_cuda_checkpoint(const std::filesystem::path& path, const cuda_full_session& s,
                                 std::int64_t adam_steps, const trainer_state& st) {
  download_weights(s);
  adamw<float> opt(s.params, {});
  for (std::size_t k = 0; k < s.params.size(); ++k)
    for (bool second : {false, true}) {
      auto& mo = second ? opt.second_moments() : opt.first_moments();
      s.gpu->get_moments(s.where[k].first, s.where[k].second, second, mo[k].f32.data());
    }
  opt.set_steps(adam_steps);
  save_checkpoint(path, opt, st);
}

/// Restores values and moments from checkpoint `path` into the model and the session;
/// returns the trainer state.
inline trainer_state load_cuda_checkpoint(const std::filesystem::path& path, cuda_full_session& s) {
  adamw<float> opt(s.params, {});
  auto st = load_checkpoint(path, opt);
  for (std::size_t k = 0; k < s.params.size(); ++k) {
    const auto [t, layer] = s.where[k];
    s.gpu->set_weight(t, layer, s.params[k].value.data());
    for (bool second : {false, true}) {
      auto& mo = second ? opt.second_moments() : opt.first_moments();
      s.gpu->set_moments(t, layer, second, mo[k].f32.data());
    }
  }
  s.gpu->set_steps(opt.steps());
  return st;
}

}  // namespace forge::train
