#pragma once
// A whole quantized model as a GPTQ checkpoint directory, the layout transformers (through
// GPTQModel / optimum) loads:
//   config.json        the model config plus "quantization_config" {quant_method "gptq",
//                      bits 4, group_size, sym, desc_act, damp_percent, checkpoint_format,
//                      "dynamic": {"-:<module>": {}} for each projection kept dense}
//   model.safetensors  per quantized projection PREFIX.qweight / .qzeros / .scales / .g_idx
//                      (quant/gptq_checkpoint.hpp), every other parameter dense in its
//                      stored dtype
//   generation_config.json
// GPTQModel's "dynamic" entries with a "-:" prefix mark modules that are not quantized.
// A q8_0 embedding or head (quantize_head_and_embeddings) is stored as its exact values in
// F32, named in config.json's "forge_quantized_dense" {"model.embed_tokens.weight": "q8_0",
// ...}; load_gptq_checkpoint quantizes them back to the same blocks (checked bit for bit),
// other loaders see ordinary dense tensors.
// load_gptq_checkpoint reads such a directory back into a causal_lm<float> whose projections
// are adapters::quantized_base<Bk, int4_group<G, Sym>>; with f32 dense tensors the loaded
// model computes exactly what the saved one did (the int4 scales are f16-exact, so packing
// loses nothing).

#include <bit>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/qlora.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/model/causal_lm.hpp"
#include "forge/model/config.hpp"
#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/gptq_checkpoint.hpp"

namespace forge::quant {

/// What the quantization_config of a saved GPTQ checkpoint records besides the format.
struct gptq_save_options {
  bool desc_act = false;       ///< act-order was used (g_idx is not i / G)
  double damp_percent = 0.01;  ///< GPTQ damping used
  gptq_format format = gptq_format::v1;
  std::optional<dtype> dense_as{};  ///< dtype of the dense tensors (default: each one's own)
};

/// A quantized embedding and head, which have no GPTQ form, as exact F32 values.
struct quantized_dense {
  nlohmann::json names = nlohmann::json::object();  ///< "forge_quantized_dense": name -> format
  std::vector<std::pair<std::string, std::vector<float>>> tensors{};  ///< name, [vocab, hidden]
};

/// The q8_0 embedding and (untied) head of `m` as F32 tensors holding their exact values, and
/// the config.json entry that names their format (both empty for a dense embedding and head).
/// forge::error for adapters on a quantized head or another format.
inline quantized_dense quantized_dense_tensors(const model::causal_lm<float>& m) {
  quantized_dense out;
  auto keep = [&](const std::string& name, const adapters::quantized_weight* q,
                  const std::string& what) {
    require(q != nullptr, {.what = what + " is replaced by something that is not quantized",
                           .place = name,
                           .expected = "a quantized matrix"});
    require(q->format() == q8_0::name,
            {.what = "a GPTQ checkpoint holds a quantized embedding or head only in q8_0",
             .place = name,
             .expected = "q8_0",
             .found = std::string(q->format())});
    out.names[name] = std::string(q->format());
    out.tensors.push_back({name, q->dequantized()});
  };
  if (m.embed_base) {
    auto* t = dynamic_cast<const adapters::quantized_table*>(m.embed_base.get());
    keep("model.embed_tokens.weight", t ? t->source().get() : nullptr, "the embedding");
  }
  if (m.lm_head.base) {
    require(
        m.lm_head.adapters.empty(),
        {.what = "a GPTQ checkpoint holds no adapters (save them separately)", .place = "lm_head"});
    if (!m.config.tie_word_embeddings)
      keep("lm_head.weight", dynamic_cast<const adapters::quantized_weight*>(m.lm_head.base.get()),
           "the head");
  }
  return out;
}

/// Writes `m` — whose decoder projections are quantized_base<Bk, int4_group<G, Sym>> or
/// dense — as a GPTQ checkpoint directory `dir` (files written atomically).
template <class Bk, int G, bool Sym>
void save_gptq_checkpoint(const model::causal_lm<float>& m, const std::filesystem::path& dir,
                          const gptq_save_options& o = {}) {
  using F = int4_group<G, Sym>;
  std::filesystem::create_directories(dir);
  std::vector<std::vector<std::byte>> dense;
  std::vector<gptq_packed> packed;
  std::vector<std::string> names;
  nlohmann::json dynamic = nlohmann::json::object();
  auto& mm = const_cast<model::causal_lm<float>&>(m);
  std::vector<std::pair<std::string, const model::parameter<float>*>> params;
  m.for_each_parameter([&](const model::parameter<float>& p) { params.push_back({p.name, &p}); });
  const auto exact = quantized_dense_tensors(m);
  for (auto [key, lin] : adapters::linear_layers(mm)) {
    if (!lin->base) {
      if (key != "lm_head") dynamic["-:" + key] = nlohmann::json::object();
      continue;
    }
    if (key == "lm_head") continue;  // quantized_dense_tensors
    auto* q = dynamic_cast<const adapters::quantized_base<Bk, F>*>(lin->base.get());
    require(q != nullptr, {.what = "projection is not quantized in the checkpoint's format",
                           .place = key,
                           .expected = std::string(F::name) + " quantized base"});
    require(lin->adapters.empty(),
            {.what = "a GPTQ checkpoint holds no adapters (save them separately)", .place = key});
    packed.push_back(pack_gptq(q->weight(), o.format));
    names.push_back(key);
  }
  std::vector<io::tensor_view> views;
  for (auto& [name, p] : params) {
    const dtype t = o.dense_as.value_or(p->stored);
    std::vector<std::byte> b(p->value.size() * size_of(t));
    convert_from_f32(p->value.data(), p->value.size(), t, b.data());
    dense.push_back(std::move(b));
  }
  for (std::size_t i = 0; i < params.size(); ++i)
    views.push_back({params[i].first, o.dense_as.value_or(params[i].second->stored),
                     params[i].second->shape, std::span<const std::byte>(dense[i])});
  const std::vector<std::int64_t> vh = {m.config.vocab_size, m.config.hidden_size};
  for (const auto& [name, values] : exact.tensors)
    views.push_back({name, dtype::f32, vh, std::as_bytes(std::span(values))});
  for (std::size_t i = 0; i < packed.size(); ++i) append_gptq_views(views, names[i], packed[i]);
  io::write_safetensors(dir / "model.safetensors", views, {{"format", "pt"}});
  auto cfg = model::to_json(m.config);
  auto qc =
      nlohmann::json::parse(gptq_quantization_config(G, Sym, o.desc_act, o.damp_percent, o.format));
  if (!dynamic.empty()) qc["dynamic"] = dynamic;
  cfg["quantization_config"] = qc;
  if (!exact.names.empty()) cfg["forge_quantized_dense"] = exact.names;
  io::write_atomic(dir / "config.json", cfg.dump(2) + "\n");
  nlohmann::json g = nlohmann::json::object();  // "{}" when nothing is set, never "null"
  if (m.generation.bos_token_id) g["bos_token_id"] = *m.generation.bos_token_id;
  if (m.generation.pad_token_id) g["pad_token_id"] = *m.generation.pad_token_id;
  const auto& eos = m.generation.eos_token_ids;
  if (eos.size() == 1)
    g["eos_token_id"] = eos[0];
  else if (!eos.empty())
    g["eos_token_id"] = eos;
  io::write_atomic(dir / "generation_config.json", g.dump(2) + "\n");
}

namespace detail {

template <class Bk, class F>
void install_gptq_layers(model::causal_lm<float>& m, const io::safetensors_file& f,
                         const std::set<std::string>& quantized, gptq_format fmt) {
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (!quantized.count(key)) continue;
    auto p = read_gptq(f, key);
    if (p.in_features != lin->in || p.out_features != lin->out)
      throw error(
          {.what = "GPTQ layer shape disagrees with config.json",
           .file = f.source(),
           .place = "tensor " + key + ".qweight",
           .expected = std::to_string(lin->out) + " x " + std::to_string(lin->in),
           .found = std::to_string(p.out_features) + " x " + std::to_string(p.in_features)});
    auto t = unpack_gptq<F>(p, fmt);
    lin->base = std::make_shared<adapters::quantized_base<Bk, F>>(std::move(t));
    std::vector<float>().swap(lin->weight.value);
    lin->weight.trainable = false;
  }
}

// Re-quantizes the dense tensors that "forge_quantized_dense" names (written by
// save_gptq_checkpoint for a q8_0 embedding or head); each must come back exactly.
template <class Bk>
void requantize_dense(model::causal_lm<float>& m, const nlohmann::json& cfg,
                      const io::safetensors_file& f, const std::string& cfg_file) {
  if (!cfg.contains("forge_quantized_dense")) return;
  const auto& r = cfg["forge_quantized_dense"];
  auto bad = [&](const std::string& place, const std::string& exp, const std::string& found) {
    throw error({.what = "unsupported forge_quantized_dense entry",
                 .file = cfg_file,
                 .place = "forge_quantized_dense" + place,
                 .expected = exp,
                 .found = found});
  };
  if (!r.is_object()) bad("", "an object of tensor name -> \"q8_0\"", r.dump());
  const bool tied = m.config.tie_word_embeddings;
  for (const auto& [name, fmt] : r.items()) {
    if (!fmt.is_string() || fmt.template get<std::string>() != q8_0::name)
      bad("." + name, "\"q8_0\"", fmt.dump());
    if (name != "model.embed_tokens.weight" && !(name == "lm_head.weight" && !tied))
      bad("." + name, "model.embed_tokens.weight or (untied) lm_head.weight", name);
  }
  const auto V = m.config.vocab_size, H = m.config.hidden_size;
  auto quantize_exact = [&](const std::string& name, const std::vector<float>& v) {
    require(H % q8_0::group_size == 0, {.what = "hidden size is not a multiple of the q8_0 block",
                                        .file = cfg_file,
                                        .place = name,
                                        .expected = "hidden_size % 32 == 0",
                                        .found = std::to_string(H)});
    auto q = std::make_shared<const adapters::quantized_base<Bk, q8_0>>(q8_0::quantize(v, V, H));
    const auto back = q->dequantized();
    for (std::size_t i = 0; i < v.size(); ++i)
      if (std::bit_cast<std::uint32_t>(back[i]) != std::bit_cast<std::uint32_t>(v[i]))
        throw error({.what = "tensor is marked q8_0 but its values are not q8_0 values",
                     .file = f.source(),
                     .place = "tensor " + name + ", element " + std::to_string(i),
                     .expected = str(back[i]) + " (the q8_0 rounding of the stored value)",
                     .found = str(v[i])});
    return q;
  };
  std::shared_ptr<const adapters::quantized_base<Bk, q8_0>> emb;
  if (r.contains("model.embed_tokens.weight")) {
    emb = quantize_exact("model.embed_tokens.weight", m.embed_tokens.value);
    m.embed_base = std::make_shared<const adapters::quantized_embedding<Bk, q8_0>>(emb);
    std::vector<float>().swap(m.embed_tokens.value);
    m.embed_tokens.trainable = false;
    if (tied) m.lm_head.base = emb;
  }
  if (r.contains("lm_head.weight")) {
    m.lm_head.base = quantize_exact("lm_head.weight", m.lm_head.weight.value);
    std::vector<float>().swap(m.lm_head.weight.value);
    m.lm_head.weight.trainable = false;
  }
}

}  // namespace detail

/// Loads a GPTQ checkpoint directory (4 bits, group 32/64/128, symmetric or not, v1 or v2
/// zero points, any g_idx) into a model whose quantized projections multiply with kernels
/// of `Bk`. forge::error naming the file and tensor for anything else.
template <class Bk>
model::causal_lm<float> load_gptq_checkpoint(const std::filesystem::path& dir) {
  const auto cfg_path = dir / "config.json";
  const auto text = io::read_file(cfg_path);
  const auto config = model::parse_config_text(text, cfg_path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw error({.what = std::string("invalid JSON: ") + e.what(), .file = cfg_path.string()});
  }
  auto bad_cfg = [&](const std::string& key, const std::string& exp, const std::string& found) {
    throw error({.what = "unsupported quantization_config",
                 .file = cfg_path.string(),
                 .place = "quantization_config." + key,
                 .expected = exp,
                 .found = found});
  };
  int G = 0;
  bool sym = true;
  gptq_format fmt = gptq_format::v1;
  try {
    if (!j.contains("quantization_config") || !j["quantization_config"].is_object())
      bad_cfg("", "an object with quant_method \"gptq\"", "none");
    const auto& qc = j["quantization_config"];
    if (qc.value("quant_method", std::string()) != "gptq")
      bad_cfg("quant_method", "\"gptq\"", qc.value("quant_method", std::string("none")));
    if (!qc.contains("bits") || !qc["bits"].is_number_integer() || qc["bits"].get<int>() != 4)
      bad_cfg("bits", "4", qc.contains("bits") ? qc["bits"].dump() : "none");
    if (!qc.contains("group_size") || !qc["group_size"].is_number_integer())
      bad_cfg("group_size", "32, 64 or 128", "none");
    G = qc["group_size"].get<int>();
    if (G != 32 && G != 64 && G != 128) bad_cfg("group_size", "32, 64 or 128", std::to_string(G));
    sym = qc.value("sym", true);
    const std::string cf = qc.value("checkpoint_format", std::string("gptq"));
    if (cf != "gptq" && cf != "gptq_v2") bad_cfg("checkpoint_format", "gptq or gptq_v2", cf);
    fmt = cf == "gptq" ? gptq_format::v1 : gptq_format::v2;
  } catch (const nlohmann::json::exception& e) {
    throw error({.what = std::string("quantization_config field of the wrong type: ") + e.what(),
                 .file = cfg_path.string(),
                 .place = "quantization_config"});
  }

  auto f = io::safetensors_file::open(dir / "model.safetensors");
  // Which projections are quantized: those with a .qweight tensor.
  std::set<std::string> quantized;
  std::set<std::string> known;
  for (const auto& s : model::expected_parameters(config)) known.insert(s.name);
  for (const auto& t : f.tensors()) {
    const auto dot = t.name.rfind('.');
    const std::string prefix = dot == std::string::npos ? "" : t.name.substr(0, dot);
    const std::string suffix = dot == std::string::npos ? "" : t.name.substr(dot + 1);
    if (suffix == "qweight") {
      if (!known.count(prefix + ".weight") || prefix == "lm_head")
        throw error({.what = "quantized tensor for a module that is not a decoder projection",
                     .file = f.source(),
                     .place = "tensor " + t.name});
      quantized.insert(prefix);
    } else if (suffix == "qzeros" || suffix == "scales" || suffix == "g_idx") {
      continue;  // checked by read_gptq for each quantized prefix
    } else if (!known.count(t.name)) {
      throw error({.what = "unexpected tensor for this config",
                   .file = f.source(),
                   .place = "tensor " + t.name});
    }
  }
  for (const auto& t : f.tensors()) {
    const auto dot = t.name.rfind('.');
    const std::string suffix = dot == std::string::npos ? "" : t.name.substr(dot + 1);
    if ((suffix == "qzeros" || suffix == "scales" || suffix == "g_idx") &&
        !quantized.count(t.name.substr(0, dot)))
      throw error({.what = "GPTQ tensor without its qweight",
                   .file = f.source(),
                   .place = "tensor " + t.name});
  }
  for (const auto& q : quantized)
    if (f.find(q + ".weight"))
      throw error(
          {.what = "projection stored both quantized and dense",
           .file = f.source(),
           .place = "tensor " + q + ".weight",
           .expected = "either " + q + ".qweight/.qzeros/.scales/.g_idx or " + q + ".weight"});
  auto fill = [&](const model::parameter_spec& s, std::vector<float>& v) {
    const std::string prefix = s.name.substr(0, s.name.rfind('.'));
    if (quantized.count(prefix) && s.name.ends_with(".weight")) return;  // replaced below
    const auto* t = f.find(s.name);
    if (!t)
      throw error({.what = "missing tensor", .file = f.source(), .place = "tensor " + s.name});
    if (t->shape != s.shape)
      throw error({.what = "tensor shape disagrees with config.json",
                   .file = f.source(),
                   .place = "tensor " + s.name,
                   .expected = io::shape_string(s.shape),
                   .found = io::shape_string(t->shape)});
    if (t->type != dtype::f32 && t->type != dtype::bf16 && t->type != dtype::f16)
      throw error({.what = "unsupported weight dtype",
                   .file = f.source(),
                   .place = "tensor " + s.name,
                   .expected = "F32, BF16 or F16"});
    const auto bytes = f.bytes(*t);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = load_f32(bytes.data(), t->type, i);
  };
  auto m = model::make_model<float>(config, fill);
  m.for_each_parameter([&](model::parameter<float>& p) {
    if (const auto* t = f.find(p.name)) p.stored = t->type;
  });
  detail::requantize_dense<Bk>(m, j, f, cfg_path.string());
  if (G == 32)
    sym ? detail::install_gptq_layers<Bk, int4_group<32, true>>(m, f, quantized, fmt)
        : detail::install_gptq_layers<Bk, int4_group<32, false>>(m, f, quantized, fmt);
  else if (G == 64)
    sym ? detail::install_gptq_layers<Bk, int4_group<64, true>>(m, f, quantized, fmt)
        : detail::install_gptq_layers<Bk, int4_group<64, false>>(m, f, quantized, fmt);
  else
    sym ? detail::install_gptq_layers<Bk, int4_group<128, true>>(m, f, quantized, fmt)
        : detail::install_gptq_layers<Bk, int4_group<128, false>>(m, f, quantized, fmt);
  const auto gen_path = dir / "generation_config.json";
  if (std::filesystem::exists(gen_path)) {
    const auto gen =
        model::parse_generation_config_text(io::read_file(gen_path), gen_path.string());
    if (!gen.eos_token_ids.empty()) m.generation.eos_token_ids = gen.eos_token_ids;
    if (gen.bos_token_id) m.generation.bos_token_id = gen.bos_token_id;
    if (gen.pad_token_id) m.generation.pad_token_id = gen.pad_token_id;
  }
  return m;
}

}  // namespace forge::quant
