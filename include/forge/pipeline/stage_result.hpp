#pragma once
// What a method's apply() returns: the output model, the metric values it measured, the
// artifacts it wrote and the hashes of the data it read. The runner turns these into the
// stage report and evaluates the stage's gate on the metrics.

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "forge/pipeline/metric.hpp"

namespace forge {

/// Metric values measured by one stage, keyed by metric.
class metric_values {
 public:
  /// Records the measured value of metric `M` (replacing an earlier one).
  template <Metric M>
  metric_values& set(M, double value) {
    values_.insert_or_assign(std::string(M::name), value);
    return *this;
  }
  /// Records a value under the metric's name: for a runner that takes the values another
  /// process measured (a run over several ranks adopts rank 0's); methods use set(M, v).
  metric_values& set_by_name(std::string_view name, double value) {
    values_.insert_or_assign(std::string(name), value);
    return *this;
  }
  /// The measured value of metric `M`, if it was recorded.
  template <Metric M>
  std::optional<double> get(M) const {
    return get(M::name);
  }
  /// The measured value of the metric named `name`, if it was recorded.
  std::optional<double> get(std::string_view name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  /// Every recorded value, by metric name.
  const std::map<std::string, double, std::less<>>& all() const { return values_; }

 private:
  std::map<std::string, double, std::less<>> values_;
};

/// A data set a stage read, identified by content hash.
struct data_record {
  std::string name;    ///< what it is ("sft train split", "calibration set")
  std::string sha256;  ///< SHA-256 of its content, 64 lowercase hex characters
};

/// The result of a method's apply(): output model `Model` plus what was measured and written.
template <class Model>
struct stage_result {
  using model_type = Model;  ///< the type of the output model
  Model model;               ///< the stage's output, the next stage's input
  metric_values metrics{};   ///< measured metric values; the gate reads these
  /// Files the stage wrote, relative to its artifact directory (or absolute); the runner
  /// hashes each into the report.
  std::vector<std::filesystem::path> artifacts{};
  std::vector<data_record> data{};  ///< data sets the stage read
};

namespace pipeline_detail {
template <class T>
inline constexpr bool is_stage_result_v = false;
template <class M>
inline constexpr bool is_stage_result_v<stage_result<M>> = true;
}  // namespace pipeline_detail

}  // namespace forge
