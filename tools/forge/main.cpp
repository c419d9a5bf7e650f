// The forge command-line tool.
//
//   forge verify DIR [--key FILE]        check a signed release (signature, hashes, bindings)
//   forge inspect PATH                   summarise a GGUF file, a safetensors file, a PEFT
//                                        adapter directory or a Hugging Face model directory
//   forge generate MODEL_DIR --prompt T  greedy or sampled continuation of a prompt
//   forge run PIPELINE.yaml [--out DIR]  run a pipeline described in YAML (docs/deploy.md)
//   forge quantize MODEL_DIR --to FORMAT --out PATH [--method rtn|gptq --calib JSONL]
//   forge eval MODEL_DIR [--perplexity JSONL] [--task JSONL]
//   forge chat MODEL_DIR                 interactive; one user turn per stdin line
//   forge keygen FILE                    new Ed25519 key: FILE (secret, mode 0600), FILE.pub
//
// Exit codes: 0 success; 1 usage error (bad or missing arguments); 2 input error (a file
// that cannot be read or parsed, a model that cannot be loaded); 3 a stage gate failed;
// 4 verification failed. Errors are printed to stderr as one line "forge: <what>" followed
// by the context forge::error carries (file, place, expected, found).

#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "forge/backend/backend.hpp"
#include "forge/builtin/model.hpp"
#include "forge/core/error.hpp"
#include "forge/eval/task.hpp"
#include "forge/govern/release.hpp"
#include "forge/govern/signing.hpp"
#include "forge/io/gguf.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/model/generate.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/gptq.hpp"
#include "forge/quant/hessian.hpp"
#include "forge/text/chat_template.hpp"
#include "forge/text/load_tokenizer.hpp"
#include "forge/train/trainer.hpp"
#include "registry.hpp"

namespace fs = std::filesystem;

namespace {

/// Documented exit codes.
enum exit_code : int { ok = 0, usage = 1, input_error = 2, gate_failed = 3, verify_failed = 4 };

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) t += ", ";
    t += std::to_string(s[i]);
  }
  return t + "]";
}

std::string gguf_value_text(const forge::io::gguf_value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return x.size() > 60 ? "\"" + x.substr(0, 57) + "...\"" : "\"" + x + "\"";
        } else if constexpr (std::is_same_v<T, forge::io::gguf_array>) {
          return std::string("array of ") + std::to_string(x.size()) + " " +
                 std::string(forge::io::name(x.elem));
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else {
          return forge::str(x);
        }
      },
      v);
}

int inspect_gguf(const fs::path& p) {
  const auto f = forge::io::gguf_file::open(p);
  std::cout << "GGUF v" << f.version() << ": " << p.string() << "\n"
            << "metadata: " << f.metadata().size() << " keys\n";
  for (const auto& [k, v] : f.metadata().items())
    std::cout << "  " << k << " = " << gguf_value_text(v) << "\n";
  std::uint64_t bytes = 0;
  std::cout << "tensors: " << f.tensors().size() << "\n";
  for (const auto& t : f.tensors()) {
    bytes += t.nbytes;
    std::cout << "  " << t.name << "  " << forge::io::name(t.type) << "  " << shape_text(t.shape)
              << "\n";
  }
  std::cout << "tensor bytes: " << bytes << "\n";
  return ok;
}

int inspect_safetensors(const fs::path& p) {
  const auto f = forge::io::safetensors_file::open(p);
  std::cout << "safetensors: " << p.string() << "\ntensors: " << f.tensors().size() << "\n";
  std::uint64_t n = 0;
  for (const auto& t : f.tensors()) {
    n += t.numel();
    std::cout << "  " << t.name << "  " << forge::name(t.type) << "  " << shape_text(t.shape)
              << "\n";
  }
  std::cout << "parameters: " << n << "\n";
  return ok;
}

int inspect_path(const fs::path& p) {
  if (fs::is_directory(p)) {
    if (fs::exists(p / forge::io::peft_config_file)) {
      const auto c = forge::io::read_peft_config(p);
      std::cout << "PEFT adapter: " << p.string() << "\n  rank " << c.rank << ", alpha " << c.alpha
                << (c.use_dora ? ", DoRA" : "") << (c.use_rslora ? ", rsLoRA" : "")
                << "\n  targets:";
      for (const auto& t : c.target_modules) std::cout << " " << t;
      std::cout << "\n";
      return inspect_safetensors(p / forge::io::peft_weights_file);
    }
    if (fs::exists(p / "model.safetensors")) return inspect_safetensors(p / "model.safetensors");
    throw forge::error({.what = "nothing to inspect in this directory",
                        .file = p.string(),
                        .expected = "adapter_config.json or model.safetensors"});
  }
  if (p.extension() == ".gguf") return inspect_gguf(p);
  if (p.extension() == ".safetensors") return inspect_safetensors(p);
  throw forge::error({.what = "unknown file type",
                      .file = p.string(),
                      .expected = "a .gguf or .safetensors file, or a model/adapter directory"});
}

// Records the inputs of a linear layer into a GPTQ Hessian; adds nothing to the output.
class hessian_recorder final : public forge::model::linear_adapter<float> {
 public:
  explicit hessian_recorder(std::int64_t in) : acc(in), in_(in) {}
  void forward(const float* x, std::int64_t rows, float*) override {
    acc.add_batch(std::span<const float>(x, std::size_t(rows * in_)), rows);
  }
  void backward(const float*, const float*, std::int64_t, float*) override {}
  forge::quant::hessian_accumulator acc;

 private:
  std::int64_t in_;
};

using simd_be = forge::backend::simd<>;

template <int G, bool Sym>
void quantize_int4(forge::model::causal_lm<float>& m, const std::string& method,
                   const std::vector<forge::data::sft_example>& calib) {
  using F = forge::quant::int4_group<G, Sym>;
  auto layers = forge::adapters::linear_layers(m);
  std::map<std::string, std::shared_ptr<hessian_recorder>> rec;
  if (method == "gptq") {
    for (auto [key, lin] : layers)
      if (key != "lm_head") {
        rec[key] = std::make_shared<hessian_recorder>(lin->in);
        lin->adapters.push_back(rec[key]);
      }
    forge::progress bar("calibration", calib.size());
    for (const auto& e : calib) {
      std::vector<std::int64_t> ids(e.input_ids.begin(), e.input_ids.end());
      forge::model::workspace<float> ws;
      forge::model::forward(simd_be{}, m, ws,
                            {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids},
                            {.logits = forge::model::logits_for::last});
      bar.advance(1);
    }
    for (auto [key, lin] : layers) lin->adapters.clear();
  }
  forge::progress bar("quantize", layers.size() - 1);
  for (auto [key, lin] : layers) {
    if (key == "lm_head") continue;
    auto q = method == "gptq" ? forge::quant::quantize_gptq<F>(lin->weight.value, lin->out, lin->in,
                                                               rec[key]->acc.get())
                              : F::quantize(lin->weight.value, lin->out, lin->in);
    lin->base = std::make_shared<forge::adapters::quantized_base<simd_be, F>>(std::move(q));
    lin->weight.value = {};
    bar.advance(1);
  }
}

int quantize(const fs::path& dir, const std::string& to, const fs::path& out,
             const std::string& method, int group, bool sym, const std::string& calib_file) {
  if (method != "rtn" && method != "gptq")
    throw forge::error({.what = "unknown quantization method",
                        .place = "--method",
                        .expected = "rtn or gptq",
                        .found = method});
  auto m = forge::io::load_hf_checkpoint<float>(dir);
  if (to.rfind("gguf-", 0) == 0) {
    if (method != "rtn")
      throw forge::error({.what = "GGUF blocks are quantized round-to-nearest (ggml's reference)",
                          .place = "--method",
                          .expected = "rtn",
                          .found = method});
    const auto type = forge::exports::parse_gguf_export_type(to.substr(5));
    forge::exports::save_llama_gguf(m, forge::exports::gguf_tokenizer_from_hf(dir), out, type,
                                    dir.filename().string());
    std::cout << "wrote " << out.string() << " (" << fs::file_size(out) << " bytes)\n";
    return ok;
  }
  if (to != "gptq")
    throw forge::error({.what = "unknown target format",
                        .place = "--to",
                        .expected = "gguf-f32, gguf-f16, gguf-q8_0, gguf-q4_0, gguf-q4_k or gptq",
                        .found = to});
  std::vector<forge::data::sft_example> calib;
  if (method == "gptq") {
    if (calib_file.empty())
      throw forge::error({.what = "GPTQ needs calibration text",
                          .place = "--calib",
                          .expected = "a JSONL file of {\"text\": ...} records"});
    calib = forge::cli::detail::sft_examples(calib_file, forge::text::load_tokenizer(dir));
  }
  switch (group * 2 + int(sym)) {
    case 64:
      quantize_int4<32, false>(m, method, calib);
      break;
    case 65:
      quantize_int4<32, true>(m, method, calib);
      break;
    case 128:
      quantize_int4<64, false>(m, method, calib);
      break;
    case 129:
      quantize_int4<64, true>(m, method, calib);
      break;
    case 256:
      quantize_int4<128, false>(m, method, calib);
      break;
    case 257:
      quantize_int4<128, true>(m, method, calib);
      break;
    default:
      throw forge::error({.what = "unsupported group size",
                          .place = "--group",
                          .expected = "32, 64 or 128",
                          .found = std::to_string(group)});
  }
  forge::exports::save_gptq_checkpoint<simd_be>(m, out, dir);
  std::cout << "wrote " << out.string() << " (GPTQ layout, int4 g" << group
            << (sym ? " sym" : " asym") << ", " << method << ")\n";
  return ok;
}

int eval_cmd(const fs::path& dir, const std::string& ppl_file, const std::string& task_file) {
  if (ppl_file.empty() && task_file.empty())
    throw forge::error(
        forge::error_info{.what = "nothing to evaluate", .expected = "--perplexity or --task"});
  auto m = forge::io::load_hf_checkpoint<float>(dir);
  const auto tok = forge::text::load_tokenizer(dir);
  const std::int32_t pad = tok.pad_id().value_or(tok.eos_id().value_or(0));
  if (!ppl_file.empty()) {
    const auto xs = forge::cli::detail::sft_examples(ppl_file, tok);
    const double loss = forge::train::mean_loss(simd_be{}, m, xs, 8, pad);
    std::cout << "perplexity: " << forge::str(std::exp(loss)) << " (mean loss " << forge::str(loss)
              << " nats over " << xs.size() << " records)\n";
  }
  if (!task_file.empty()) {
    forge::cli::stage_inputs in{{{"train", task_file}, {"task", task_file}}, &tok, "eval"};
    // Task files hold prompt/answer records; read them as Adapt's task split.
    std::vector<forge::eval::task_item> items;
    std::size_t n = 0;
    for (const auto& j : forge::cli::detail::read_json_lines(task_file)) {
      const std::string where = "record " + std::to_string(++n);
      const auto p = tok.encode(forge::get_field<std::string>(j, "prompt", task_file, where), true);
      const auto a =
          tok.encode(forge::get_field<std::string>(j, "answer", task_file, where), false);
      items.push_back({{p.begin(), p.end()}, {a.begin(), a.end()}});
    }
    (void)in;
    std::vector<std::int64_t> eos;
    if (auto e = tok.eos_id()) eos.push_back(*e);
    const auto s = forge::eval::evaluate_task(simd_be{}, m, items, eos);
    std::cout << "exact_match: " << forge::str(s.exact_match) << " (" << items.size()
              << " items)\n";
  }
  return ok;
}

int chat(const fs::path& dir, std::int64_t max_new, const std::string& system) {
  auto m = forge::io::load_hf_checkpoint<float>(dir);
  const auto tok = forge::text::load_tokenizer(dir);
  const auto tmpl = forge::text::load_chat_template(dir);
  auto opts = forge::text::chat_options_from_config(dir);
  opts.add_generation_prompt = true;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    const auto text = forge::text::apply_chat_template(tmpl, messages, opts);
    const auto ids32 = tok.encode(text, false);
    forge::model::generation_options o;
    o.max_new_tokens = max_new;
    const auto r = forge::model::generate(simd_be{}, m, {{ids32.begin(), ids32.end()}}, o);
    std::vector<std::int32_t> outt(r.tokens[0].begin(), r.tokens[0].end());
    const std::string reply = tok.decode(outt, true);
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    std::cout << "assistant: " << reply << "\n" << std::flush;
  }
  return ok;
}

int keygen(const fs::path& file) {
  if (fs::exists(file))
    throw forge::error(
        {.what = "refusing to overwrite an existing key file", .file = file.string()});
  const auto k = forge::govern::signing_key::generate();
  forge::govern::save_signing_key(file, k);
  forge::govern::save_public_key(file.string() + ".pub", k.public_part());
  std::cout << "secret key: " << file.string() << " (mode 0600; never put it in a release)\n"
            << "public key: " << file.string() << ".pub  " << k.public_part().hex() << "\n";
  return ok;
}

int verify(const fs::path& dir, const std::string& key_file) {
  forge::govern::public_key key{};
  if (key_file.empty()) {
    std::cerr << "forge: warning: no --key given; trusting the key the release names ("
              << forge::govern::release_files::public_key
              << "), which proves integrity but not who signed it\n";
    key = forge::govern::load_public_key(dir / forge::govern::release_files::public_key);
  } else {
    key = forge::govern::load_public_key(key_file);
  }
  const auto r = forge::govern::verify_release(dir, key);
  std::cout << r.summary();
  return r.ok() ? ok : verify_failed;
}

int generate(const fs::path& dir, const std::string& prompt, std::int64_t max_new, bool sample,
             double temperature, std::uint64_t seed) {
  auto m = forge::io::load_hf_checkpoint<float>(dir);
  const auto tok = forge::text::load_tokenizer(dir);
  const auto ids32 = tok.encode(prompt);
  std::vector<std::int64_t> ids(ids32.begin(), ids32.end());
  forge::model::generation_options o;
  o.max_new_tokens = max_new;
  o.do_sample = sample;
  o.temperature = temperature;
  o.seed = seed;
  const auto r = forge::model::generate(forge::backend::simd<>{}, m, {ids}, o);
  std::vector<std::int32_t> out(r.tokens[0].begin(), r.tokens[0].end());
  std::cout << prompt << tok.decode(out, true) << "\n";
  return ok;
}

// YAML -> JSON (scalars: bool, integer, number, else string), naming the position on error.
forge::json to_json(const YAML::Node& n, const std::string& file) {
  using forge::json;
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& x : n) a.push_back(to_json(x, file));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = to_json(kv.second, file);
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: a string
      if (s == "true" || s == "True") return true;
      if (s == "false" || s == "False") return false;
      try {
        std::size_t used = 0;
        const long long i = std::stoll(s, &used);
        if (used == s.size()) return i;
      } catch (const std::exception&) {
      }
      try {
        std::size_t used = 0;
        const double d = std::stod(s, &used);
        if (used == s.size()) return d;
      } catch (const std::exception&) {
      }
      return s;
    }
  }
  return nullptr;
}

forge::model::causal_lm<float> builtin_model(std::uint64_t seed) {
  forge::model::model_config c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(std::size_t(c.num_hidden_layers), 0);  // no sliding window
  return forge::model::random_model<float>(c, {.seed = seed, .initializer_range = 0.02});
}

int run(const fs::path& file, const std::string& out_override) {
  using forge::json;
  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::Exception& e) {
    throw forge::error({.what = "cannot read the pipeline YAML: " + e.msg,
                        .file = file.string(),
                        .place = "line " + std::to_string(e.mark.line + 1) + ", column " +
                                 std::to_string(e.mark.column + 1)});
  }
  const json cfg = to_json(root, file.string());
  const std::string src = file.string();
  if (!cfg.is_object())
    throw forge::error({.what = "the pipeline YAML must be a mapping", .file = src});
  static const std::set<std::string> top = {"model", "tokenizer", "backend", "seed",
                                            "out",   "order",     "stages"};
  for (const auto& [k, _] : cfg.items())
    if (!top.count(k))
      throw forge::error({.what = "unknown key",
                          .file = src,
                          .place = k,
                          .expected = "model, tokenizer, backend, seed, out, order, stages"});
  const auto model_spec = forge::get_field<std::string>(cfg, "model", src);
  const auto backend = forge::get_field_or<std::string>(cfg, "backend", "simd", src);
  if (backend != "simd" && backend != "cpu")
    throw forge::error({.what = "unsupported backend for the command-line tool",
                        .file = src,
                        .place = "backend",
                        .expected = "simd (the host CPU's SIMD kernels)",
                        .found = backend});
  const auto seed = forge::get_field_or<std::uint64_t>(cfg, "seed", 0, src);
  const auto order = forge::get_field_or<std::string>(cfg, "order", "paper", src);
  if (order != "paper" && order != "research")
    throw forge::error({.what = "unknown order",
                        .file = src,
                        .place = "order",
                        .expected = "paper or research",
                        .found = order});
  const fs::path base = file.parent_path();
  auto rel = [&](const std::string& p) {
    return fs::path(p).is_absolute() ? fs::path(p) : base / p;
  };
  fs::path out = out_override.empty()
                     ? rel(forge::get_field_or<std::string>(cfg, "out", "forge-run", src))
                     : fs::path(out_override);
  std::string tok_dir = forge::get_field_or<std::string>(cfg, "tokenizer", "", src);
  if (tok_dir.empty() && model_spec == "forge-builtin")
    tok_dir = forge::builtin::model_dir().string();
  else if (tok_dir.empty() && model_spec != "builtin")
    tok_dir = model_spec;

  // The plan: every stage resolved and checked before anything runs.
  if (!cfg.contains("stages") || !cfg.at("stages").is_array() || cfg.at("stages").empty())
    throw forge::error({.what = "the pipeline has no stages",
                        .file = src,
                        .place = "stages",
                        .expected = "a list of stages"});
  std::vector<forge::cli::planned_stage> plan;
  std::size_t i = 0;
  for (const auto& s : cfg.at("stages")) {
    ++i;
    const std::string at = "stages[" + std::to_string(i) + "]";
    forge::cli::planned_stage p;
    p.kind =
        forge::cli::parse_kind(forge::get_field<std::string>(s, "kind", src, at), src + ": " + at);
    const auto method = forge::get_field<std::string>(s, "method", src, at);
    p.where = "stage " + std::to_string(i) + " (" + std::string(forge::name_of(p.kind)) + "<" +
              method + ">)";
    p.method = &forge::cli::methods().at(p.kind, method, src + ": " + p.where);
    p.params = s.contains("params") ? s.at("params") : json::object();
    if (p.method->name == "signed_release") {
      // Paths in a release's parameters are relative to the YAML file.
      for (const char* k : {"signing_key", "tokenizer_dir", "datasheet"})
        if (p.params.contains(k) && p.params.at(k).is_string())
          p.params[k] = rel(p.params.at(k).get<std::string>()).string();
      if (!p.params.contains("tokenizer_dir") && !tok_dir.empty())
        p.params["tokenizer_dir"] = rel(tok_dir).string();
    }
    (void)p.method->resolved_params(p.params, src + ": " + p.where);  // unknown keys, types
    if (s.contains("data")) {
      if (!s.at("data").is_object())
        throw forge::error({.what = "data must map roles to JSONL files",
                            .file = src,
                            .place = p.where + ": data"});
      for (const auto& [role, f] : s.at("data").items()) {
        const fs::path path = rel(f.get<std::string>());
        if (!fs::is_regular_file(path))
          throw forge::error({.what = "data file not found",
                              .file = path.string(),
                              .place = src + ": " + p.where + ": data." + role});
        p.files[role] = path;
      }
    }
    if (s.contains("gate"))
      for (const auto& c : s.at("gate"))
        p.gate.push_back(forge::cli::parse_criterion(c.get<std::string>(), src + ": " + p.where));
    plan.push_back(std::move(p));
  }
  try {
    forge::cli::check_plan(plan, "dense f32", order == "paper");
  } catch (const forge::error& e) {
    throw forge::error({.what = e.what(), .file = src});
  }

  auto model = model_spec == "builtin" ? builtin_model(seed)
               : model_spec == "forge-builtin"
                   ? forge::builtin::load_model()
                   : forge::io::load_hf_checkpoint<float>(rel(model_spec));
  std::optional<forge::text::any_tokenizer> tok;
  if (!tok_dir.empty()) tok.emplace(forge::text::load_tokenizer(rel(tok_dir)));
  const auto t0 = std::chrono::steady_clock::now();
  const auto rep = forge::cli::run_plan(
      plan, std::move(model), out, seed, tok ? &*tok : nullptr,
      [&](const forge::cli::planned_stage& s, std::size_t n) {
        std::cerr << "[" << n << "/" << plan.size() << "] " << s.where << " ... "
                  << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                  << " s\n";
      });
  if (!rep.passed) {
    std::cerr << "forge: gate failed at " << *rep.failure << "\n  reports: " << out.string()
              << "\n";
    return gate_failed;
  }
  std::cout << "pipeline passed; reports in " << out.string() << "\n";
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"forge: post-training of language models (run, verify, inspect, generate)"};
  app.footer(
      "Exit codes: 0 ok, 1 usage error, 2 input error, 3 gate failed, 4 verification failed.");
  app.require_subcommand(1);

  auto* v = app.add_subcommand("verify", "Verify a signed release directory");
  std::string v_dir, v_key;
  v->add_option("DIR", v_dir, "release directory")->required();
  v->add_option("--key", v_key, "trusted public key file (forge-ed25519-public-key-v1)");

  auto* in =
      app.add_subcommand("inspect", "Summarise a GGUF/safetensors file or PEFT/HF directory");
  std::string in_path;
  in->add_option("PATH", in_path, "file or directory")->required();

  auto* g = app.add_subcommand("generate", "Continue a prompt with a Hugging Face model directory");
  std::string g_dir, g_prompt;
  std::int64_t g_max = 32;
  bool g_sample = false;
  double g_temp = 1.0;
  std::uint64_t g_seed = 0;
  g->add_option("MODEL_DIR", g_dir, "model directory (config.json, safetensors, tokenizer)")
      ->required();
  g->add_option("--prompt", g_prompt, "prompt text")->required();
  g->add_option("--max-new-tokens", g_max, "tokens to generate")->capture_default_str();
  g->add_flag("--sample", g_sample, "sample instead of greedy decoding");
  g->add_option("--temperature", g_temp, "sampling temperature")->capture_default_str();
  g->add_option("--seed", g_seed, "sampling seed")->capture_default_str();

  auto* qz =
      app.add_subcommand("quantize", "Quantize a Hugging Face model to GGUF or the GPTQ layout");
  std::string qz_dir, qz_to, qz_out, qz_method = "rtn", qz_calib;
  int qz_group = 128;
  bool qz_sym = false;
  qz->add_option("MODEL_DIR", qz_dir, "Hugging Face model directory")->required();
  qz->add_option("--to", qz_to,
                 "gguf-f32, gguf-f16, gguf-q8_0, gguf-q4_0, gguf-q4_k (llama.cpp's Q4_K blocks for "
                 "widths divisible by 256, Q8_0 for other multiples of 32, else F16) or gptq")
      ->required();
  qz->add_option("--out", qz_out, "output file (GGUF) or directory (GPTQ)")->required();
  qz->add_option("--method", qz_method, "rtn or gptq (GPTQ layout only)")->capture_default_str();
  qz->add_option("--group", qz_group, "int4 group size: 32, 64 or 128")->capture_default_str();
  qz->add_flag("--sym", qz_sym, "symmetric int4 (no zero points)");
  qz->add_option("--calib", qz_calib, "calibration JSONL ({\"text\": ...}) for --method gptq");

  auto* ev = app.add_subcommand("eval", "Perplexity on a JSONL text file, exact match on a task");
  std::string ev_dir, ev_ppl, ev_task;
  ev->add_option("MODEL_DIR", ev_dir, "Hugging Face model directory")->required();
  ev->add_option("--perplexity", ev_ppl, "JSONL of {\"text\"} or {\"prompt\", \"completion\"}");
  ev->add_option("--task", ev_task, "JSONL of {\"prompt\", \"answer\"} (greedy exact match)");

  auto* ch = app.add_subcommand("chat", "Chat on stdin/stdout with the model's chat template");
  std::string ch_dir, ch_system;
  std::int64_t ch_max = 64;
  ch->add_option("MODEL_DIR", ch_dir, "Hugging Face model directory")->required();
  ch->add_option("--system", ch_system, "system message");
  ch->add_option("--max-new-tokens", ch_max, "tokens per reply")->capture_default_str();

  auto* kg = app.add_subcommand("keygen", "Make an Ed25519 signing key pair");
  std::string kg_file;
  kg->add_option("FILE", kg_file, "secret key file to create (FILE.pub gets the public key)")
      ->required();

  auto* r = app.add_subcommand("run", "Run a pipeline described in a YAML file");
  std::string r_file, r_out;
  r->add_option("PIPELINE", r_file, "pipeline YAML (docs/deploy.md)")->required();
  r->add_option("--out", r_out, "output directory (overrides the YAML's out)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "forge: " << e.what() << "\n(run with --help for usage)\n";
    return usage;
  }
  try {
    if (*v) return verify(v_dir, v_key);
    if (*in) return inspect_path(in_path);
    if (*r) return run(r_file, r_out);
    if (*kg) return keygen(kg_file);
    if (*qz) return quantize(qz_dir, qz_to, qz_out, qz_method, qz_group, qz_sym, qz_calib);
    if (*ev) return eval_cmd(ev_dir, ev_ppl, ev_task);
    if (*ch) return chat(ch_dir, ch_max, ch_system);
    if (*g) return generate(g_dir, g_prompt, g_max, g_sample, g_temp, g_seed);
  } catch (const forge::error& e) {
    std::cerr << "forge: " << e.what() << "\n";
    return input_error;
  } catch (const std::exception& e) {
    std::cerr << "forge: " << e.what() << "\n";
    return input_error;
  }
  return usage;
}
