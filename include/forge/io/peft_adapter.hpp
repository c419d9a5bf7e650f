#pragma once
// PEFT adapter directories, in and out: adapter_config.json + adapter_model.safetensors, with
// PEFT's key names (peft/utils/save_and_load.py: the adapter name removed):
//   base_model.model.<module>.lora_A.weight            [r, in]
//   base_model.model.<module>.lora_B.weight            [out, r]
//   base_model.model.<module>.lora_magnitude_vector    [out]   (DoRA)
// e.g. <module> = model.layers.0.self_attn.q_proj. Only what forge can run exactly is
// accepted: peft_type LORA, fan_in_fan_out false, bias "none", no rank/alpha patterns.

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/json.hpp"
#include "forge/io/safetensors.hpp"

namespace forge::io {

/// The adapter_config.json file name and the weights file name of a PEFT adapter directory.
inline constexpr const char* peft_config_file = "adapter_config.json";
inline constexpr const char* peft_weights_file = "adapter_model.safetensors";

/// Parses the text of an adapter_config.json (`src` names it in errors) into a lora_config;
/// forge::error for invalid JSON and for settings forge does not run.
inline adapters::lora_config parse_peft_config(std::string_view text, const std::string& src) {
  const json j = parse_json(text, src);
  const auto type = get_field_or<std::string>(j, "peft_type", "LORA", src);
  require(type == "LORA", {.what = "unsupported adapter type",
                           .file = src,
                           .place = "peft_type",
                           .expected = "LORA",
                           .found = type});
  require(!get_field_or<bool>(j, "fan_in_fan_out", false, src),
          {.what = "fan_in_fan_out adapters are not supported",
           .file = src,
           .place = "fan_in_fan_out",
           .expected = "false",
           .found = "true"});
  const auto bias = get_field_or<std::string>(j, "bias", "none", src);
  require(bias == "none", {.what = "adapter biases are not supported",
                           .file = src,
                           .place = "bias",
                           .expected = "none",
                           .found = bias});
  for (const char* k : {"rank_pattern", "alpha_pattern"}) {
    auto it = j.find(k);
    require(it == j.end() || it->is_null() || it->empty(),
            {.what = "per-module ranks/alphas are not supported",
             .file = src,
             .place = k,
             .expected = "{}",
             .found = it == j.end() ? "" : it->dump()});
  }
  adapters::lora_config c;
  c.rank = get_field<int>(j, "r", src);
  c.alpha = get_field<double>(j, "lora_alpha", src);
  c.dropout = get_field_or<double>(j, "lora_dropout", 0.0, src);
  c.use_rslora = get_field_or<bool>(j, "use_rslora", false, src);
  c.use_dora = get_field_or<bool>(j, "use_dora", false, src);
  require(c.rank >= 1, {.what = "LoRA rank must be positive",
                        .file = src,
                        .place = "r",
                        .expected = ">= 1",
                        .found = std::to_string(c.rank)});
  const auto it = j.find("target_modules");
  require(it != j.end() && !it->is_null(),
          {.what = "missing field", .file = src, .place = "target_modules"});
  if (it->is_string()) {
    const auto s = it->get<std::string>();
    if (s == "all-linear")
      c.target_modules = {s};
    else
      c.target_regex = s, c.target_modules.clear();  // a string is a full-match regex in PEFT
  } else {
    c.target_modules = get_field<std::vector<std::string>>(j, "target_modules", src);
  }
  if (!c.target_regex.empty())
    adapters::detail::full_match(c.target_regex, src + ": target_modules");
  require(c.dropout >= 0 && c.dropout < 1, {.what = "lora_dropout out of range",
                                            .file = src,
                                            .place = "lora_dropout",
                                            .expected = "in [0, 1)",
                                            .found = str(c.dropout)});
  return c;
}

/// Reads `dir`/adapter_config.json (see parse_peft_config).
inline adapters::lora_config read_peft_config(const std::filesystem::path& dir) {
  const auto path = dir / peft_config_file;
  return parse_peft_config(read_file(path), path.string());
}

/// Attaches the adapter stored in PEFT directory `dir` to `m` (kernels from backend `Bk`).
/// Every tensor must belong to a module of `m` and have exactly the shape the model implies;
/// every adapted module must have its tensors. Errors name the file and the tensor.
template <class T, class Bk>
adapters::lora_set<T> load_peft_adapter(Bk be, model::causal_lm<T>& m,
                                        const std::filesystem::path& dir) {
  auto c = read_peft_config(dir);
  const auto wpath = dir / peft_weights_file;
  auto f = safetensors_file::open(wpath);
  // Modules named by the weights must exist in the model (catches a different base model).
  std::set<std::string> known;
  for (auto [key, lin] : adapters::linear_layers(m)) known.insert(key);
  const std::string prefix = "base_model.model.";
  for (const auto& t : f.tensors()) {
    std::string mod = t.name;
    require(mod.starts_with(prefix), {.what = "unexpected tensor in adapter",
                                      .file = wpath.string(),
                                      .place = t.name,
                                      .expected = "keys starting with " + prefix});
    mod = mod.substr(prefix.size());
    for (const char* suf : {".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"})
      if (mod.ends_with(suf)) {
        mod.resize(mod.size() - std::string_view(suf).size());
        break;
      }
    require(known.count(mod) == 1,
            {.what = "adapter tensor for a module the base model does not have",
             .file = wpath.string(),
             .place = t.name,
             .expected = "a module of this " + model::model_type_name(m.config.arch) + " model",
             .found = mod});
  }
  // Shapes are checked against the header before anything is allocated.
  auto check = [&](const std::string& key, std::vector<std::int64_t> shape) {
    const auto* info = f.find(key);
    require(info != nullptr, {.what = "adapter tensor missing",
                              .file = wpath.string(),
                              .place = key,
                              .expected = "present"});
    require(info->shape == shape, {.what = "adapter tensor shape does not match the model",
                                   .file = wpath.string(),
                                   .place = key,
                                   .expected = shape_string(shape),
                                   .found = shape_string(info->shape)});
  };
  std::size_t used = 0;
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (!adapters::is_target(c, key)) continue;
    const std::string p = prefix + key;
    check(p + ".lora_A.weight", {c.rank, lin->in});
    check(p + ".lora_B.weight", {lin->out, c.rank});
    if (c.use_dora) check(p + ".lora_magnitude_vector", {lin->out});
    used += c.use_dora ? 3 : 2;
  }
  if (used != f.tensors().size()) {
    std::string extra;
    for (const auto& t : f.tensors()) {
      const auto mod =
          t.name.substr(prefix.size(), t.name.find(".lora_", prefix.size()) - prefix.size());
      if (!adapters::is_target(c, mod)) extra = t.name;
    }
    throw error({.what = "adapter tensor for a module the config does not target",
                 .file = wpath.string(),
                 .place = extra,
                 .expected = "only tensors of target_modules"});
  }
  auto set = adapters::attach_lora(be, m, c);
  auto load = [&](const std::string& key, std::vector<T>& dst) {
    const auto v = f.to_f32(key);
    dst.assign(v.begin(), v.end());
  };
  for (auto& mod : set.modules) {
    const std::string p = prefix + mod->name;
    load(p + ".lora_A.weight", mod->A);
    load(p + ".lora_B.weight", mod->B);
    if (mod->dora) load(p + ".lora_magnitude_vector", mod->m);
  }
  return set;
}

/// Writes `set` as a PEFT adapter directory (config + f32 safetensors, each atomically).
/// `base_model` goes into base_model_name_or_path (empty: null).
template <class T>
void save_peft_adapter(const adapters::lora_set<T>& set, const std::filesystem::path& dir,
                       const std::string& base_model = {}) {
  std::filesystem::create_directories(dir);
  const auto& c = set.config;
  json targets;
  if (!c.target_regex.empty()) {
    targets = c.target_regex;
  } else {
    // PEFT stores the resolved module names (all-linear becomes the list of suffixes).
    std::set<std::string> names;
    for (auto& mod : set.modules) names.insert(mod->name.substr(mod->name.rfind('.') + 1));
    targets = std::vector<std::string>(names.begin(), names.end());
  }
  const json cfg = {{"peft_type", "LORA"},
                    {"task_type", "CAUSAL_LM"},
                    {"base_model_name_or_path", base_model.empty() ? json() : json(base_model)},
                    {"r", c.rank},
                    {"lora_alpha", c.alpha},
                    {"lora_dropout", c.dropout},
                    {"target_modules", targets},
                    {"use_rslora", c.use_rslora},
                    {"use_dora", c.use_dora},
                    {"bias", "none"},
                    {"fan_in_fan_out", false},
                    {"init_lora_weights",
                     c.init == adapters::lora_init::gaussian ? json("gaussian") : json(true)},
                    {"inference_mode", true},
                    {"modules_to_save", nullptr},
                    {"rank_pattern", json::object()},
                    {"alpha_pattern", json::object()}};
  std::vector<std::vector<float>> bufs;
  bufs.reserve(set.modules.size() * 3);
  std::vector<tensor_view> views;
  auto add = [&](std::string key, const std::vector<T>& v, std::vector<std::int64_t> shape) {
    bufs.emplace_back(v.begin(), v.end());
    views.push_back(f32_view(std::move(key), std::move(shape), bufs.back()));
  };
  for (auto& mod : set.modules) {
    const std::string p = "base_model.model." + mod->name;
    add(p + ".lora_A.weight", mod->A, {mod->rank, mod->in});
    add(p + ".lora_B.weight", mod->B, {mod->out, mod->rank});
    if (mod->dora) add(p + ".lora_magnitude_vector", mod->m, {mod->out});
  }
  write_safetensors(dir / peft_weights_file, views, {{"format", "pt"}});
  save_json(dir / peft_config_file, cfg);
}

}  // namespace forge::io
