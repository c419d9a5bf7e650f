// Criteria, gates and metrics: the runtime half of the gate rules.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/report.hpp"
#include "forge/pipeline/representation.hpp"

using namespace forge;

TEST_CASE("a metric compared with a number builds a criterion with that threshold") {
  constexpr auto c = exact_match >= 0.8;
  static_assert(std::is_same_v<decltype(c)::metric_type, exact_match_t>);
  static_assert(c.op == comparison::greater_equal && c.threshold == 0.8);
  const auto r = record_of(perplexity_ratio <= 1.05);
  CHECK(r.metric == "perplexity_ratio");
  CHECK(r.unit == "ratio");
  CHECK(r.text() == "perplexity_ratio <= 1.05");
}

TEST_CASE("criteria hold exactly as the comparison is written") {
  // Boundaries are inclusive for >= and <=, exclusive for > and <: a threshold is a
  // promise about the measured number, compared without tolerance.
  CHECK(evaluate(record_of(exact_match >= 0.8), 0.8).passed);
  CHECK_FALSE(evaluate(record_of(exact_match > 0.8), 0.8).passed);
  CHECK(evaluate(record_of(exact_match > 0.8), 0.8000001).passed);
  CHECK(evaluate(record_of(regression_delta <= 0.03), 0.03).passed);
  CHECK_FALSE(evaluate(record_of(regression_delta <= 0.03), 0.0300001).passed);
  CHECK_FALSE(evaluate(record_of(latency_ms < 5.0), 5.0).passed);
  CHECK(evaluate(record_of(memory_bytes == 4096.0), 4096.0).passed);
  CHECK_FALSE(evaluate(record_of(memory_bytes == 4096.0), 4095.0).passed);
}

TEST_CASE("a NaN or a missing measurement never passes a criterion") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (auto rec : {record_of(exact_match >= 0.0), record_of(exact_match <= 1.0),
                   record_of(exact_match == 0.0)}) {
    CHECK_FALSE(evaluate(rec, nan).passed);
    const auto v = evaluate(rec, std::nullopt);
    CHECK_FALSE(v.passed);
    CHECK(std::isnan(v.margin()));
  }
}

TEST_CASE("the margin is measured minus threshold") {
  const auto v = evaluate(record_of(perplexity_ratio <= 1.05), 1.25);
  CHECK_FALSE(v.passed);
  CHECK(v.margin() == Approx(0.2).epsilon(1e-12));  // 1.25 - 1.05 in doubles
}

TEST_CASE("accept collects criteria in order and a boolean metric alone means == 1") {
  const auto g = accept(exact_match >= 0.8, regression_delta <= 0.03, signature_valid);
  const auto recs = g.records();
  REQUIRE(recs.size() == 3);
  CHECK(recs[0].text() == "exact_match >= 0.8");
  CHECK(recs[1].text() == "regression_delta <= 0.03");
  CHECK(recs[2].text() == "signature_valid == 1");

  metric_values m;
  m.set(exact_match, 0.85).set(regression_delta, 0.01).set(signature_valid, 1.0);
  CHECK(evaluate(recs, m).passed());
  m.set(signature_valid, 0.0);
  const auto gv = evaluate(recs, m);
  CHECK_FALSE(gv.passed());
  REQUIRE(gv.first_failure() != nullptr);
  CHECK(gv.first_failure()->criterion.metric == "signature_valid");
}

TEST_CASE("a gate fails when its metric was not measured, and names the first failure") {
  const auto recs = accept(exact_match >= 0.8, ece <= 0.1).records();
  metric_values m;
  m.set(exact_match, 0.5);  // fails; ece is missing and fails too
  const auto gv = evaluate(recs, m);
  CHECK_FALSE(gv.verdicts[0].passed);
  CHECK_FALSE(gv.verdicts[1].passed);
  CHECK_FALSE(gv.verdicts[1].measured.has_value());
  CHECK(gv.first_failure() == &gv.verdicts[0]);
  CHECK(evaluate(std::vector<criterion_record>{}, m).passed());  // an empty gate passes
}

TEST_CASE("metrics name the stage kinds that measure them") {
  static_assert(measures_v<exact_match_t, stage_kind::adapt>);
  static_assert(!measures_v<refusal_accuracy_t, stage_kind::adapt>);
  static_assert(measures_v<refusal_accuracy_t, stage_kind::align>);
  static_assert(measures_v<perplexity_ratio_t, stage_kind::compress>);
  static_assert(measures_v<load_p95_ms_t, stage_kind::deploy>);
  static_assert(!measures_v<load_p95_ms_t, stage_kind::compress>);
  CHECK(name_of(stage_kind::compress) == "compress");
}

TEST_CASE("representation tags spell their parameters") {
  static_assert(repr::int4_g128::name == "int4 g128");
  static_assert(repr::int4_group<64>::name == "int4 g64");
  static_assert(repr::nf4_lora::name == "nf4 + lora");
  static_assert(repr::with_lora<repr::int4_g32>::name == "int4 g32 + lora");
  static_assert(fits_v<repr::nf4, representations<repr::dense_f32, repr::nf4>>);
  static_assert(!fits_v<repr::int4_g128, repr::dense_f32>);
  CHECK(std::string(repr::with_lora<repr::int4_group<1024>>::name) == "int4 g1024 + lora");
}

TEST_CASE("stage seeds follow SplitMix64 and reports are named by position and kind") {
  // Reference outputs of SplitMix64 (Steele, Lea & Flood 2014; Vigna's splitmix64.c) started
  // from state 0: stage_seed(0, i) is its (i + 1)-th output.
  static_assert(stage_seed(0, 0) == 0xe220a8397b1dcdafULL);
  static_assert(stage_seed(0, 1) == 0x6e789e6aa1b965f4ULL);
  static_assert(stage_seed(0, 2) == 0x06c45d188009454fULL);
  CHECK(stage_seed(7, 1) != stage_seed(8, 1));
  CHECK(stage_file_stem(1, stage_kind::adapt) == "01_adapt");
  CHECK(stage_file_stem(12, stage_kind::deploy) == "12_deploy");
}
