#pragma once
// The configuration of a Llama-family causal language model, read from a Hugging Face
// `config.json` in either layout transformers writes:
//   transformers >= 5:  "rope_parameters": {"rope_type": ..., "rope_theta": ..., ...}
//   transformers 4.x:   "rope_theta": ..., "rope_scaling": null | {"rope_type"|"type": ...}
// and written back in a form both read (see to_json). Field names, defaults and meaning
// follow transformers' LlamaConfig, MistralConfig and Qwen2Config.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/core/dtype.hpp"
#include "forge/core/error.hpp"

namespace forge::model {

/// The three supported model classes (the "architectures" entry of config.json).
enum class architecture { llama, mistral, qwen2 };

/// How config.json names each architecture: the transformers class ("LlamaForCausalLM") and
/// the `model_type` ("llama"). The one table every conversion below reads.
struct architecture_spelling {
  architecture arch;
  std::string_view class_name;
  std::string_view model_type;
};
inline constexpr architecture_spelling architecture_spellings[] = {
    {architecture::llama, "LlamaForCausalLM", "llama"},
    {architecture::mistral, "MistralForCausalLM", "mistral"},
    {architecture::qwen2, "Qwen2ForCausalLM", "qwen2"}};

/// The class name transformers uses ("LlamaForCausalLM", ...).
inline std::string architecture_name(architecture a) {
  for (const auto& s : architecture_spellings)
    if (s.arch == a) return std::string(s.class_name);
  return "?";
}

/// The `model_type` string of config.json ("llama", "mistral", "qwen2").
inline std::string model_type_name(architecture a) {
  for (const auto& s : architecture_spellings)
    if (s.arch == a) return std::string(s.model_type);
  return "?";
}

/// Rotary position embedding parameters (transformers' modeling_rope_utils.py).
struct rope_config {
  std::string type = "default";   ///< "default", "linear", "dynamic" or "llama3"
  double theta = 10000.0;         ///< base of the geometric frequency sequence
  double factor = 1.0;            ///< linear / dynamic / llama3 scaling factor
  double low_freq_factor = 1.0;   ///< llama3 only
  double high_freq_factor = 4.0;  ///< llama3 only
  std::int64_t original_max_position_embeddings = 0;  ///< llama3 only (context it was trained at)
  friend bool operator==(const rope_config&, const rope_config&) = default;
};

/// Everything the forward pass needs to know about a model's shape and numerics.
struct model_config {
  architecture arch = architecture::llama;
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  ///< may differ from hidden_size / num_attention_heads
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  rope_config rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  ///< q/k/v projections carry a bias (Llama attention_bias, Qwen2 always)
  bool o_bias = false;    ///< o_proj carries a bias (Llama attention_bias)
  bool mlp_bias = false;  ///< gate/up/down carry biases (Llama mlp_bias)
  /// Sliding attention window per layer in tokens; 0 = full causal attention. A query at
  /// cache slot i sees key slots j with i - window < j <= i (transformers' masking_utils).
  std::vector<std::int64_t> sliding_window;
  std::optional<std::int64_t> bos_token_id, pad_token_id;
  std::vector<std::int64_t> eos_token_ids;
  dtype torch_dtype = dtype::f32;  ///< the dtype the checkpoint declares ("dtype"/"torch_dtype")

  /// Number of attention heads that share one key/value head (GQA group size).
  std::int64_t group_size() const { return num_attention_heads / num_key_value_heads; }
  /// Count of parameters (scalars) in the model, tied head counted once.
  std::int64_t parameter_count() const {
    const std::int64_t H = hidden_size, I = intermediate_size, D = head_dim;
    const std::int64_t q = num_attention_heads * D, kv = num_key_value_heads * D;
    std::int64_t layer = 2 * H + H * q + 2 * H * kv + q * H + 3 * H * I;
    if (qkv_bias) layer += q + 2 * kv;
    if (o_bias) layer += H;
    if (mlp_bias) layer += 2 * I + H;
    return vocab_size * H * (tie_word_embeddings ? 1 : 2) + H + num_hidden_layers * layer;
  }
  friend bool operator==(const model_config&, const model_config&) = default;
};

/// Sampling defaults and stop tokens from generation_config.json.
struct generation_config {
  std::vector<std::int64_t> eos_token_ids;
  std::optional<std::int64_t> bos_token_id, pad_token_id;
};

namespace detail {

/// Typed access to a JSON object that reports the file and key on every mismatch.
class json_reader {
 public:
  json_reader(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {
    if (!j_.is_object())
      throw error({.what = "configuration is not a JSON object",
                   .file = source_,
                   .expected = "object",
                   .found = type_of(j_)});
  }
  static std::string type_of(const nlohmann::json& v) { return v.type_name(); }

  bool has(const std::string& k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  const nlohmann::json& at(const std::string& k) const { return j_.at(k); }

  std::int64_t integer(const std::string& k, std::optional<std::int64_t> def = {},
                       std::int64_t min = 1, std::int64_t max = std::int64_t(1) << 40) const {
    if (!has(k)) {
      if (def) return *def;
      throw error({.what = "missing required key",
                   .file = source_,
                   .place = "key " + k,
                   .expected = "an integer"});
    }
    return integer_value(j_.at(k), "key " + k, min, max);
  }
  std::int64_t integer_value(const nlohmann::json& v, const std::string& place, std::int64_t min,
                             std::int64_t max) const {
    std::int64_t x = 0;
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(max))
        throw error({.what = "integer out of range",
                     .file = source_,
                     .place = place,
                     .expected = "at most " + std::to_string(max),
                     .found = v.dump()});
      x = v.get<std::int64_t>();
    } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
               v.get<double>() == std::floor(v.get<double>()) && std::abs(v.get<double>()) < 1e15) {
      x = static_cast<std::int64_t>(v.get<double>());  // "hidden_size": 64.0 is still 64
    } else {
      throw error({.what = "wrong type",
                   .file = source_,
                   .place = place,
                   .expected = "an integer",
                   .found = v.dump()});
    }
    if (x < min || x > max)
      throw error({.what = "integer out of range",
                   .file = source_,
                   .place = place,
                   .expected = "between " + std::to_string(min) + " and " + std::to_string(max),
                   .found = std::to_string(x)});
    return x;
  }
  double number(const std::string& k, double def, double min = 0.0, double max = 1e300) const {
    if (!has(k)) return def;
    const auto& v = j_.at(k);
    if (!v.is_number())
      throw error({.what = "wrong type",
                   .file = source_,
                   .place = "key " + k,
                   .expected = "a number",
                   .found = v.dump()});
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < min || x > max)
      throw error({.what = "number out of range",
                   .file = source_,
                   .place = "key " + k,
                   .expected = "a finite number in [" + str(min) + ", " + str(max) + "]",
                   .found = v.dump()});
    return x;
  }
  bool boolean(const std::string& k, bool def) const {
    if (!has(k)) return def;
    const auto& v = j_.at(k);
    if (!v.is_boolean())
      throw error({.what = "wrong type",
                   .file = source_,
                   .place = "key " + k,
                   .expected = "true or false",
                   .found = v.dump()});
    return v.get<bool>();
  }
  std::optional<std::string> string(const std::string& k) const {
    if (!has(k)) return std::nullopt;
    const auto& v = j_.at(k);
    if (!v.is_string())
      throw error({.what = "wrong type",
                   .file = source_,
                   .place = "key " + k,
                   .expected = "a string",
                   .found = v.dump()});
    return v.get<std::string>();
  }
  /// An integer or a list of integers (eos_token_id may be either); empty when absent.
  std::vector<std::int64_t> integer_list(const std::string& k) const {
    std::vector<std::int64_t> out;
    if (!has(k)) return out;
    const auto& v = j_.at(k);
    if (v.is_array()) {
      for (std::size_t i = 0; i < v.size(); ++i)
        out.push_back(integer_value(v[i], "key " + k + "[" + std::to_string(i) + "]", 0,
                                    std::int64_t(1) << 40));
    } else {
      out.push_back(integer_value(v, "key " + k, 0, std::int64_t(1) << 40));
    }
    return out;
  }
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& j_;
  std::string source_;
};

inline dtype parse_torch_dtype(const std::string& s, const std::string& source) {
  std::string t = s.rfind("torch.", 0) == 0 ? s.substr(6) : s;
  if (t == "float32" || t == "float") return dtype::f32;
  if (t == "bfloat16") return dtype::bf16;
  if (t == "float16" || t == "half") return dtype::f16;
  throw error({.what = "unsupported checkpoint dtype",
               .file = source,
               .place = "key dtype",
               .expected = "float32, bfloat16 or float16",
               .found = s});
}

inline std::string torch_dtype_name(dtype t) {
  switch (t) {
    case dtype::bf16:
      return "bfloat16";
    case dtype::f16:
      return "float16";
    default:
      return "float32";
  }
}

inline rope_config parse_rope(const nlohmann::json& obj, double theta_default,
                              const std::string& source, const std::string& key) {
  json_reader r(obj, source + " (" + key + ")");
  rope_config rc;
  auto type = r.string("rope_type");
  if (!type) type = r.string("type");  // transformers 4 spelled it "type"
  rc.type = type.value_or("default");
  rc.theta = r.number("rope_theta", theta_default, 1e-300);
  if (rc.type == "default") {
  } else if (rc.type == "linear" || rc.type == "dynamic") {
    rc.factor = r.number("factor", -1.0, -1.0);
    if (!(rc.factor >= 1.0))
      throw error({.what = "rope scaling factor missing or below 1",
                   .file = source,
                   .place = "key " + key + ".factor",
                   .expected = "a number >= 1",
                   .found = r.has("factor") ? r.at("factor").dump() : "nothing"});
  } else if (rc.type == "llama3") {
    rc.factor = r.number("factor", -1.0, -1.0);
    rc.low_freq_factor = r.number("low_freq_factor", -1.0, -1.0);
    rc.high_freq_factor = r.number("high_freq_factor", -1.0, -1.0);
    rc.original_max_position_embeddings =
        r.integer("original_max_position_embeddings", std::int64_t(-1), -1);
    if (!(rc.factor >= 1.0) || !(rc.low_freq_factor > 0) ||
        !(rc.high_freq_factor > rc.low_freq_factor) || rc.original_max_position_embeddings <= 0)
      throw error({.what = "incomplete llama3 rope scaling",
                   .file = source,
                   .place = "key " + key,
                   .expected = "factor >= 1, 0 < low_freq_factor < high_freq_factor, "
                               "original_max_position_embeddings > 0",
                   .found = obj.dump()});
  } else {
    throw error({.what = "unsupported rope type",
                 .file = source,
                 .place = "key " + key,
                 .expected = "default, linear, dynamic or llama3",
                 .found = rc.type});
  }
  if (r.has("partial_rotary_factor") && r.number("partial_rotary_factor", 1.0) != 1.0)
    throw error({.what = "partial rotary embeddings are not supported",
                 .file = source,
                 .place = "key " + key + ".partial_rotary_factor",
                 .expected = "1.0",
                 .found = r.at("partial_rotary_factor").dump()});
  return rc;
}

}  // namespace detail

/// Parses a config.json object; `source` names it in errors. Unknown keys are ignored, as
/// transformers does; every key we use is type- and range-checked.
inline model_config parse_config(const nlohmann::json& j, const std::string& source) {
  detail::json_reader r(j, source);
  model_config c;
  std::optional<std::string> arch_name;
  if (r.has("architectures")) {
    const auto& a = r.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string())
      throw error({.what = "wrong type",
                   .file = source,
                   .place = "key architectures",
                   .expected = "a non-empty list of class names",
                   .found = a.dump()});
    arch_name = a[0].get<std::string>();
  }
  const auto model_type = r.string("model_type");
  const architecture_spelling* found = nullptr;
  std::string known;
  for (const auto& sp : architecture_spellings) {
    if (arch_name ? *arch_name == sp.class_name : model_type == sp.model_type) found = &sp;
    if (!known.empty()) known += ", ";
    known += arch_name ? sp.class_name : sp.model_type;
  }
  if (!found)
    throw error({.what = "unsupported architecture",
                 .file = source,
                 .place = arch_name ? "key architectures" : "key model_type",
                 .expected = known,
                 .found = arch_name ? *arch_name : model_type.value_or("nothing")});
  c.arch = found->arch;

  c.vocab_size = r.integer("vocab_size", {}, 1, std::int64_t(1) << 24);
  c.hidden_size = r.integer("hidden_size", {}, 1, std::int64_t(1) << 20);
  c.intermediate_size = r.integer("intermediate_size", {}, 1, std::int64_t(1) << 22);
  c.num_hidden_layers = r.integer("num_hidden_layers", {}, 1, 4096);
  c.num_attention_heads = r.integer("num_attention_heads", {}, 1, 4096);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads, 1, 4096);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw error(
        {.what = "attention heads not a multiple of key/value heads",
         .file = source,
         .place = "key num_key_value_heads",
         .expected = "a divisor of num_attention_heads = " + std::to_string(c.num_attention_heads),
         .found = std::to_string(c.num_key_value_heads)});
  if (r.has("head_dim")) {
    c.head_dim = r.integer("head_dim", {}, 1, 1 << 16);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      throw error({.what = "hidden_size not divisible by num_attention_heads and no head_dim",
                   .file = source,
                   .place = "key hidden_size",
                   .expected = "a multiple of " + std::to_string(c.num_attention_heads),
                   .found = std::to_string(c.hidden_size)});
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0)
    throw error({.what = "rotary embeddings need an even head dimension",
                 .file = source,
                 .place = "key head_dim",
                 .expected = "an even number",
                 .found = std::to_string(c.head_dim)});
  const std::int64_t default_max_pos = c.arch == architecture::llama   ? 2048
                                       : c.arch == architecture::qwen2 ? 32768
                                                                       : 4096 * 32;
  c.max_position_embeddings =
      r.integer("max_position_embeddings", default_max_pos, 1, std::int64_t(1) << 32);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, 0.0, 1.0);
  if (auto act = r.string("hidden_act"); act && *act != "silu")
    throw error({.what = "unsupported activation",
                 .file = source,
                 .place = "key hidden_act",
                 .expected = "silu",
                 .found = *act});

  // Rotary embeddings: the transformers-5 object wins; otherwise the 4.x pair of keys.
  const double theta = r.number("rope_theta", 10000.0, 1e-300);
  if (r.has("rope_parameters")) {
    const auto& rp = r.at("rope_parameters");
    if (!rp.is_object())
      throw error({.what = "wrong type",
                   .file = source,
                   .place = "key rope_parameters",
                   .expected = "an object",
                   .found = rp.dump()});
    c.rope = detail::parse_rope(rp, theta, source, "rope_parameters");
  } else if (r.has("rope_scaling")) {
    const auto& rs = r.at("rope_scaling");
    if (!rs.is_object())
      throw error({.what = "wrong type",
                   .file = source,
                   .place = "key rope_scaling",
                   .expected = "an object or null",
                   .found = rs.dump()});
    c.rope = detail::parse_rope(rs, theta, source, "rope_scaling");
  } else {
    c.rope.theta = theta;
  }

  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.arch == architecture::llama) {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.mlp_bias = r.boolean("mlp_bias", false);
  } else if (c.arch == architecture::qwen2) {
    c.qkv_bias = true;  // Qwen2Attention: q/k/v with bias, o_proj without
  }

  // Sliding windows: Mistral applies one window to every layer (null = none); Qwen2 only
  // when use_sliding_window, to layers >= max_window_layers, unless layer_types says.
  c.sliding_window.assign(static_cast<std::size_t>(c.num_hidden_layers), 0);
  if (c.arch == architecture::mistral) {
    const bool present = j.contains("sliding_window");
    const std::int64_t w =
        present
            ? (r.has("sliding_window") ? r.integer("sliding_window", {}, 1, std::int64_t(1) << 32)
                                       : 0)
            : 4096;  // MistralConfig's default
    for (auto& s : c.sliding_window) s = w;
  } else if (c.arch == architecture::qwen2) {
    const bool use = r.boolean("use_sliding_window", false);
    const std::int64_t w =
        r.has("sliding_window") ? r.integer("sliding_window", {}, 1, std::int64_t(1) << 32) : 4096;
    if (r.has("layer_types")) {
      const auto& lt = r.at("layer_types");
      if (!lt.is_array() || lt.size() != c.sliding_window.size())
        throw error({.what = "layer_types does not list every layer",
                     .file = source,
                     .place = "key layer_types",
                     .expected = std::to_string(c.num_hidden_layers) + " entries",
                     .found = lt.dump()});
      for (std::size_t i = 0; i < lt.size(); ++i) {
        if (!lt[i].is_string() || (lt[i] != "sliding_attention" && lt[i] != "full_attention"))
          throw error({.what = "unknown layer type",
                       .file = source,
                       .place = "key layer_types[" + std::to_string(i) + "]",
                       .expected = "sliding_attention or full_attention",
                       .found = lt[i].dump()});
        c.sliding_window[i] = lt[i] == "sliding_attention" && use ? w : 0;
      }
    } else if (use) {
      const std::int64_t from = r.integer("max_window_layers", 28, 0, 1 << 20);
      for (std::size_t i = 0; i < c.sliding_window.size(); ++i)
        c.sliding_window[i] = std::int64_t(i) >= from ? w : 0;
    }
  }

  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id", {}, 0);
  if (r.has("pad_token_id")) c.pad_token_id = r.integer("pad_token_id", {}, 0);
  c.eos_token_ids = r.integer_list("eos_token_id");
  if (auto d = r.string("dtype"))
    c.torch_dtype = detail::parse_torch_dtype(*d, source);
  else if (auto t = r.string("torch_dtype"))
    c.torch_dtype = detail::parse_torch_dtype(*t, source);
  return c;
}

/// Parses config.json text; JSON syntax errors name the byte.
inline model_config parse_config_text(std::string_view text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw error({.what = "invalid JSON: " + std::string(e.what()),
                 .file = source,
                 .place = at_byte(e.byte)});
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for any type
    throw error({.what = "invalid JSON: " + std::string(e.what()), .file = source});
  }
  return parse_config(j, source);
}

namespace detail {
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw error({.what = "cannot open file", .file = p.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace detail

/// Reads and parses a config.json file.
inline model_config load_config(const std::filesystem::path& p) {
  return parse_config_text(detail::read_text(p), p.string());
}

/// Parses generation_config.json text (eos_token_id may be an integer or a list).
inline generation_config parse_generation_config_text(std::string_view text,
                                                      const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw error({.what = "invalid JSON: " + std::string(e.what()),
                 .file = source,
                 .place = at_byte(e.byte)});
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for any type
    throw error({.what = "invalid JSON: " + std::string(e.what()), .file = source});
  }
  detail::json_reader r(j, source);
  generation_config g;
  g.eos_token_ids = r.integer_list("eos_token_id");
  if (r.has("bos_token_id")) g.bos_token_id = r.integer("bos_token_id", {}, 0);
  if (r.has("pad_token_id")) g.pad_token_id = r.integer("pad_token_id", {}, 0);
  return g;
}

/// config.json for `c`: the transformers-5 `rope_parameters` object plus the 4.x
/// `rope_theta`/`rope_scaling` keys, so both generations of transformers read it.
inline nlohmann::json to_json(const model_config& c) {
  nlohmann::json j;
  j["architectures"] = {architecture_name(c.arch)};
  j["model_type"] = model_type_name(c.arch);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["dtype"] = detail::torch_dtype_name(c.torch_dtype);
  j["torch_dtype"] = detail::torch_dtype_name(c.torch_dtype);
  nlohmann::json rp = {{"rope_type", c.rope.type}, {"rope_theta", c.rope.theta}};
  if (c.rope.type != "default") rp["factor"] = c.rope.factor;
  if (c.rope.type == "llama3") {
    rp["low_freq_factor"] = c.rope.low_freq_factor;
    rp["high_freq_factor"] = c.rope.high_freq_factor;
    rp["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
  }
  j["rope_parameters"] = rp;
  j["rope_theta"] = c.rope.theta;
  if (c.rope.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    auto rs = rp;
    rs.erase("rope_theta");
    rs["type"] = c.rope.type;
    j["rope_scaling"] = rs;
  }
  if (c.arch == architecture::llama) {
    if (c.qkv_bias != c.o_bias)
      throw error({.what = "Llama configs bias q/k/v/o together",
                   .place = "attention_bias",
                   .expected = "qkv_bias == o_bias",
                   .found = "different"});
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if (c.qkv_bias != (c.arch == architecture::qwen2) || c.o_bias || c.mlp_bias) {
    throw error({.what = "bias layout not expressible for this architecture",
                 .place = architecture_name(c.arch),
                 .expected = c.arch == architecture::qwen2 ? "q/k/v bias only" : "no biases"});
  }
  const std::int64_t w = c.sliding_window.empty() ? 0 : c.sliding_window.back();
  if (c.arch == architecture::mistral) {
    for (auto s : c.sliding_window)
      if (s != w)
        throw error({.what = "Mistral uses one sliding window for all layers",
                     .place = "sliding_window",
                     .expected = std::to_string(w),
                     .found = std::to_string(s)});
    j["sliding_window"] = w > 0 ? nlohmann::json(w) : nlohmann::json(nullptr);
  } else if (c.arch == architecture::qwen2) {
    std::int64_t win = 0;
    for (auto s : c.sliding_window) win = std::max(win, s);
    j["use_sliding_window"] = win > 0;
    j["sliding_window"] = win > 0 ? nlohmann::json(win) : nlohmann::json(nullptr);
    nlohmann::json lt = nlohmann::json::array();
    std::int64_t first_sliding = c.num_hidden_layers;
    for (std::size_t i = 0; i < c.sliding_window.size(); ++i) {
      if (c.sliding_window[i] != 0 && c.sliding_window[i] != win)
        throw error({.what = "Qwen2 uses one sliding window size",
                     .place = "sliding_window",
                     .expected = std::to_string(win),
                     .found = str(c.sliding_window[i])});
      if (c.sliding_window[i] && first_sliding == c.num_hidden_layers) first_sliding = i;
      lt.push_back(c.sliding_window[i] ? "sliding_attention" : "full_attention");
    }
    j["max_window_layers"] = first_sliding;
    j["layer_types"] = lt;
  } else {
    for (auto s : c.sliding_window)
      if (s != 0)
        throw error({.what = "Llama has no sliding window attention",
                     .place = "sliding_window",
                     .expected = "0",
                     .found = str(s)});
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  if (c.eos_token_ids.size() == 1)
    j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty())
    j["eos_token_id"] = c.eos_token_ids;
  return j;
}

}  // namespace forge::model
