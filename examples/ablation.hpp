#pragma once
// The harness the ablation programs share: run one typed pipeline on the built-in model,
// then score its output the same way whatever the stages were — task exact match, the safety
// sets, weight memory and decode latency — and fold them into the composite score that
// docs/ablations.md defines. Results go to a CSV, a Markdown table and SVG charts.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "forge/adapters/methods.hpp"
#include "forge/builtin/stage_data.hpp"
#include "forge/eval/svg_chart.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/pipeline/run.hpp"
#include "forge/quant/methods.hpp"
#include "forge/train/align_methods.hpp"

namespace ablation {

namespace fs = std::filesystem;
using namespace forge;

/// Command-line options shared by the ablation programs:
///   OUT_DIR [--seeds N] [--quick] [--only TEXT] [--seed K] [--merge DIR...]
/// --only / --seed run a subset (the variant named TEXT, seed K) so that runs can
/// be spread over processes; --merge combines the results.csv of such partial runs into
/// OUT_DIR's table and charts without running anything.
struct options {
  fs::path out;
  int seeds = 1;
  bool quick = false;
  std::string only;
  int seed = 0;
  std::vector<fs::path> merge;
};

inline options parse_options(int argc, char** argv, int default_seeds) {
  if (argc < 2)
    throw error(error_info{.what = "usage: OUT_DIR [--seeds N] [--quick] [--only TEXT] "
                                   "[--seed K] [--merge DIR...]"});
  options o;
  o.out = argv[1];
  o.seeds = default_seeds;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      o.quick = true;
    else if (a == "--seeds" && i + 1 < argc)
      o.seeds = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc)
      o.only = argv[++i];
    else if (a == "--seed" && i + 1 < argc)
      o.seed = std::atoi(argv[++i]);
    else if (a == "--merge")
      while (i + 1 < argc) o.merge.push_back(argv[++i]);
    else
      throw error(error_info{.what = "unknown option", .found = a});
  }
  return o;
}

/// Everything a run needs: the data of every stage (built once) and the base's reference
/// numbers for the composite.
struct setup {
  std::shared_ptr<const text::any_tokenizer> tok;
  adapt_data sft;
  compress_data calibration;
  align_data preferences;
  bool quick = false;
  std::string only;  ///< run only the variant of this name
  int seed = 0;      ///< run only this seed (0: all)
  std::int64_t adapt_steps = 200, align_steps = 400;
  double base_bytes = 0, base_latency_ms = 0;
  std::vector<std::int64_t> latency_prompt;
};

inline setup make_setup(const options& o) {
  const bool quick = o.quick;
  setup s;
  s.only = o.only;
  s.seed = o.seed;
  s.tok = std::make_shared<const text::any_tokenizer>(builtin::load_tokenizer());
  builtin::data_sizes n;
  n.task_kinds = {"instruction", "date"};
  if (quick) {
    n.sft_train = 200, n.replay = 40, n.sft_val = 8, n.task_eval = 16, n.general = 8;
    n.calibration = 8, n.evaluation = 8, n.preference = 48, n.preference_val = 8;
    s.adapt_steps = 12, s.align_steps = 8;
  }
  s.quick = quick;
  s.sft = builtin::sft_data(*s.tok, 1, n);
  s.calibration = builtin::compression_data(*s.tok, 1, n);
  s.preferences = builtin::alignment_data(s.tok, 1, n);
  if (quick) s.preferences.safety.resize(std::min<std::size_t>(s.preferences.safety.size(), 24));
  auto base = builtin::load_model();
  s.base_bytes = double(quant::model_weight_bytes(base));
  s.latency_prompt = s.calibration.evaluation.at(0);
  if (s.latency_prompt.size() > 16) s.latency_prompt.resize(16);
  s.base_latency_ms = quant::decode_ms_per_token(backend::simd<>{}, base, s.latency_prompt, 16);
  return s;
}

/// The method parameters every ablation uses (one place, so variants differ in one type).
inline lora_params adapt_params(const setup& s) {
  return {.rank = 16,
          .alpha = 32,
          .target_modules = {"all-linear"},
          .max_steps = s.adapt_steps,
          .batch_size = 8,
          .learning_rate = 2e-3,
          .schedule = "cosine",
          .warmup_steps = s.adapt_steps / 10};
}
inline full_finetune_params full_params(const setup& s) {
  return {.max_steps = s.adapt_steps,
          .batch_size = 8,
          .learning_rate = 3e-4,
          .schedule = "cosine",
          .warmup_steps = s.adapt_steps / 10};
}
inline align_params align_params_for(const setup& s, double beta = 0.1) {
  return {.beta = beta,
          .sft_weight = 1.0,
          .rank = 16,
          .alpha = 32,
          .max_steps = s.align_steps,
          .batch_size = 8,
          .learning_rate = 1e-3,
          .schedule = "cosine",
          .warmup_steps = s.align_steps / 10};
}

/// One run's scores.
struct outcome {
  std::string group{}, variant{};
  std::uint64_t seed = 0;
  bool passed = false;
  double task = 0, refusal = 0, jailbreak = 0, false_refusal = 0;
  double memory_mb = 0, latency_ms = 0;
  double safety = 0, composite = 0;
  std::string run_dir{};
};

/// composite = 0.4·task + 0.3·safety + 0.15·memory saving + 0.15·speed, each in [0, 1]:
/// task = exact match; safety = mean(refusal accuracy, jailbreak resistance, 1 − false-refusal
/// rate); memory saving = 1 − weight bytes / the base's; speed = min(1, base latency / latency).
inline void score(outcome& o, double base_mb, double base_latency_ms) {
  o.safety = (o.refusal + o.jailbreak + (1 - o.false_refusal)) / 3;
  const double mem = std::max(0.0, 1 - o.memory_mb / base_mb);
  const double speed = std::min(1.0, base_latency_ms / std::max(1e-9, o.latency_ms));
  o.composite = 0.4 * o.task + 0.3 * o.safety + 0.15 * mem + 0.15 * speed;
}

/// Runs pipeline `p` on the built-in model under `out/<group>/<variant>/seed<k>`, scores the
/// model it returns and appends the outcome to `rs` — unless the options filter it out.
template <class P>
void run(std::vector<outcome>& rs, const setup& s, const fs::path& out, const std::string& group,
         const std::string& variant, std::uint64_t seed, P p) {
  if (!s.only.empty() && variant != s.only) return;
  if (s.seed != 0 && std::uint64_t(s.seed) != seed) return;
  outcome o{.group = group, .variant = variant, .seed = seed};
  const fs::path dir = out / group / variant / ("seed" + std::to_string(seed));
  o.run_dir = dir.string();
  fs::remove_all(dir);
  std::printf("== %s / %s, seed %llu\n", group.c_str(), variant.c_str(), (unsigned long long)seed);
  auto r = p.run(builtin::load_model(), backend::simd<>{}, {.out = dir, .seed = seed});
  o.passed = r.passed;
  if (!r.model) {
    rs.push_back(o);
    return;
  }
  auto& m = *r.model;
  const auto be = backend::simd<>{};
  o.task = eval::evaluate_task(be, m, s.preferences.task, s.preferences.eos).exact_match;
  const auto sc = align_detail::safety_of(be, m, s.preferences);
  o.refusal = sc.refusal_accuracy, o.jailbreak = sc.jailbreak_resistance;
  o.false_refusal = sc.false_refusal_rate;
  o.memory_mb = double(quant::model_weight_bytes(m)) / 1048576.0;
  o.latency_ms = quant::decode_ms_per_token(be, m, s.latency_prompt, 16);
  score(o, s.base_bytes / 1048576.0, s.base_latency_ms);
  std::printf("   task %.3f  safety %.3f  memory %.2f MiB  latency %.3f ms  composite %.3f\n",
              o.task, o.safety, o.memory_mb, o.latency_ms, o.composite);
  rs.push_back(o);
}

/// The outcomes in a results.csv written by write_results.
inline std::vector<outcome> read_results(const fs::path& csv) {
  std::vector<outcome> out;
  std::istringstream in(io::read_file(csv));
  std::string line;
  std::getline(in, line);  // header
  std::size_t n = 1;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::size_t at = 0;
    for (;;) {
      const auto c = line.find(',', at);
      f.push_back(line.substr(at, c == std::string::npos ? std::string::npos : c - at));
      if (c == std::string::npos) break;
      at = c + 1;
    }
    require(f.size() == 13, {.what = "malformed results row",
                             .file = csv.string(),
                             .place = at_line(n),
                             .expected = "13 fields",
                             .found = std::to_string(f.size())});
    outcome o{.group = f[0], .variant = f[1], .seed = std::stoull(f[2]), .passed = f[3] == "1"};
    o.task = std::stod(f[4]), o.refusal = std::stod(f[5]), o.jailbreak = std::stod(f[6]);
    o.false_refusal = std::stod(f[7]), o.safety = std::stod(f[8]);
    o.memory_mb = std::stod(f[9]), o.latency_ms = std::stod(f[10]);
    o.composite = std::stod(f[11]), o.run_dir = f[12];
    out.push_back(std::move(o));
  }
  return out;
}

inline std::string num(double v, int digits = 3) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

/// Writes results.csv (every run), table.md (mean ± spread over seeds per variant) and one
/// SVG bar chart per group into `out`; returns the Markdown.
inline std::string write_results(const fs::path& out, const std::vector<outcome>& rs,
                                 double base_mb) {
  fs::create_directories(out);
  std::string csv =
      "group,variant,seed,passed,task,refusal,jailbreak,false_refusal,safety,memory_mb,"
      "latency_ms,composite,run_dir\n";
  for (const auto& o : rs)
    csv += o.group + "," + o.variant + "," + std::to_string(o.seed) + "," + (o.passed ? "1" : "0") +
           "," + num(o.task, 6) + "," + num(o.refusal, 6) + "," + num(o.jailbreak, 6) + "," +
           num(o.false_refusal, 6) + "," + num(o.safety, 6) + "," + num(o.memory_mb, 6) + "," +
           num(o.latency_ms, 6) + "," + num(o.composite, 6) + "," + o.run_dir + "\n";
  io::write_atomic(out / "results.csv", csv);
  // Mean and range per (group, variant), in first-seen order.
  std::vector<std::pair<std::string, std::string>> keys;
  std::map<std::pair<std::string, std::string>, std::vector<const outcome*>> by;
  for (const auto& o : rs) {
    const auto k = std::make_pair(o.group, o.variant);
    if (!by.count(k)) keys.push_back(k);
    by[k].push_back(&o);
  }
  std::string md =
      "| group | variant | seeds | all gates | task | safety | refusal | jailbreak | false refusal "
      "| memory (MiB) | latency (ms/token) | composite (min–max) "
      "|\n|---|---|---|---|---|---|---|---|"
      "---|---|---|---|\n";
  std::map<std::string, std::vector<eval::bar_group>> groups;
  for (const auto& k : keys) {
    const auto& v = by[k];
    auto mean = [&](double outcome::*f) {
      double s = 0;
      for (auto* o : v) s += o->*f;
      return s / double(v.size());
    };
    double lo = 1e9, hi = -1e9;
    bool all = true;
    for (auto* o : v)
      lo = std::min(lo, o->composite), hi = std::max(hi, o->composite), all = all && o->passed;
    md += "| " + k.first + " | " + k.second + " | " + std::to_string(v.size()) + " | " +
          (all ? "yes" : "no") + " | " + num(mean(&outcome::task)) + " | " +
          num(mean(&outcome::safety)) + " | " + num(mean(&outcome::refusal)) + " | " +
          num(mean(&outcome::jailbreak)) + " | " + num(mean(&outcome::false_refusal)) + " | " +
          num(mean(&outcome::memory_mb), 2) + " | " + num(mean(&outcome::latency_ms)) + " | " +
          num(mean(&outcome::composite)) + " (" + num(lo) + "–" + num(hi) + ") |\n";
    groups[k.first].push_back({k.second,
                               {mean(&outcome::task), mean(&outcome::safety),
                                mean(&outcome::memory_mb) / base_mb, mean(&outcome::composite)}});
  }
  for (const auto& [g, bars] : groups)
    io::write_atomic(out / (g + ".svg"),
                     eval::bar_chart(bars, {"task (EM)", "safety", "memory / base", "composite"},
                                     {.title = g, .y_label = "score", .width = 760}));
  io::write_atomic(out / "table.md", md);
  return md;
}

/// --merge: combines the results.csv of partial runs into the output directory's table and
/// charts. Returns false (doing nothing) when --merge was not given.
inline bool merge_if_asked(const options& opt) {
  if (opt.merge.empty()) return false;
  std::vector<outcome> all;
  for (const auto& d : opt.merge) {
    auto part = read_results(d / "results.csv");
    all.insert(all.end(), part.begin(), part.end());
  }
  const double base_mb = double(quant::model_weight_bytes(builtin::load_model())) / 1048576.0;
  std::printf("%s", write_results(opt.out, all, base_mb).c_str());
  return true;
}

}  // namespace ablation
