#pragma once
// The composition rules of DESIGN.md, checked by the compiler:
//   1. stage kinds in order Adapt <= Compress <= Align <= Deploy, unless research_order;
//   2. Deploy at most once, and last, everywhere;
//   3. each method accepts the representation the previous method produces;
//   4. a gate only uses metrics its stage measures (checked in stage.hpp);
//   5. the backend supports every method (checked when the pipeline runs).
// Each violation instantiates a named template whose static_assert explains what to do;
// the compiler's "In instantiation of" line names the stages involved.

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "forge/backend/backend.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/representation.hpp"
#include "forge/pipeline/stage.hpp"

namespace forge {

/// Ordering policy of a pipeline built with forge::pipeline(): rule 1 applies.
struct paper_order {};
/// Ordering policy of a pipeline built with forge::research_order(): any order of kinds,
/// Deploy still last and unique.
struct research_order_policy {};

namespace pipeline_detail {

/// A 1-based stage position, so that diagnostics read "stage_at<2, ...>".
template <std::size_t Position, class S>
struct stage_at {};

template <class Earlier, class Later>
struct stages_out_of_order {
  static_assert(always_false_v<Later>,
                "forge rule 1: stage kinds must run in the order Adapt -> Compress -> Align -> "
                "Deploy (a kind may repeat or be absent); the two stages named in the 'In "
                "instantiation of' line above are the wrong way round. Swap them, or build the "
                "pipeline with forge::research_order(...) to study another order on purpose");
  static constexpr bool value = false;
};

template <class DeployStage, class Following>
struct deploy_not_last {
  static_assert(always_false_v<DeployStage>,
                "forge rule 2: Deploy must be the last stage and may appear only once, in "
                "forge::pipeline and forge::research_order alike; the deploy stage named first "
                "in the 'In instantiation of' line above is followed by another stage. Move it "
                "to the end, or remove the extra deploy");
  static constexpr bool value = false;
};

template <class Producer, class Produced, class Consumer, class Accepted>
struct representation_mismatch {
  static_assert(always_false_v<Consumer>,
                "forge rule 3: a stage cannot take the model the stage before it produces; the "
                "'In instantiation of' line above names the earlier stage, the representation "
                "its method produces, the later stage and the representations its method "
                "accepts. Insert a stage that produces an accepted representation, or choose a "
                "method that accepts this one (e.g. LoRA/QLoRA on a quantized base instead of "
                "full fine-tuning, which needs a dense base)");
  static constexpr bool value = false;
};

template <class StageAt, class Method, class BackendT>
struct backend_not_supported {
  static_assert(always_false_v<BackendT>,
                "forge rule 5: a method in this pipeline does not support the backend passed "
                "to run(); the 'In instantiation of' line above names the stage, its method and "
                "the backend. Run on a backend listed in the method's `backends`, or choose a "
                "method that supports this backend (e.g. a CPU implementation for "
                "backend::simd<> or backend::scalar)");
  static constexpr bool value = false;
};

template <std::size_t I, class... S>
using nth_t = std::tuple_element_t<I, std::tuple<S...>>;

// Rules 1-3 on the pair of stages at 0-based positions I and I + 1.
template <class Order, std::size_t I, class... S>
constexpr bool check_pair() {
  using A = nth_t<I, S...>;
  using B = nth_t<I + 1, S...>;
  using PA = stage_at<I + 1, A>;
  using PB = stage_at<I + 2, B>;
  constexpr bool deploy_ok = A::kind != stage_kind::deploy;
  constexpr bool order_ok =
      std::is_same_v<Order, research_order_policy> || !deploy_ok || A::kind <= B::kind;
  using produced = typename A::method::produces;
  using accepted = typename B::method::accepts;
  constexpr bool fit_ok = !deploy_ok || fits_v<produced, accepted>;
  return check_t<deploy_ok, deploy_not_last<PA, PB>>::value &&
         check_t<order_ok, stages_out_of_order<PA, PB>>::value &&
         check_t<fit_ok, representation_mismatch<PA, produced, PB, accepted>>::value;
}

template <class Order, class... S, std::size_t... I>
constexpr bool check_pairs(std::index_sequence<I...>) {
  return (check_pair<Order, I, S...>() && ...);
}

/// Rules 1-3 over a whole pipeline; true when they hold (otherwise compilation stops).
template <class Order, class... S>
constexpr bool check_composition() {
  static_assert(sizeof...(S) > 0, "forge: a pipeline needs at least one stage");
  if constexpr (sizeof...(S) > 1)
    return check_pairs<Order, S...>(std::make_index_sequence<sizeof...(S) - 1>{});
  else
    return true;
}

template <class B, class... S, std::size_t... I>
constexpr bool check_backend_at(std::index_sequence<I...>) {
  return (check_t<supports_backend_v<typename S::method, B>,
                  backend_not_supported<stage_at<I + 1, S>, typename S::method, B>>::value &&
          ...);
}

/// Rule 5 over a whole pipeline; true when it holds (otherwise compilation stops).
template <class B, class... S>
constexpr bool check_backend() {
  return check_backend_at<B, S...>(std::index_sequence_for<S...>{});
}

}  // namespace pipeline_detail
}  // namespace forge
