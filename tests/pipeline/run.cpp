// Running pipelines of test-double methods: order of execution, gates, stage reports.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "doubles_run.hpp"
#include "support/fixtures.hpp"

using namespace forge;
using namespace forge::test;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json load(const fs::path& p) {
  return json::parse(io::read_file(p));
}

// Known-answer vector: SHA-256("abc") from FIPS 180-2, appendix B.1. The doubles write
// "abc" as their artifact, so the report must carry exactly this digest.
constexpr const char* sha256_abc =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

std::vector<std::string> leftover_temporaries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      out.push_back(e.path().string());
  return out;
}

auto full_pipeline(double compress_ppl_ratio) {
  return pipeline(
      adapt<fine_tune_double>{
          {.tag = "sft"}, {"sft train"}, accept(exact_match >= 0.8, regression_delta <= 0.03)},
      compress<quantize_double>{{.tag = "int4", .perplexity_ratio = compress_ppl_ratio},
                                {"calibration"},
                                accept(perplexity_ratio <= 1.05)},
      align<preference_double>{{.tag = "dpo"},
                               {"preferences"},
                               accept(refusal_accuracy >= 0.9, false_refusal_rate <= 0.05)},
      deploy<release_double>{{.tag = "gguf"}, accept(signature_valid)});
}

}  // namespace

TEST_CASE("stages run in the order written, each with its own report") {
  const fs::path out = scratch("pipeline_order");
  auto r = full_pipeline(1.01).run(toy_model_double{}, backend::scalar{}, {.out = out, .seed = 7});

  REQUIRE(r.passed);
  REQUIRE(r.model.has_value());
  CHECK(r.model->history == std::vector<std::string>{"fine_tune_double:sft", "quantize_double:int4",
                                                     "preference_double:dpo",
                                                     "release_double:gguf"});
  CHECK_FALSE(r.failure.has_value());
  REQUIRE(r.stages.size() == 4);

  const std::vector<std::string> files{"01_adapt.json", "02_compress.json", "03_align.json",
                                       "04_deploy.json"};
  const std::vector<std::string> tags{"sft", "int4", "dpo", "gguf"};
  const std::vector<std::string> methods{"fine_tune_double", "quantize_double", "preference_double",
                                         "release_double"};
  // The model entering stage i is the one stage i-1 produced; rebuild each to check digests.
  toy_model_double expected{};
  std::set<std::uint64_t> seeds;
  for (std::size_t i = 0; i < 4; ++i) {
    const json j = load(out / files[i]);
    INFO(files[i]);
    CHECK(j["stage"]["index"] == i + 1);
    CHECK(j["method"]["name"] == methods[i]);
    CHECK(j["status"] == "passed");
    CHECK(j["gate"]["passed"] == true);
    CHECK(j["input"]["sha256"] == expected.digest());
    expected.history.push_back(methods[i] + ":" + tags[i]);
    expected.value += 1;
    CHECK(j["output"]["sha256"] == expected.digest());
    CHECK(j["seed"]["run"] == 7);
    CHECK(j["seed"]["stage"] == stage_seed(7, i + 1));
    seeds.insert(j["seed"]["stage"].get<std::uint64_t>());
    CHECK(j["versions"]["forge"] == FORGE_VERSION_STRING);
    CHECK(j["versions"]["compiler"].get<std::string>().size() > 3);
    CHECK(j["backend"] == "scalar");
    CHECK(j["wall_time_s"].get<double>() >= 0.0);
    REQUIRE(j["artifacts"].size() == 1);
    CHECK(j["artifacts"][0]["sha256"] == sha256_abc);
    CHECK(j["artifacts"][0]["bytes"] == 3);
    CHECK(fs::exists(out / j["artifacts"][0]["path"].get<std::string>()));
  }
  CHECK(seeds.size() == 4);  // every stage gets its own stream

  const json a = load(out / "01_adapt.json");
  CHECK(a["method"]["parameters"]["tag"] == "sft");
  CHECK(a["data"][0]["name"] == "sft train");
  CHECK(a["data"][0]["sha256"] == govern::sha256_hex(std::string("sft train")));
  CHECK(a["metrics"]["exact_match"] == 0.9);
  CHECK(a["gate"]["criteria"][0]["criterion"] == "exact_match >= 0.8");
  CHECK(a["gate"]["criteria"][0]["measured"] == 0.9);
  CHECK(a["input"]["accepted_representations"] == json::array({"dense f32"}));
  CHECK(a["output"]["representation"] == "dense f32");
  CHECK(load(out / "02_compress.json")["output"]["representation"] == "int4 g128");
  CHECK(load(out / "03_align.json")["output"]["representation"] == "int4 g128 + lora");

  const json s = load(out / "run.json");
  CHECK(s["status"] == "passed");
  CHECK(s["stages_run"] == 4);
  CHECK(s["reports"] == json(files));
  CHECK(s["failure"].is_null());
  CHECK(s["output_sha256"] == r.model->digest());
}

TEST_CASE("a failed gate stops the run with a report naming criterion, measurement, threshold") {
  const fs::path out = scratch("pipeline_gate_stop");
  auto r = full_pipeline(1.25).run(toy_model_double{}, backend::simd<>{}, {.out = out, .seed = 1});

  CHECK_FALSE(r.passed);
  CHECK_FALSE(r.model.has_value());
  REQUIRE(r.failure.has_value());
  CHECK(r.failure->stage == 2);
  CHECK(r.failure->kind == stage_kind::compress);
  CHECK(r.failure->method == "quantize_double");
  CHECK(r.failure->failed.criterion.metric == "perplexity_ratio");
  CHECK(r.failure->failed.criterion.threshold == 1.05);
  CHECK(r.failure->failed.measured == 1.25);
  CHECK(r.failure->describe() ==
        "stage 2 (compress, quantize_double): gate perplexity_ratio <= 1.05 failed: measured "
        "1.25, threshold 1.05");

  // Stages after the failed gate never ran; everything before (and the failing stage's own
  // artifacts) stays on disk.
  REQUIRE(r.stages.size() == 2);
  CHECK(r.stages[1].status == stage_status::gate_failed);
  CHECK_FALSE(fs::exists(out / "03_align.json"));
  CHECK_FALSE(fs::exists(out / "03_align"));
  CHECK(fs::exists(out / "01_adapt" / "artifact.txt"));
  CHECK(fs::exists(out / "02_compress" / "artifact.txt"));

  const json c = load(out / "02_compress.json");
  CHECK(c["status"] == "gate_failed");
  CHECK(c["gate"]["passed"] == false);
  CHECK(c["gate"]["criteria"][0]["passed"] == false);
  CHECK(c["gate"]["criteria"][0]["measured"] == 1.25);
  CHECK(c["gate"]["criteria"][0]["threshold"] == 1.05);

  const json s = load(out / "run.json");
  CHECK(s["status"] == "stopped_at_gate");
  CHECK(s["stages_run"] == 2);
  CHECK(s["stages_planned"] == 4);
  CHECK(s["failure"]["stage"] == 2);
  CHECK(s["failure"]["criterion"] == "perplexity_ratio <= 1.05");
  CHECK(s["failure"]["measured"] == 1.25);
  CHECK(s["failure"]["threshold"] == 1.05);
  CHECK(s["failure"]["report"] == "02_compress.json");
}

TEST_CASE("a gate on a metric the method did not report stops the run") {
  const fs::path out = scratch("pipeline_unmeasured");
  // distil_double measures perplexity_ratio only; exact_match is measurable by Compress
  // stages (so the gate compiles) but this method did not report it.
  auto p = pipeline(compress<distil_double>{{}, {"d"}, accept(exact_match >= 0.5)});
  auto r = p.run(toy_model_double{}, backend::scalar{}, {.out = out});
  CHECK_FALSE(r.passed);
  REQUIRE(r.failure.has_value());
  CHECK_FALSE(r.failure->failed.measured.has_value());
  CHECK(r.failure->describe().find("did not measure exact_match") != std::string::npos);
  const json c = load(out / "01_compress.json");
  CHECK(c["gate"]["criteria"][0]["measured"].is_null());
}

TEST_CASE("repeated kinds and absent stages run in the order written") {
  const fs::path out = scratch("pipeline_repeated");
  auto p =
      pipeline(compress<distil_double>{{.tag = "distil"}}, compress<quantize_double>{{.tag = "q"}},
               deploy<release_double>{{.tag = "rel"}});
  auto r = p.run(toy_model_double{}, backend::scalar{}, {.out = out});
  REQUIRE(r.passed);
  CHECK(r.model->history == std::vector<std::string>{"distil_double:distil", "quantize_double:q",
                                                     "release_double:rel"});
  CHECK(fs::exists(out / "01_compress.json"));
  CHECK(fs::exists(out / "02_compress.json"));
  CHECK(fs::exists(out / "03_deploy.json"));
}

TEST_CASE("research_order runs another order of kinds as written") {
  const fs::path out = scratch("pipeline_research");
  auto p =
      research_order(compress<distil_double>{{.tag = "c"}}, adapt<fine_tune_double>{{.tag = "a"}},
                     deploy<release_double>{{.tag = "d"}});
  auto r = p.run(toy_model_double{}, backend::simd<>{}, {.out = out});
  REQUIRE(r.passed);
  CHECK(r.model->history ==
        std::vector<std::string>{"distil_double:c", "fine_tune_double:a", "release_double:d"});
  CHECK(load(out / "01_compress.json")["stage"]["kind"] == "compress");
  CHECK(load(out / "02_adapt.json")["stage"]["kind"] == "adapt");
}

namespace {
// A second model type, identified through an ADL model_digest, and a method generic over
// the model: the pipeline must not care which model type flows through it.
struct counter_model_double {
  long count = 0;
};
std::string model_digest(const counter_model_double& m) {
  return govern::sha256_hex(std::to_string(m.count));
}
struct increment_double {
  static constexpr std::string_view name = "increment_double";
  using params = double_params;
  using accepts = repr::dense_f32;
  using produces = repr::dense_f32;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<counter_model_double> apply(const stage_context<B>& ctx, const params&,
                                                  const no_data&, counter_model_double in) {
    in.count += static_cast<long>(ctx.index);
    stage_result<counter_model_double> r{.model = in};
    r.metrics.set(exact_match, 1.0);
    return r;
  }
};
}  // namespace

TEST_CASE("the pipeline is generic over the model type") {
  const fs::path out = scratch("pipeline_generic_model");
  auto p =
      pipeline(adapt<increment_double>{{}, accept(exact_match >= 1.0)}, adapt<increment_double>{});
  auto r = p.run(counter_model_double{.count = 10}, backend::scalar{}, {.out = out});
  REQUIRE(r.passed);
  CHECK(r.model->count == 13);  // 10 + stage 1 + stage 2
  CHECK(load(out / "02_adapt.json")["output"]["sha256"] == govern::sha256_hex(std::string("13")));
  CHECK(load(out / "01_adapt.json")["input"]["sha256"] == govern::sha256_hex(std::string("10")));
}

namespace {
// Stage 1 of the atomicity test: blocks stage 2's report path with a directory.
struct report_blocker_double : fine_tune_double {
  static constexpr std::string_view name = "report_blocker_double";
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    fs::create_directories(ctx.artifact_dir.parent_path() / "02_compress.json");
    return fine_tune_double::apply(ctx, p, d, std::move(in));
  }
};
// A compress method that fails the way a real one would on bad input.
struct throwing_double : quantize_double {
  static constexpr std::string_view name = "throwing_double";
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>&, const params&, const data&,
                                              toy_model_double) {
    throw forge::error({.what = "calibration set is empty",
                        .file = "calib.jsonl",
                        .place = "line 1",
                        .expected = "at least one record",
                        .found = "end of file"});
  }
};
// A method that lists an artifact it never wrote.
struct phantom_artifact_double : fine_tune_double {
  static constexpr std::string_view name = "phantom_artifact_double";
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>&, const params&, const data&,
                                              toy_model_double in) {
    stage_result<toy_model_double> r{.model = std::move(in)};
    r.artifacts.push_back("missing.bin");
    return r;
  }
};
}  // namespace

TEST_CASE("reports are written atomically and never half-written") {
  SECTION("no temporary files remain and every report is complete JSON") {
    const fs::path out = scratch("pipeline_atomic_clean");
    auto r = full_pipeline(1.0).run(toy_model_double{}, backend::scalar{}, {.out = out});
    REQUIRE(r.passed);
    CHECK(leftover_temporaries(out).empty());
    for (const auto& e : fs::directory_iterator(out))
      if (e.path().extension() == ".json") CHECK_NOTHROW(load(e.path()));
  }
  SECTION("a report that cannot be put in place leaves no partial file, earlier ones intact") {
    const fs::path out = scratch("pipeline_atomic_blocked");
    // Stage 1 occupies the path of stage 2's report with a directory, so putting that report
    // in place fails, as a full disk or a crash before the rename would.
    auto p = pipeline(adapt<report_blocker_double>{{.tag = "a"}}, compress<quantize_double>{});
    CHECK_THROWS_AS(p.run(toy_model_double{}, backend::scalar{}, {.out = out}), forge::error);
    CHECK(load(out / "01_adapt.json")["status"] == "passed");
    CHECK(fs::is_directory(out / "02_compress.json"));
    CHECK(fs::is_empty(out / "02_compress.json"));
    CHECK(leftover_temporaries(out).empty());
  }
  SECTION("a run refuses a directory that already holds files") {
    const fs::path out = scratch("pipeline_atomic_nonempty");
    io::write_atomic(out / "01_adapt.json", std::string_view("{\"earlier\": true}\n"));
    CHECK_THROWS_AS(full_pipeline(1.0).run(toy_model_double{}, backend::scalar{}, {.out = out}),
                    forge::error);
    CHECK(load(out / "01_adapt.json")["earlier"] == true);  // untouched
  }
}

TEST_CASE("a method that throws is recorded in its report and the exception propagates") {
  const fs::path out = scratch("pipeline_throws");
  auto p = pipeline(adapt<fine_tune_double>{{.tag = "a"}}, compress<throwing_double>{},
                    deploy<release_double>{});
  CHECK_THROWS_WITH(p.run(toy_model_double{}, backend::scalar{}, {.out = out}),
                    Catch::Contains("calibration set is empty"));
  const json c = load(out / "02_compress.json");
  CHECK(c["status"] == "error");
  CHECK(c["error"].get<std::string>().find("calibration set is empty") != std::string::npos);
  CHECK(c["output"]["sha256"].is_null());
  const json s = load(out / "run.json");
  CHECK(s["status"] == "error");
  CHECK(s["error"]["stage"] == 2);
  CHECK_FALSE(fs::exists(out / "03_deploy.json"));
  CHECK(fs::exists(out / "01_adapt" / "artifact.txt"));
}

TEST_CASE("an artifact the method names but did not write is an error naming the stage") {
  const fs::path out = scratch("pipeline_missing_artifact");
  auto p = pipeline(adapt<phantom_artifact_double>{});
  try {
    p.run(toy_model_double{}, backend::scalar{}, {.out = out});
    FAIL("expected forge::error");
  } catch (const forge::error& e) {
    CHECK(e.place() == "stage 1 (phantom_artifact_double)");
    CHECK(e.found() == "no such file");
    CHECK(e.file().find("missing.bin") != std::string::npos);
  }
  CHECK(load(out / "01_adapt.json")["status"] == "error");
}
