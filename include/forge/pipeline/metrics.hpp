#pragma once
// The metrics forge's stages measure, one type and one constexpr object each. The object is
// what a gate is written with (`accept(exact_match >= 0.80)`); the type names the stage kinds
// that measure it (DESIGN.md's stage table). Values are computed by the methods (eval/) and
// reported in their stage_result; a gate reads them by metric.

#include <string_view>

#include "forge/pipeline/metric.hpp"

namespace forge {

// ---- measured by Adapt ----

/// Fraction of held-out task prompts whose generated answer equals the reference exactly (0..1).
struct exact_match_t : metric<exact_match_t, stage_kind::adapt, stage_kind::compress> {
  static constexpr std::string_view name = "exact_match";
  static constexpr std::string_view unit = "fraction";
};
/// The exact_match metric, for gates: see exact_match_t.
inline constexpr exact_match_t exact_match{};

/// Perplexity exp(mean token negative log-likelihood) on held-out text (>= 1).
struct perplexity_t : metric<perplexity_t, stage_kind::adapt, stage_kind::compress> {
  static constexpr std::string_view name = "perplexity";
  static constexpr std::string_view unit = "perplexity";
};
/// The perplexity metric, for gates: see perplexity_t.
inline constexpr perplexity_t perplexity{};

/// Relative perplexity increase on general held-out text versus the stage input: ppl_out / ppl_in -
/// 1 (catastrophic-forgetting check).
struct regression_delta_t : metric<regression_delta_t, stage_kind::adapt> {
  static constexpr std::string_view name = "regression_delta";
  static constexpr std::string_view unit = "fraction";
};
/// The regression_delta metric, for gates: see regression_delta_t.
inline constexpr regression_delta_t regression_delta{};

/// Expected calibration error of answer confidences over equal-width bins (Guo et al. 2017, eq. 3),
/// 0..1.
struct ece_t : metric<ece_t, stage_kind::adapt> {
  static constexpr std::string_view name = "ece";
  static constexpr std::string_view unit = "fraction";
};
/// The ece metric, for gates: see ece_t.
inline constexpr ece_t ece{};

/// Maximum calibration error: the largest per-bin |accuracy - confidence| (Guo et al. 2017), 0..1.
struct mce_t : metric<mce_t, stage_kind::adapt> {
  static constexpr std::string_view name = "mce";
  static constexpr std::string_view unit = "fraction";
};
/// The mce metric, for gates: see mce_t.
inline constexpr mce_t mce{};

/// Validation loss minus training loss at the end of training, in nats per token (over-fitting
/// check).
struct train_val_gap_t : metric<train_val_gap_t, stage_kind::adapt, stage_kind::align> {
  static constexpr std::string_view name = "train_val_gap";
  static constexpr std::string_view unit = "nats";
};
/// The train_val_gap metric, for gates: see train_val_gap_t.
inline constexpr train_val_gap_t train_val_gap{};

// ---- measured by Compress ----

/// Bytes needed to hold the stage output's weights.
struct memory_bytes_t : metric<memory_bytes_t, stage_kind::compress> {
  static constexpr std::string_view name = "memory_bytes";
  static constexpr std::string_view unit = "bytes";
};
/// The memory_bytes metric, for gates: see memory_bytes_t.
inline constexpr memory_bytes_t memory_bytes{};

/// Output weight bytes divided by input weight bytes (0.25 = four times smaller).
struct memory_ratio_t : metric<memory_ratio_t, stage_kind::compress> {
  static constexpr std::string_view name = "memory_ratio";
  static constexpr std::string_view unit = "ratio";
};
/// The memory_ratio metric, for gates: see memory_ratio_t.
inline constexpr memory_ratio_t memory_ratio{};

/// Median wall time of one decoding step on the run's backend, in milliseconds.
struct latency_ms_t : metric<latency_ms_t, stage_kind::compress, stage_kind::deploy> {
  static constexpr std::string_view name = "latency_ms";
  static constexpr std::string_view unit = "milliseconds";
};
/// The latency_ms metric, for gates: see latency_ms_t.
inline constexpr latency_ms_t latency_ms{};

/// Decoding throughput on the run's backend, in generated tokens per second.
struct tokens_per_second_t : metric<tokens_per_second_t, stage_kind::compress, stage_kind::deploy> {
  static constexpr std::string_view name = "tokens_per_second";
  static constexpr std::string_view unit = "tokens/s";
};
/// The tokens_per_second metric, for gates: see tokens_per_second_t.
inline constexpr tokens_per_second_t tokens_per_second{};

/// Perplexity of the output divided by perplexity of the input on the same held-out text (1.0 = no
/// loss).
struct perplexity_ratio_t : metric<perplexity_ratio_t, stage_kind::compress> {
  static constexpr std::string_view name = "perplexity_ratio";
  static constexpr std::string_view unit = "ratio";
};
/// The perplexity_ratio metric, for gates: see perplexity_ratio_t.
inline constexpr perplexity_ratio_t perplexity_ratio{};

/// Task exact match of the output minus that of the input (negative = the stage lost accuracy).
struct task_score_delta_t : metric<task_score_delta_t, stage_kind::compress> {
  static constexpr std::string_view name = "task_score_delta";
  static constexpr std::string_view unit = "fraction";
};
/// The task_score_delta metric, for gates: see task_score_delta_t.
inline constexpr task_score_delta_t task_score_delta{};

/// Fraction of the regression suite's cases whose output still matches the reference (0..1).
struct regression_pass_rate_t : metric<regression_pass_rate_t, stage_kind::compress> {
  static constexpr std::string_view name = "regression_pass_rate";
  static constexpr std::string_view unit = "fraction";
};
/// The regression_pass_rate metric, for gates: see regression_pass_rate_t.
inline constexpr regression_pass_rate_t regression_pass_rate{};

// ---- measured by Align ----

/// Fraction of harmful prompts the model refuses (0..1).
struct refusal_accuracy_t : metric<refusal_accuracy_t, stage_kind::align> {
  static constexpr std::string_view name = "refusal_accuracy";
  static constexpr std::string_view unit = "fraction";
};
/// The refusal_accuracy metric, for gates: see refusal_accuracy_t.
inline constexpr refusal_accuracy_t refusal_accuracy{};

/// Fraction of benign prompts the model wrongly refuses (0..1).
struct false_refusal_rate_t : metric<false_refusal_rate_t, stage_kind::align> {
  static constexpr std::string_view name = "false_refusal_rate";
  static constexpr std::string_view unit = "fraction";
};
/// The false_refusal_rate metric, for gates: see false_refusal_rate_t.
inline constexpr false_refusal_rate_t false_refusal_rate{};

/// Fraction of adversarially rephrased harmful prompts the model still refuses (0..1).
struct jailbreak_resistance_t : metric<jailbreak_resistance_t, stage_kind::align> {
  static constexpr std::string_view name = "jailbreak_resistance";
  static constexpr std::string_view unit = "fraction";
};
/// The jailbreak_resistance metric, for gates: see jailbreak_resistance_t.
inline constexpr jailbreak_resistance_t jailbreak_resistance{};

/// Refusal accuracy after the stage minus before it, on the same prompts (−1..1).
struct refusal_gain_t : metric<refusal_gain_t, stage_kind::align> {
  static constexpr std::string_view name = "refusal_gain";
  static constexpr std::string_view unit = "fraction";
};
/// The refusal_gain metric, for gates: see refusal_gain_t.
inline constexpr refusal_gain_t refusal_gain{};

/// Jailbreak resistance after the stage minus before it, on the same prompts (−1..1).
struct jailbreak_resistance_gain_t : metric<jailbreak_resistance_gain_t, stage_kind::align> {
  static constexpr std::string_view name = "jailbreak_resistance_gain";
  static constexpr std::string_view unit = "fraction";
};
/// The jailbreak_resistance_gain metric, for gates: see jailbreak_resistance_gain_t.
inline constexpr jailbreak_resistance_gain_t jailbreak_resistance_gain{};

/// False-refusal rate after the stage minus before it, on the same prompts (−1..1).
struct false_refusal_change_t : metric<false_refusal_change_t, stage_kind::align> {
  static constexpr std::string_view name = "false_refusal_change";
  static constexpr std::string_view unit = "fraction";
};
/// The false_refusal_change metric, for gates: see false_refusal_change_t.
inline constexpr false_refusal_change_t false_refusal_change{};

/// Fraction of held-out preference pairs where the implicit reward ranks the chosen answer above
/// the rejected one (0..1).
struct preference_accuracy_t : metric<preference_accuracy_t, stage_kind::align> {
  static constexpr std::string_view name = "preference_accuracy";
  static constexpr std::string_view unit = "fraction";
};
/// The preference_accuracy metric, for gates: see preference_accuracy_t.
inline constexpr preference_accuracy_t preference_accuracy{};

/// Mean implicit-reward margin beta * (log-ratio chosen - log-ratio rejected) on held-out pairs
/// (Rafailov et al. 2023, eq. 5), in nats.
struct reward_margin_t : metric<reward_margin_t, stage_kind::align> {
  static constexpr std::string_view name = "reward_margin";
  static constexpr std::string_view unit = "nats";
};
/// The reward_margin metric, for gates: see reward_margin_t.
inline constexpr reward_margin_t reward_margin{};

/// Task exact match after alignment minus before (negative = the alignment tax).
struct helpfulness_delta_t : metric<helpfulness_delta_t, stage_kind::align> {
  static constexpr std::string_view name = "helpfulness_delta";
  static constexpr std::string_view unit = "fraction";
};
/// The helpfulness_delta metric, for gates: see helpfulness_delta_t.
inline constexpr helpfulness_delta_t helpfulness_delta{};

/// Mean per-token KL divergence of the policy from the reference model on held-out prompts, in
/// nats.
struct kl_to_reference_t : metric<kl_to_reference_t, stage_kind::align> {
  static constexpr std::string_view name = "kl_to_reference";
  static constexpr std::string_view unit = "nats";
};
/// The kl_to_reference metric, for gates: see kl_to_reference_t.
inline constexpr kl_to_reference_t kl_to_reference{};

// ---- measured by Deploy ----

/// 1 when every signature in the release verifies against its public key, else 0.
struct signature_valid_t : boolean_metric<signature_valid_t, stage_kind::deploy> {
  static constexpr std::string_view name = "signature_valid";
  static constexpr std::string_view unit = "boolean";
};
/// The signature_valid metric, for gates: see signature_valid_t.
inline constexpr signature_valid_t signature_valid{};

/// 1 when the artifact scan found nothing to reject (no pickles, no unexpected files, hashes match
/// the manifest), else 0.
struct artifact_scan_clean_t : boolean_metric<artifact_scan_clean_t, stage_kind::deploy> {
  static constexpr std::string_view name = "artifact_scan_clean";
  static constexpr std::string_view unit = "boolean";
};
/// The artifact_scan_clean metric, for gates: see artifact_scan_clean_t.
inline constexpr artifact_scan_clean_t artifact_scan_clean{};

/// Median request latency of the load test against the released model, in milliseconds.
struct load_p50_ms_t : metric<load_p50_ms_t, stage_kind::deploy> {
  static constexpr std::string_view name = "load_p50_ms";
  static constexpr std::string_view unit = "milliseconds";
};
/// The load_p50_ms metric, for gates: see load_p50_ms_t.
inline constexpr load_p50_ms_t load_p50_ms{};

/// 95th-percentile request latency of the load test, in milliseconds.
struct load_p95_ms_t : metric<load_p95_ms_t, stage_kind::deploy> {
  static constexpr std::string_view name = "load_p95_ms";
  static constexpr std::string_view unit = "milliseconds";
};
/// The load_p95_ms metric, for gates: see load_p95_ms_t.
inline constexpr load_p95_ms_t load_p95_ms{};

}  // namespace forge
