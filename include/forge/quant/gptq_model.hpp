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
// load_gptq_checkpoint reads such a directory back into a causal_lm<float> whose projections
// are adapters::quantized_base<Bk, int4_group<G, Sym>>; with f32 dense tensors the loaded
// model computes exactly what the saved one did (the int4 scales are f16-exact, so packing
// loses nothing).

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
#include "forge/quant/gptq_checkpoint.hpp"

namespace forge::quant {

/// What the quantization_config of a saved GPTQ checkpoint records besides the format.
struct gptq_save_options {
  bool desc_act = false;       ///< act-order was used (g_idx is not i / G)
  double damp_percent = 0.01;  ///< GPTQ damping used
  gptq_format format = gptq_format::v1;
  std::optional<dtype> dense_as{};  ///< dtype of the dense tensors (default: each one's own)
};

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
  for (auto [key, lin] : adapters::linear_layers(mm)) {
    if (!lin->base) {
      if (key != "lm_head") dynamic["-:" + key] = nlohmann::json::object();
      continue;
    }
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
  for (std::size_t i = 0; i < packed.size(); ++i) append_gptq_views(views, names[i], packed[i]);
  io::write_safetensors(dir / "model.safetensors", views, {{"format", "pt"}});
  auto cfg = model::to_json(m.config);
  auto qc =
      nlohmann::json::parse(gptq_quantization_config(G, Sym, o.desc_act, o.damp_percent, o.format));
  if (!dynamic.empty()) qc["dynamic"] = dynamic;
  cfg["quantization_config"] = qc;
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
