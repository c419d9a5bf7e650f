#pragma once
// The built-in base model: a small Llama model that forge pre-trained itself on the built-in
// corpus (builtin/corpus.hpp) with a tokenizer it trained itself (text/bpe_trainer.hpp).
// tools/pretrain_builtin.cpp makes it; docs/builtin.md gives the command, the sizes and the
// measured loss. The files live in models/builtin/ of the source tree and are installed to
// <prefix>/share/forge/models/builtin; the build system passes that location to code as the
// compile definition FORGE_BUILTIN_DIR (build tree: the source directory; installed package:
// the install prefix).
//
//   auto m   = forge::builtin::load_model();      // causal_lm<float>
//   auto tok = forge::builtin::load_tokenizer();  // text::any_tokenizer

#include <cstdint>
#include <cstdlib>
#include <filesystem>

#include "forge/core/error.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/config.hpp"
#include "forge/text/load_tokenizer.hpp"

namespace forge::builtin {

/// Number of held-out documents the pre-training run measured its held-out loss on
/// (`heldout_text(seed, heldout_docs)`).
inline constexpr std::size_t heldout_docs = 400;

/// The architecture of the built-in model for a vocabulary of `vocab` ids and a context of
/// `context` tokens: Llama, hidden 256, 4 layers, 4 heads of 64, SwiGLU width 768, RoPE
/// θ = 10000, untied embeddings. Special ids follow builtin/chat.hpp: BOS 0, EOS
/// <|im_end|> 3 and <|end_of_text|> 1, PAD 4.
inline model::model_config model_config_for(std::int64_t vocab, std::int64_t context) {
  model::model_config c;
  c.arch = model::architecture::llama;
  c.vocab_size = vocab;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.max_position_embeddings = context;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 10000.0;
  c.tie_word_embeddings = false;
  c.bos_token_id = 0;
  c.pad_token_id = 4;
  c.eos_token_ids = {3, 1};
  c.sliding_window.assign(static_cast<std::size_t>(c.num_hidden_layers), 0);  // full attention
  c.torch_dtype = dtype::f32;
  return c;
}

/// Directory of the built-in model: $FORGE_BUILTIN_DIR if set, else the location compiled in
/// by the build system. forge::error if neither names an existing directory with config.json.
inline std::filesystem::path model_dir() {
  std::filesystem::path p;
  if (const char* e = std::getenv("FORGE_BUILTIN_DIR"); e && *e) p = e;
#ifdef FORGE_BUILTIN_DIR
  if (p.empty()) p = FORGE_BUILTIN_DIR;
#endif
  if (p.empty())
    throw error({.what = "the built-in model's location is unknown",
                 .place = "FORGE_BUILTIN_DIR",
                 .expected = "the forge::forge CMake target (which defines it) or the "
                             "FORGE_BUILTIN_DIR environment variable"});
  if (!std::filesystem::exists(p / "config.json"))
    throw error({.what = "built-in model directory has no config.json",
                 .file = p.string(),
                 .expected = "config.json, model.safetensors, tokenizer.json"});
  return p;
}

/// The built-in model with f32 weights (stored as bf16).
inline model::causal_lm<float> load_model() {
  return io::load_hf_checkpoint<float>(model_dir());
}

/// The built-in model's tokenizer (tokenizer.json + tokenizer_config.json with the chat
/// template).
inline text::any_tokenizer load_tokenizer() {
  return text::load_tokenizer(model_dir());
}

}  // namespace forge::builtin
