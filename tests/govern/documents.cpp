// Model card, CycloneDX 1.6 SBOM and in-toto/SLSA provenance: required fields and values
// from the specifications, determinism, and library versions checked against pkg-config.

#include <catch2/catch.hpp>
#include <cstdio>
#include <regex>

#include "../support/fixtures.hpp"
#include "forge/govern/model_card.hpp"
#include "forge/govern/provenance.hpp"
#include "forge/govern/sbom.hpp"
#include "sample_release.hpp"

using namespace forge;
using namespace forge::govern;

namespace {
std::string pkg_config_version(const std::string& module) {
  std::string cmd = "pkg-config --modversion " + module + " 2>/dev/null";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return "";
  char buf[128] = {};
  std::string out = std::fgets(buf, sizeof buf, p) ? buf : "";
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}
}  // namespace

TEST_CASE("the model card has every section, each stage's parameters, metrics and verdicts") {
  const auto card = test::sample_card();
  const auto md = render_model_card(card);
  for (const char* h : {"# Model card: tiny-sql 1.2.0", "## Intended use", "## Data", "## Methods",
                        "### Stage 1: adapt (qlora<nf4>)", "### Stage 2: align (dpo)",
                        "## Limitations", "## Safety results"})
    CHECK_THAT(md, Catch::Contains(h));
  CHECK_THAT(md, Catch::Contains("| rank | 16 |"));
  CHECK_THAT(md, Catch::Contains("| beta | 0.1 |"));
  CHECK_THAT(md, Catch::Contains("| exact_match | 0.84 | >= 0.80 | pass |"));
  CHECK_THAT(md,
             Catch::Contains("| false_refusal_rate | 0.07 | <= 0.05 | FAIL | over threshold |"));
  CHECK_THAT(md, Catch::Contains("| win_rate | 0.61 | - | not gated |"));
  CHECK_THAT(md, Catch::Contains("| jailbreak_resistance | 0.88 | >= 0.85 | pass |"));
  CHECK_THAT(md, Catch::Contains(card.datasets[0].sha256));
  CHECK_THAT(md, Catch::Contains("- medical advice"));
  CHECK_THAT(md, Catch::Contains("- English only."));
  CHECK_THAT(md, Catch::Contains(card.base_model_sha256));
}

TEST_CASE("the SBOM is CycloneDX 1.6 with model, data and library components") {
  const auto card = test::sample_card();
  std::vector<manifest_entry> arts = {{"model/model.gguf", std::string(64, 'a'), 5}};
  const auto bom = make_sbom(card, arts, "2026-05-11T09:30:00Z");
  CHECK(bom["bomFormat"] == "CycloneDX");
  CHECK(bom["specVersion"] == "1.6");
  CHECK(bom["version"] == 1);
  // The 1.6 schema's serialNumber pattern.
  static const std::regex serial(
      "^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  CHECK(std::regex_match(bom["serialNumber"].get<std::string>(), serial));
  // Deterministic: same content, same serial; other content, other serial.
  CHECK(make_sbom(card, arts, "2026-05-11T09:30:00Z")["serialNumber"] == bom["serialNumber"]);
  auto other = card;
  other.version = "1.2.1";
  CHECK(make_sbom(other, arts, "2026-05-11T09:30:00Z")["serialNumber"] != bom["serialNumber"]);

  const auto& mc = bom["metadata"]["component"];
  CHECK(mc["type"] == "machine-learning-model");
  CHECK(mc["name"] == "tiny-sql");
  CHECK(mc["modelCard"]["modelParameters"]["approach"]["type"] == "supervised");
  CHECK(mc["modelCard"]["modelParameters"]["datasets"].size() == 2);
  CHECK(mc["modelCard"]["quantitativeAnalysis"]["performanceMetrics"].size() == 6);
  CHECK(mc["modelCard"]["considerations"]["technicalLimitations"].size() == 2);

  std::map<std::string, json> by_ref;
  for (const auto& c : bom["components"]) by_ref[c["bom-ref"].get<std::string>()] = c;
  CHECK(by_ref.at("base-model")["hashes"][0]["content"] == card.base_model_sha256);
  CHECK(by_ref.at("base-model")["hashes"][0]["alg"] == "SHA-256");
  CHECK(by_ref.at("artifact:model/model.gguf")["type"] == "machine-learning-model");
  CHECK(by_ref.at("data:sql-sft")["type"] == "data");
  CHECK(by_ref.at("data:sql-sft")["data"][0]["type"] == "dataset");
  CHECK(by_ref.at("data:sql-sft")["hashes"][0]["content"] == card.datasets[0].sha256);
  CHECK(by_ref.at("forge")["version"] == FORGE_VERSION_STRING);
  // Library versions compiled in agree with the installed packages' pkg-config metadata.
  CHECK(by_ref.at("lib:libsodium")["version"] == pkg_config_version("libsodium"));
  CHECK(by_ref.at("lib:pcre2")["version"] == pkg_config_version("libpcre2-8"));
  CHECK(by_ref.at("lib:eigen")["version"] == pkg_config_version("eigen3"));
  CHECK(by_ref.at("lib:boost")["version"].get<std::string>().rfind("1.74", 0) == 0);
  for (const char* lib : {"xtensor", "xsimd", "xtl", "range-v3", "nlohmann-json", "utf8proc"}) {
    INFO(lib);
    CHECK(std::regex_match(by_ref.at(std::string("lib:") + lib)["version"].get<std::string>(),
                           std::regex(R"(\d+\.\d+\.\d+)")));
  }
  CHECK(bom["dependencies"][0]["ref"] == "release");
}

TEST_CASE("provenance is an in-toto v1 statement with a SLSA v1 predicate") {
  provenance_record r;
  r.subjects = {{"model/model.gguf", std::string(64, 'a'), 1},
                {"MODEL_CARD.md", std::string(64, 'b'), 2}};
  r.external_parameters = json{{"stages", json::array({"adapt", "align"})}};
  r.inputs = {{"llama_a", "", std::string(64, 'c')},
              {"sql-sft", "file:///data/sft.jsonl", std::string(64, 'd')}};
  r.builder_version = "0.1.0";
  r.invocation_id = "run-1";
  r.started_on = "2026-05-11T09:00:00Z";
  r.finished_on = utc_now_rfc3339();
  const auto j = make_provenance(r);
  CHECK(j["_type"] == "https://in-toto.io/Statement/v1");
  CHECK(j["predicateType"] == "https://slsa.dev/provenance/v1");
  REQUIRE(j["subject"].size() == 2);
  CHECK(j["subject"][0]["name"] == "model/model.gguf");
  CHECK(j["subject"][0]["digest"]["sha256"] == std::string(64, 'a'));
  const auto& bd = j["predicate"]["buildDefinition"];
  CHECK(bd["buildType"] == "urn:forge:pipeline-release:v1");
  CHECK(bd["externalParameters"]["stages"][1] == "align");
  CHECK(bd["resolvedDependencies"][1]["uri"] == "file:///data/sft.jsonl");
  CHECK(bd["resolvedDependencies"][0]["digest"]["sha256"] == std::string(64, 'c'));
  const auto& rd = j["predicate"]["runDetails"];
  CHECK(rd["builder"]["id"] == "urn:forge:builder:local");
  CHECK(rd["metadata"]["invocationId"] == "run-1");
  CHECK(std::regex_match(rd["metadata"]["finishedOn"].get<std::string>(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
}
