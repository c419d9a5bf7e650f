#pragma once
// The datasheet of a prepared dataset (Gebru et al., "Datasheets for Datasets", CACM 2021):
// what a person writes (motivation, collection, permitted uses, known biases, retention)
// together with what the pipeline measured (the data_report: every input file with its
// SHA-256, records in and out of every step and why, the malformed lines, PII counts,
// duplicates, contamination hits, token statistics, split sizes). Rendered as JSON (schema
// "forge.datasheet/1", read back by from_json so a release manifest can bind it) and as
// Markdown for people; both written atomically.

#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "forge/core/error.hpp"
#include "forge/data/report.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge::data {

/// A dataset's datasheet: human-written context plus the measured data_report.
struct datasheet {
  std::string name{};            ///< dataset name
  std::string description{};     ///< motivation and composition
  std::string collection{};      ///< how the data was collected or generated
  std::string permitted_uses{};  ///< what it may and may not be used for
  std::string known_biases{};    ///< known gaps and biases
  std::string retention{};       ///< retention and deletion policy
  std::string license{};         ///< licence of the data
  data_report report{};          ///< what the pipeline measured

  static constexpr const char* schema = "forge.datasheet/1";

  /// The JSON rendering (keys as in from_json).
  nlohmann::json to_json() const {
    using nlohmann::json;
    const auto& r = report;
    json j;
    j["schema"] = schema;
    j["name"] = name;
    j["description"] = description;
    j["collection"] = collection;
    j["permitted_uses"] = permitted_uses;
    j["known_biases"] = known_biases;
    j["retention"] = retention;
    j["license"] = license;
    j["sources"] = json::array();
    for (const auto& s : r.sources)
      j["sources"].push_back({{"path", s.path},
                              {"sha256", s.sha256},
                              {"bytes", s.bytes},
                              {"lines", s.lines},
                              {"blank_lines", s.blank_lines},
                              {"records", s.records},
                              {"skipped", s.skipped}});
    j["steps"] = json::array();
    for (const auto& s : r.steps)
      j["steps"].push_back(
          {{"name", s.name}, {"in", s.in}, {"out", s.out}, {"removed", s.removed}});
    json issues = json::array();
    for (const auto& i : r.issues)
      issues.push_back(
          {{"file", i.file}, {"line", i.line}, {"reason", i.reason}, {"detail", i.detail}});
    j["issues"] = {{"listed", issues}, {"not_listed", r.issues_not_listed}};
    j["pii"] = r.pii;
    json pairs = json::array();
    for (const auto& d : r.duplicates)
      pairs.push_back({{"removed", d.removed_id}, {"kept", d.kept_id}, {"jaccard", d.jaccard}});
    j["duplicates"] = {
        {"exact", r.exact_duplicates}, {"near", r.near_duplicates}, {"pairs", pairs}};
    j["contamination"] = json::array();
    for (const auto& c : r.contamination)
      j["contamination"].push_back(
          {{"record_id", c.record_id}, {"eval_set", c.eval_set}, {"ngrams", c.ngrams}});
    j["tokens"] = {{"records", r.tokens.records},
                   {"total", r.tokens.total},
                   {"min", r.tokens.records ? r.tokens.min : 0},
                   {"mean", r.tokens.mean()},
                   {"max", r.tokens.max}};
    j["splits"] = r.splits;
    return j;
  }

  /// Reads a datasheet written by to_json; forge::error naming the key when it does not fit.
  static datasheet from_json(const nlohmann::json& j, const std::string& file = "<datasheet>") {
    try {
      if (j.at("schema").get<std::string>() != schema)
        throw error({.what = "unsupported datasheet schema",
                     .file = file,
                     .place = "schema",
                     .expected = schema,
                     .found = j.at("schema").get<std::string>()});
      datasheet d;
      d.name = j.at("name");
      d.description = j.at("description");
      d.collection = j.at("collection");
      d.permitted_uses = j.at("permitted_uses");
      d.known_biases = j.at("known_biases");
      d.retention = j.at("retention");
      d.license = j.at("license");
      auto& r = d.report;
      for (const auto& s : j.at("sources"))
        r.sources.push_back({s.at("path"), s.at("sha256"), s.at("bytes"), s.at("lines"),
                             s.at("blank_lines"), s.at("records"), s.at("skipped")});
      for (const auto& s : j.at("steps"))
        r.steps.push_back({s.at("name"), s.at("in"), s.at("out"),
                           s.at("removed").get<std::map<std::string, std::uint64_t>>()});
      for (const auto& i : j.at("issues").at("listed"))
        r.issues.push_back({i.at("file"), i.at("line"), i.at("reason"), i.at("detail")});
      r.issues_not_listed = j.at("issues").at("not_listed");
      r.pii = j.at("pii").get<std::map<std::string, std::uint64_t>>();
      r.exact_duplicates = j.at("duplicates").at("exact");
      r.near_duplicates = j.at("duplicates").at("near");
      for (const auto& p : j.at("duplicates").at("pairs"))
        r.duplicates.push_back({p.at("removed"), p.at("kept"), p.at("jaccard")});
      for (const auto& c : j.at("contamination"))
        r.contamination.push_back({c.at("record_id"), c.at("eval_set"), c.at("ngrams")});
      const auto& t = j.at("tokens");
      r.tokens.records = t.at("records");
      r.tokens.total = t.at("total");
      r.tokens.max = t.at("max");
      if (r.tokens.records) r.tokens.min = t.at("min");
      r.splits = j.at("splits").get<std::map<std::string, std::uint64_t>>();
      return d;
    } catch (const nlohmann::json::exception& e) {
      throw error({.what = std::string("malformed datasheet: ") + e.what(),
                   .file = file,
                   .place = "",
                   .expected = "a forge.datasheet/1 document",
                   .found = ""});
    }
  }

  /// The Markdown rendering, for people.
  std::string to_markdown() const {
    const auto& r = report;
    std::string m;
    auto line = [&](const std::string& s) { m += s + "\n"; };
    auto n = [](std::uint64_t v) { return std::to_string(v); };
    line("# Datasheet: " + (name.empty() ? std::string("(unnamed)") : name));
    line("");
    const std::pair<const char*, const std::string*> prose[] = {
        {"Motivation and composition", &description},
        {"Collection", &collection},
        {"Permitted uses", &permitted_uses},
        {"Known biases", &known_biases},
        {"Retention", &retention},
        {"License", &license}};
    for (const auto& [title, text] : prose) {
      line(std::string("## ") + title);
      line("");
      line(text->empty() ? "(not stated)" : *text);
      line("");
    }
    line("## Sources");
    line("");
    line("| file | SHA-256 | bytes | lines | records | skipped |");
    line("|---|---|---:|---:|---:|---:|");
    for (const auto& s : r.sources)
      line("| " + md(s.path) + " | `" + s.sha256 + "` | " + n(s.bytes) + " | " + n(s.lines) +
           " | " + n(s.records) + " | " + n(s.skipped) + " |");
    line("");
    line("## Steps");
    line("");
    line("| step | in | out | removed (reason: count) |");
    line("|---|---:|---:|---|");
    for (const auto& s : r.steps) {
      std::string why;
      for (const auto& [reason, c] : s.removed)
        why += (why.empty() ? "" : ", ") + reason + ": " + n(c);
      line("| " + md(s.name) + " | " + n(s.in) + " | " + n(s.out) + " | " +
           (why.empty() ? "-" : why) + " |");
    }
    line("");
    line("## Malformed input");
    line("");
    if (r.issues.empty()) line("None.");
    for (const auto& i : r.issues)
      line("- " + md(i.file) + ":" + n(i.line) + " " + i.reason + ": " + md(i.detail));
    if (r.issues_not_listed)
      line("- and " + n(r.issues_not_listed) + " more (counted, not listed)");
    line("");
    line("## PII masked");
    line("");
    if (r.pii.empty()) line("None found.");
    for (const auto& [type, c] : r.pii) line("- " + type + ": " + n(c));
    line("");
    line("## Duplicates removed");
    line("");
    line("- exact: " + n(r.exact_duplicates));
    line("- near: " + n(r.near_duplicates));
    line("");
    line("## Contamination");
    line("");
    if (r.contamination.empty()) line("No training record overlaps an evaluation set.");
    for (const auto& c : r.contamination)
      line("- " + md(c.record_id) + " overlaps " + md(c.eval_set) + " (" + n(c.ngrams) +
           " n-grams); removed");
    line("");
    line("## Tokens");
    line("");
    if (r.tokens.records == 0) {
      line("No examples encoded.");
    } else {
      char mean[32];
      std::snprintf(mean, sizeof mean, "%.1f", r.tokens.mean());
      line("| examples | total | min | mean | max |");
      line("|---:|---:|---:|---:|---:|");
      line("| " + n(r.tokens.records) + " | " + n(r.tokens.total) + " | " + n(r.tokens.min) +
           " | " + mean + " | " + n(r.tokens.max) + " |");
    }
    line("");
    line("## Splits");
    line("");
    if (r.splits.empty()) line("Not split.");
    for (const auto& [s, c] : r.splits) line("- " + s + ": " + n(c));
    return m;
  }

  /// Writes `<stem>.json` and `<stem>.md` into `dir`, each atomically.
  void write(const std::filesystem::path& dir, const std::string& stem = "datasheet") const {
    // Invalid UTF-8 cannot reach here through the readers; replace rather than throw if a
    // caller put some into a free-text field.
    io::write_atomic(
        dir / (stem + ".json"),
        to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    io::write_atomic(dir / (stem + ".md"), to_markdown());
  }

 private:
  /// Escapes the characters that would break a Markdown table cell.
  static std::string md(const std::string& s) {
    std::string o;
    for (char c : s) {
      if (c == '|')
        o += "\\|";
      else if (c == '\n')
        o += ' ';
      else
        o += c;
    }
    return o;
  }
};

}  // namespace forge::data
