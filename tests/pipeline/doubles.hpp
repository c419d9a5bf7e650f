#pragma once
// Test doubles for the pipeline machinery: a toy model and method policies whose "measured"
// metrics are simply the values in their parameters. They exist to exercise composition,
// ordering, gates and reports before real methods exist, and live in tests/ only.
//
// This header is enough to compose pipelines (the compile-time rule checks include only it);
// doubles_run.hpp adds what running them needs (hashing, file writes, JSON).

#include <string>
#include <string_view>
#include <vector>

#include "forge/pipeline/compose.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/stage.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"

namespace forge::test {

/// A model double: the list of methods applied so far (in order) and a counter.
struct toy_model_double {
  std::vector<std::string> history;
  int value = 0;
  /// SHA-256 of the history and value, so every distinct model has a distinct digest
  /// (defined in doubles_run.hpp).
  std::string digest() const;
};

/// Parameters shared by the doubles: the metric values to "measure" and an artifact to write.
struct double_params {
  std::string tag = "step";          ///< appended to the model's history
  double exact_match = 0.9;          ///< reported as exact_match (adapt/compress doubles)
  double regression_delta = 0.01;    ///< reported as regression_delta (adapt double)
  double perplexity_ratio = 1.01;    ///< reported as perplexity_ratio (compress double)
  double refusal_accuracy = 0.95;    ///< reported as refusal_accuracy (align double)
  double false_refusal_rate = 0.02;  ///< reported as false_refusal_rate (align double)
  bool signature_valid = true;       ///< reported as signature_valid (deploy double)
  std::string artifact = "abc";      ///< content of the artifact file; empty = write none
};

/// Data double: a name whose hash the stage reports.
struct data_double {
  std::string name = "none";
};

namespace detail {
// The common body of the doubles: record the step, write the artifact, report the data hash
// (defined in doubles_run.hpp).
template <class B>
stage_result<toy_model_double> step(const stage_context<B>& ctx, const double_params& p,
                                    const data_double& d, toy_model_double in,
                                    std::string_view what);
}  // namespace detail

/// Adapt double: dense f32 -> dense f32 on the CPU; measures exact_match, regression_delta.
struct fine_tune_double {
  static constexpr std::string_view name = "fine_tune_double";
  using params = double_params;
  using data = data_double;
  using accepts = repr::dense_f32;
  using produces = repr::dense_f32;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(exact_match, p.exact_match).set(regression_delta, p.regression_delta);
    return r;
  }
};

/// Compress double: dense f32 -> int4 g128; measures perplexity_ratio, exact_match.
struct quantize_double {
  static constexpr std::string_view name = "quantize_double";
  using params = double_params;
  using data = data_double;
  using accepts = representations<repr::dense_f32, repr::dense_bf16>;
  using produces = repr::int4_g128;
  using backends = all_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(perplexity_ratio, p.perplexity_ratio).set(exact_match, p.exact_match);
    return r;
  }
};

/// Compress double that keeps the representation (e.g. distillation to a dense student).
struct distil_double {
  static constexpr std::string_view name = "distil_double";
  using params = double_params;
  using data = data_double;
  using accepts = repr::dense_f32;
  using produces = repr::dense_f32;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(perplexity_ratio, p.perplexity_ratio);
    return r;
  }
};

/// Align double: LoRA on a quantized (or dense) base -> int4 g128 + LoRA; measures
/// refusal_accuracy and false_refusal_rate.
struct preference_double {
  static constexpr std::string_view name = "preference_double";
  using params = double_params;
  using data = data_double;
  using accepts =
      representations<repr::int4_g128, repr::with_lora<repr::int4_g128>, repr::dense_f32>;
  using produces = repr::with_lora<repr::int4_g128>;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(refusal_accuracy, p.refusal_accuracy)
        .set(false_refusal_rate, p.false_refusal_rate);
    return r;
  }
};

/// Align double on a dense model (dense f32 -> dense f32), for orders that align first.
struct dense_preference_double {
  static constexpr std::string_view name = "dense_preference_double";
  using params = double_params;
  using data = data_double;
  using accepts = repr::dense_f32;
  using produces = repr::dense_f32;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(refusal_accuracy, p.refusal_accuracy);
    return r;
  }
};

/// Deploy double: any of the above -> release; measures signature_valid. Needs no data.
struct release_double {
  static constexpr std::string_view name = "release_double";
  using params = double_params;
  using accepts =
      representations<repr::dense_f32, repr::int4_g128, repr::with_lora<repr::int4_g128>>;
  using produces = repr::release;
  using backends = all_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const no_data&, toy_model_double in) {
    auto r = detail::step(ctx, p, data_double{"release"}, std::move(in), name);
    r.data.clear();
    r.metrics.set(signature_valid, p.signature_valid ? 1.0 : 0.0);
    return r;
  }
};

/// A method that runs only on CUDA (for rule 5).
struct cuda_only_double {
  static constexpr std::string_view name = "cuda_only_double";
  using params = double_params;
  using data = data_double;
  using accepts = repr::dense_f32;
  using produces = repr::int4_g128;
  using backends = backend_set<backend::cuda>;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    return detail::step(ctx, p, d, std::move(in), name);
  }
};

/// Full fine-tuning double: needs a dense base (for rule 3).
struct full_fine_tune_double {
  static constexpr std::string_view name = "full_fine_tune_double";
  using params = double_params;
  using data = data_double;
  using accepts = representations<repr::dense_f32, repr::dense_bf16>;
  using produces = repr::dense_f32;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(exact_match, p.exact_match);
    return r;
  }
};

/// LoRA-on-quantized double: trains adapters on an int4 base (the allowed twin of rule 3).
struct lora_on_quantized_double {
  static constexpr std::string_view name = "lora_on_quantized_double";
  using params = double_params;
  using data = data_double;
  using accepts = representations<repr::dense_f32, repr::int4_g128>;
  using produces = repr::with_lora<repr::int4_g128>;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<toy_model_double> apply(const stage_context<B>& ctx, const params& p,
                                              const data& d, toy_model_double in) {
    auto r = detail::step(ctx, p, d, std::move(in), name);
    r.metrics.set(exact_match, p.exact_match);
    return r;
  }
};

}  // namespace forge::test
