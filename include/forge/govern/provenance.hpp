#pragma once
// Build provenance as an in-toto Statement v1 (github.com/in-toto/attestation, spec/v1)
// carrying a SLSA Provenance v1 predicate (slsa.dev/spec/v1.0/provenance):
//
//   {"_type": "https://in-toto.io/Statement/v1",
//    "subject": [{"name": "<release path>", "digest": {"sha256": "<hex>"}}, ...],
//    "predicateType": "https://slsa.dev/provenance/v1",
//    "predicate": {"buildDefinition": {"buildType": URI, "externalParameters": {...},
//                                      "internalParameters": {...},
//                                      "resolvedDependencies": [ResourceDescriptor...]},
//                  "runDetails": {"builder": {"id": URI, "version": {"forge": "..."}},
//                                 "metadata": {"invocationId", "startedOn", "finishedOn"}}}}
//
// The subjects are the released files; the resolved dependencies are the inputs (base model,
// datasets) named with their SHA-256, so an auditor can check that the artifacts descend
// from exactly those inputs.

#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "forge/core/json.hpp"
#include "forge/govern/manifest.hpp"

namespace forge::govern {

/// An input of the build: a ResourceDescriptor with a name, optional URI and SHA-256.
struct provenance_input {
  std::string name{};
  std::string uri{};
  std::string sha256{};
};

/// Everything the provenance statement records.
struct provenance_record {
  std::vector<manifest_entry> subjects{};                    ///< released files with their hashes
  std::string build_type = "urn:forge:pipeline-release:v1";  ///< what the parameters mean
  json external_parameters = json::object();  ///< the pipeline: stages, methods, parameters
  json internal_parameters = json::object();  ///< backend, threads, seed ...
  std::vector<provenance_input> inputs{};     ///< base model and datasets
  std::string builder_id = "urn:forge:builder:local";
  std::string builder_version{};  ///< forge version
  std::string invocation_id{};
  std::string started_on{};   ///< RFC 3339 UTC
  std::string finished_on{};  ///< RFC 3339 UTC
};

/// The current time as RFC 3339 UTC with second precision ("2026-05-11T09:30:00Z").
inline std::string utc_now_rfc3339() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// The in-toto statement as JSON.
inline json make_provenance(const provenance_record& r) {
  json st;
  st["_type"] = "https://in-toto.io/Statement/v1";
  st["subject"] = json::array();
  for (const auto& s : r.subjects)
    st["subject"].push_back({{"name", s.path}, {"digest", {{"sha256", s.sha256}}}});
  st["predicateType"] = "https://slsa.dev/provenance/v1";
  json bd;
  bd["buildType"] = r.build_type;
  bd["externalParameters"] = r.external_parameters;
  if (!r.internal_parameters.empty()) bd["internalParameters"] = r.internal_parameters;
  bd["resolvedDependencies"] = json::array();
  for (const auto& in : r.inputs) {
    json d = {{"name", in.name}, {"digest", {{"sha256", in.sha256}}}};
    if (!in.uri.empty()) d["uri"] = in.uri;
    bd["resolvedDependencies"].push_back(d);
  }
  json rd;
  rd["builder"]["id"] = r.builder_id;
  if (!r.builder_version.empty()) rd["builder"]["version"] = {{"forge", r.builder_version}};
  rd["metadata"]["invocationId"] = r.invocation_id;
  rd["metadata"]["startedOn"] = r.started_on;
  rd["metadata"]["finishedOn"] = r.finished_on;
  st["predicate"] = {{"buildDefinition", bd}, {"runDetails", rd}};
  return st;
}

}  // namespace forge::govern
