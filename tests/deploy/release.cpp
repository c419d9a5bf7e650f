// Deploy end to end: a real pipeline (adapt<lora> on the Hugging Face fixture, then
// deploy<signed_release>) writes a signed release that verifies and binds the base model
// and data hashes of the stage reports; every file of it is tampered with and each change
// is detected. The exports are checked against independent references: the merged
// checkpoint against the base model with the PEFT adapter loaded by forge's PEFT reader,
// the GGUF tensors against the merged weights. The load test's numbers are checked for
// consistency and its SLO gate for failing when set below the measurement.

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "../support/fixtures.hpp"
#include "forge/deploy/signed_release.hpp"
#include "forge/io/gguf.hpp"
#include "forge/pipeline/pipeline.hpp"

using namespace forge;
namespace fs = std::filesystem;

namespace {
using be_t = backend::scalar;

const model::causal_lm<float>& base() {
  static const auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  return m;
}

adapt_data tiny_data() {
  adapt_data d;
  philox g(11, 0);
  for (int i = 0; i < 8; ++i) {
    data::sft_example e;
    for (int t = 0; t < 12; ++t) e.input_ids.push_back(std::int32_t(g.below(512)));
    e.labels = e.input_ids;
    for (int t = 0; t < 4; ++t) e.labels[std::size_t(t)] = -100;
    (i < 6 ? d.train : d.val).push_back(e);
  }
  d.name = "tiny-sft";
  return d;
}

fs::path key_file(const fs::path& dir) {
  const std::array<unsigned char, 32> seed = {9, 8, 7, 6, 5, 4, 3, 2, 1};
  fs::create_directories(dir);
  govern::save_signing_key(dir / "release.key", govern::signing_key(seed));
  return dir / "release.key";
}

std::vector<float> logits_of(model::causal_lm<float>& m, const std::vector<std::int64_t>& ids) {
  model::workspace<float> ws;
  model::forward(be_t{}, m, ws, {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids},
                 {});
  auto l = ws.logits();
  return {l.begin(), l.end()};
}

auto lora_stage(const adapt_data& d) {
  return adapt<lora>{
      {.rank = 4, .alpha = 8, .max_steps = 3, .batch_size = 2, .learning_rate = 1e-2}, d};
}
}  // namespace

TEST_CASE("adapt<lora> -> deploy<signed_release>: a verified release that binds the reports") {
  const auto root = test::scratch("deploy_release");
  const auto data = tiny_data();
  signed_release_params rp;
  rp.name = "tiny";
  rp.gguf = {"f32", "f16", "q8_0", "q4_0"};
  rp.signing_key = key_file(root / "keys").string();
  rp.tokenizer_dir = (test::llama_a() / "model").string();
  rp.load_requests = 5;
  rp.load_new_tokens = 4;
  auto p = pipeline(
      lora_stage(data),
      deploy<signed_release>{rp, accept(signature_valid, artifact_scan_clean, load_p95_ms <= 1e6)});
  auto r = p.run(base(), be_t{}, {.out = root / "run", .seed = 5});
  INFO(r.summary);
  REQUIRE(r.passed);
  const fs::path rel = root / "run" / "02_deploy" / "release";
  REQUIRE(r.model->dir == rel);

  // Verification with the signer's public key; the bindings are those of the reports.
  const auto pub = govern::load_signing_key(rp.signing_key).public_part();
  const auto v = govern::verify_release(rel, pub);
  INFO(v.summary());
  CHECK(v.ok());
  const auto m = govern::manifest::parse(io::read_file(rel / "MANIFEST.json"), "MANIFEST.json");
  CHECK(m.base_model_sha256 == model::model_digest(base()));  // recomputed independently
  REQUIRE(m.datasets.count("tiny-sft") == 1);
  CHECK(m.datasets.at("tiny-sft") == data.sha256());
  CHECK(fs::exists(rel / "reports" / "01_adapt.json"));
  const auto deploy_report = load_json(root / "run" / "02_deploy.json");
  for (auto k : {"signature_valid", "artifact_scan_clean", "load_p50_ms", "load_p95_ms",
                 "load_tokens_per_s", "release_bytes"})
    CHECK(deploy_report["metrics"].contains(k));
  CHECK(deploy_report["metrics"]["signature_valid"] == 1.0);
  // The run's summary names the signed manifest as the output.
  CHECK(load_json(root / "run" / "run.json")["output_sha256"] ==
        govern::sha256_file(rel / "MANIFEST.json"));

  // The merged checkpoint computes what base + PEFT adapter computes. Tolerance: the merge
  // adds s·B·A in double then rounds once to f32; the unmerged path rounds the adapter's
  // product separately: differences of a few f32 ulps of the logits (~1e-6 relative).
  auto merged = io::load_hf_checkpoint<float>(rel / "model" / "merged");
  auto adapted = base();
  io::load_peft_adapter(be_t{}, adapted, rel / "model" / "adapter");
  const std::vector<std::int64_t> ids = {55, 265, 224, 84, 88, 371, 78, 270};
  const auto a = logits_of(merged, ids), b = logits_of(adapted, ids),
             c = logits_of(const_cast<model::causal_lm<float>&>(base()), ids);
  double max_diff = 0, max_change = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    max_change = std::max(max_change, double(std::fabs(b[i] - c[i])));
  }
  CHECK(max_diff < 1e-4);
  CHECK(max_change > 1e-3);  // the adapter trained: merging it changed the model
  for (auto f :
       {"tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"})
    CHECK(fs::exists(rel / "model" / "merged" / f));

  // GGUF: the F32 file holds exactly the merged weights (ffn_down: no rope permutation), the
  // F16 file their f16 rounding, and the Q8_0 file decodes within its block scale.
  const auto W = [&] {
    std::vector<float> w;
    merged.for_each_parameter([&](const model::parameter<float>& p) {
      if (p.name == "model.layers.1.mlp.down_proj.weight") w = p.value;
    });
    return w;
  }();
  REQUIRE_FALSE(W.empty());
  auto g32 = io::gguf_file::open(rel / "model" / "gguf" / "tiny-f32.gguf");
  CHECK(g32.to_f32("blk.1.ffn_down.weight") == W);
  auto g16 = io::gguf_file::open(rel / "model" / "gguf" / "tiny-f16.gguf");
  const auto h = g16.to_f32("blk.1.ffn_down.weight");
  REQUIRE(h.size() == W.size());
  bool f16_exact = true;
  for (std::size_t i = 0; i < W.size(); ++i) f16_exact &= h[i] == to_f32(to_f16(W[i]));
  CHECK(f16_exact);
  auto g8 = io::gguf_file::open(rel / "model" / "gguf" / "tiny-q8_0.gguf");
  // ffn_down rows are 176 wide (not a multiple of 32): F16 fallback; gate is 64 wide.
  CHECK(g8.at("blk.1.ffn_down.weight").type == io::ggml_type::f16);
  CHECK(g8.at("blk.1.ffn_gate.weight").type == io::ggml_type::q8_0);
  CHECK(g8.metadata().get<std::string>("tokenizer.ggml.model") == "gpt2");

  // Tamper: one byte flipped in every file of the release is detected, naming the file.
  std::size_t tried = 0, detected = 0;
  for (const auto& e : govern::scan_tree(rel).files) {
    const auto copy = root / "tamper";
    fs::remove_all(copy);
    fs::copy(rel, copy, fs::copy_options::recursive);
    auto s = io::read_file(copy / e.path);
    if (s.empty()) continue;
    s[s.size() / 2] = char(s[s.size() / 2] ^ 0x20);  // e.g. a hex digit's case
    io::write_atomic(copy / e.path, s);
    const auto t = govern::verify_release(copy, pub);
    ++tried;
    detected += !t.ok() && t.names(e.path);
  }
  CHECK(tried >= 15);  // exports, tokenizer files, reports and the governance documents
  CHECK(detected == tried);
}

TEST_CASE("the load test's numbers agree with each other and its SLO gate can fail") {
  auto m = base();
  const eval::load_test_options o{.requests = 6, .prompt_tokens = 5, .max_new_tokens = 7};
  const auto r = eval::load_test(be_t{}, m, o);
  REQUIRE(r.latencies_ms.size() == 6);
  CHECK(r.p50_ms <= r.p95_ms);
  CHECK(r.p95_ms <= *std::max_element(r.latencies_ms.begin(), r.latencies_ms.end()));
  CHECK(r.generated_tokens == 6 * 7);  // every request decodes exactly max_new_tokens
  // tokens/s is the count over the summed request time (mean latency × requests).
  CHECK(r.tokens_per_s == Approx(42.0 / (r.mean_ms * 6 / 1e3)).epsilon(1e-9));
  // Percentiles: numpy.percentile([4, 1, 3, 2], [50, 95]) = [2.5, 3.85] (linear method).
  CHECK(eval::percentile({4, 1, 3, 2}, 0.5) == Approx(2.5));
  CHECK(eval::percentile({4, 1, 3, 2}, 0.95) == Approx(3.85));
  // The prompts are seeded: the same options give the same prompts.
  CHECK(eval::load_test_prompts(o, 512) == eval::load_test_prompts(o, 512));

  // An SLO below any possible latency stops the run at the Deploy gate.
  const auto root = test::scratch("deploy_slo");
  signed_release_params rp;
  rp.gguf = {};
  rp.signing_key = key_file(root / "keys").string();
  rp.tokenizer_dir = (test::llama_a() / "model").string();
  rp.load_requests = 3;
  rp.load_new_tokens = 2;
  auto p = pipeline(lora_stage(tiny_data()),
                    deploy<signed_release>{rp, accept(signature_valid, load_p95_ms <= 1e-6)});
  auto run = p.run(base(), be_t{}, {.out = root / "run", .seed = 5});
  CHECK_FALSE(run.passed);
  REQUIRE(run.failure.has_value());
  CHECK(run.failure->failed.criterion.metric == "load_p95_ms");
  CHECK(run.failure->failed.measured.value() > 1e-6);
}
