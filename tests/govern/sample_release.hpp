#pragma once
// A small but complete release description shared by the governance tests: two stages with
// reports whose hashes chain from the base model, two datasets, a nested artifact tree.

#include <string>

#include "forge/govern/hash.hpp"
#include "forge/govern/release.hpp"

namespace forge::test {

inline govern::model_card_record sample_card() {
  using namespace govern;
  model_card_record c;
  c.name = "tiny-sql";
  c.version = "1.2.0";
  c.summary = "A tiny Llama model adapted to write SQL.";
  c.license = "Apache-2.0";
  c.base_model_name = "llama_a";
  c.base_model_sha256 = sha256_hex(std::string_view("base model bytes"));
  c.intended_use = "Drafting SQL | queries for internal analysts.";
  c.out_of_scope_uses = {"medical advice", "legal advice"};
  c.datasets = {{"sql-sft", sha256_hex(std::string_view("sft data")), "sft", 1200,
                 "synthetic text-to-SQL pairs", "CC-BY-4.0"},
                {"prefs", sha256_hex(std::string_view("preference data")), "preference", 300,
                 "chosen/rejected pairs", "CC-BY-4.0"}};
  c.stages = {{"adapt",
               "qlora<nf4>",
               json{{"rank", 16}, {"alpha", 32}, {"lr", 2e-4}},
               {{"exact_match", 0.84, ">= 0.80", true, "held-out"},
                {"regression_delta", 0.021, "<= 0.03", true, ""}}},
              {"align",
               "dpo",
               json{{"beta", 0.1}},
               {{"refusal_accuracy", 0.93, ">= 0.90", true, ""},
                {"false_refusal_rate", 0.07, "<= 0.05", false, "over threshold"},
                {"win_rate", 0.61, "", {}, ""}}}};
  c.limitations = {"Small model: long queries fail.", "English only."};
  c.safety = {{"jailbreak_resistance", 0.88, ">= 0.85", true, "built-in red-team set"}};
  return c;
}

inline std::string stage_report(int index, const std::string& stage, const std::string& in,
                                const std::string& out, const std::string& data_name,
                                const std::string& data_hash) {
  json j = {{"stage", stage},
            {"index", index},
            {"input_hash", in},
            {"output_hash", out},
            {"data_hashes", {{data_name, data_hash}}},
            {"method", "x"},
            {"metrics", json::object()}};
  return j.dump(2) + "\n";
}

/// A release spec whose reports bind to the card (artifacts written from text).
inline govern::release_spec sample_spec() {
  using namespace govern;
  release_spec s;
  s.card = sample_card();
  const auto adapted = sha256_hex(std::string_view("adapted model"));
  const auto aligned = sha256_hex(std::string_view("aligned model"));
  s.artifacts = {{"model/model.gguf", {}, "GGUF....model bytes"},
                 {"model/adapter/adapter_model.safetensors", {}, "adapter bytes"},
                 {"model/adapter/adapter_config.json", {}, "{\"r\": 16}\n"}};
  s.reports = {{"00_adapt.json",
                {},
                stage_report(0, "adapt", s.card.base_model_sha256, adapted, "sql-sft",
                             s.card.datasets[0].sha256)},
               {"01_align.json",
                {},
                stage_report(1, "align", adapted, aligned, "prefs", s.card.datasets[1].sha256)}};
  s.datasheet = "# Datasheet\n\nSynthetic SQL pairs.\n";
  s.parameters = json{{"pipeline", "adapt<qlora<nf4>> -> align<dpo> -> deploy<gguf_release>"}};
  s.internal_parameters = json{{"backend", "simd<avx2>"}, {"seed", 7}};
  s.started_on = "2026-05-11T09:00:00Z";
  s.finished_on = "2026-05-11T09:30:00Z";
  s.invocation_id = "run-0001";
  return s;
}

}  // namespace forge::test
