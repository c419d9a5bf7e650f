#pragma once
// Metrics as types. A metric names the quantity a stage measures (exact match, perplexity
// ratio, refusal accuracy, ...) and, at compile time, the stage kinds that measure it, so
// that a gate asking an Adapt stage for refusal accuracy is rejected by the compiler
// (rule 4 of DESIGN.md). The values themselves are computed by the methods at run time.

#include <concepts>
#include <string_view>

#include "forge/pipeline/stage_kind.hpp"

namespace forge {

/// Base of every metric type: `struct my_metric_t : forge::metric<my_metric_t,
/// stage_kind::adapt> { static constexpr std::string_view name = "..."; ... };`.
/// `Kinds` are the stage kinds that measure it. Deriving from this class also makes the
/// comparison operators of forge (which build criteria) visible to argument lookup.
template <class Self, stage_kind... Kinds>
struct metric {
  static_assert(sizeof...(Kinds) > 0,
                "forge::metric: list at least one stage kind that measures this metric");
  /// The stage kinds whose methods report this metric.
  using measured_by = stage_kinds<Kinds...>;
  /// Marks the type as a metric for the `Metric` concept.
  static constexpr bool is_metric = true;
  /// A boolean metric (1 = holds, 0 = does not) may be passed to accept() on its own.
  static constexpr bool is_boolean = false;
};

/// Base of a metric whose value is 1 (holds) or 0 (does not), such as "all signatures
/// valid"; `accept(signature_valid)` means `signature_valid == 1`.
template <class Self, stage_kind... Kinds>
struct boolean_metric : metric<Self, Kinds...> {
  static constexpr bool is_boolean = true;
};

/// A metric type: a name, a unit and the stage kinds that measure it.
template <class M>
concept Metric = requires {
  { M::name } -> std::convertible_to<std::string_view>;
  { M::unit } -> std::convertible_to<std::string_view>;
  typename M::measured_by;
  requires M::is_metric;
};

/// True when stages of kind `K` measure metric `M`.
template <Metric M, stage_kind K>
inline constexpr bool measures_v = M::measured_by::contains(K);

}  // namespace forge
