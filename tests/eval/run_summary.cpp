// The run summary and report.html: read back a real pipeline run (of the pipeline test
// doubles, whose measured values are their parameters, so the expected table is known) and
// a loss curve written by the trainer's own writer.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "doubles_run.hpp"
#include "forge/eval/run_summary.hpp"
#include "forge/train/loss_curve.hpp"
#include "support/fixtures.hpp"

using namespace forge;
using namespace forge::test;
namespace fs = std::filesystem;

namespace {

fs::path double_run(const std::string& name, double ppl_ratio) {
  const fs::path out = scratch(name);
  auto p = pipeline(
      adapt<fine_tune_double>{
          {.tag = "sft", .exact_match = 0.875}, {"sft"}, accept(exact_match >= 0.8)},
      compress<quantize_double>{{.tag = "int4", .perplexity_ratio = ppl_ratio},
                                {"calib"},
                                accept(perplexity_ratio <= 1.05)});
  (void)p.run(toy_model_double{}, backend::scalar{}, {.out = out, .seed = 3});
  return out;
}

}  // namespace

TEST_CASE("read_run returns each stage's gate verdicts as the reports recorded them") {
  const auto dir = double_run("summary_pass", 1.01);
  // A training stage's curve, written by the trainer's writer into the stage's directory.
  train::write_loss_curve(dir / "01_adapt", {{1, 2.5, 1e-3, 1, 10}, {2, 2.0, 1e-3, 1, 10}}, {});
  const auto s = eval::read_run(dir);
  REQUIRE(s.size() == 2);
  CHECK(s[0].kind == "adapt");
  CHECK(s[0].method == "fine_tune_double");
  REQUIRE(s[0].criteria.size() == 1);
  CHECK(s[0].criteria[0].metric == "exact_match");
  CHECK(s[0].criteria[0].measured == 0.875);  // exact: 0.875 is a dyadic rational
  CHECK(s[0].criteria[0].passed);
  REQUIRE(s[0].loss.size() == 2);
  CHECK(s[0].loss[1] == std::pair<double, double>{2.0, 2.0});
  CHECK(s[1].criteria[0].measured == 1.01);
  CHECK(s[1].loss.empty());

  const auto table = eval::summary_table(s);
  CHECK(table.find("exact_match") != std::string::npos);
  CHECK(table.find("0.875") != std::string::npos);
  CHECK(table.find("perplexity_ratio <= 1.05") != std::string::npos);
  CHECK(table.find("FAIL") == std::string::npos);
  // Every row has its columns at the header's offsets, whatever the names' lengths.
  {
    const auto first_nl = table.find('\n');
    const std::string header = table.substr(0, first_nl);
    const auto gate_col = header.find("gate"), verdict_col = header.find("verdict");
    const auto row_start = table.find('\n', first_nl + 1) + 1;
    const std::string row = table.substr(row_start, table.find('\n', row_start) - row_start);
    CHECK(row.substr(gate_col).starts_with("exact_match"));
    CHECK(row.substr(verdict_col).starts_with("pass"));
    CHECK(row[verdict_col - 1] == ' ');
  }

  const auto html = eval::report_html(s, "run <1>", {{"memory (MiB)", 20, 5}});
  CHECK(html.find("<title>run &lt;1&gt;</title>") != std::string::npos);  // escaped
  CHECK(html.find("<polyline") != std::string::npos);                     // the loss curve
  CHECK(html.find("Before and after") != std::string::npos);
}

TEST_CASE("a failed gate shows as FAIL in the table and the html") {
  const auto dir = double_run("summary_fail", 1.25);
  const auto s = eval::read_run(dir);
  REQUIRE(s.size() == 2);
  CHECK(s[1].status == "gate_failed");
  CHECK_FALSE(s[1].criteria[0].passed);
  CHECK(eval::summary_table(s).find("FAIL") != std::string::npos);
  CHECK(eval::report_html(s, "x").find("class=\"FAIL\"") != std::string::npos);
}

TEST_CASE("malformed run directories are named in the error") {
  const auto dir = double_run("summary_bad", 1.01);
  io::write_atomic(dir / "01_adapt" / "loss.csv", std::string("step,loss\n1,abc\n"));
  CHECK_THROWS_WITH(eval::read_run(dir), Catch::Contains("loss.csv") && Catch::Contains("line 2"));
  io::write_atomic(dir / "01_adapt.json", std::string("{\"stage\": 1}"));
  CHECK_THROWS_WITH(eval::read_run(dir), Catch::Contains("01_adapt.json"));
  fs::remove(dir / "run.json");
  CHECK_THROWS_WITH(eval::read_run(dir), Catch::Contains("run.json"));
}
