// The forge command-line tool.
//
//   forge verify DIR [--key FILE]        check a signed release (signature, hashes, bindings)
//   forge inspect PATH                   summarise a GGUF file, a safetensors file, a PEFT
//                                        adapter directory or a Hugging Face model directory
//   forge generate MODEL_DIR --prompt T  greedy or sampled continuation of a prompt
//
// Exit codes: 0 success; 1 usage error (bad or missing arguments); 2 input error (a file
// that cannot be read or parsed, a model that cannot be loaded); 3 a stage gate failed;
// 4 verification failed. Errors are printed to stderr as one line "forge: <what>" followed
// by the context forge::error carries (file, place, expected, found).

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "forge/backend/backend.hpp"
#include "forge/core/error.hpp"
#include "forge/govern/release.hpp"
#include "forge/govern/signing.hpp"
#include "forge/io/gguf.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/model/generate.hpp"
#include "forge/text/load_tokenizer.hpp"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"forge: post-training of language models (verify, inspect, generate)"};
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
