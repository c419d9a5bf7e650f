#pragma once
// Stage reports: what the runner records about each stage it executes (DESIGN.md principle 7)
// and how it is written: one JSON file per stage (01_adapt.json, 02_compress.json, ...) and a
// run.json summary, each written atomically into the run's output directory.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/version.hpp>
#include <nlohmann/json.hpp>

#include "forge/io/atomic_file.hpp"
#include "forge/pipeline/criterion.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/stage_kind.hpp"
#include "forge/pipeline/stage_result.hpp"

#ifndef FORGE_VERSION_STRING
#error \
    "FORGE_VERSION_STRING is not defined: link against the forge::forge CMake target (find_package(forge)), which defines it, or pass -DFORGE_VERSION_STRING=\"x.y.z\""
#endif

namespace forge {

/// Options of one pipeline run.
struct run_options {
  /// Directory for reports and artifacts; created if absent, and it must not already hold
  /// files (a run never overwrites the evidence of an earlier one).
  std::filesystem::path out = "forge-run";
  /// The run's seed; stage i receives stage_seed(seed, i).
  std::uint64_t seed = 0;
};

/// How a stage ended.
enum class stage_status {
  passed,       ///< apply() returned and every criterion of the gate held
  gate_failed,  ///< apply() returned but a criterion failed; the pipeline stopped here
  error         ///< apply() (or recording its result) threw; the pipeline stopped here
};

/// "passed", "gate_failed" or "error".
constexpr std::string_view name_of(stage_status s) {
  switch (s) {
    case stage_status::passed:
      return "passed";
    case stage_status::gate_failed:
      return "gate_failed";
    case stage_status::error:
      return "error";
  }
  return "?";
}

/// A file a stage wrote, as recorded in its report.
struct artifact_record {
  std::filesystem::path path;  ///< relative to the run's output directory
  std::string sha256;          ///< SHA-256 of the content, hex
  std::uint64_t bytes = 0;     ///< size in bytes
};

/// The in-memory form of one stage report (the JSON file holds the same and more).
struct stage_report {
  std::size_t index = 0;                   ///< 1-based position in the pipeline
  stage_kind kind{};                       ///< the stage kind
  std::string method;                      ///< the method's name
  stage_status status{};                   ///< how the stage ended
  gate_verdict gate;                       ///< one verdict per criterion
  metric_values metrics;                   ///< what the method measured
  std::vector<artifact_record> artifacts;  ///< files the method wrote
  std::string input_sha256;                ///< digest of the input model
  std::string output_sha256;               ///< digest of the output model (empty on error)
  std::uint64_t seed = 0;                  ///< the stage's seed
  double wall_time_s = 0;                  ///< wall time of apply(), seconds
  std::string error;                       ///< the exception text when status is error
  std::filesystem::path file;              ///< the JSON report's path
};

/// Why a run stopped at a gate: the stage and the first criterion that failed.
struct gate_failure {
  std::size_t stage = 0;         ///< 1-based position of the stage
  stage_kind kind{};             ///< its kind
  std::string method;            ///< its method's name
  verdict failed;                ///< the failed criterion with the measured value
  std::filesystem::path report;  ///< the stage's JSON report

  /// One line for a person, e.g. "stage 2 (compress, gptq): gate perplexity_ratio <= 1.05
  /// failed: measured 1.12, threshold 1.05".
  std::string describe() const {
    std::ostringstream os;
    os.precision(17);
    os << "stage " << stage << " (" << name_of(kind) << ", " << method << "): gate "
       << failed.criterion.text() << " failed: ";
    if (failed.measured)
      os << "measured " << *failed.measured;
    else
      os << "the stage did not measure " << failed.criterion.metric;
    os << ", threshold " << failed.criterion.threshold;
    return os.str();
  }
};

/// The outcome of run(): the stage reports and, when every gate passed, the final model.
template <class Model>
struct run_report {
  bool passed = false;                  ///< every stage ran and every gate held
  std::vector<stage_report> stages;     ///< the stages executed, in order
  std::optional<gate_failure> failure;  ///< set when a gate stopped the run
  std::optional<Model> model;           ///< the last stage's output, when passed
  std::filesystem::path directory;      ///< the run's output directory
  std::filesystem::path summary;        ///< the run.json summary
};

/// The seed handed to stage `index` (1-based) of a run seeded with `run_seed`: SplitMix64
/// (Steele, Lea & Flood 2014) of run_seed + index, so stages get decorrelated streams.
constexpr std::uint64_t stage_seed(std::uint64_t run_seed, std::size_t index) {
  std::uint64_t z = run_seed + 0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(index) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The file name of a stage's report: "01_adapt.json"; its artifact directory drops ".json".
inline std::string stage_file_stem(std::size_t index, stage_kind kind) {
  std::string s = std::to_string(index);
  if (s.size() < 2) s.insert(0, 2 - s.size(), '0');
  return s + "_" + std::string(name_of(kind));
}

namespace pipeline_detail {

inline std::string compiler_version() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_FULL_VER);
#else
  return "unknown compiler";
#endif
}

inline nlohmann::json versions_json() {
  return {{"forge", FORGE_VERSION_STRING},
          {"compiler", compiler_version()},
          {"cxx_standard", static_cast<long>(__cplusplus)},
          {"boost", BOOST_LIB_VERSION},
          {"nlohmann_json", std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_PATCH)}};
}

inline std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline nlohmann::json verdict_json(const verdict& v) {
  nlohmann::json j = {{"criterion", v.criterion.text()},    {"metric", v.criterion.metric},
                      {"unit", v.criterion.unit},           {"op", symbol_of(v.criterion.op)},
                      {"threshold", v.criterion.threshold}, {"passed", v.passed}};
  // nlohmann writes a NaN as null; a missing measurement is null too, with a reason.
  j["measured"] = v.measured ? nlohmann::json(*v.measured) : nlohmann::json(nullptr);
  j["margin"] = v.measured ? nlohmann::json(v.margin()) : nlohmann::json(nullptr);
  if (!v.measured) j["reason"] = "the stage did not measure this metric";
  return j;
}

inline nlohmann::json failure_json(const gate_failure& f, const std::filesystem::path& root) {
  nlohmann::json j = verdict_json(f.failed);
  j["stage"] = f.stage;
  j["kind"] = name_of(f.kind);
  j["method"] = f.method;
  j["report"] = f.report.lexically_relative(root).generic_string();
  j["summary"] = f.describe();
  return j;
}

/// Writes `j` to `path` atomically, pretty-printed, with a final newline.
inline void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  io::write_atomic(path, j.dump(2) + "\n");
}

}  // namespace pipeline_detail
}  // namespace forge
