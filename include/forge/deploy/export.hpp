#pragma once
// Exports of a trained model for serving, the building blocks of the Deploy policies:
//   * dense_copy: a dense f32 copy with every LoRA/DoRA adapter folded in (PEFT's
//     merge_and_unload) and every quantized base projection dequantized;
//   * save_merged_checkpoint: that copy as a Hugging Face directory (config.json,
//     generation_config.json, model.safetensors) plus the tokenizer files;
//   * save_attached_adapter: the adapters attached to a model as a PEFT directory;
//   * gguf_tokenizer_from_hf / save_llama_gguf: a llama.cpp GGUF file (F32, F16, Q8_0, Q4_0,
//     Q4_K)
//     with the tokenizer read from tokenizer.json (gguf-py's convert_hf_to_gguf.py rules:
//     2-D weights take the file type, norms stay F32, q/k rows permuted for llama rope).

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/adapters/qlora.hpp"
#include "forge/core/error.hpp"
#include "forge/core/json.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/gguf.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/model/causal_lm.hpp"
#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/gptq_checkpoint.hpp"
#include "forge/quant/gptq_model.hpp"
#include "forge/quant/int4.hpp"
#include "forge/quant/k_quants.hpp"

namespace forge::exports {

namespace detail {
// W[out, in] of a base projection that replaced its dense weight: the base's forward of the
// identity, y = I·Wᵀ, read transposed. Exact for any format (each output is one weight times
// one plus zeros), and it is what the model itself computes with.
inline std::vector<float> dense_weight_of(const model::linear<float>& l) {
  if (!l.base) return l.weight.value;
  // A quantized base knows its values exactly (a base that quantizes its activations would
  // round the identity's rows below).
  if (auto* q = dynamic_cast<const adapters::quantized_weight*>(l.base.get()))
    return q->dequantized();
  const std::int64_t in = l.in, out = l.out, chunk = 64;
  std::vector<float> w(std::size_t(in * out)), x, y;
  for (std::int64_t r0 = 0; r0 < in; r0 += chunk) {
    const std::int64_t rows = std::min(chunk, in - r0);
    x.assign(std::size_t(rows * in), 0.0f);
    y.assign(std::size_t(rows * out), 0.0f);
    for (std::int64_t r = 0; r < rows; ++r) x[std::size_t(r * in + r0 + r)] = 1.0f;
    l.base->forward(x.data(), rows, y.data());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < out; ++o)
        w[std::size_t(o * in + r0 + r)] = y[std::size_t(r * out + o)];
  }
  return w;
}

// W ← W + s·B·A, or for DoRA W ← (m / ‖W + s·B·A‖) ⊙ (W + s·B·A) (Liu et al. 2024, eq. 5;
// the same fold as lora_module::merge, computed here on a copy so the live model is untouched).
inline void fold_adapter(std::vector<float>& W, const adapters::lora_module<float>& a) {
  std::vector<double> row(std::size_t(a.in));
  for (std::int64_t o = 0; o < a.out; ++o) {
    for (std::int64_t i = 0; i < a.in; ++i) row[std::size_t(i)] = W[std::size_t(o * a.in + i)];
    for (std::int64_t k = 0; k < a.rank; ++k) {
      const double b = double(a.scale) * a.B[std::size_t(o * a.rank + k)];
      if (b != 0)
        for (std::int64_t i = 0; i < a.in; ++i)
          row[std::size_t(i)] += b * a.A[std::size_t(k * a.in + i)];
    }
    double f = 1;
    if (a.dora) {
      double s = 0;
      for (double v : row) s += v * v;
      // the norm is rounded to f32 first, as lora_module::weight_norm stores it
      f = double(a.m[std::size_t(o)]) / double(float(std::sqrt(s)));
    }
    for (std::int64_t i = 0; i < a.in; ++i)
      W[std::size_t(o * a.in + i)] = float(row[std::size_t(i)] * f);
  }
}
}  // namespace detail

/// The LoRA/DoRA modules attached to `m`, in Hugging Face module order, with the config
/// they share (rank and scaling of the first module; forge::error if modules differ in rank
/// or DoRA-ness, which a PEFT directory cannot express). Empty modules when none.
inline adapters::lora_set<float> attached_adapters(const model::causal_lm<float>& m) {
  adapters::lora_set<float> set{};
  for (auto [key, lin] : adapters::linear_layers(const_cast<model::causal_lm<float>&>(m)))
    for (const auto& a : lin->adapters)
      if (auto l = std::dynamic_pointer_cast<adapters::lora_module<float>>(a)) {
        if (set.modules.empty()) {
          set.config.rank = int(l->rank);
          set.config.alpha = double(l->scale) * double(l->rank);
          set.config.use_dora = l->dora;
          set.config.target_modules.clear();
        } else if (l->rank != set.config.rank || l->dora != set.config.use_dora) {
          throw error({.what = "adapters of one model differ in rank or kind",
                       .place = key,
                       .expected = "rank " + std::to_string(set.config.rank),
                       .found = "rank " + std::to_string(l->rank)});
        }
        const auto suffix = key.substr(key.rfind('.') + 1);
        if (std::find(set.config.target_modules.begin(), set.config.target_modules.end(), suffix) ==
            set.config.target_modules.end())
          set.config.target_modules.push_back(suffix);
        set.modules.push_back(l);
      }
  return set;
}

/// True when some projection or the embedding of `m` has a replaced (quantized) weight.
inline bool has_quantized_base(const model::causal_lm<float>& m) {
  for (auto [key, lin] : adapters::linear_layers(const_cast<model::causal_lm<float>&>(m)))
    if (lin->base) return true;
  return m.embed_base != nullptr;
}

/// A dense f32 copy of `m`: quantized bases and a quantized embedding dequantized, adapters
/// folded in, no adapters or replaced bases left. `m` is unchanged.
inline model::causal_lm<float> dense_copy(const model::causal_lm<float>& m) {
  model::causal_lm<float> d = m;
  if (m.embed_base) {
    const auto V = m.config.vocab_size, H = m.config.hidden_size;
    auto& e = d.embed_tokens;
    e.value.resize(std::size_t(V * H));
    for (std::int64_t v = 0; v < V; ++v) m.embed_row(v, e.value.data() + v * H);
    e.shape = {V, H};
    e.name = "model.embed_tokens.weight";
    e.grad = {};
    e.trainable = false;
    d.embed_base.reset();
  }
  auto src = adapters::linear_layers(const_cast<model::causal_lm<float>&>(m));
  auto dst = adapters::linear_layers(d);
  for (std::size_t k = 0; k < src.size(); ++k) {
    const auto& from = *src[k].layer;
    auto& to = *dst[k].layer;
    if (src[k].name == "lm_head" && m.config.tie_word_embeddings) {
      require(from.adapters.empty(),
              {.what = "an adapter on a tied head cannot be merged", .place = "lm_head"});
      to.base.reset();  // a quantized tied head shares the embedding's matrix, dense above
      continue;
    }
    if (!from.base && from.adapters.empty()) continue;
    std::vector<float> W = detail::dense_weight_of(from);
    for (const auto& a : from.adapters) {
      auto l = std::dynamic_pointer_cast<const adapters::lora_module<float>>(a);
      if (!l)
        throw error(
            {.what = "cannot merge an adapter that is not LoRA or DoRA", .place = src[k].name});
      if (!l->merged) detail::fold_adapter(W, *l);
    }
    to.base.reset();
    to.adapters.clear();
    to.weight.value = std::move(W);
    to.weight.grad = {};
    to.weight.shape = {to.out, to.in};
    to.weight.name = src[k].name + ".weight";
    to.weight.trainable = false;
  }
  return d;
}

/// Tokenizer files copied by exports when present in the tokenizer directory.
inline const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.json",      "tokenizer_config.json", "special_tokens_map.json",
      "chat_template.jinja", "tokenizer.model",       "vocab.json",
      "merges.txt",          "added_tokens.json"};
  return names;
}

/// Copies the tokenizer files of `from` into `to` (atomically each). Returns the names
/// copied; forge::error if neither tokenizer.json nor tokenizer.model is there.
inline std::vector<std::string> copy_tokenizer_files(const std::filesystem::path& from,
                                                     const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& n : tokenizer_file_names())
    if (fs::is_regular_file(from / n)) {
      io::write_atomic(to / n, io::read_file(from / n));
      out.push_back(n);
    }
  if (std::find(out.begin(), out.end(), "tokenizer.json") == out.end() &&
      std::find(out.begin(), out.end(), "tokenizer.model") == out.end())
    throw error({.what = "no tokenizer in the tokenizer directory",
                 .file = from.string(),
                 .expected = "tokenizer.json or tokenizer.model"});
  return out;
}

/// Writes the merged dense model as a Hugging Face directory with the tokenizer files of
/// `tokenizer_dir` (none if empty). Returns the files written, relative to `dir`.
inline std::vector<std::string> save_merged_checkpoint(const model::causal_lm<float>& m,
                                                       const std::filesystem::path& dir,
                                                       const std::filesystem::path& tokenizer_dir) {
  io::save_hf_checkpoint(dense_copy(m), dir);
  std::vector<std::string> files = {"config.json", "generation_config.json", "model.safetensors"};
  if (!tokenizer_dir.empty())
    for (auto& n : copy_tokenizer_files(tokenizer_dir, dir)) files.push_back(n);
  return files;
}

/// Writes the adapters attached to `m` as a PEFT directory; forge::error if there are none.
inline std::vector<std::string> save_attached_adapter(const model::causal_lm<float>& m,
                                                      const std::filesystem::path& dir,
                                                      const std::string& base_model = {}) {
  const auto set = attached_adapters(m);
  require(!set.modules.empty(),
          {.what = "the model has no LoRA adapters to export", .place = "PEFT export"});
  io::save_peft_adapter(set, dir, base_model);
  return {io::peft_config_file, io::peft_weights_file};
}

namespace detail {
// The GPTQ packing of a base quantized to int4_group<G, Sym> with kernels of Bk, if it is one.
template <class Bk, int G, bool Sym>
bool pack_if(const model::linear_base<float>* b, std::optional<quant::gptq_packed>& out, int& group,
             bool& sym) {
  if (out) return true;
  if (auto* q = dynamic_cast<const adapters::quantized_base<Bk, quant::int4_group<G, Sym>>*>(b)) {
    // v2 stores zero points as they are; v1 cannot hold a zero point of 0 (pack_gptq).
    out = quant::pack_gptq(q->weight(), quant::gptq_format::v2);
    group = G, sym = Sym;
    return true;
  }
  return false;
}
}  // namespace detail

/// Writes `m` in the GPTQ checkpoint layout (AutoGPTQ / transformers' GPTQ format,
/// checkpoint_format "gptq_v2") when its base projections are int4_group<G> quantized with
/// kernels of backend `Bk` (G = 32, 64 or 128): PREFIX.qweight/.qzeros/.scales/.g_idx for
/// each quantized projection, the other tensors in f32, config.json with its
/// quantization_config, generation_config.json and the tokenizer files; a q8_0 embedding
/// and head as exact F32 values (quant::quantized_dense_tensors). Adapters are not
/// part of this layout (they go to the PEFT export). Returns false, writing nothing, when no
/// projection is int4; forge::error when some are int4 and others another format.
template <class Bk>
bool save_gptq_checkpoint(const model::causal_lm<float>& m, const std::filesystem::path& dir,
                          const std::filesystem::path& tokenizer_dir = {}) {
  std::vector<std::pair<std::string, quant::gptq_packed>> packed;
  int group = 0;
  bool sym = true, other = false;
  std::string other_name;
  for (auto [key, lin] : adapters::linear_layers(const_cast<model::causal_lm<float>&>(m))) {
    if (!lin->base || key == "lm_head") continue;  // a quantized head: quantized_dense_tensors
    std::optional<quant::gptq_packed> pk;
    const auto* b = lin->base.get();
    (void)(detail::pack_if<Bk, 32, true>(b, pk, group, sym) ||
           detail::pack_if<Bk, 64, true>(b, pk, group, sym) ||
           detail::pack_if<Bk, 128, true>(b, pk, group, sym) ||
           detail::pack_if<Bk, 32, false>(b, pk, group, sym) ||
           detail::pack_if<Bk, 64, false>(b, pk, group, sym) ||
           detail::pack_if<Bk, 128, false>(b, pk, group, sym));
    if (pk)
      packed.push_back({key, std::move(*pk)});
    else
      other = true, other_name = key;
  }
  if (packed.empty()) return false;
  if (other)
    throw error({.what = "a GPTQ checkpoint needs every quantized projection in int4",
                 .place = other_name,
                 .expected = "int4_group<G> bases only",
                 .found = "another quantized format"});
  std::filesystem::create_directories(dir);
  std::vector<io::tensor_view> views;
  std::vector<std::vector<float>> dense;
  std::vector<const model::parameter<float>*> params;
  const_cast<model::causal_lm<float>&>(m).for_each_parameter(
      [&](const model::parameter<float>& p) { params.push_back(&p); });
  for (const auto* p : params) views.push_back(io::f32_view(p->name, p->shape, p->value));
  const auto exact = quant::quantized_dense_tensors(m);
  for (const auto& [name, values] : exact.tensors)
    views.push_back(io::f32_view(name, {m.config.vocab_size, m.config.hidden_size}, values));
  for (const auto& [key, pk] : packed) quant::append_gptq_views(views, key, pk);
  io::write_safetensors(dir / "model.safetensors", views, {{"format", "pt"}});
  auto cfg = model::to_json(m.config);
  cfg["torch_dtype"] = "float32";
  cfg["quantization_config"] =
      json::parse(quant::gptq_quantization_config(group, sym, false, 0.01, quant::gptq_format::v2));
  if (!exact.names.empty()) cfg["forge_quantized_dense"] = exact.names;
  io::write_atomic(dir / "config.json", cfg.dump(2) + "\n");
  json g = json::object();
  if (m.generation.bos_token_id) g["bos_token_id"] = *m.generation.bos_token_id;
  if (!m.generation.eos_token_ids.empty()) g["eos_token_id"] = m.generation.eos_token_ids[0];
  io::write_atomic(dir / "generation_config.json", g.dump(2) + "\n");
  if (!tokenizer_dir.empty()) copy_tokenizer_files(tokenizer_dir, dir);
  return true;
}

/// The llama.cpp tokenizer keys of a Hugging Face byte-level BPE tokenizer.json (model
/// "gpt2"; tokens by id, added special tokens as control tokens, merges in rank order) with
/// the bos/eos tokens and chat template of tokenizer_config.json (or chat_template.jinja).
/// forge::error naming the file for other tokenizer models or holes in the id range.
inline io::gguf_tokenizer gguf_tokenizer_from_hf(const std::filesystem::path& dir) {
  const auto file = (dir / "tokenizer.json").string();
  const json t = load_json(dir / "tokenizer.json");
  const json& model = t.at("model");
  const auto type = get_field<std::string>(model, "type", file, "model");
  if (type != "BPE")
    throw error({.what = "only byte-level BPE tokenizers are exported to GGUF",
                 .file = file,
                 .place = "model.type",
                 .expected = "BPE",
                 .found = type});
  io::gguf_tokenizer g;
  g.model = "gpt2";
  g.pre = "llama-bpe";
  std::map<std::int64_t, std::pair<std::string, std::int32_t>> by_id;
  for (const auto& [tok, id] : model.at("vocab").items())
    by_id[id.get<std::int64_t>()] = {tok, std::int32_t(io::gguf_token_type::normal)};
  if (t.contains("added_tokens"))
    for (const auto& a : t.at("added_tokens"))
      by_id[a.at("id").get<std::int64_t>()] = {
          a.at("content").get<std::string>(),
          std::int32_t(a.value("special", false) ? io::gguf_token_type::control
                                                 : io::gguf_token_type::user_defined)};
  std::int64_t expect = 0;
  for (const auto& [id, v] : by_id) {
    if (id != expect)
      throw error({.what = "token ids are not contiguous",
                   .file = file,
                   .place = "model.vocab",
                   .expected = "id " + std::to_string(expect),
                   .found = "id " + std::to_string(id)});
    ++expect;
    g.tokens.push_back(v.first);
    g.token_types.push_back(v.second);
  }
  for (const auto& mg : model.at("merges"))
    g.merges.push_back(mg.is_string()
                           ? mg.get<std::string>()
                           : mg.at(0).get<std::string>() + " " + mg.at(1).get<std::string>());
  const auto cfg_path = dir / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(cfg_path)) {
    const json c = load_json(cfg_path);
    auto id_of = [&](const char* key) -> std::optional<std::uint32_t> {
      if (!c.contains(key)) return {};
      const json& v = c.at(key);
      const std::string s = v.is_object()   ? v.value("content", "")
                            : v.is_string() ? v.get<std::string>()
                                            : "";
      for (std::size_t i = 0; i < g.tokens.size(); ++i)
        if (g.tokens[i] == s) return std::uint32_t(i);
      return {};
    };
    g.bos_id = id_of("bos_token");
    g.eos_id = id_of("eos_token");
    g.pad_id = id_of("pad_token");
    if (c.contains("add_bos_token") && c.at("add_bos_token").is_boolean())
      g.add_bos = c.at("add_bos_token").get<bool>();
    if (c.contains("chat_template") && c.at("chat_template").is_string())
      g.chat_template = c.at("chat_template").get<std::string>();
  }
  if (g.chat_template.empty() && std::filesystem::is_regular_file(dir / "chat_template.jinja"))
    g.chat_template = io::read_file(dir / "chat_template.jinja");
  return g;
}

/// The GGUF tensor types an export can use for its 2-D weights.
enum class gguf_export_type { f32, f16, q8_0, q4_0, q4_k };

/// Parses "f32", "f16", "q8_0", "q4_0" or "q4_k" (case-insensitive); forge::error otherwise.
inline gguf_export_type parse_gguf_export_type(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "f32") return gguf_export_type::f32;
  if (s == "f16") return gguf_export_type::f16;
  if (s == "q8_0") return gguf_export_type::q8_0;
  if (s == "q4_0") return gguf_export_type::q4_0;
  if (s == "q4_k") return gguf_export_type::q4_k;
  throw error(
      {.what = "unknown GGUF type", .expected = "f32, f16, q8_0, q4_0 or q4_k", .found = s});
}

/// Writes a dense copy of `m` as a llama.cpp GGUF file: llama.* metadata from the config,
/// the tokenizer `tok`, 1-D tensors in F32 and 2-D weights in `type` (a quantized type falls
/// back to F16 for rows whose width is not a multiple of the 32-value block, as
/// convert_hf_to_gguf.py does; Q4_K falls back to Q8_0 for widths that are multiples of 32 but
/// not of its 256-value block). q/k weights get llama.cpp's rope row permutation.
inline void save_llama_gguf(const model::causal_lm<float>& m, const io::gguf_tokenizer& tok,
                            const std::filesystem::path& path, gguf_export_type type,
                            const std::string& name = "forge") {
  const auto d = dense_copy(m);
  const auto& c = d.config;
  io::gguf_metadata md;
  const io::llama_file_type ft = type == gguf_export_type::f32    ? io::llama_file_type::all_f32
                                 : type == gguf_export_type::f16  ? io::llama_file_type::mostly_f16
                                 : type == gguf_export_type::q8_0 ? io::llama_file_type::mostly_q8_0
                                 : type == gguf_export_type::q4_k
                                     ? io::llama_file_type::mostly_q4_k_s
                                     : io::llama_file_type::mostly_q4_0;
  io::add_llama_metadata(md, {.name = name,
                              .context_length = std::uint32_t(c.max_position_embeddings),
                              .embedding_length = std::uint32_t(c.hidden_size),
                              .block_count = std::uint32_t(c.num_hidden_layers),
                              .feed_forward_length = std::uint32_t(c.intermediate_size),
                              .head_count = std::uint32_t(c.num_attention_heads),
                              .head_count_kv = std::uint32_t(c.num_key_value_heads),
                              .vocab_size = std::uint32_t(c.vocab_size),
                              .rope_dimension_count = std::uint32_t(c.head_dim),
                              .rope_freq_base = float(c.rope.theta),
                              .rms_norm_eps = float(c.rms_norm_eps),
                              .file_type = ft});
  io::add_tokenizer_metadata(md, tok);
  std::vector<std::vector<std::byte>> bufs;
  std::vector<io::gguf_tensor_view> views;
  std::vector<std::pair<std::string, const model::parameter<float>*>> params;
  const_cast<model::causal_lm<float>&>(d).for_each_parameter([&](const model::parameter<float>& p) {
    params.push_back({p.name, &p});
  });
  bufs.reserve(params.size());
  for (const auto& [hf, p] : params) {
    const std::string gname = io::gguf_tensor_name(hf);
    const auto& v = p->value;
    const std::int64_t rows = p->shape.size() == 2 ? p->shape[0] : 1;
    const std::int64_t cols = p->shape.empty() ? 0 : p->shape.back();
    io::ggml_type t = io::ggml_type::f32;
    if (p->shape.size() == 2) {
      if (type == gguf_export_type::f16) t = io::ggml_type::f16;
      if (type == gguf_export_type::q8_0) t = cols % 32 ? io::ggml_type::f16 : io::ggml_type::q8_0;
      if (type == gguf_export_type::q4_0) t = cols % 32 ? io::ggml_type::f16 : io::ggml_type::q4_0;
      if (type == gguf_export_type::q4_k)
        t = cols % 256 == 0 ? io::ggml_type::q4_k
            : cols % 32     ? io::ggml_type::f16
                            : io::ggml_type::q8_0;
    }
    std::vector<std::byte> b;
    if (t == io::ggml_type::f32) {
      b.resize(v.size() * 4);
      std::memcpy(b.data(), v.data(), b.size());
    } else if (t == io::ggml_type::f16) {
      b.resize(v.size() * 2);
      for (std::size_t i = 0; i < v.size(); ++i) {
        const std::uint16_t h = to_f16(v[i]).bits;
        std::memcpy(b.data() + 2 * i, &h, 2);
      }
    } else {
      const auto codes = t == io::ggml_type::q8_0   ? quant::q8_0::quantize(v, rows, cols).codes
                         : t == io::ggml_type::q4_k ? quant::q4_k::quantize(v, rows, cols).codes
                                                    : quant::q4_0::quantize(v, rows, cols).codes;
      b.resize(codes.size());
      std::memcpy(b.data(), codes.data(), codes.size());
    }
    if (io::needs_rope_permute(gname))
      b = io::permute_rope_rows(
          b, std::size_t(rows),
          std::size_t(gname.find(".attn_q.") != std::string::npos ? c.num_attention_heads
                                                                  : c.num_key_value_heads));
    bufs.push_back(std::move(b));
    views.push_back({gname, t, p->shape, bufs.back()});
  }
  io::write_gguf(path, md, views);
}

/// Writes the LoRA adapters attached to `m` as a llama.cpp GGUF LoRA adapter
/// (convert_lora_to_gguf.py layout): general.type = "adapter", adapter.lora.alpha = s·r, and
/// per adapted weight `<name>.lora_a` (PEFT's lora_A, [r, in]) and `<name>.lora_b` ([out, r],
/// rows rope-permuted for attn_q / attn_k like the base weight), in F32. forge::error for DoRA
/// (llama.cpp has no magnitude vector) or when no adapter is attached.
inline void save_lora_gguf(const model::causal_lm<float>& m, const std::filesystem::path& path) {
  const auto set = attached_adapters(m);
  require(!set.modules.empty(),
          {.what = "the model has no LoRA adapters to export", .place = "GGUF LoRA export"});
  require(!set.config.use_dora, {.what = "llama.cpp's GGUF LoRA format cannot hold DoRA adapters",
                                 .place = "GGUF LoRA export",
                                 .expected = "plain LoRA adapters"});
  io::gguf_metadata md;
  io::add_lora_adapter_metadata(md, float(set.config.alpha));
  std::vector<std::vector<std::byte>> bufs;
  bufs.reserve(set.modules.size() * 2);
  std::vector<io::gguf_tensor_view> views;
  for (const auto& mod : set.modules) {
    const auto [na, nb] = io::gguf_lora_names(mod->name + ".weight");
    auto bytes_of = [](const std::vector<float>& v) {
      std::vector<std::byte> b(v.size() * 4);
      std::memcpy(b.data(), v.data(), b.size());
      return b;
    };
    bufs.push_back(bytes_of(mod->A));
    views.push_back({na, io::ggml_type::f32, {mod->rank, mod->in}, bufs.back()});
    auto b = bytes_of(mod->B);
    if (io::needs_rope_permute(nb))
      b = io::permute_rope_rows(
          b, std::size_t(mod->out),
          std::size_t(nb.find(".attn_q.") != std::string::npos ? m.config.num_attention_heads
                                                               : m.config.num_key_value_heads));
    bufs.push_back(std::move(b));
    views.push_back({nb, io::ggml_type::f32, {mod->out, mod->rank}, bufs.back()});
  }
  io::write_gguf(path, md, views);
}

}  // namespace forge::exports
