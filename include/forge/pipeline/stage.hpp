#pragma once
// Stage kinds as class templates over a method policy: adapt<M>, compress<M>, align<M>,
// deploy<M>. A stage holds the method's runtime parameters, its data and its gate:
//
//   adapt<qlora<nf4>>{{.rank = 16, .alpha = 32}, sft_data, accept(exact_match >= 0.80)}
//
// Constructing a stage with a gate checks rule 4 of DESIGN.md: every metric in the gate must
// be one that stages of this kind measure.

#include <type_traits>
#include <utility>
#include <vector>

#include "forge/pipeline/criterion.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metric.hpp"
#include "forge/pipeline/stage_kind.hpp"

namespace forge {

namespace pipeline_detail {
template <class T>
inline constexpr bool always_false_v = false;

// Instantiated only when a gate names a metric its stage kind does not measure, so that the
// compiler's "in instantiation of" line names the stage kind, the method and the metric.
template <class KindTag, class MethodT, class MetricT>
struct gate_metric_not_measured_by_stage {
  static_assert(always_false_v<MetricT>,
                "forge rule 4: this gate uses a metric that its stage kind does not measure "
                "(stage kind, method and metric are named in the 'In instantiation of' line "
                "above; a metric's `measured_by` lists the kinds that measure it). Move the "
                "criterion to the gate of a stage that measures it, e.g. refusal_accuracy "
                "belongs in an align<...> gate, perplexity_ratio in a compress<...> gate");
  static constexpr bool value = false;
};

template <stage_kind K>
struct kind_tag {};

// check_t<Ok, Failure>: `Failure` is instantiated (and its static_assert fires) only when
// Ok is false; std::conditional_t never instantiates the branch it does not pick.
struct satisfied {
  static constexpr bool value = true;
};
template <bool Ok, class Failure>
using check_t = std::conditional_t<Ok, satisfied, Failure>;
}  // namespace pipeline_detail

/// One stage of kind `Kind` running method `M` (use adapt<M>, compress<M>, align<M>, deploy<M>).
template <stage_kind Kind, Method M>
class stage {
 public:
  using method = M;                         ///< the method policy
  using params_type = typename M::params;   ///< the method's parameter aggregate
  using data_type = method_data_t<M>;       ///< the method's data type (or no_data)
  static constexpr stage_kind kind = Kind;  ///< the stage kind

  /// A stage with default parameters, empty data and no gate.
  stage() = default;
  /// A stage with parameters, empty data and no gate (e.g. a deploy stage).
  explicit stage(params_type params) : params_(std::move(params)) {}
  /// A stage with parameters and data, no gate.
  stage(params_type params, data_type data) : params_(std::move(params)), data_(std::move(data)) {}
  /// A stage with parameters and a gate, for methods that need no data.
  template <Metric... Ms>
  stage(params_type params, const gate<Ms...>& g)
      : params_(std::move(params)), criteria_(checked(g)) {}
  /// A stage with parameters, data and a gate.
  template <Metric... Ms>
  stage(params_type params, data_type data, const gate<Ms...>& g)
      : params_(std::move(params)), data_(std::move(data)), criteria_(checked(g)) {}

  /// The method's parameters.
  const params_type& params() const { return params_; }
  /// The stage's data.
  const data_type& data() const { return data_; }
  /// The gate's criteria, metric types erased, in the order written.
  const std::vector<criterion_record>& criteria() const { return criteria_; }

 private:
  template <Metric... Ms>
  static std::vector<criterion_record> checked(const gate<Ms...>& g) {
    // Rule 4: one check per metric, each naming the metric if it fails.
    [[maybe_unused]] const bool ok =
        (pipeline_detail::check_t<measures_v<Ms, Kind>,
                                  pipeline_detail::gate_metric_not_measured_by_stage<
                                      pipeline_detail::kind_tag<Kind>, M, Ms>>::value &&
         ...);
    return g.records();
  }

  params_type params_{};
  data_type data_{};
  std::vector<criterion_record> criteria_;
};

// The four kinds are aliases of stage<Kind, M> rather than derived classes, so that every
// diagnostic about a stage points at the line where the user wrote it (an inherited
// constructor would point into this header instead).

/// An Adapt stage (LoRA, QLoRA, DoRA, full fine-tuning) running method `M`.
template <Method M>
using adapt = stage<stage_kind::adapt, M>;
/// A Compress stage (RTN, NF4, GPTQ, AWQ, distillation) running method `M`.
template <Method M>
using compress = stage<stage_kind::compress, M>;
/// An Align stage (DPO, IPO, KTO, SimPO, ORPO ...) running method `M`.
template <Method M>
using align = stage<stage_kind::align, M>;
/// A Deploy stage (merged safetensors, PEFT adapter, GGUF, signed release) running method `M`.
template <Method M>
using deploy = stage<stage_kind::deploy, M>;

namespace pipeline_detail {
template <class T>
inline constexpr bool is_stage_v = false;
template <stage_kind K, class M>
inline constexpr bool is_stage_v<stage<K, M>> = true;
}  // namespace pipeline_detail

/// A stage: adapt<M>, compress<M>, align<M> or deploy<M> for a Method M.
template <class S>
concept Stage = pipeline_detail::is_stage_v<S>;

}  // namespace forge
