#pragma once
// Acceptance criteria: `exact_match >= 0.80` is a criterion on the metric exact_match with
// the runtime threshold 0.80. The metric is part of the type (so the compiler can check that
// the stage measures it); the threshold is a value (so a sweep needs no recompilation).

#include <charconv>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "forge/pipeline/metric.hpp"

namespace forge {

/// How a measured value is compared with a threshold.
enum class comparison { greater_equal, less_equal, greater, less, equal };

/// The operator as written in C++ (">=", "<=", ">", "<", "==").
constexpr std::string_view symbol_of(comparison c) {
  switch (c) {
    case comparison::greater_equal:
      return ">=";
    case comparison::less_equal:
      return "<=";
    case comparison::greater:
      return ">";
    case comparison::less:
      return "<";
    case comparison::equal:
      return "==";
  }
  return "?";
}

/// True when `measured` satisfies `measured <op> threshold`; a NaN never does.
constexpr bool holds(comparison c, double measured, double threshold) {
  switch (c) {
    case comparison::greater_equal:
      return measured >= threshold;
    case comparison::less_equal:
      return measured <= threshold;
    case comparison::greater:
      return measured > threshold;
    case comparison::less:
      return measured < threshold;
    case comparison::equal:
      return measured == threshold;
  }
  return false;
}

/// A criterion on metric `M`: "the measured value of M <op> threshold".
template <Metric M>
struct criterion {
  using metric_type = M;  ///< the metric the criterion reads
  comparison op;          ///< how the measured value is compared
  double threshold;       ///< the runtime threshold, in the metric's unit
};

/// `m >= t`: the measured value of m must be at least t.
template <Metric M>
constexpr criterion<M> operator>=(M, double t) {
  return {comparison::greater_equal, t};
}
/// `m <= t`: the measured value of m must be at most t.
template <Metric M>
constexpr criterion<M> operator<=(M, double t) {
  return {comparison::less_equal, t};
}
/// `m > t`: the measured value of m must exceed t.
template <Metric M>
constexpr criterion<M> operator>(M, double t) {
  return {comparison::greater, t};
}
/// `m < t`: the measured value of m must be below t.
template <Metric M>
constexpr criterion<M> operator<(M, double t) {
  return {comparison::less, t};
}
/// `m == t`: the measured value of m must equal t exactly (for counts and booleans).
template <Metric M>
constexpr criterion<M> operator==(M, double t) {
  return {comparison::equal, t};
}

/// The shortest decimal text that reads back as exactly `v` ("0.8", not "0.80000000000000004").
inline std::string shortest_text(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

/// A criterion with its metric erased to a name: what a stage keeps at run time.
struct criterion_record {
  std::string_view metric;  ///< the metric's name (static storage)
  std::string_view unit;    ///< the metric's unit (static storage)
  comparison op;            ///< how the measured value is compared
  double threshold;         ///< the threshold, in the metric's unit

  /// The criterion as written, e.g. "exact_match >= 0.8".
  std::string text() const {
    return std::string(metric) + " " + std::string(symbol_of(op)) + " " + shortest_text(threshold);
  }
};

/// Erases the metric type of a criterion, keeping its name and unit.
template <Metric M>
criterion_record record_of(const criterion<M>& c) {
  return {M::name, M::unit, c.op, c.threshold};
}

/// The outcome of one criterion on one stage's measurements.
struct verdict {
  criterion_record criterion;      ///< what was required
  std::optional<double> measured;  ///< what the stage measured; empty if it did not report it
  bool passed = false;             ///< true when the measured value satisfies the criterion

  /// measured - threshold (positive when above the threshold); NaN if not measured.
  double margin() const { return measured ? *measured - criterion.threshold : std::nan(""); }
};

/// Evaluates a criterion against a measured value (empty = the metric was not reported,
/// which fails the criterion: a gate never passes on a number nobody measured).
inline verdict evaluate(const criterion_record& c, std::optional<double> measured) {
  return {c, measured, measured.has_value() && holds(c.op, *measured, c.threshold)};
}

}  // namespace forge
