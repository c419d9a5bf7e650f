#pragma once
// The quantities the Adapt stage reports, as plain functions of measured values:
//   exact match        fraction of answers equal to their reference
//   perplexity         exp(mean negative log-likelihood per token)
//   regression delta   ppl_after / ppl_before − 1 on general held-out text (forgetting)
//   ECE / MCE          calibration over equal-width confidence bins (Guo et al. 2017, §2):
//                      ECE = Σ_b (n_b / n)·|acc_b − conf_b|,  MCE = max_b |acc_b − conf_b|
//   train/val gap      validation loss − training loss, nats per token

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::eval {

/// Fraction of positions where predictions[i] == references[i] (0 for no items).
template <class A>
double exact_match(std::span<const A> predictions, std::span<const A> references) {
  require(predictions.size() == references.size(),
          {.what = "predictions and references differ in number",
           .place = "exact_match",
           .expected = std::to_string(references.size()),
           .found = std::to_string(predictions.size())});
  if (predictions.empty()) return 0.0;
  std::size_t ok = 0;
  for (std::size_t i = 0; i < predictions.size(); ++i) ok += predictions[i] == references[i];
  return double(ok) / double(predictions.size());
}

/// exp(mean NLL) from a mean loss in nats per token.
inline double perplexity_from_loss(double mean_nll) {
  return std::exp(mean_nll);
}

/// Relative perplexity change: after / before − 1 (positive = the model got worse).
inline double regression_delta(double ppl_after, double ppl_before) {
  require(ppl_before > 0, {.what = "reference perplexity must be positive",
                           .place = "regression_delta",
                           .found = str(ppl_before)});
  return ppl_after / ppl_before - 1.0;
}

/// Validation minus training loss (nats per token).
inline double train_val_gap(double train_loss, double val_loss) {
  return val_loss - train_loss;
}

/// Expected and maximum calibration error.
struct calibration {
  double ece = 0;
  double mce = 0;
};

/// ECE and MCE of confidences in [0, 1] against correctness, over `bins` equal-width bins
/// (a confidence of exactly 1 falls in the last bin; empty bins are skipped).
inline calibration calibration_error(std::span<const double> confidence,
                                     std::span<const bool> correct, std::size_t bins = 10) {
  require(confidence.size() == correct.size(),
          {.what = "confidences and outcomes differ in number", .place = "calibration_error"});
  require(bins >= 1, {.what = "need at least one bin", .place = "calibration_error"});
  std::vector<double> conf(bins, 0.0), acc(bins, 0.0);
  std::vector<std::size_t> cnt(bins, 0);
  for (std::size_t i = 0; i < confidence.size(); ++i) {
    const double c = confidence[i];
    require(c >= 0 && c <= 1, {.what = "confidence outside [0, 1]",
                               .place = "item " + std::to_string(i),
                               .found = str(c)});
    const auto b = std::min(bins - 1, std::size_t(c * double(bins)));
    conf[b] += c, acc[b] += correct[i] ? 1.0 : 0.0, ++cnt[b];
  }
  calibration r;
  if (confidence.empty()) return r;
  for (std::size_t b = 0; b < bins; ++b) {
    if (!cnt[b]) continue;
    const double gap = std::abs(acc[b] / double(cnt[b]) - conf[b] / double(cnt[b]));
    r.ece += double(cnt[b]) / double(confidence.size()) * gap;
    r.mce = std::max(r.mce, gap);
  }
  return r;
}

}  // namespace forge::eval
