#pragma once
// Stage reports: what the runner records about each stage it executes (DESIGN.md principle 7)
// and returns from run(). The JSON files (01_adapt.json, ..., run.json) are written by
// run.hpp.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "forge/dist/communicator.hpp"
#include "forge/pipeline/criterion.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/stage_kind.hpp"
#include "forge/pipeline/stage_result.hpp"

namespace forge {

/// Options of one pipeline run.
struct run_options {
  /// Directory for reports and artifacts; created if absent, and it must not already hold
  /// files (a run never overwrites the evidence of an earlier one).
  std::filesystem::path out = "forge-run";
  /// The run's seed; stage i receives stage_seed(seed, i).
  std::uint64_t seed = 0;
  /// The group of processes that runs this pipeline together (data parallelism), or null for
  /// one process. Every rank calls run() with the same pipeline, model, seed and `out`; the
  /// training stages split their batches over the ranks, only rank 0 writes (reports,
  /// artifacts, checkpoints, release), and every rank returns the same report and model.
  /// docs/distributed.md describes the protocol.
  dist::communicator* comm = nullptr;
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
    std::string s = "stage " + std::to_string(stage) + " (" + std::string(name_of(kind)) + ", " +
                    method + "): gate " + failed.criterion.text() + " failed: ";
    if (failed.measured)
      s += "measured " + shortest_text(*failed.measured);
    else
      s += "the stage did not measure " + std::string(failed.criterion.metric);
    return s + ", threshold " + shortest_text(failed.criterion.threshold);
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

}  // namespace forge
