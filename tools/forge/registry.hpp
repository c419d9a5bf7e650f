#pragma once
// The run-time face of the typed pipeline, for `forge run pipeline.yaml`: a registry from
// (stage kind, method name) to a type-erased apply plus the method's accepts/produces names,
// and a runner that checks the ordering and representation rules at load (with the
// messages of pipeline/rules.hpp) and writes the same stage reports as pipeline/run.hpp.
//
// Adding a method is one line in register_methods(): `r.add<stage_kind::compress, gptq>();`.
// A method whose `data` type is not yet known to the tool needs one make_data overload
// below (Adapt's adapt_data and no_data are provided).

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/methods.hpp"
#include "forge/core/json.hpp"
#include "forge/data/preference.hpp"
#include "forge/deploy/signed_release.hpp"
#include "forge/eval/safety.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/run.hpp"
#include "forge/quant/methods.hpp"
#include "forge/text/load_tokenizer.hpp"
#include "forge/train/align_methods.hpp"

namespace forge::cli {

/// The model flowing through a run-time pipeline.
using any_model = std::variant<model::causal_lm<float>, released_model>;

/// The content digest of a run-time model, as stage reports record it.
inline std::string digest_of_any(const any_model& m) {
  return std::visit([](const auto& x) { return digest_of(x); }, m);
}

/// What a stage's YAML entry gives besides parameters: data files (JSONL) by role, and the
/// tokenizer that turns them into token ids.
struct stage_inputs {
  std::map<std::string, std::filesystem::path> files{};  ///< role -> JSONL file
  const text::any_tokenizer* tokenizer = nullptr;
  std::string where{};  ///< "stage 2 (lora)" for messages
};

/// The results of one type-erased apply.
struct any_result {
  any_model model;
  metric_values metrics{};
  std::vector<std::filesystem::path> artifacts{};
  std::vector<data_record> data{};
};

namespace detail {

inline std::vector<json> read_json_lines(const std::filesystem::path& p) {
  std::vector<json> out;
  const std::string text = io::read_file(p);
  std::size_t line = 0, pos = 0;
  while (pos < text.size()) {
    const auto nl = text.find('\n', pos);
    const std::string s = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    ++line;
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse_json(s, p.string() + ":" + std::to_string(line)));
  }
  return out;
}

inline std::vector<std::int32_t> encode(const text::any_tokenizer& t, const std::string& s,
                                        bool special) {
  return t.encode(s, special);
}

// {"prompt", "completion"} (trained on the completion) or {"text"} (trained on all of it).
inline std::vector<data::sft_example> sft_examples(const std::filesystem::path& p,
                                                   const text::any_tokenizer& t) {
  std::vector<data::sft_example> out;
  std::size_t n = 0;
  for (const auto& j : read_json_lines(p)) {
    ++n;
    const std::string where = "record " + std::to_string(n);
    data::sft_example e;
    e.id = p.filename().string() + ":" + std::to_string(n);
    if (j.contains("text")) {
      e.input_ids = encode(t, get_field<std::string>(j, "text", p.string(), where), true);
      e.labels = e.input_ids;
    } else {
      const auto prompt = encode(t, get_field<std::string>(j, "prompt", p.string(), where), true);
      const auto completion =
          encode(t, get_field<std::string>(j, "completion", p.string(), where), false);
      e.input_ids = prompt;
      e.input_ids.insert(e.input_ids.end(), completion.begin(), completion.end());
      if (auto eos = t.eos_id()) e.input_ids.push_back(*eos);
      e.labels.assign(prompt.size(), -100);
      e.labels.insert(e.labels.end(), e.input_ids.begin() + std::ptrdiff_t(prompt.size()),
                      e.input_ids.end());
    }
    if (!e.labels.empty()) e.labels[0] = -100;  // the first token has no prediction
    out.push_back(std::move(e));
  }
  if (out.empty())
    throw error({.what = "data file has no records", .file = p.string(), .expected = "JSON lines"});
  return out;
}

}  // namespace detail

/// Builds a method's data from its stage inputs. Overload for each data type a registered
/// method uses.
template <class D>
D make_data(const stage_inputs& in);

/// No data: the stage must not name files.
template <>
inline no_data make_data<no_data>(const stage_inputs& in) {
  if (!in.files.empty())
    throw error({.what = "this method takes no data files",
                 .place = in.where + ": data",
                 .found = in.files.begin()->first});
  return {};
}

/// Adapt data: train (required), val, general (JSONL of prompt/completion or text) and task
/// (JSONL of prompt/answer, exact match) files.
template <>
inline adapt_data make_data<adapt_data>(const stage_inputs& in) {
  require(in.tokenizer != nullptr,
          {.what = "Adapt data needs a tokenizer (the model directory's)", .place = in.where});
  adapt_data d;
  for (const auto& [role, _] : in.files)
    if (role != "train" && role != "val" && role != "general" && role != "task")
      throw error({.what = "unknown data role",
                   .place = in.where + ": data." + role,
                   .expected = "train, val, general or task"});
  auto it = in.files.find("train");
  if (it == in.files.end())
    throw error({.what = "Adapt needs training data", .place = in.where + ": data.train"});
  d.train = detail::sft_examples(it->second, *in.tokenizer);
  if (auto v = in.files.find("val"); v != in.files.end())
    d.val = detail::sft_examples(v->second, *in.tokenizer);
  if (auto g = in.files.find("general"); g != in.files.end())
    d.general = detail::sft_examples(g->second, *in.tokenizer);
  if (auto t = in.files.find("task"); t != in.files.end()) {
    std::size_t n = 0;
    for (const auto& j : detail::read_json_lines(t->second)) {
      const std::string where = "record " + std::to_string(++n);
      const auto p = detail::encode(
          *in.tokenizer, get_field<std::string>(j, "prompt", t->second.string(), where), true);
      const auto a = detail::encode(
          *in.tokenizer, get_field<std::string>(j, "answer", t->second.string(), where), false);
      d.task.push_back({{p.begin(), p.end()}, {a.begin(), a.end()}});
    }
  }
  if (auto eos = in.tokenizer->eos_id()) d.eos = {*eos};
  d.pad_id = in.tokenizer->pad_id().value_or(in.tokenizer->eos_id().value_or(0));
  d.name = it->second.filename().string();
  return d;
}

namespace detail {

inline void only_roles(const stage_inputs& in, std::initializer_list<const char*> roles) {
  for (const auto& [role, _] : in.files) {
    bool ok = false;
    std::string list;
    for (const char* r : roles)
      ok = ok || role == r, list += (list.empty() ? "" : ", ") + std::string(r);
    if (!ok)
      throw error(
          {.what = "unknown data role", .place = in.where + ": data." + role, .expected = list});
  }
}

// {"text": ...} records as token rows (special tokens as the tokenizer adds them).
inline std::vector<std::vector<std::int64_t>> text_rows(const std::filesystem::path& p,
                                                        const text::any_tokenizer& t) {
  std::vector<std::vector<std::int64_t>> out;
  std::size_t n = 0;
  for (const auto& j : read_json_lines(p)) {
    const auto ids = encode(
        t, get_field<std::string>(j, "text", p.string(), "record " + std::to_string(++n)), true);
    out.emplace_back(ids.begin(), ids.end());
  }
  if (out.empty())
    throw error({.what = "data file has no records", .file = p.string(), .expected = "JSON lines"});
  return out;
}

// {"prompt", "answer"} records as exact-match items.
inline std::vector<eval::task_item> task_items(const std::filesystem::path& p,
                                               const text::any_tokenizer& t) {
  std::vector<eval::task_item> out;
  std::size_t n = 0;
  for (const auto& j : read_json_lines(p)) {
    const std::string where = "record " + std::to_string(++n);
    const auto q = encode(t, get_field<std::string>(j, "prompt", p.string(), where), true);
    const auto a = encode(t, get_field<std::string>(j, "answer", p.string(), where), false);
    out.push_back({{q.begin(), q.end()}, {a.begin(), a.end()}});
  }
  return out;
}

// {"prompt", "chosen", "rejected"} strings as tokenised pairs: prompt with the tokenizer's
// special tokens, completions followed by the end-of-sequence token.
inline std::vector<data::preference_example> preference_examples(const std::filesystem::path& p,
                                                                 const text::any_tokenizer& t) {
  std::vector<data::preference_example> out;
  std::size_t n = 0;
  for (const auto& j : read_json_lines(p)) {
    const std::string where = "record " + std::to_string(++n);
    data::preference_example e;
    e.id = p.filename().string() + ":" + std::to_string(n);
    e.prompt = encode(t, get_field<std::string>(j, "prompt", p.string(), where), true);
    e.chosen = encode(t, get_field<std::string>(j, "chosen", p.string(), where), false);
    e.rejected = encode(t, get_field<std::string>(j, "rejected", p.string(), where), false);
    if (auto eos = t.eos_id()) e.chosen.push_back(*eos), e.rejected.push_back(*eos);
    out.push_back(std::move(e));
  }
  if (out.empty())
    throw error({.what = "data file has no records", .file = p.string(), .expected = "JSON lines"});
  return out;
}

}  // namespace detail

/// Compress data: calibration (required) and evaluation ({"text"} JSONL), task
/// ({"prompt", "answer"} JSONL).
template <>
inline compress_data make_data<compress_data>(const stage_inputs& in) {
  require(in.tokenizer != nullptr,
          {.what = "Compress data needs a tokenizer (the model directory's)", .place = in.where});
  detail::only_roles(in, {"calibration", "evaluation", "task"});
  compress_data d;
  auto it = in.files.find("calibration");
  if (it == in.files.end())
    throw error(
        {.what = "Compress needs calibration text", .place = in.where + ": data.calibration"});
  d.calibration = detail::text_rows(it->second, *in.tokenizer);
  if (auto e = in.files.find("evaluation"); e != in.files.end())
    d.evaluation = detail::text_rows(e->second, *in.tokenizer);
  if (auto t = in.files.find("task"); t != in.files.end())
    d.task = detail::task_items(t->second, *in.tokenizer);
  if (auto eos = in.tokenizer->eos_id()) d.eos = {*eos};
  d.name = it->second.filename().string();
  return d;
}

/// Align data: train (required) and val ({"prompt", "chosen", "rejected"} JSONL), task
/// ({"prompt", "answer"}), and safety: a JSONL of {"prompt", "should_refuse", "variant"} or the
/// word `builtin` for forge's generated harmful / benign / jailbreak sets.
template <>
inline align_data make_data<align_data>(const stage_inputs& in) {
  require(in.tokenizer != nullptr,
          {.what = "Align data needs a tokenizer (the model directory's)", .place = in.where});
  detail::only_roles(in, {"train", "val", "task", "safety"});
  align_data d;
  auto it = in.files.find("train");
  if (it == in.files.end())
    throw error({.what = "Align needs preference pairs", .place = in.where + ": data.train"});
  d.train = detail::preference_examples(it->second, *in.tokenizer);
  if (auto v = in.files.find("val"); v != in.files.end())
    d.val = detail::preference_examples(v->second, *in.tokenizer);
  if (auto t = in.files.find("task"); t != in.files.end())
    d.task = detail::task_items(t->second, *in.tokenizer);
  if (auto s = in.files.find("safety"); s != in.files.end()) {
    if (s->second.filename() == "builtin") {
      d.safety = eval::framed_prompts({3, 4}, true);
      const auto benign = eval::framed_prompts({3, 4}, false);
      const auto jail = eval::jailbreak_variants(d.safety);
      d.safety.insert(d.safety.end(), benign.begin(), benign.end());
      d.safety.insert(d.safety.end(), jail.begin(), jail.end());
    } else {
      std::size_t n = 0;
      for (const auto& j : detail::read_json_lines(s->second)) {
        const std::string where = "record " + std::to_string(++n);
        eval::safety_item item;
        item.prompt = get_field<std::string>(j, "prompt", s->second.string(), where);
        item.should_refuse = get_field<bool>(j, "should_refuse", s->second.string(), where);
        item.variant = get_field_or<std::string>(
            j, "variant", item.should_refuse ? "direct" : "benign", s->second.string());
        d.safety.push_back(std::move(item));
      }
    }
  }
  const text::any_tokenizer* tok = in.tokenizer;  // outlives the run
  d.encode_prompt = [tok](const std::string& p) {
    const auto ids = tok->encode(p, true);
    return std::vector<std::int64_t>(ids.begin(), ids.end());
  };
  d.decode = [tok](std::span<const std::int64_t> ids) {
    return tok->decode(std::vector<std::int32_t>(ids.begin(), ids.end()), true);
  };
  if (auto eos = in.tokenizer->eos_id()) d.eos = {*eos};
  d.pad_id = in.tokenizer->pad_id().value_or(in.tokenizer->eos_id().value_or(0));
  d.name = it->second.filename().string();
  return d;
}

/// A method's parameters from the YAML's (as JSON): the defaults, overridden key by key;
/// forge::error naming the key for an unknown parameter or a value of the wrong type.
template <class P>
P params_from(const json& given, const std::string& where) {
  json j = json(P{});
  if (!given.is_null() && !given.is_object())
    throw error({.what = "parameters must be a mapping", .place = where + ": params"});
  // Nested mappings (e.g. compress's `measure`) are overridden key by key too.
  auto merge = [&](auto&& self, json& into, const json& from, const std::string& path) -> void {
    for (const auto& [k, v] : from.items()) {
      if (!into.contains(k)) {
        std::string known;
        for (const auto& [kk, _] : into.items()) known += (known.empty() ? "" : ", ") + kk;
        throw error({.what = "unknown parameter",
                     .place = where + ": " + path + "." + k,
                     .expected = "one of " + known});
      }
      if (into[k].is_object() && v.is_object())
        self(self, into[k], v, path + "." + k);
      else
        into[k] = v;
    }
  };
  if (given.is_object()) merge(merge, j, given, "params");
  try {
    return j.get<P>();
  } catch (const json::exception& e) {
    throw error(
        {.what = "a parameter has the wrong type", .place = where + ": params", .found = e.what()});
  }
}

/// One registered method.
struct method_entry {
  stage_kind kind{};
  std::string name{};
  std::vector<std::string> accepts{};  ///< representation names
  std::string produces{};              ///< representation name
  std::set<std::string> metrics{};     ///< metric names its stage kind measures
  /// Type-erased apply: parameters (JSON), inputs, model in; results out. The second
  /// function returns the parameters as recorded (defaults filled in).
  std::function<any_result(std::uint64_t seed, const std::filesystem::path& artifact_dir,
                           std::size_t index, const json& params, const stage_inputs&, any_model)>
      apply{};
  std::function<json(const json&, const std::string&)> resolved_params{};
};

/// (stage kind, method name) -> method_entry.
class registry {
 public:
  /// Registers method M for stages of kind K (backend: SIMD on the host).
  template <stage_kind K, Method M>
  registry& add() {
    using P = typename M::params;
    using D = method_data_t<M>;
    method_entry e;
    e.kind = K;
    e.name = std::string(M::name);
    [&]<class... Rs>(representations<Rs...>*) {
      (e.accepts.push_back(std::string(Rs::name)), ...);
    }(static_cast<representation_list_t<typename M::accepts>*>(nullptr));
    e.produces = std::string(M::produces::name);
    e.resolved_params = [](const json& j, const std::string& where) {
      return json(params_from<P>(j, where));
    };
    e.apply = [](std::uint64_t seed, const std::filesystem::path& dir, std::size_t index,
                 const json& pj, const stage_inputs& in, any_model m) -> any_result {
      const P p = params_from<P>(pj, in.where);
      const D d = make_data<D>(in);
      using B = backend::simd<>;
      const stage_context<B> ctx{B{}, K, index, seed, dir};
      auto* dense = std::get_if<model::causal_lm<float>>(&m);
      if (!dense)
        throw error({.what = "this method takes a model, and the stage before it made a release",
                     .place = in.where});
      auto r = M::apply(ctx, p, d, std::move(*dense));
      return {any_model(std::move(r.model)), std::move(r.metrics), std::move(r.artifacts),
              std::move(r.data)};
    };
    entries_[{K, e.name}] = std::move(e);
    return *this;
  }

  /// The entry for (kind, name), or forge::error listing the registered names of that kind.
  const method_entry& at(stage_kind k, const std::string& name, const std::string& where) const {
    auto it = entries_.find({k, name});
    if (it != entries_.end()) return it->second;
    std::string known;
    for (const auto& [key, _] : entries_)
      if (key.first == k) known += (known.empty() ? "" : ", ") + key.second;
    throw error({.what = "unknown method for this stage kind",
                 .place = where,
                 .expected = std::string(name_of(k)) + " methods: " +
                             (known.empty() ? std::string("none registered") : known),
                 .found = name});
  }

 private:
  std::map<std::pair<stage_kind, std::string>, method_entry> entries_;
};

/// The registry of every method the tool knows. One line per method.
inline registry& methods() {
  static registry r = [] {
    registry x;
    x.add<stage_kind::adapt, lora>();
    x.add<stage_kind::adapt, dora>();
    x.add<stage_kind::adapt, qlora>();
    x.add<stage_kind::adapt, full_finetune>();
    x.add<stage_kind::compress, rtn>();
    x.add<stage_kind::compress, gptq>();
    x.add<stage_kind::compress, awq>();
    // Align on the int4 (groups of 128) base the paper's order hands it after Compress.
    x.add<stage_kind::align, dpo<repr::int4_g128>>();
    x.add<stage_kind::align, cdpo<repr::int4_g128>>();
    x.add<stage_kind::align, robust_dpo<repr::int4_g128>>();
    x.add<stage_kind::align, ipo<repr::int4_g128>>();
    x.add<stage_kind::align, hinge<repr::int4_g128>>();
    x.add<stage_kind::align, simpo<repr::int4_g128>>();
    x.add<stage_kind::align, orpo<repr::int4_g128>>();
    x.add<stage_kind::align, kto<repr::int4_g128>>();
    x.add<stage_kind::deploy, signed_release>();
    return x;
  }();
  return r;
}

/// Parses a stage kind name; forge::error otherwise.
inline stage_kind parse_kind(const std::string& s, const std::string& where) {
  for (auto k : {stage_kind::adapt, stage_kind::compress, stage_kind::align, stage_kind::deploy})
    if (name_of(k) == s) return k;
  throw error({.what = "unknown stage kind",
               .place = where,
               .expected = "adapt, compress, align or deploy",
               .found = s});
}

/// Interns a metric name so that criterion_record's string_view stays valid.
inline std::string_view intern(const std::string& s) {
  static std::deque<std::string> pool;
  for (const auto& p : pool)
    if (p == s) return p;
  pool.push_back(s);
  return pool.back();
}

/// Parses "metric >= 0.8" (operators >=, <=, >, <, ==) or a bare metric name (== 1).
inline criterion_record parse_criterion(const std::string& text, const std::string& where) {
  static const std::regex re(R"(^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:(>=|<=|==|>|<)\s*(\S+))?\s*$)");
  std::smatch m;
  if (!std::regex_match(text, m, re))
    throw error({.what = "cannot read the gate criterion",
                 .place = where,
                 .expected = "metric >= number (or <=, >, <, ==), or a boolean metric alone",
                 .found = text});
  criterion_record c{intern(m[1].str()), "", comparison::equal, 1.0};
  if (m[2].matched) {
    const std::string op = m[2].str();
    c.op = op == ">="   ? comparison::greater_equal
           : op == "<=" ? comparison::less_equal
           : op == ">"  ? comparison::greater
           : op == "<"  ? comparison::less
                        : comparison::equal;
    try {
      std::size_t used = 0;
      c.threshold = std::stod(m[3].str(), &used);
      if (used != m[3].str().size()) throw std::invalid_argument("trailing text");
    } catch (const std::exception&) {
      throw error({.what = "the threshold is not a number", .place = where, .found = m[3].str()});
    }
  }
  return c;
}

/// Names of the metrics each stage kind measures (pipeline/metrics.hpp and the Deploy
/// metrics of deploy/signed_release.hpp), for rule 4 at load.
inline const std::map<std::string, std::set<stage_kind>>& metric_kinds() {
  static const auto table = [] {
    std::map<std::string, std::set<stage_kind>> t;
    auto add = [&]<class... Ms>(Ms...) {
      (
          [&] {
            for (auto k :
                 {stage_kind::adapt, stage_kind::compress, stage_kind::align, stage_kind::deploy})
              if (Ms::measured_by::contains(k)) t[std::string(Ms::name)].insert(k);
          }(),
          ...);
    };
    add(exact_match, perplexity, regression_delta, ece, mce, train_val_gap, memory_bytes,
        memory_ratio, latency_ms, tokens_per_second, perplexity_ratio, task_score_delta,
        regression_pass_rate, refusal_accuracy, false_refusal_rate, jailbreak_resistance,
        refusal_gain, jailbreak_resistance_gain, false_refusal_change, preference_accuracy,
        reward_margin, helpfulness_delta, kl_to_reference, signature_valid, artifact_scan_clean,
        load_p50_ms, load_p95_ms, load_tokens_per_s, release_bytes);
    return t;
  }();
  return table;
}

/// One stage of a run-time pipeline, as loaded and checked.
struct planned_stage {
  stage_kind kind{};
  const method_entry* method = nullptr;
  json params = json::object();  ///< as given
  std::map<std::string, std::filesystem::path> files{};
  std::vector<criterion_record> gate{};
  std::string where{};
};

/// Checks rules 1-4 of DESIGN.md on a loaded plan with the messages of pipeline/rules.hpp,
/// naming the stages by position and method. `input` is the representation of the model
/// entering the first stage; `paper_order` false allows research orders (Deploy still last).
inline void check_plan(const std::vector<planned_stage>& st, const std::string& input,
                       bool paper_order) {
  std::string produced = input, producer = "the input model";
  for (std::size_t i = 0; i < st.size(); ++i) {
    const auto& s = st[i];
    if (i > 0 && st[i - 1].kind == stage_kind::deploy)
      throw error(
          {.what = "forge rule 2: Deploy must be the last stage and may appear only once; " +
                   st[i - 1].where + " is followed by " + s.where +
                   ". Move it to the end, or remove the extra deploy",
           .place = s.where});
    if (paper_order && i > 0 && s.kind < st[i - 1].kind)
      throw error({.what = "forge rule 1: stage kinds must run in the order Adapt -> Compress -> "
                           "Align -> Deploy (a kind may repeat or be absent); " +
                           st[i - 1].where + " and " + s.where +
                           " are the wrong way round. Swap them, or set `order: research` to "
                           "study another order on purpose",
                   .place = s.where});
    const auto& acc = s.method->accepts;
    if (std::find(acc.begin(), acc.end(), produced) == acc.end()) {
      std::string list;
      for (const auto& a : acc) list += (list.empty() ? "" : ", ") + a;
      throw error({.what = "forge rule 3: a stage cannot take the model the stage before it "
                           "produces. Insert a stage that produces an accepted representation, "
                           "or choose a method that accepts this one",
                   .place = s.where,
                   .expected = "one of: " + list,
                   .found = producer + " produces " + produced});
    }
    for (const auto& c : s.gate) {
      const auto it = metric_kinds().find(std::string(c.metric));
      if (it == metric_kinds().end())
        throw error({.what = "unknown metric in a gate",
                     .place = s.where + ": gate",
                     .found = std::string(c.metric)});
      if (!it->second.count(s.kind))
        throw error({.what = "forge rule 4: this gate uses a metric that its stage kind does not "
                             "measure. Move the criterion to the gate of a stage that measures it",
                     .place = s.where + ": gate",
                     .found = std::string(c.metric)});
    }
    produced = s.method->produces;
    producer = s.where;
  }
}

/// The outcome of a run-time pipeline.
struct runtime_report {
  bool passed = false;
  std::optional<std::string> failure{};  ///< "stage N (method): criterion, measured x"
  std::filesystem::path directory{};
};

/// Runs a checked plan on `model`, writing NN_<kind>.json reports and run.json in the
/// schema of pipeline/run.hpp into `out` (absent or empty). `progress` is called with each
/// stage before it starts.
inline runtime_report run_plan(
    const std::vector<planned_stage>& st, any_model model, const std::filesystem::path& out,
    std::uint64_t seed, const text::any_tokenizer* tok,
    const std::function<void(const planned_stage&, std::size_t)>& progress) {
  namespace fs = std::filesystem;
  namespace pd = pipeline_detail;
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec || !fs::is_empty(out, ec))
    throw error({.what = "the run's output directory is not empty; a run never overwrites the "
                         "reports of another, so choose a new directory",
                 .file = out.string(),
                 .place = "out",
                 .expected = "an absent or empty directory"});
  const std::string started = pd::utc_now();
  std::string input = digest_of_any(model);
  runtime_report rep;
  rep.directory = out;
  json reports = json::array();
  std::string final_digest;
  json failure = nullptr;
  for (std::size_t i = 0; i < st.size(); ++i) {
    const auto& s = st[i];
    if (progress) progress(s, i + 1);
    const std::string stem = stage_file_stem(i + 1, s.kind);
    const fs::path dir = out / stem;
    fs::create_directories(dir);
    const std::uint64_t sseed = stage_seed(seed, i + 1);
    const auto t0 = std::chrono::steady_clock::now();
    stage_inputs in{s.files, tok, s.where};
    any_result r = s.method->apply(sseed, dir, i + 1, s.params, in, std::move(model));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto arts = pd::record_artifacts(r.artifacts, dir, out, i + 1, s.method->name);
    const auto verdicts = evaluate(s.gate, r.metrics);
    const std::string output = digest_of_any(r.model);
    json artifacts = json::array(), data = json::array(), criteria = json::array(),
         metrics = json::object(), accepts = json::array();
    for (const auto& a : arts)
      artifacts.push_back(
          {{"path", a.path.generic_string()}, {"sha256", a.sha256}, {"bytes", a.bytes}});
    for (const auto& d : r.data) data.push_back({{"name", d.name}, {"sha256", d.sha256}});
    for (const auto& v : verdicts.verdicts) criteria.push_back(pd::verdict_json(v));
    for (const auto& [k, v] : r.metrics.all()) metrics[k] = v;
    for (const auto& a : s.method->accepts) accepts.push_back(a);
    const bool passed = verdicts.passed();
    json j = {
        {"schema", "forge.stage_report/1"},
        {"stage", {{"index", i + 1}, {"kind", name_of(s.kind)}, {"of", st.size()}}},
        {"method",
         {{"name", s.method->name}, {"parameters", s.method->resolved_params(s.params, s.where)}}},
        {"status", passed ? "passed" : "gate_failed"},
        {"input", {{"sha256", input}, {"accepted_representations", accepts}}},
        {"output", {{"sha256", output}, {"representation", s.method->produces}}},
        {"data", data},
        {"artifacts", artifacts},
        {"metrics", metrics},
        {"gate", {{"passed", passed}, {"criteria", criteria}}},
        {"seed", {{"run", seed}, {"stage", sseed}}},
        {"backend", std::string(backend::simd<>::name)},
        {"versions", pd::versions_json()},
        {"wall_time_s", wall}};
    pd::write_json(out / (stem + ".json"), j);
    reports.push_back(stem + ".json");
    if (!passed) {
      const auto& f = *verdicts.first_failure();
      rep.failure = s.where + ": " + f.criterion.text() + ", measured " +
                    (f.measured ? str(*f.measured) : std::string("nothing"));
      failure = pd::verdict_json(f);
      failure["stage"] = i + 1;
      failure["method"] = s.method->name;
      break;
    }
    input = output;
    model = std::move(r.model);
    if (i + 1 == st.size()) final_digest = output;
  }
  rep.passed = !rep.failure;
  json summary = {{"schema", "forge.run_report/1"},
                  {"status", rep.passed ? "passed" : "stopped_at_gate"},
                  {"started_at", started},
                  {"finished_at", pd::utc_now()},
                  {"seed", seed},
                  {"stages_planned", st.size()},
                  {"stages_run", reports.size()},
                  {"reports", reports},
                  {"versions", pd::versions_json()},
                  {"failure", failure},
                  {"output_sha256", final_digest.empty() ? json(nullptr) : json(final_digest)}};
  pd::write_json(out / "run.json", summary);
  return rep;
}

}  // namespace forge::cli
