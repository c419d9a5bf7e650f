#pragma once
// Gates: `accept(exact_match >= 0.80, regression_delta <= 0.03)` collects the criteria a
// stage's measurements must meet before the pipeline continues. The metrics are types (the
// stage checks at compile time that it measures them); the thresholds are runtime values.

#include <tuple>
#include <vector>

#include "forge/pipeline/criterion.hpp"
#include "forge/pipeline/metric.hpp"
#include "forge/pipeline/stage_result.hpp"

namespace forge {

/// A set of criteria on metrics `Ms...`, built by accept().
template <Metric... Ms>
struct gate {
  std::tuple<criterion<Ms>...> criteria;  ///< the criteria, in the order written

  /// The criteria with their metric types erased, in the order written.
  std::vector<criterion_record> records() const {
    return std::apply(
        [](const auto&... c) { return std::vector<criterion_record>{record_of(c)...}; }, criteria);
  }
};

namespace pipeline_detail {
template <class T>
struct as_criterion {
  static_assert(Metric<T>,
                "forge::accept: each argument must be a criterion such as `exact_match >= 0.8`, "
                "or a boolean metric such as `signature_valid`");
  static_assert(!Metric<T> || T::is_boolean,
                "forge::accept: only a boolean metric may stand alone; compare other metrics "
                "with a threshold, e.g. `perplexity_ratio <= 1.05`");
};
template <Metric M>
struct as_criterion<criterion<M>> {
  using metric = M;
  static constexpr criterion<M> make(const criterion<M>& c) { return c; }
};
template <Metric M>
requires M::is_boolean struct as_criterion<M> {
  using metric = M;
  static constexpr criterion<M> make(const M&) { return {comparison::equal, 1.0}; }
};
}  // namespace pipeline_detail

/// Builds a gate from criteria (`exact_match >= 0.8`) and boolean metrics (`signature_valid`,
/// meaning `signature_valid == 1`). A stage passes its gate when every criterion holds.
template <class... Cs>
constexpr auto accept(const Cs&... cs) {
  return gate<typename pipeline_detail::as_criterion<Cs>::metric...>{
      {pipeline_detail::as_criterion<Cs>::make(cs)...}};
}

/// The outcome of a gate: one verdict per criterion, in the order written.
struct gate_verdict {
  std::vector<verdict> verdicts;  ///< one per criterion

  /// True when every criterion held (an empty gate passes).
  bool passed() const {
    for (const auto& v : verdicts)
      if (!v.passed) return false;
    return true;
  }
  /// The first criterion that failed, or nullptr.
  const verdict* first_failure() const {
    for (const auto& v : verdicts)
      if (!v.passed) return &v;
    return nullptr;
  }
};

/// Evaluates every criterion against the measured values (a metric that was not measured
/// fails its criterion).
inline gate_verdict evaluate(const std::vector<criterion_record>& criteria,
                             const metric_values& measured) {
  gate_verdict g;
  g.verdicts.reserve(criteria.size());
  for (const auto& c : criteria) g.verdicts.push_back(evaluate(c, measured.get(c.metric)));
  return g;
}

}  // namespace forge
