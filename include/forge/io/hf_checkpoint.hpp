#pragma once
// Hugging Face checkpoint directories for Llama-family models, read and written as
// transformers does (save_pretrained / from_pretrained):
//   config.json              model_config (either transformers layout, see model/config.hpp)
//   generation_config.json   optional: eos ids (an integer or a list), bos, pad
//   model.safetensors        every tensor, or
//   model.safetensors.index.json + shards  {"weight_map": {tensor name: shard file}}
// Every expected tensor (model::expected_parameters) must be present with the shape the
// config implies, in F32, BF16 or F16, and no other tensor may be present, except the
// non-persistent `rotary_emb.inv_freq` buffers old transformers versions saved, and a
// `lm_head.weight` identical to the tied embeddings. Values are computed in the model's
// scalar type; each parameter remembers the dtype it was stored in.

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/io/atomic_file.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/model/causal_lm.hpp"
#include "forge/model/config.hpp"

namespace forge::io {

/// Options for load_hf_checkpoint.
struct hf_load_options {
  bool validate = false;            ///< reject NaN or infinite weights (naming tensor and index)
  std::optional<dtype> store_as{};  ///< dtype to save back as (default: as loaded)
};

namespace detail {
inline bool is_legacy_buffer(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace detail

/// Loads a checkpoint directory into a model with scalar type T (float, or double for
/// gradient checks).
template <class T = float>
model::causal_lm<T> load_hf_checkpoint(const std::filesystem::path& dir,
                                       const hf_load_options& opt = {}) {
  const auto config = model::load_config(dir / "config.json");
  model::generation_config gen;
  bool have_gen = false;
  if (std::filesystem::exists(dir / "generation_config.json")) {
    gen = model::parse_generation_config_text(read_file(dir / "generation_config.json"),
                                              (dir / "generation_config.json").string());
    have_gen = true;
  }

  // Open the single file or every shard named by the index.
  std::vector<safetensors_file> files;
  std::map<std::string, std::size_t> where;  // tensor name -> file
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single)) {
    files.push_back(safetensors_file::open(single));
    for (const auto& t : files[0].tensors()) where[t.name] = 0;
  } else if (std::filesystem::exists(index)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(index));
    } catch (const nlohmann::json::parse_error& e) {
      throw error({.what = "invalid JSON: " + std::string(e.what()),
                   .file = index.string(),
                   .place = at_byte(e.byte)});
    } catch (const nlohmann::json::exception& e) {
      throw error({.what = "invalid JSON: " + std::string(e.what()), .file = index.string()});
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw error({.what = "index has no weight_map object",
                   .file = index.string(),
                   .place = "key weight_map",
                   .expected = "an object of tensor -> file"});
    std::map<std::string, std::size_t> shard_of_file;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string())
        throw error({.what = "wrong type",
                     .file = index.string(),
                     .place = "weight_map." + name,
                     .expected = "a file name",
                     .found = file.dump()});
      const std::string f = file.template get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos ||
          f == "." || f == "..")
        throw error({.what = "shard must be a plain file name in the directory",
                     .file = index.string(),
                     .place = "weight_map." + name,
                     .found = f});
      auto it = shard_of_file.find(f);
      if (it == shard_of_file.end()) {
        files.push_back(safetensors_file::open(dir / f));
        it = shard_of_file.emplace(f, files.size() - 1).first;
      }
      if (!files[it->second].find(name))
        throw error({.what = "tensor listed in the index is missing from its shard",
                     .file = (dir / f).string(),
                     .place = "tensor " + name});
      where[name] = it->second;
    }
    // A shard may not hold tensors the index does not list.
    for (const auto& [f, i] : shard_of_file)
      for (const auto& t : files[i].tensors())
        if (where.count(t.name) == 0 || where[t.name] != i)
          throw error({.what = "tensor in a shard but not in the index (or in two shards)",
                       .file = (dir / f).string(),
                       .place = "tensor " + t.name});
  } else {
    throw error({.what = "no weights found",
                 .file = dir.string(),
                 .expected = "model.safetensors or model.safetensors.index.json"});
  }

  // Every tensor must be expected (legacy rotary buffers are skipped).
  std::map<std::string, std::vector<std::int64_t>> expected;
  for (const auto& s : model::expected_parameters(config)) expected[s.name] = s.shape;
  bool tied_head_in_file = false;
  for (const auto& [name, fi] : where) {
    if (expected.count(name) || detail::is_legacy_buffer(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      tied_head_in_file = true;
      continue;
    }
    throw error({.what = "unexpected tensor for this config",
                 .file = files[fi].source(),
                 .place = "tensor " + name,
                 .expected = "only the tensors of " + model::architecture_name(config.arch)});
  }

  auto fill = [&](const model::parameter_spec& s, std::vector<T>& v) {
    auto it = where.find(s.name);
    if (it == where.end())
      throw error({.what = "missing tensor",
                   .file = dir.string(),
                   .place = "tensor " + s.name,
                   .expected = "shape " + shape_string(s.shape)});
    const auto& f = files[it->second];
    const auto& t = f.at(s.name);
    if (t.shape != s.shape)
      throw error({.what = "tensor shape disagrees with config.json",
                   .file = f.source(),
                   .place = "tensor " + s.name,
                   .expected = shape_string(s.shape),
                   .found = shape_string(t.shape)});
    if (t.type != dtype::f32 && t.type != dtype::bf16 && t.type != dtype::f16)
      throw error({.what = "unsupported weight dtype",
                   .file = f.source(),
                   .place = "tensor " + s.name,
                   .expected = "F32, BF16 or F16",
                   .found = std::string(name(t.type))});
    const auto bytes = f.bytes(t);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = T(load_f32(bytes.data(), t.type, i));
      if (opt.validate && !std::isfinite(v[i]))
        throw error({.what = "non-finite weight",
                     .file = f.source(),
                     .place = "tensor " + s.name,
                     .expected = "finite values",
                     .found = str(double(v[i])) + " at flat index " + std::to_string(i)});
    }
  };
  auto m = model::make_model<T>(config, fill);
  // Remember each tensor's stored dtype.
  m.for_each_parameter([&](model::parameter<T>& p) {
    const auto& t = files[where.at(p.name)].at(p.name);
    p.stored = opt.store_as.value_or(t.type);
  });
  if (tied_head_in_file) {
    const auto& f = files[where.at("lm_head.weight")];
    const auto& t = f.at("lm_head.weight");
    bool same = t.shape == m.embed_tokens.shape;
    for (std::size_t i = 0; same && i < m.embed_tokens.value.size(); ++i)
      same = T(load_f32(f.bytes(t).data(), t.type, i)) == m.embed_tokens.value[i];
    if (!same)
      throw error(
          {.what = "lm_head.weight differs from the tied embeddings",
           .file = f.source(),
           .place = "tensor lm_head.weight",
           .expected = "tie_word_embeddings = false, or a copy of model.embed_tokens.weight"});
  }
  if (have_gen) {
    if (!gen.eos_token_ids.empty()) m.generation.eos_token_ids = gen.eos_token_ids;
    if (gen.bos_token_id) m.generation.bos_token_id = gen.bos_token_id;
    if (gen.pad_token_id) m.generation.pad_token_id = gen.pad_token_id;
  }
  return m;
}

/// Saves a model as config.json + generation_config.json + model.safetensors (each written
/// atomically). Tensors are stored in `as`, or each parameter's own stored dtype.
template <class T>
void save_hf_checkpoint(const model::causal_lm<T>& m, const std::filesystem::path& dir,
                        std::optional<dtype> as = {}) {
  // Every tensor of the config must be there, dense: a projection, head or embedding that a
  // quantized representation replaced is not a Hugging Face tensor.
  {
    std::map<std::string, std::int64_t> have;
    m.for_each_parameter(
        [&](const model::parameter<T>& p) { have[p.name] = std::int64_t(p.value.size()); });
    for (const auto& spec : model::expected_parameters(m.config)) {
      std::int64_t n = 1;
      for (auto e : spec.shape) n *= e;
      const auto it = have.find(spec.name);
      require(it != have.end() && it->second == n,
              {.what = "a weight is not dense (quantized or missing); save a dense copy "
                       "(exports::dense_copy) or a GPTQ checkpoint instead",
               .file = (dir / "model.safetensors").string(),
               .place = spec.name,
               .expected = std::to_string(n) + " dense values",
               .found = it == have.end() ? std::string("no dense tensor")
                                         : std::to_string(it->second) + " values"});
    }
  }
  std::filesystem::create_directories(dir);
  std::vector<std::vector<std::byte>> buffers;
  std::vector<tensor_view> views;
  dtype declared = dtype::f32;  // config.json names the embeddings' dtype
  bool first = true;
  m.for_each_parameter([&](const model::parameter<T>& p) {
    const dtype t = as.value_or(p.stored);
    if (first) declared = t, first = false;
    std::vector<float> f(p.value.begin(), p.value.end());
    std::vector<std::byte> b(f.size() * size_of(t));
    convert_from_f32(f.data(), f.size(), t, b.data());
    buffers.push_back(std::move(b));
    views.push_back({p.name, t, p.shape, std::span<const std::byte>(buffers.back())});
  });
  // views hold spans into `buffers`: re-point them now that the vector stopped growing.
  for (std::size_t i = 0; i < views.size(); ++i) views[i].data = buffers[i];
  write_safetensors(dir / "model.safetensors", views, {{"format", "pt"}});
  auto cfg = m.config;
  cfg.torch_dtype = declared;
  write_atomic(dir / "config.json", model::to_json(cfg).dump(2) + "\n");
  nlohmann::json g = nlohmann::json::object();  // "{}" when no ids are set, never "null"
  if (m.generation.bos_token_id) g["bos_token_id"] = *m.generation.bos_token_id;
  if (m.generation.pad_token_id) g["pad_token_id"] = *m.generation.pad_token_id;
  const auto& eos = m.generation.eos_token_ids;
  if (eos.size() == 1)
    g["eos_token_id"] = eos[0];
  else if (!eos.empty())
    g["eos_token_id"] = eos;
  write_atomic(dir / "generation_config.json", g.dump(2) + "\n");
}

}  // namespace forge::io
