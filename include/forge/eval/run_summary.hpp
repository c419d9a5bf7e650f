#pragma once
// Reads a pipeline run's directory (run.json, the per-stage reports NN_<kind>.json and the
// loss curves NN_<kind>/loss.csv that training methods write) and renders it for people: a
// one-screen text table of every gate criterion (metric per stage vs its threshold) and a
// self-contained report.html with SVG plots — the loss curve of each training stage, the gate
// metrics per stage, and before/after comparisons the caller measured (memory, latency).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/core/json.hpp"
#include "forge/eval/svg_chart.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge::eval {

/// One criterion of a stage's gate as the report recorded it.
struct criterion_summary {
  std::string text{};                ///< e.g. "exact_match >= 0.5"
  std::string metric{};              ///< the metric's name
  std::optional<double> measured{};  ///< absent when the stage did not measure it
  double threshold = 0;              ///< the gate's threshold
  bool passed = false;               ///< the verdict
};

/// What report.html and the summary table show of one stage.
struct stage_summary {
  std::size_t index = 0;                          ///< 1-based position in the pipeline
  std::string kind{};                             ///< adapt, compress, align or deploy
  std::string method{};                           ///< the method's name
  std::string status{};                           ///< passed, gate_failed or error
  double wall_time_s = 0;                         ///< wall time of the stage
  std::map<std::string, double> metrics{};        ///< everything the stage measured
  std::vector<criterion_summary> criteria{};      ///< the gate's verdicts
  std::vector<std::pair<double, double>> loss{};  ///< (step, training loss), if it trained
};

namespace detail {

inline double as_number(const nlohmann::json& j) {
  return j.is_number() ? j.get<double>() : std::numeric_limits<double>::quiet_NaN();
}

// Reads `step,loss,...` CSV as written by train::write_loss_curve; other files are errors.
inline std::vector<std::pair<double, double>> read_loss_csv(const std::filesystem::path& p) {
  std::vector<std::pair<double, double>> out;
  std::istringstream in(io::read_file(p));
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (n == 1) {
      require(line.rfind("step,loss", 0) == 0, {.what = "not a loss curve",
                                                .file = p.string(),
                                                .place = at_line(1),
                                                .expected = "a header starting with step,loss",
                                                .found = line.substr(0, 40)});
      continue;
    }
    if (line.empty()) continue;
    const auto c1 = line.find(','), c2 = line.find(',', c1 == std::string::npos ? c1 : c1 + 1);
    require(c1 != std::string::npos && c2 != std::string::npos, {.what = "malformed loss curve row",
                                                                 .file = p.string(),
                                                                 .place = at_line(n),
                                                                 .expected = "step,loss,...",
                                                                 .found = line.substr(0, 40)});
    try {
      out.emplace_back(std::stod(line.substr(0, c1)), std::stod(line.substr(c1 + 1, c2 - c1 - 1)));
    } catch (const std::exception&) {
      throw error({.what = "malformed loss curve row",
                   .file = p.string(),
                   .place = at_line(n),
                   .expected = "numbers",
                   .found = line.substr(0, 40)});
    }
  }
  return out;
}

inline std::string fixed(double v, int digits = 4) {
  if (!std::isfinite(v)) return "n/a";
  char b[48];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

inline std::string pad(std::string s, std::size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}

}  // namespace detail

/// The summary of one stage report `r` (parsed from `file`), with the loss curve from the
/// stage's artifact directory (`file` without ".json") when it wrote one. forge::error naming
/// the file when the report lacks a field.
inline stage_summary summarize_report(const nlohmann::json& r, const std::filesystem::path& file) {
  try {
    stage_summary s;
    s.index = r.at("stage").at("index").get<std::size_t>();
    s.kind = r.at("stage").at("kind").get<std::string>();
    s.method = r.at("method").at("name").get<std::string>();
    s.status = r.at("status").get<std::string>();
    s.wall_time_s = r.value("wall_time_s", 0.0);
    for (const auto& [k, v] : r.at("metrics").items()) s.metrics[k] = detail::as_number(v);
    for (const auto& c : r.at("gate").at("criteria")) {
      criterion_summary cs{.text = c.at("criterion").get<std::string>(),
                           .metric = c.at("metric").get<std::string>(),
                           .threshold = detail::as_number(c.at("threshold")),
                           .passed = c.at("passed").get<bool>()};
      if (c.at("measured").is_number()) cs.measured = c.at("measured").get<double>();
      s.criteria.push_back(std::move(cs));
    }
    const auto curve = file.parent_path() / file.stem() / "loss.csv";
    if (std::filesystem::is_regular_file(curve)) s.loss = detail::read_loss_csv(curve);
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw error({.what = "malformed stage report",
                 .file = file.string(),
                 .expected = "a forge.stage_report/1 document",
                 .found = e.what()});
  }
}

/// Reads the stage reports of the run in `dir` (in pipeline order, as run.json lists them)
/// and each stage's loss curve when it wrote one. forge::error naming the file when run.json
/// or a report is missing or malformed.
inline std::vector<stage_summary> read_run(const std::filesystem::path& dir) {
  const auto run = load_json(dir / "run.json");
  std::vector<stage_summary> out;
  const auto& reports = run.at("reports");
  for (const auto& name : reports) {
    const auto file = dir / name.get<std::string>();
    out.push_back(summarize_report(load_json(file), file));
  }
  return out;
}

/// A one-screen text table: one row per gate criterion (stage, method, metric, measured,
/// gate, verdict) and the stage's wall time.
inline std::string summary_table(const std::vector<stage_summary>& stages) {
  using detail::pad;
  // Columns as wide as their longest entry (at least the header), two spaces apart.
  std::size_t wm = 8, wg = 6, wmeth = 8;
  for (const auto& st : stages) {
    wmeth = std::max(wmeth, st.method.size());
    for (const auto& c : st.criteria)
      wm = std::max(wm, c.metric.size()), wg = std::max(wg, c.text.size());
  }
  wm += 2, wg += 2, wmeth += 2;
  std::string s = pad("stage", 12) + pad("method", wmeth) + pad("metric", wm) +
                  pad("measured", 12) + pad("gate", wg) + pad("verdict", 9) + "time\n";
  s += std::string(12 + wmeth + wm + 12 + wg + 9 + 8, '-') + "\n";
  for (const auto& st : stages) {
    const std::string head = std::to_string(st.index) + " " + st.kind;
    if (st.criteria.empty())
      s += pad(head, 12) + pad(st.method, wmeth) + pad("(no gate)", wm) + pad("", 12) +
           pad("", wg) + pad(st.status, 9) + detail::fixed(st.wall_time_s, 3) + " s\n";
    for (std::size_t i = 0; i < st.criteria.size(); ++i) {
      const auto& c = st.criteria[i];
      s += pad(i == 0 ? head : "", 12) + pad(i == 0 ? st.method : "", wmeth) + pad(c.metric, wm) +
           pad(c.measured ? detail::fixed(*c.measured) : "missing", 12) + pad(c.text, wg) +
           pad(c.passed ? "pass" : "FAIL", 9) +
           (i == 0 ? detail::fixed(st.wall_time_s, 3) + " s" : "") + "\n";
    }
  }
  return s;
}

/// A before/after comparison the caller measured, e.g. {"memory (MiB)", 22.1, 5.3}.
struct before_after {
  std::string label{};
  double before = 0;
  double after = 0;
};

/// Before/after pairs the stages recorded: from a Compress stage's compression.json the model
/// weight memory (MiB), decode latency (ms/token) and held-out perplexity; from an Align
/// stage's metrics refusal accuracy and jailbreak resistance (after − gain = before).
inline std::vector<before_after> recorded_comparisons(
    const std::vector<std::pair<std::filesystem::path, nlohmann::json>>& reports) {
  std::vector<before_after> out;
  for (const auto& [file, r] : reports) {
    const auto kind = r.at("stage").value("kind", "");
    if (kind == "compress") {
      const auto c = file.parent_path() / file.stem() / "compression.json";
      if (!std::filesystem::is_regular_file(c)) continue;
      const auto j = load_json(c);
      if (j.contains("bytes"))
        out.push_back({"weight memory (MiB)", j["bytes"].value("model_before", 0.0) / 1048576.0,
                       j["bytes"].value("model_after", 0.0) / 1048576.0});
      if (j.contains("latency_ms_per_token") && j["latency_ms_per_token"].is_object())
        out.push_back({"decode latency (ms/token)", j["latency_ms_per_token"].value("before", 0.0),
                       j["latency_ms_per_token"].value("after", 0.0)});
      if (j.contains("perplexity"))
        out.push_back({"held-out perplexity", j["perplexity"].value("before", 0.0),
                       j["perplexity"].value("after", 0.0)});
    } else if (kind == "align") {
      const auto& m = r.at("metrics");
      auto pair = [&](const char* label, const char* after, const char* gain) {
        if (m.contains(after) && m.contains(gain) && m[after].is_number() && m[gain].is_number())
          out.push_back(
              {label, m[after].get<double>() - m[gain].get<double>(), m[after].get<double>()});
      };
      pair("refusal accuracy", "refusal_accuracy", "refusal_gain");
      pair("jailbreak resistance", "jailbreak_resistance", "jailbreak_resistance_gain");
      pair("false-refusal rate", "false_refusal_rate", "false_refusal_change");
    }
  }
  return out;
}

/// Self-contained HTML (inline SVG, no scripts): title, the summary table, one loss plot per
/// training stage, the gate metrics of each stage as bars (measured vs threshold), and the
/// before/after comparisons.
inline std::string report_html(const std::vector<stage_summary>& stages, std::string_view title,
                               const std::vector<before_after>& comparisons = {}) {
  using detail::xml_escape;
  std::string h = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" +
                  xml_escape(title) +
                  "</title>\n<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}"
                  "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
                  "text-align:left}.FAIL{color:#c00;font-weight:bold}</style></head><body>\n";
  h += "<h1>" + xml_escape(title) +
       "</h1>\n<h2>Gates</h2>\n<table><tr><th>stage</th>"
       "<th>method</th><th>metric</th><th>measured</th><th>gate</th><th>verdict</th>"
       "<th>time (s)</th></tr>\n";
  for (const auto& st : stages)
    for (const auto& c : st.criteria)
      h += "<tr><td>" + std::to_string(st.index) + " " + xml_escape(st.kind) + "</td><td>" +
           xml_escape(st.method) + "</td><td>" + xml_escape(c.metric) + "</td><td>" +
           (c.measured ? detail::fixed(*c.measured) : "missing") + "</td><td>" +
           xml_escape(c.text) + "</td><td class=\"" + (c.passed ? "pass" : "FAIL") + "\">" +
           (c.passed ? "pass" : "FAIL") + "</td><td>" + detail::fixed(st.wall_time_s, 3) +
           "</td></tr>\n";
  h += "</table>\n";
  bool any_loss = false;
  for (const auto& st : stages) any_loss = any_loss || !st.loss.empty();
  if (any_loss) {
    h += "<h2>Training loss per stage</h2>\n";
    for (const auto& st : stages)
      if (!st.loss.empty())
        h += line_chart(
            {{st.method + " loss", st.loss}},
            {.title = "stage " + std::to_string(st.index) + ": " + st.kind + " (" + st.method + ")",
             .x_label = "optimizer step",
             .y_label = "loss (nats/token)"});
  }
  h += "<h2>Gate metrics per stage</h2>\n";
  for (const auto& st : stages) {
    if (st.criteria.empty()) continue;
    std::vector<bar_group> g;
    for (const auto& c : st.criteria)
      g.push_back({c.metric, {c.measured.value_or(std::nan("")), c.threshold}});
    h += bar_chart(
        g, {"measured", "threshold"},
        {.title = "stage " + std::to_string(st.index) + ": " + st.kind + " (" + st.method + ")",
         .y_label = "value"});
  }
  if (!comparisons.empty()) {
    h += "<h2>Before and after</h2>\n";
    for (const auto& c : comparisons)
      h += bar_chart({{c.label, {c.before, c.after}}}, {"before", "after"},
                     {.title = c.label, .width = 420, .height = 260});
  }
  return h + "</body></html>\n";
}

}  // namespace forge::eval
