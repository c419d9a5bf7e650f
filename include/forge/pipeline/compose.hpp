#pragma once
// Composing a pipeline.
//
//   auto p = forge::pipeline(adapt<lora>{...}, compress<gptq<int4_g128>>{...}, deploy<...>{...});
//   auto r = p.run(model, backend::simd<>{}, {.out = "runs/1", .seed = 7});
//
// pipeline(...) checks rules 1-3 of DESIGN.md, research_order(...) rules 2-3; run() checks
// rule 5 for its backend and hands over to the runner in run.hpp.

#include <cstddef>
#include <type_traits>
#include <utility>

#include <boost/hana/at.hpp>
#include <boost/hana/tuple.hpp>

#include "forge/backend/backend.hpp"
#include "forge/pipeline/report.hpp"
#include "forge/pipeline/rules.hpp"
#include "forge/pipeline/stage.hpp"

namespace forge {

namespace pipeline_detail {
/// The runner of a pipeline type; defined in run.hpp.
template <class Pipeline>
struct runner;

template <class Runner>
concept runner_available = requires {
  Runner::available;
};
}  // namespace pipeline_detail

/// A pipeline: stages `S...` under ordering policy `Order` (paper_order or
/// research_order_policy). Built by forge::pipeline() or forge::research_order().
template <class Order, Stage... S>
class basic_pipeline {
 public:
  /// The number of stages.
  static constexpr std::size_t size = sizeof...(S);

  /// Takes the stages in execution order; rules 1-3 are checked here.
  explicit basic_pipeline(S... stages) : stages_(std::move(stages)...) {
    // Not constexpr: a failed rule then reports only its own message.
    [[maybe_unused]] const bool rules_hold = pipeline_detail::check_composition<Order, S...>();
  }

  /// The stages, as a Boost.Hana tuple.
  const boost::hana::tuple<S...>& stages() const { return stages_; }

  /// Runs every stage in order on `model` with `backend` (rule 5 is checked here), writing
  /// one report per stage into `opts.out`; stops at the first failed gate. Exceptions from a
  /// method are recorded in its stage report and run.json, then rethrown. Returns a
  /// run_report<Final>, Final being the last stage's model type. Needs run.hpp (included by
  /// forge/pipeline/pipeline.hpp).
  template <class Model, Backend B>
  auto run(Model model, B backend, const run_options& opts = {}) const {
    [[maybe_unused]] const bool backend_ok = pipeline_detail::check_backend<B, S...>();
    using runner =
        pipeline_detail::runner<std::conditional_t<sizeof(Model) != 0, basic_pipeline, void>>;
    static_assert(pipeline_detail::runner_available<runner>,
                  "forge: include forge/pipeline/run.hpp (or forge/pipeline/pipeline.hpp) to run "
                  "a pipeline");
    return runner::run(stages_, std::move(model), backend, opts);
  }

 private:
  boost::hana::tuple<S...> stages_;
};

/// A pipeline in the paper's order: Adapt <= Compress <= Align <= Deploy, kinds may repeat or
/// be absent, Deploy last and at most once, consecutive stages' representations fit.
template <Stage... S>
basic_pipeline<paper_order, S...> pipeline(S... stages) {
  return basic_pipeline<paper_order, S...>(std::move(stages)...);
}

/// A pipeline in any order of Adapt, Compress and Align (for ablations such as compressing
/// before adapting); Deploy is still last and at most once, and representations must fit.
template <Stage... S>
basic_pipeline<research_order_policy, S...> research_order(S... stages) {
  return basic_pipeline<research_order_policy, S...>(std::move(stages)...);
}

}  // namespace forge
