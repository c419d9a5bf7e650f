// The Adapt metrics against hand-computed values (Guo et al. 2017's ECE/MCE definitions).

#include <catch2/catch.hpp>

#include <cmath>

#include "forge/eval/metrics.hpp"

using namespace forge;

TEST_CASE("exact match counts identical answers") {
  const std::vector<std::string> pred = {"19", "7", "x", "42"}, ref = {"19", "8", "x", "42"};
  CHECK(eval::exact_match<std::string>(pred, ref) == 0.75);
  CHECK_THROWS_WITH(eval::exact_match<std::string>(std::span(pred).first(3), ref),
                    Catch::Contains("differ in number"));
}

TEST_CASE("ECE and MCE over equal-width bins") {
  // Bins of width 0.5: {0.2, 0.4} with outcomes {1, 0}: acc 0.5, conf 0.3 → gap 0.2;
  // {0.9, 1.0} with outcomes {1, 1}: acc 1, conf 0.95 → gap 0.05.
  const std::vector<double> conf = {0.2, 0.4, 0.9, 1.0};
  const bool ok[] = {true, false, true, true};
  const auto c = eval::calibration_error(conf, std::span<const bool>(ok, 4), 2);
  CHECK(c.ece == Approx(0.5 * 0.2 + 0.5 * 0.05));
  CHECK(c.mce == Approx(0.2));
  const auto perfect =
      eval::calibration_error(std::vector<double>{1.0, 1.0}, std::span<const bool>(ok + 2, 2));
  CHECK(perfect.ece == 0.0);
  const std::vector<double> bad = {1.5};
  CHECK_THROWS_WITH(eval::calibration_error(bad, std::span<const bool>(ok, 1)),
                    Catch::Contains("outside [0, 1]"));
}

TEST_CASE("perplexity, regression delta and the train/validation gap") {
  CHECK(eval::perplexity_from_loss(std::log(7.0)) == Approx(7.0));
  CHECK(eval::regression_delta(10.5, 10.0) == Approx(0.05));
  CHECK(eval::train_val_gap(1.25, 1.5) == 0.25);
  CHECK_THROWS(eval::regression_delta(1.0, 0.0));
}
