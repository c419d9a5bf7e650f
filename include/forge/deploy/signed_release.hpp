#pragma once
// The Deploy stage's method policy `deploy<signed_release>`: one signed release directory
// holding every export the parameters ask for, the earlier stages' reports and the
// governance documents, verified before the stage reports success.
//
// One policy rather than one per format: a release is one signed unit (one manifest, one
// signature, one provenance statement), so the exports are a parameter of it. A GGUF-only
// or an adapter-only release is the same policy with other parameters.
//
// The stage's artifact directory (NN_deploy/) receives
//   release/           the signed release (govern/release.hpp): model/ exports, reports/,
//                      MODEL_CARD.md, datasheet.md, sbom.cdx.json, provenance.intoto.json,
//                      signing_key.pub, MANIFEST.json, MANIFEST.json.sig
// and the stage measures signature_valid, artifact_scan_clean (verify_release found no
// problem), load_p50_ms / load_p95_ms / load_tokens_per_s (eval/load_test.hpp, on the merged
// checkpoint read back from the release, or the dense model when none is exported) and
// release_bytes.

#include <algorithm>
#include <filesystem>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/methods.hpp"
#include "forge/deploy/export.hpp"
#include "forge/eval/load_test.hpp"
#include "forge/eval/run_summary.hpp"
#include "forge/govern/release.hpp"
#include "forge/govern/signing.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"

namespace forge {

/// Throughput of the Deploy load test: generated tokens per second of request time.
struct load_tokens_per_s_t : metric<load_tokens_per_s_t, stage_kind::deploy> {
  static constexpr std::string_view name = "load_tokens_per_s";
  static constexpr std::string_view unit = "tokens/s";
};
/// The load_tokens_per_s metric, for gates: see load_tokens_per_s_t.
inline constexpr load_tokens_per_s_t load_tokens_per_s{};

/// Total bytes of every file in the release directory.
struct release_bytes_t : metric<release_bytes_t, stage_kind::deploy> {
  static constexpr std::string_view name = "release_bytes";
  static constexpr std::string_view unit = "bytes";
};
/// The release_bytes metric, for gates: see release_bytes_t.
inline constexpr release_bytes_t release_bytes{};

/// Parameters of deploy<signed_release>.
struct signed_release_params {
  std::string name = "forge-model";            ///< release name (model card, manifest)
  std::string version = "0.1.0";               ///< release version
  std::string summary{};                       ///< one paragraph for the model card
  std::string license{};                       ///< SPDX id of the weights' license
  std::string base_model_name = "base-model";  ///< how the card names the base model
  std::string intended_use{};
  std::vector<std::string> out_of_scope_uses{};
  std::vector<std::string> limitations{};
  /// GGUF exports, one file each: any of "f32", "f16", "q8_0", "q4_0" (needs a tokenizer);
  /// with LoRA adapters attached, also <name>-lora-f32.gguf for llama.cpp's --lora.
  std::vector<std::string> gguf{"f16"};
  bool merged_checkpoint = true;   ///< model/merged/: HF directory, adapters folded in
  bool peft_adapter = true;        ///< model/adapter/: PEFT directory, when adapters are attached
  bool gptq_checkpoint = true;     ///< model/gptq/: GPTQ layout, when the base is int4
  std::string signing_key{};       ///< path of the Ed25519 secret key file (mode 0600)
  std::string tokenizer_dir{};     ///< directory with tokenizer.json / tokenizer_config.json
  std::string datasheet{};         ///< Markdown file for datasheet.md (empty: generated)
  std::string run_dir{};           ///< where earlier reports are (empty: the run directory)
  std::int64_t load_requests = 8;  ///< load test: number of requests
  std::int64_t load_prompt_tokens = 8;  ///< load test: prompt length
  std::int64_t load_new_tokens = 8;     ///< load test: generated tokens per request
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(signed_release_params, name, version, summary, license,
                                   base_model_name, intended_use, out_of_scope_uses, limitations,
                                   gguf, merged_checkpoint, peft_adapter, gptq_checkpoint,
                                   signing_key, tokenizer_dir, datasheet, run_dir, load_requests,
                                   load_prompt_tokens, load_new_tokens)

/// What a Deploy stage hands on: the signed release directory, identified by the SHA-256 of
/// its signed manifest.
struct released_model {
  std::filesystem::path dir{};      ///< the release directory
  std::string manifest_sha256{};    ///< SHA-256 of MANIFEST.json's bytes
  std::string base_model_sha256{};  ///< the base model the manifest binds
  /// The content digest the pipeline records (the signed manifest binds every file).
  std::string digest() const { return manifest_sha256; }
};

namespace exports::detail {

/// The stage reports NN_<kind>.json of `run_dir` with NN < `before` (parsed).
inline std::vector<std::pair<std::filesystem::path, json>> earlier_reports(
    const std::filesystem::path& run_dir, std::size_t before) {
  namespace fs = std::filesystem;
  static const std::regex pattern(R"(([0-9]+)_[a-z]+\.json)");
  std::vector<std::pair<std::filesystem::path, json>> out;
  if (!fs::is_directory(run_dir)) return out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::smatch mt;
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(n, mt, pattern) && std::stoul(mt[1].str()) < before)
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) out.push_back({f, load_json(f)});
  return out;
}

/// The model card's record of one pipeline stage report.
inline govern::card_stage card_stage_of(const json& r) {
  govern::card_stage s;
  s.kind = r.at("stage").value("kind", "");
  s.method = r.at("method").value("name", "");
  s.parameters = r.at("method").value("parameters", json::object());
  std::set<std::string> gated;
  const json criteria =
      r.contains("gate") ? r.at("gate").value("criteria", json::array()) : json::array();
  for (const auto& c : criteria) {
    govern::card_metric m;
    m.name = c.value("metric", "");
    m.value = c.contains("measured") && c.at("measured").is_number()
                  ? c.at("measured").get<double>()
                  : 0.0;
    m.criterion = c.value("criterion", "");
    m.passed = c.value("passed", false);
    gated.insert(m.name);
    s.metrics.push_back(m);
  }
  const json metrics = r.value("metrics", json::object());
  for (const auto& [k, v] : metrics.items())
    if (!gated.count(k) && v.is_number()) s.metrics.push_back({k, v.get<double>(), "", {}, ""});
  return s;
}

inline std::string generated_datasheet(const std::vector<govern::card_dataset>& ds) {
  std::string s =
      "# Datasheet\n\nThe data sets the pipeline read, as the stage reports name "
      "them. Each SHA-256 is bound by the signed manifest.\n\n| name | purpose | "
      "SHA-256 |\n|---|---|---|\n";
  for (const auto& d : ds) s += "| " + d.name + " | " + d.purpose + " | `" + d.sha256 + "` |\n";
  return s;
}

inline std::uint64_t tree_bytes(const std::filesystem::path& dir) {
  std::uint64_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

}  // namespace exports::detail

/// deploy<signed_release>: exports, governance documents, signature, verification and load
/// test in one stage (see the top of this header).
struct signed_release {
  static constexpr std::string_view name = "signed_release";
  using params = signed_release_params;
  using accepts =
      representations<repr::dense_f32, repr::with_lora<repr::dense_f32>, repr::nf4, repr::nf4_lora,
                      repr::int4_group<32>, repr::int4_group<64>, repr::int4_group<128>,
                      repr::with_lora<repr::int4_group<32>>, repr::with_lora<repr::int4_group<64>>,
                      repr::with_lora<repr::int4_group<128>>>;
  using produces = repr::release;
  using backends = all_backends;  ///< cuda: this work runs on the CPU (on_cpu)

  /// Over several ranks (ctx.comm) the release is built once, by rank 0: a release is one
  /// signed unit that binds rank 0's stage reports. The other ranks wait for it (within the
  /// communicator's timeout) and hand on the same released_model (rank 0's directory and
  /// manifest digest); the runner records rank 0's metrics and files for every rank.
  template <Backend B>
  static stage_result<released_model> apply(const stage_context<B>& ctx, const params& p,
                                            const no_data& nd, model::causal_lm<float> m) {
    if (!ctx.comm || ctx.comm->size() == 1) return build(ctx, p, nd, std::move(m));
    std::string said;  // rank 0: "ok" dir manifest base, or "error" and the message, by lines
    std::optional<stage_result<released_model>> res;
    if (ctx.writes()) {
      try {
        res.emplace(build(ctx, p, nd, std::move(m)));
        said = "ok\n" + res->model.dir.string() + "\n" + res->model.manifest_sha256 + "\n" +
               res->model.base_model_sha256;
      } catch (const std::exception& e) {
        said = std::string("error\n") + e.what();
        dist::broadcast_text(*ctx.comm, said, 0);
        throw;
      }
    }
    dist::broadcast_text(*ctx.comm, said, 0);
    if (res) return std::move(*res);
    std::vector<std::string> lines;
    for (std::size_t at = 0;;) {
      const auto nl = said.find('\n', at);
      lines.push_back(said.substr(at, nl == std::string::npos ? nl : nl - at));
      if (nl == std::string::npos) break;
      at = nl + 1;
    }
    if (lines.at(0) != "ok")
      throw error(error_info{.what = "rank 0 could not build the release: " +
                                     said.substr(std::min(said.size(), std::size_t(6))),
                             .place = "stage " + std::to_string(ctx.index) + " (signed_release)"});
    require(lines.size() == 4, {.what = "rank 0's release message is malformed",
                                .place = "stage " + std::to_string(ctx.index),
                                .expected = "4 lines",
                                .found = std::to_string(lines.size())});
    return {.model = {lines[1], lines[2], lines[3]}};
  }

 private:
  template <Backend B>
  static stage_result<released_model> build(const stage_context<B>& ctx, const params& p,
                                            const no_data& nd, model::causal_lm<float> m) {
    if constexpr (!is_cpu_backend_v<B>) {
      return build(on_cpu(ctx), p, nd, std::move(m));
    } else {
      namespace fs = std::filesystem;
      require(!p.signing_key.empty(), {.what = "a release needs a signing key file",
                                       .place = "signed_release.signing_key",
                                       .expected = "the path of an Ed25519 secret key file"});
      const govern::signing_key key = govern::load_signing_key(p.signing_key);
      const fs::path run_dir =
          p.run_dir.empty() ? ctx.artifact_dir.parent_path() : fs::path(p.run_dir);
      const auto reports = exports::detail::earlier_reports(run_dir, ctx.index);
      require(!reports.empty(),
              {.what = "a release binds the reports of the stages before it, and there are none",
               .file = run_dir.string(),
               .expected = "NN_<kind>.json stage reports of earlier stages"});

      // Exports, into a scratch directory beside the release.
      const fs::path ex = ctx.artifact_dir / "exports";
      fs::remove_all(ex);
      fs::create_directories(ex);
      govern::release_spec spec;
      auto add_dir = [&](const fs::path& dir, const std::string& under) {
        for (const auto& e : fs::recursive_directory_iterator(dir))
          if (e.is_regular_file())
            spec.artifacts.push_back(
                {under + "/" + e.path().lexically_relative(dir).generic_string(), e.path(), {}});
      };
      std::optional<io::gguf_tokenizer> tok;
      for (const auto& t : p.gguf) {
        const auto type = exports::parse_gguf_export_type(t);
        require(!p.tokenizer_dir.empty(), {.what = "a GGUF export needs the tokenizer directory",
                                           .place = "signed_release.tokenizer_dir"});
        if (!tok) tok = exports::gguf_tokenizer_from_hf(p.tokenizer_dir);
        std::string lower = t;
        for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
        const std::string file = p.name + "-" + lower + ".gguf";
        exports::save_llama_gguf(m, *tok, ex / "gguf" / file, type, p.name);
      }
      const bool plain_lora = [&] {
        const auto a = exports::attached_adapters(m);
        return !a.modules.empty() && !a.config.use_dora;
      }();
      if (!p.gguf.empty() && plain_lora)  // the adapter for llama.cpp's --lora, beside the model
        exports::save_lora_gguf(m, ex / "gguf" / (p.name + "-lora-f32.gguf"));
      if (!p.gguf.empty()) add_dir(ex / "gguf", "model/gguf");
      if (p.merged_checkpoint) {
        exports::save_merged_checkpoint(m, ex / "merged", p.tokenizer_dir);
        add_dir(ex / "merged", "model/merged");
      }
      if (p.peft_adapter && !exports::attached_adapters(m).modules.empty()) {
        exports::save_attached_adapter(m, ex / "adapter", p.base_model_name);
        add_dir(ex / "adapter", "model/adapter");
      }
      if (p.gptq_checkpoint && exports::save_gptq_checkpoint<B>(m, ex / "gptq", p.tokenizer_dir))
        add_dir(ex / "gptq", "model/gptq");

      // The card, bindings and documents from the reports.
      auto& card = spec.card;
      card.name = p.name;
      card.version = p.version;
      card.summary = p.summary;
      card.license = p.license;
      card.base_model_name = p.base_model_name;
      card.intended_use = p.intended_use;
      card.out_of_scope_uses = p.out_of_scope_uses;
      card.limitations = p.limitations;
      json stages = json::array();
      std::set<std::string> seen;
      for (const auto& [file, r] : reports) {
        const auto b = govern::read_report_binding(r.dump(), file.filename().string());
        if (card.base_model_sha256.empty()) card.base_model_sha256 = b.input_hash;
        for (const auto& [dname, dhash] : b.data_hashes)
          if (seen.insert(dname).second)
            card.datasets.push_back({dname, dhash, b.stage, 0, "", ""});
        card.stages.push_back(exports::detail::card_stage_of(r));
        stages.push_back(r.at("method").value("name", "") + " (" + b.stage + ")");
        spec.reports.push_back({file.filename().string(), file, {}});
      }
      {  // report.html: gates, loss curves and before/after plots of the stages released
        std::vector<eval::stage_summary> ss;
        for (const auto& [file, r] : reports) ss.push_back(eval::summarize_report(r, file));
        io::write_atomic(ex / "report.html",
                         eval::report_html(ss, p.name + " " + p.version + ": pipeline report",
                                           eval::recorded_comparisons(reports)));
        spec.artifacts.push_back({"report.html", ex / "report.html", {}});
      }
      spec.datasheet = p.datasheet.empty() ? exports::detail::generated_datasheet(card.datasets)
                                           : io::read_file(p.datasheet);
      spec.parameters = json{{"stages", stages}, {"release", json(p)}};
      spec.internal_parameters = json{{"backend", std::string(B::name)}, {"seed", ctx.seed}};

      const fs::path dir = ctx.artifact_dir / "release";
      const auto manifest = govern::assemble_release(dir, spec, key);
      fs::remove_all(ex);

      // Verification against the signer's public key, then the load test on what is served.
      const auto v = govern::verify_release(dir, key.public_part());
      stage_result<released_model> res{
          .model = {dir, govern::sha256_file(dir / govern::release_files::manifest),
                    manifest.base_model_sha256}};
      res.metrics.set(signature_valid, v.signature_valid ? 1.0 : 0.0)
          .set(artifact_scan_clean, v.ok() ? 1.0 : 0.0)
          .set(release_bytes, double(exports::detail::tree_bytes(dir)));
      const eval::load_test_options lo{.requests = p.load_requests,
                                       .prompt_tokens = p.load_prompt_tokens,
                                       .max_new_tokens = p.load_new_tokens,
                                       .seed = ctx.seed};
      auto served = p.merged_checkpoint ? io::load_hf_checkpoint<float>(dir / "model" / "merged")
                                        : exports::dense_copy(m);
      const auto lt = eval::load_test(ctx.backend, served, lo);
      res.metrics.set(load_p50_ms, lt.p50_ms)
          .set(load_p95_ms, lt.p95_ms)
          .set(load_tokens_per_s, lt.tokens_per_s);
      for (const auto& f : govern::scan_tree(dir).files)
        res.artifacts.push_back("release/" + f.path);
      return res;
    }
  }
};

}  // namespace forge
