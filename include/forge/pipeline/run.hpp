#pragma once
// Running a pipeline: run() executes the stages in order, evaluates each gate and writes one
// JSON report per stage (01_adapt.json, 02_compress.json, ...) and a run.json summary, each
// atomically, into the run's output directory. At the first failed gate it stops with a
// report that names the criterion, the measured value and the threshold, and leaves every
// artifact written so far in place.

#include <chrono>
#include <cstddef>
#include <ctime>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/hana/at.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/range.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/version.hpp>
#include <nlohmann/json.hpp>

#include "forge/backend/backend.hpp"
#include "forge/core/error.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/pipeline/compose.hpp"
#include "forge/pipeline/gate.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/report.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/pipeline/traceable.hpp"

#ifndef FORGE_VERSION_STRING
#error \
    "FORGE_VERSION_STRING is not defined: link against the forge::forge CMake target (find_package(forge)), which defines it, or pass -DFORGE_VERSION_STRING=\"x.y.z\""
#endif

namespace forge {
namespace pipeline_detail {

inline std::string compiler_version() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_FULL_VER);
#else
  return "unknown compiler";
#endif
}

inline nlohmann::json versions_json() {
  return {{"forge", FORGE_VERSION_STRING},
          {"compiler", compiler_version()},
          {"cxx_standard", static_cast<long>(__cplusplus)},
          {"boost", BOOST_LIB_VERSION},
          {"nlohmann_json", std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                                std::to_string(NLOHMANN_JSON_VERSION_PATCH)}};
}

inline std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline nlohmann::json verdict_json(const verdict& v) {
  nlohmann::json j = {{"criterion", v.criterion.text()},    {"metric", v.criterion.metric},
                      {"unit", v.criterion.unit},           {"op", symbol_of(v.criterion.op)},
                      {"threshold", v.criterion.threshold}, {"passed", v.passed}};
  // nlohmann writes a NaN as null; a missing measurement is null too, with a reason.
  j["measured"] = v.measured ? nlohmann::json(*v.measured) : nlohmann::json(nullptr);
  j["margin"] = v.measured ? nlohmann::json(v.margin()) : nlohmann::json(nullptr);
  if (!v.measured) j["reason"] = "the stage did not measure this metric";
  return j;
}

inline nlohmann::json failure_json(const gate_failure& f, const std::filesystem::path& root) {
  nlohmann::json j = verdict_json(f.failed);
  j["stage"] = f.stage;
  j["kind"] = name_of(f.kind);
  j["method"] = f.method;
  j["report"] = f.report.lexically_relative(root).generic_string();
  j["summary"] = f.describe();
  return j;
}

/// Writes `j` to `path` atomically, pretty-printed, with a final newline.
inline void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  io::write_atomic(path, j.dump(2) + "\n");
}

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

template <class StageAt, class MethodT>
struct params_not_json {
  static_assert(always_false_v<MethodT>,
                "forge: the stage report cannot record this method's parameters; the 'In "
                "instantiation of' line above names the stage and method. Make M::params "
                "convertible to nlohmann::json, e.g. NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(params, "
                "field, ...) in the namespace of params");
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

// Executes the stages of basic_pipeline<Order, S...>: a Boost.Hana fold over the stage
// positions threads the model through them, its type changing from stage to stage, as
// std::optional (empty once a gate has stopped the run).
template <class Order, class... S>
struct runner<basic_pipeline<Order, S...>> {
  static constexpr bool available = true;
  using stages_type = boost::hana::tuple<S...>;

  template <class Model, Backend B>
  static auto run(const stages_type& stages, Model model, B backend, const run_options& opts) {
    namespace hana = boost::hana;

    run_state rs;
    rs.root = opts.out;
    rs.seed = opts.seed;
    rs.planned = sizeof...(S);
    rs.started_at = utc_now();
    prepare_directory(rs.root);

    auto last = hana::fold_left(hana::make_range(hana::size_c<0>, hana::size_c<sizeof...(S)>),
                                std::optional<Model>(std::move(model)), [&](auto state, auto i) {
                                  return run_stage<i.value>(stages, std::move(state), backend, rs);
                                });

    using final_model = typename decltype(last)::value_type;
    run_report<final_model> report;
    report.passed = last.has_value();
    report.failure = rs.failure;
    report.directory = rs.root;
    report.summary = rs.root / "run.json";
    write_json(report.summary, summary_json(rs, report.passed ? "passed" : "stopped_at_gate",
                                            report.passed ? rs.input_digest : std::string()));
    report.stages = std::move(rs.stages);
    report.model = std::move(last);
    return report;
  }

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
  static auto run_stage(const stages_type& stages, std::optional<In> in, const B& backend,
                        run_state& rs) {
    using St = std::tuple_element_t<I, std::tuple<S...>>;
    using M = typename St::method;
    using at = stage_at<I + 1, St>;
    [[maybe_unused]] const bool traceable =
        check_t<Traceable<In>, model_not_traceable<at, In>>::value;
    [[maybe_unused]] const bool callable =
        check_t<applicable<M, B, In>, method_cannot_take_model<at, In, B>>::value;
    constexpr bool json_params = std::is_convertible_v<const typename M::params&, nlohmann::json>;
    [[maybe_unused]] const bool recordable = check_t<json_params, params_not_json<at, M>>::value;
    if constexpr (!applicable<M, B, In> || !Traceable<In> || !json_params) {
      return std::optional<In>{};  // compilation already failed above
    } else {
      using result_t = decltype(M::apply(
          std::declval<const stage_context<B>&>(), std::declval<const typename M::params&>(),
          std::declval<const method_data_t<M>&>(), std::declval<In&&>()));
      using Out = typename result_t::model_type;
      [[maybe_unused]] const bool out_traceable =
          check_t<Traceable<Out>, model_not_traceable<at, Out>>::value;
      if (!in) return std::optional<Out>{};  // an earlier gate stopped the run

      namespace fs = std::filesystem;
      const St& st = boost::hana::at_c<I>(stages);
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
        r.artifacts = record_artifacts(res.artifacts, artifact_dir, rs.root, r.index, M::name);
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
          write_json(r.file, stage_json<St, B>(st, r, rs, data));
          write_json(rs.root / "run.json", summary_json(rs, "error", ""));
        } catch (...) {
        }
        throw;
      }
      write_json(r.file, stage_json<St, B>(st, r, rs, data));
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
};

}  // namespace pipeline_detail
}  // namespace forge
