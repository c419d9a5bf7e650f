#pragma once
// Composing and running a pipeline.
//
//   auto p = forge::pipeline(adapt<lora>{...}, compress<gptq<int4_g128>>{...}, deploy<...>{...});
//   auto r = p.run(model, backend::simd<>{}, {.out = "runs/1", .seed = 7});
//
// pipeline(...) checks rules 1-3 of DESIGN.md, research_order(...) rules 2-3; run() checks
// rule 5 for its backend, then executes the stages in order. After each stage it evaluates
// the gate and writes NN_kind.json; at the first failed gate it stops, names the criterion,
// the measured value and the threshold, and leaves every artifact written so far in place.

#include <chrono>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/hana/at.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/range.hpp>
#include <boost/hana/tuple.hpp>
#include <nlohmann/json.hpp>

#include "forge/backend/backend.hpp"
#include "forge/core/error.hpp"
#include "forge/govern/hash.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/report.hpp"
#include "forge/pipeline/rules.hpp"
#include "forge/pipeline/stage.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/pipeline/traceable.hpp"

namespace forge {

namespace pipeline_detail {

template <class StageAt, class ModelT, class BackendT>
struct method_cannot_take_model {
  static_assert(always_false_v<ModelT>,
                "forge: a method's apply() cannot be called with the model that reaches it; the "
                "'In instantiation of' line above names the stage, the C++ model type and the "
                "backend. apply must be callable as M::apply(const stage_context<B>&, const "
                "M::params&, const M::data&, Model) and return forge::stage_result<Out>");
  static constexpr bool value = false;
};

template <class StageAt, class ModelT>
struct model_not_traceable {
  static_assert(always_false_v<ModelT>,
                "forge: the runner cannot identify this model in its reports; give the model "
                "type a member `std::string digest() const` or a free function `std::string "
                "model_digest(const Model&)` returning the SHA-256 of its content (hex)");
  static constexpr bool value = false;
};

template <class M, class B, class ModelT>
concept applicable = requires(const stage_context<B>& ctx, const typename M::params& p,
                              const method_data_t<M>& d, ModelT&& m) {
  {M::apply(ctx, p, d, std::move(m))};
  requires is_stage_result_v<decltype(M::apply(ctx, p, d, std::move(m)))>;
};

// Mutable state threaded through one run.
struct run_state {
  std::filesystem::path root;
  std::uint64_t seed = 0;
  std::size_t planned = 0;
  std::string started_at;
  std::string input_digest;  // digest of the model entering the next stage
  std::vector<stage_report> stages;
  std::optional<gate_failure> failure;
};

inline nlohmann::json summary_json(const run_state& rs, std::string_view status,
                                   const std::string& final_digest) {
  nlohmann::json reports = nlohmann::json::array();
  for (const auto& s : rs.stages) reports.push_back(s.file.filename().string());
  nlohmann::json j = {
      {"schema", "forge.run_report/1"}, {"status", status},   {"started_at", rs.started_at},
      {"finished_at", utc_now()},       {"seed", rs.seed},    {"stages_planned", rs.planned},
      {"stages_run", rs.stages.size()}, {"reports", reports}, {"versions", versions_json()}};
  j["failure"] = rs.failure ? failure_json(*rs.failure, rs.root) : nlohmann::json(nullptr);
  if (!rs.stages.empty() && rs.stages.back().status == stage_status::error)
    j["error"] = {{"stage", rs.stages.back().index}, {"what", rs.stages.back().error}};
  j["output_sha256"] =
      final_digest.empty() ? nlohmann::json(nullptr) : nlohmann::json(final_digest);
  return j;
}

template <class S>
nlohmann::json representations_json() {
  nlohmann::json a = nlohmann::json::array();
  [&]<class... Rs>(representations<Rs...>*) {
    (a.push_back(std::string(Rs::name)), ...);
  }(static_cast<representation_list_t<typename S::method::accepts>*>(nullptr));
  return a;
}

template <class S, class B>
nlohmann::json stage_json(const S& st, const stage_report& r, const run_state& rs,
                          const std::vector<data_record>& data) {
  using M = typename S::method;
  nlohmann::json artifacts = nlohmann::json::array();
  for (const auto& a : r.artifacts)
    artifacts.push_back(
        {{"path", a.path.generic_string()}, {"sha256", a.sha256}, {"bytes", a.bytes}});
  nlohmann::json data_j = nlohmann::json::array();
  for (const auto& d : data) data_j.push_back({{"name", d.name}, {"sha256", d.sha256}});
  nlohmann::json criteria = nlohmann::json::array();
  for (const auto& v : r.gate.verdicts) criteria.push_back(verdict_json(v));
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [name, value] : r.metrics.all()) metrics[name] = value;

  nlohmann::json j = {
      {"schema", "forge.stage_report/1"},
      {"stage", {{"index", r.index}, {"kind", name_of(r.kind)}, {"of", rs.planned}}},
      {"method", {{"name", std::string(M::name)}, {"parameters", nlohmann::json(st.params())}}},
      {"status", name_of(r.status)},
      {"input",
       {{"sha256", r.input_sha256}, {"accepted_representations", representations_json<S>()}}},
      {"output",
       {{"sha256",
         r.output_sha256.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.output_sha256)},
        {"representation", std::string(M::produces::name)}}},
      {"data", data_j},
      {"artifacts", artifacts},
      {"metrics", metrics},
      {"gate", {{"passed", r.status == stage_status::passed}, {"criteria", criteria}}},
      {"seed", {{"run", rs.seed}, {"stage", r.seed}}},
      {"backend", std::string(B::name)},
      {"versions", versions_json()},
      {"wall_time_s", r.wall_time_s}};
  if (r.status == stage_status::error) j["error"] = r.error;
  return j;
}

// Hashes the artifacts a stage reported; each must be an existing regular file.
inline std::vector<artifact_record> record_artifacts(
    const std::vector<std::filesystem::path>& paths, const std::filesystem::path& artifact_dir,
    const std::filesystem::path& root, std::size_t index, std::string_view method) {
  namespace fs = std::filesystem;
  std::vector<artifact_record> out;
  for (const auto& p : paths) {
    const fs::path full = p.is_absolute() ? p : artifact_dir / p;
    std::error_code ec;
    if (!fs::is_regular_file(full, ec))
      throw error({.what = "a stage reported an artifact that is not a regular file",
                   .file = full.string(),
                   .place = "stage " + std::to_string(index) + " (" + std::string(method) + ")",
                   .expected = "a file the method wrote",
                   .found = fs::exists(full, ec) ? "not a regular file" : "no such file"});
    fs::path rel = full.lexically_relative(root);
    out.push_back({rel.empty() ? full : rel, govern::sha256_file(full), fs::file_size(full)});
  }
  return out;
}

}  // namespace pipeline_detail

/// A pipeline: stages `S...` under ordering policy `Order` (paper_order or
/// research_order_policy). Built by forge::pipeline() or forge::research_order().
template <class Order, Stage... S>
class basic_pipeline {
 public:
  /// The number of stages.
  static constexpr std::size_t size = sizeof...(S);

  /// Takes the stages in execution order; rules 1-3 are checked here.
  explicit basic_pipeline(S... stages) : stages_(std::move(stages)...) {
    [[maybe_unused]] constexpr bool rules_hold = pipeline_detail::check_composition<Order, S...>();
  }

  /// The stages, as a Boost.Hana tuple.
  const boost::hana::tuple<S...>& stages() const { return stages_; }

  /// Runs every stage in order on `model` with `backend` (rule 5 is checked here), writing
  /// one report per stage into `opts.out`; stops at the first failed gate. Exceptions from a
  /// method are recorded in its stage report and run.json, then rethrown.
  template <class Model, Backend B>
  auto run(Model model, B backend, const run_options& opts = {}) const {
    namespace hana = boost::hana;
    [[maybe_unused]] constexpr bool backend_ok = pipeline_detail::check_backend<B, S...>();

    pipeline_detail::run_state rs;
    rs.root = opts.out;
    rs.seed = opts.seed;
    rs.planned = size;
    rs.started_at = pipeline_detail::utc_now();
    prepare_directory(rs.root);

    auto last = hana::fold_left(hana::make_range(hana::size_c<0>, hana::size_c<size>),
                                std::optional<Model>(std::move(model)), [&](auto state, auto i) {
                                  return this->run_stage<i.value>(std::move(state), backend, rs);
                                });

    using final_model = typename decltype(last)::value_type;
    run_report<final_model> report;
    report.passed = last.has_value();
    report.failure = rs.failure;
    report.directory = rs.root;
    report.summary = rs.root / "run.json";
    pipeline_detail::write_json(
        report.summary,
        pipeline_detail::summary_json(rs, report.passed ? "passed" : "stopped_at_gate",
                                      report.passed ? rs.input_digest : std::string()));
    report.stages = std::move(rs.stages);
    report.model = std::move(last);
    return report;
  }

 private:
  static void prepare_directory(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw error({.what = "cannot create the run's output directory",
                   .file = dir.string(),
                   .place = "run_options::out",
                   .expected = "a writable directory",
                   .found = ec.message()});
    if (!fs::is_empty(dir, ec) || ec)
      throw error({.what = "the run's output directory is not empty; a run never overwrites "
                           "the reports of another, so choose a new directory",
                   .file = dir.string(),
                   .place = "run_options::out",
                   .expected = "an absent or empty directory",
                   .found = ec ? ec.message() : "existing files"});
  }

  template <std::size_t I, class In, class B>
  auto run_stage(std::optional<In> in, const B& backend, pipeline_detail::run_state& rs) const {
    using St = std::tuple_element_t<I, std::tuple<S...>>;
    using M = typename St::method;
    using at = pipeline_detail::stage_at<I + 1, St>;
    [[maybe_unused]] constexpr bool traceable =
        pipeline_detail::check_t<Traceable<In>,
                                 pipeline_detail::model_not_traceable<at, In>>::value;
    [[maybe_unused]] constexpr bool callable =
        pipeline_detail::check_t<pipeline_detail::applicable<M, B, In>,
                                 pipeline_detail::method_cannot_take_model<at, In, B>>::value;
    if constexpr (!pipeline_detail::applicable<M, B, In> || !Traceable<In>) {
      return std::optional<In>{};  // compilation already failed above
    } else {
      using result_t = decltype(M::apply(
          std::declval<const stage_context<B>&>(), std::declval<const typename M::params&>(),
          std::declval<const method_data_t<M>&>(), std::declval<In&&>()));
      using Out = typename result_t::model_type;
      if (!in) return std::optional<Out>{};  // an earlier gate stopped the run

      namespace fs = std::filesystem;
      const St& st = boost::hana::at_c<I>(stages_);
      const std::string stem = stage_file_stem(I + 1, St::kind);
      stage_report r;
      r.index = I + 1;
      r.kind = St::kind;
      r.method = std::string(M::name);
      r.seed = stage_seed(rs.seed, I + 1);
      r.file = rs.root / (stem + ".json");
      if (I == 0) rs.input_digest = digest_of(*in);
      r.input_sha256 = rs.input_digest;
      const fs::path artifact_dir = rs.root / stem;

      std::vector<data_record> data;
      std::optional<Out> out;
      try {
        std::error_code ec;
        fs::create_directories(artifact_dir, ec);
        if (ec)
          throw error({.what = "cannot create the stage's artifact directory",
                       .file = artifact_dir.string(),
                       .place = "stage " + std::to_string(I + 1),
                       .expected = "a writable directory",
                       .found = ec.message()});
        const stage_context<B> ctx{backend, St::kind, I + 1, r.seed, artifact_dir};
        const auto t0 = std::chrono::steady_clock::now();
        result_t res = M::apply(ctx, st.params(), st.data(), std::move(*in));
        r.wall_time_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        r.output_sha256 = digest_of(res.model);
        r.artifacts = pipeline_detail::record_artifacts(res.artifacts, artifact_dir, rs.root,
                                                        r.index, M::name);
        r.metrics = std::move(res.metrics);
        r.gate = evaluate(st.criteria(), r.metrics);
        r.status = r.gate.passed() ? stage_status::passed : stage_status::gate_failed;
        data = std::move(res.data);
        out.emplace(std::move(res.model));
      } catch (const std::exception& e) {
        r.status = stage_status::error;
        r.error = e.what();
        rs.stages.push_back(r);
        // Record the failure where a person will look; the original exception wins if the
        // records cannot be written either.
        try {
          pipeline_detail::write_json(r.file, pipeline_detail::stage_json<St, B>(st, r, rs, data));
          pipeline_detail::write_json(rs.root / "run.json",
                                      pipeline_detail::summary_json(rs, "error", ""));
        } catch (...) {
        }
        throw;
      }
      pipeline_detail::write_json(r.file, pipeline_detail::stage_json<St, B>(st, r, rs, data));
      if (r.status == stage_status::gate_failed) {
        rs.failure = gate_failure{r.index, r.kind, r.method, *r.gate.first_failure(), r.file};
        rs.stages.push_back(std::move(r));
        return std::optional<Out>{};
      }
      rs.input_digest = r.output_sha256;
      rs.stages.push_back(std::move(r));
      return out;
    }
  }

  boost::hana::tuple<S...> stages_;
};

/// A pipeline in the paper's order: Adapt <= Compress <= Align <= Deploy, kinds may repeat or
/// be absent, Deploy last and at most once, consecutive stages' representations fit.
template <Stage... S>
basic_pipeline<paper_order, S...> pipeline(S... stages) {
  return basic_pipeline<paper_order, S...>(std::move(stages)...);
}

/// A pipeline in any order of Adapt, Compress and Align (for ablations such as compressing
/// before adapting); Deploy is still last and at most once, and representations must fit.
template <Stage... S>
basic_pipeline<research_order_policy, S...> research_order(S... stages) {
  return basic_pipeline<research_order_policy, S...>(std::move(stages)...);
}

}  // namespace forge
