#pragma once
// CycloneDX 1.6 SBOM (ML-BOM) of a release (cyclonedx.org/docs/1.6/json): the released model
// with its modelCard, the base model and every model artifact with SHA-256 hashes, the
// datasets as "data" components, and forge with the library versions it was compiled
// against, read from the libraries' own version macros at build time.
//
// serialNumber is derived from the content so the same release gets the same SBOM:
// SHA-256 of a fixed namespace string and the BOM body (without serialNumber), truncated to
// 16 bytes, with the RFC 9562 version nibble set to 5 and the variant bits to 10. It is a
// name-based UUID in the manner of version 5, with SHA-256 in place of SHA-1 (libsodium has
// no SHA-1); the 1.6 schema's serialNumber pattern accepts versions 1-5 only, which rules out
// labelling it version 8.

#include <sodium.h>

#include <string>
#include <string_view>
#include <vector>

#include <Eigen/src/Core/util/Macros.h>  // EIGEN_*_VERSION only; no Eigen code is pulled in
#include <pcre2.h>
#include <utf8proc.h>
#include <boost/version.hpp>
#include <nlohmann/json.hpp>
#include <range/v3/version.hpp>
#include <xsimd/config/xsimd_config.hpp>
#include <xtensor/xtensor_config.hpp>
#include <xtl/xtl_config.hpp>

#include "forge/core/json.hpp"
#include "forge/govern/hash.hpp"
#include "forge/govern/manifest.hpp"
#include "forge/govern/model_card.hpp"

#ifndef FORGE_VERSION_STRING
#error "FORGE_VERSION_STRING is set by the forge::forge CMake target; link against it"
#endif

namespace forge::govern {

/// A library component of the SBOM.
struct sbom_library {
  std::string name{};
  std::string version{};  ///< empty when the library does not expose one in its headers
};

namespace detail {
#define FORGE_SBOM_STR2(x) #x
#define FORGE_SBOM_STR(x) FORGE_SBOM_STR2(x)
inline std::string dotted(int a, int b, int c) {
  return std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c);
}
}  // namespace detail

/// The libraries forge is built on, with the versions of the headers it was compiled
/// against (SentencePiece exposes no version macro, so its version is left empty).
inline std::vector<sbom_library> forge_dependencies() {
  std::string boost = BOOST_LIB_VERSION;  // "1_74"
  for (auto& c : boost)
    if (c == '_') c = '.';
  std::vector<sbom_library> libs = {
      {"xtensor",
       detail::dotted(XTENSOR_VERSION_MAJOR, XTENSOR_VERSION_MINOR, XTENSOR_VERSION_PATCH)},
      {"xtl", detail::dotted(XTL_VERSION_MAJOR, XTL_VERSION_MINOR, XTL_VERSION_PATCH)},
      {"xsimd", detail::dotted(XSIMD_VERSION_MAJOR, XSIMD_VERSION_MINOR, XSIMD_VERSION_PATCH)},
      {"eigen", detail::dotted(EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION)},
      {"boost", boost},
      {"range-v3", detail::dotted(RANGE_V3_MAJOR, RANGE_V3_MINOR, RANGE_V3_PATCHLEVEL)},
      {"nlohmann-json", detail::dotted(NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                                       NLOHMANN_JSON_VERSION_PATCH)},
      {"libsodium", SODIUM_VERSION_STRING},
      {"pcre2", std::to_string(PCRE2_MAJOR) + "." + std::to_string(PCRE2_MINOR)},
      {"utf8proc", utf8proc_version()},
      {"sentencepiece", ""},
  };
#ifdef _OPENMP
  libs.push_back({"openmp", FORGE_SBOM_STR(_OPENMP)});  // the spec date, e.g. 201511
#endif
  return libs;
}

/// A name-based UUID (see the header comment) of `content` within `name_space`.
inline std::string content_uuid(std::string_view name_space, std::string_view content) {
  auto d = sha256().update(name_space).update(content).digest();
  d[6] = static_cast<unsigned char>((d[6] & 0x0f) | 0x50);  // version 5
  d[8] = static_cast<unsigned char>((d[8] & 0x3f) | 0x80);  // variant 10
  const auto h = detail::hex(d.data(), 16);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20, 12);
}

/// The CycloneDX modelCard object for a record.
inline json cyclonedx_model_card(const model_card_record& r) {
  json mc;
  mc["modelParameters"]["approach"]["type"] = r.approach;
  mc["modelParameters"]["task"] = r.task;
  mc["modelParameters"]["architectureFamily"] = r.architecture;
  mc["modelParameters"]["modelArchitecture"] = r.architecture + " (" + r.base_model_name + ")";
  mc["modelParameters"]["datasets"] = json::array();
  for (const auto& d : r.datasets)
    mc["modelParameters"]["datasets"].push_back({{"ref", "data:" + d.name}});
  mc["modelParameters"]["inputs"] = json::array({{{"format", "text"}}});
  mc["modelParameters"]["outputs"] = json::array({{{"format", "text"}}});
  json perf = json::array();
  for (const auto& s : r.stages)
    for (const auto& m : s.metrics) {
      json p = {
          {"type", m.name}, {"value", detail::number(m.value)}, {"slice", s.kind + "/" + s.method}};
      perf.push_back(p);
    }
  for (const auto& m : r.safety)
    perf.push_back({{"type", m.name}, {"value", detail::number(m.value)}, {"slice", "safety"}});
  mc["quantitativeAnalysis"]["performanceMetrics"] = perf;
  json cons;
  cons["useCases"] = json::array();
  if (!r.intended_use.empty()) cons["useCases"].push_back(r.intended_use);
  cons["technicalLimitations"] = r.limitations;
  cons["ethicalConsiderations"] = json::array();
  for (const auto& u : r.out_of_scope_uses)
    cons["ethicalConsiderations"].push_back(
        {{"name", "out-of-scope use: " + u},
         {"mitigationStrategy", "documented in MODEL_CARD.md"}});
  mc["considerations"] = cons;
  return mc;
}

/// The SBOM of a release: `artifacts` are the model files shipped (path + hash), listed as
/// machine-learning-model components; `timestamp` is RFC 3339 UTC.
inline json make_sbom(const model_card_record& r, const std::vector<manifest_entry>& artifacts,
                      const std::string& timestamp) {
  auto sha = [](const std::string& h) {
    return json::array({{{"alg", "SHA-256"}, {"content", h}}});
  };
  json bom;
  bom["bomFormat"] = "CycloneDX";
  bom["specVersion"] = "1.6";
  bom["version"] = 1;
  json meta;
  meta["timestamp"] = timestamp;
  meta["tools"]["components"] = json::array(
      {{{"type", "application"}, {"name", "forge"}, {"version", FORGE_VERSION_STRING}}});
  meta["component"] = {{"type", "machine-learning-model"},
                       {"bom-ref", "release"},
                       {"name", r.name},
                       {"version", r.version},
                       {"modelCard", cyclonedx_model_card(r)}};
  if (!r.license.empty())
    meta["component"]["licenses"] = json::array({{{"license", {{"name", r.license}}}}});
  bom["metadata"] = meta;
  json comps = json::array();
  comps.push_back({{"type", "machine-learning-model"},
                   {"bom-ref", "base-model"},
                   {"name", r.base_model_name},
                   {"hashes", sha(r.base_model_sha256)}});
  for (const auto& a : artifacts)
    comps.push_back({{"type", "machine-learning-model"},
                     {"bom-ref", "artifact:" + a.path},
                     {"name", a.path},
                     {"hashes", sha(a.sha256)}});
  json release_deps = json::array({"base-model", "forge"});
  for (const auto& a : artifacts) release_deps.push_back("artifact:" + a.path);
  for (const auto& d : r.datasets) {
    json c = {
        {"type", "data"},
        {"bom-ref", "data:" + d.name},
        {"name", d.name},
        {"hashes", sha(d.sha256)},
        {"data",
         json::array({{{"type", "dataset"},
                       {"name", d.name},
                       {"description", d.description.empty() ? d.purpose : d.description}}})}};
    if (!d.license.empty()) c["licenses"] = json::array({{{"license", {{"name", d.license}}}}});
    comps.push_back(c);
    release_deps.push_back("data:" + d.name);
  }
  json forge_deps = json::array();
  comps.push_back({{"type", "library"},
                   {"bom-ref", "forge"},
                   {"name", "forge"},
                   {"version", FORGE_VERSION_STRING},
                   {"purl", std::string("pkg:generic/forge@") + FORGE_VERSION_STRING}});
  for (const auto& l : forge_dependencies()) {
    json c = {{"type", "library"}, {"bom-ref", "lib:" + l.name}, {"name", l.name}};
    if (!l.version.empty()) {
      c["version"] = l.version;
      c["purl"] = "pkg:generic/" + l.name + "@" + l.version;
    }
    comps.push_back(c);
    forge_deps.push_back("lib:" + l.name);
  }
  bom["components"] = comps;
  bom["dependencies"] = json::array({{{"ref", "release"}, {"dependsOn", release_deps}},
                                     {{"ref", "forge"}, {"dependsOn", forge_deps}}});
  bom["serialNumber"] = "urn:uuid:" + content_uuid("forge-sbom/1", bom.dump());
  return bom;
}

}  // namespace forge::govern
