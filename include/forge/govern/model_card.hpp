#pragma once
// The model card: a structured record of what a release is, what it was made from, how each
// stage changed it (method, parameters, metrics and gate verdicts), where it should not be
// used, and its safety results; rendered as Markdown for people (MODEL_CARD.md) and reused
// for the CycloneDX modelCard section of the SBOM. Sections follow Mitchell et al., "Model
// Cards for Model Reporting" (2019): intended use, data, methods, metrics, limitations.

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "forge/core/json.hpp"

namespace forge::govern {

/// A measured value, with the acceptance criterion it was checked against (if any).
struct card_metric {
  std::string name{};            ///< metric name as the stage reports it ("exact_match")
  double value = 0;              ///< measured value
  std::string criterion{};       ///< the gate, e.g. ">= 0.80"; empty when ungated
  std::optional<bool> passed{};  ///< gate verdict; empty when ungated
  std::string notes{};           ///< free text (slice, dataset)
};

/// One pipeline stage as it ran.
struct card_stage {
  std::string kind{};                ///< "adapt", "compress", "align", "deploy"
  std::string method{};              ///< "qlora<nf4>", "gptq<int4_g128>", "dpo" ...
  json parameters = json::object();  ///< hyperparameters, as the stage report records them
  std::vector<card_metric> metrics{};
};

/// A dataset the release was trained, calibrated or evaluated on.
struct card_dataset {
  std::string name{};
  std::string sha256{};       ///< content hash (bound by the signed manifest)
  std::string purpose{};      ///< "sft", "calibration", "preference", "evaluation" ...
  std::uint64_t records = 0;  ///< number of records used
  std::string description{};
  std::string license{};
};

/// Everything the model card and the SBOM say about a release.
struct model_card_record {
  std::string name{};
  std::string version{};
  std::string summary{};
  std::string license{};
  std::string base_model_name{};
  std::string base_model_sha256{};
  std::string architecture = "llama";
  std::string task = "text-generation";
  std::string approach = "supervised";  ///< CycloneDX approach type
  std::string intended_use{};
  std::vector<std::string> out_of_scope_uses{};
  std::vector<card_dataset> datasets{};
  std::vector<card_stage> stages{};
  std::vector<std::string> limitations{};
  std::vector<card_metric> safety{};  ///< refusal accuracy, jailbreak resistance ...
};

namespace detail {
/// Escapes text for a Markdown table cell: pipes, and newlines as spaces.
inline std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out;
}
inline std::string number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::ostringstream os;
    os << static_cast<long long>(v);
    return os.str();
  }
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}
inline std::string verdict(const card_metric& m) {
  if (!m.passed) return "not gated";
  return *m.passed ? "pass" : "FAIL";
}
inline void metric_table(std::string& md, const std::vector<card_metric>& ms) {
  md += "| metric | value | criterion | verdict | notes |\n|---|---|---|---|---|\n";
  for (const auto& m : ms) {
    md += "| " + md_cell(m.name) + " | " + number(m.value) + " | " +
          md_cell(m.criterion.empty() ? "-" : m.criterion) + " | " + verdict(m) + " | " +
          md_cell(m.notes) + " |\n";
  }
}
}  // namespace detail

/// Renders the model card as Markdown.
inline std::string render_model_card(const model_card_record& r) {
  std::string md;
  md += "# Model card: " + r.name + " " + r.version + "\n\n";
  if (!r.summary.empty()) md += r.summary + "\n\n";
  md += "| field | value |\n|---|---|\n";
  md += "| base model | " + detail::md_cell(r.base_model_name) + " |\n";
  md += "| base model sha256 | `" + r.base_model_sha256 + "` |\n";
  md += "| architecture | " + detail::md_cell(r.architecture) + " |\n";
  md += "| task | " + detail::md_cell(r.task) + " |\n";
  if (!r.license.empty()) md += "| license | " + detail::md_cell(r.license) + " |\n";
  md += "\n## Intended use\n\n" + (r.intended_use.empty() ? "Not stated." : r.intended_use) + "\n";
  if (!r.out_of_scope_uses.empty()) {
    md += "\nOut of scope:\n\n";
    for (const auto& u : r.out_of_scope_uses) md += "- " + u + "\n";
  }
  md +=
      "\n## Data\n\n| dataset | purpose | records | sha256 | license | description |\n"
      "|---|---|---|---|---|---|\n";
  for (const auto& d : r.datasets)
    md += "| " + detail::md_cell(d.name) + " | " + detail::md_cell(d.purpose) + " | " +
          std::to_string(d.records) + " | `" + d.sha256 + "` | " + detail::md_cell(d.license) +
          " | " + detail::md_cell(d.description) + " |\n";
  md += "\n## Methods\n";
  for (std::size_t i = 0; i < r.stages.size(); ++i) {
    const auto& s = r.stages[i];
    md += "\n### Stage " + std::to_string(i + 1) + ": " + s.kind + " (" + s.method + ")\n\n";
    md += "Parameters:\n\n| parameter | value |\n|---|---|\n";
    if (s.parameters.is_object())
      for (const auto& [k, v] : s.parameters.items())
        md += "| " + detail::md_cell(k) + " | " +
              detail::md_cell(v.is_string() ? v.get<std::string>() : v.dump()) + " |\n";
    md += "\nMetrics and gate verdicts:\n\n";
    detail::metric_table(md, s.metrics);
  }
  md += "\n## Limitations\n\n";
  if (r.limitations.empty()) md += "None recorded.\n";
  for (const auto& l : r.limitations) md += "- " + l + "\n";
  md += "\n## Safety results\n\n";
  if (r.safety.empty())
    md += "No safety evaluation recorded.\n";
  else
    detail::metric_table(md, r.safety);
  return md;
}

}  // namespace forge::govern
