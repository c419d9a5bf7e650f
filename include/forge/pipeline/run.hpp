#pragma once
// Running a pipeline: run() executes the stages in order, evaluates each gate and writes one
// JSON report per stage (01_adapt.json, 02_compress.json, ...) and a run.json summary, each
// atomically, into the run's output directory. At the first failed gate it stops with a
// report that names the criterion, the measured value and the threshold, and leaves every
// artifact written so far in place.
//
// Over several processes (run_options::comm): every rank runs every stage on the same model
// (the training stages split their batches over the ranks through stage_context::comm); rank
// 0 alone creates the output directory and writes reports and artifacts, while each other
// rank hands its stages a private scratch directory that is removed when the stage ends.
// After each stage the ranks compare the digests of their output models (a difference is an
// error: the ranks have diverged) and take rank 0's artifact records, metrics and wall time,
// so every rank evaluates the same gate and returns the same report.

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

#include <unistd.h>

#include <cstring>

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

// ---- a run over several ranks ----

// What each rank says after a stage: whether it finished, and its output model's digest.
struct rank_outcome {
  bool ok = false;
  std::string digest{};
};

inline std::vector<rank_outcome> gather_outcomes(dist::communicator& c, bool ok,
                                                 const std::string& digest, std::size_t index) {
  constexpr std::size_t block = 256;  // 1 byte ok, 1 byte length, the digest text
  require(digest.size() <= block - 2,
          {.what = "a model digest is too long to compare across ranks",
           .place = "stage " + std::to_string(index),
           .expected = "at most " + std::to_string(block - 2) + " characters (SHA-256 hex: 64)",
           .found = std::to_string(digest.size()) + " characters"});
  const auto n = std::size_t(c.size());
  std::vector<std::byte> bytes(block * n);
  std::vector<std::size_t> offsets(n + 1);
  for (std::size_t r = 0; r <= n; ++r) offsets[r] = r * block;
  std::byte* mine = bytes.data() + block * std::size_t(c.rank());
  mine[0] = std::byte(ok ? 1 : 0);
  mine[1] = std::byte(digest.size());
  std::memcpy(mine + 2, digest.data(), digest.size());
  c.all_gather(bytes, offsets);
  std::vector<rank_outcome> out(n);
  for (std::size_t r = 0; r < n; ++r) {
    const std::byte* b = bytes.data() + block * r;
    out[r].ok = b[0] == std::byte(1);
    out[r].digest.assign(reinterpret_cast<const char*>(b + 2), std::size_t(b[1]));
  }
  return out;
}

// The first rank whose digest differs from rank 0's, or -1.
inline int first_divergent(const std::vector<rank_outcome>& o) {
  for (std::size_t r = 1; r < o.size(); ++r)
    if (o[r].digest != o[0].digest) return int(r);
  return -1;
}

// Rank 0's records of a stage, as bytes for the other ranks: wall time, metrics, artifacts.
struct record_codec {
  std::string bytes{};
  std::size_t at = 0;

  void put(const void* p, std::size_t n) { bytes.append(static_cast<const char*>(p), n); }
  void put_u64(std::uint64_t v) { put(&v, sizeof v); }
  void put_f64(double v) { put(&v, sizeof v); }
  void put_text(const std::string& s) { put_u64(s.size()), put(s.data(), s.size()); }
  void get(void* p, std::size_t n) {
    require(at + n <= bytes.size(),
            {.what = "rank 0's stage record is truncated", .place = "byte " + std::to_string(at)});
    std::memcpy(p, bytes.data() + at, n);
    at += n;
  }
  std::uint64_t get_u64() {
    std::uint64_t v = 0;
    get(&v, sizeof v);
    return v;
  }
  double get_f64() {
    double v = 0;
    get(&v, sizeof v);
    return v;
  }
  std::string get_text() {
    std::string s(std::size_t(get_u64()), '\0');
    get(s.data(), s.size());
    return s;
  }
};

inline std::string encode_records(const stage_report& r) {
  record_codec c;
  c.put_f64(r.wall_time_s);
  c.put_u64(r.metrics.all().size());
  for (const auto& [name, value] : r.metrics.all()) c.put_text(name), c.put_f64(value);
  c.put_u64(r.artifacts.size());
  for (const auto& a : r.artifacts)
    c.put_text(a.path.generic_string()), c.put_text(a.sha256), c.put_u64(a.bytes);
  return std::move(c.bytes);
}

inline void decode_records(std::string bytes, stage_report& r) {
  record_codec c{std::move(bytes), 0};
  r.wall_time_s = c.get_f64();
  r.metrics = {};
  for (auto n = c.get_u64(); n > 0; --n) {
    auto name = c.get_text();
    r.metrics.set_by_name(name, c.get_f64());
  }
  r.artifacts.clear();
  for (auto n = c.get_u64(); n > 0; --n) {
    artifact_record a;
    a.path = c.get_text();
    a.sha256 = c.get_text();
    a.bytes = c.get_u64();
    r.artifacts.push_back(std::move(a));
  }
}

// A rank's private artifact directory for one stage, removed (with anything a method wrote
// into it) when the stage ends, whether it returned or threw.
class scratch_directory {
 public:
  scratch_directory(int rank, const std::string& stem) {
    namespace fs = std::filesystem;
    std::error_code ec;
    path_ = fs::temp_directory_path(ec);
    if (ec) path_ = "/tmp";
    path_ /= "forge-rank" + std::to_string(rank) + "-" + std::to_string(::getpid()) + "-" + stem;
    fs::remove_all(path_, ec);
    fs::create_directories(path_, ec);
    if (ec)
      throw error({.what = "cannot create this rank's scratch directory for a stage",
                   .file = path_.string(),
                   .place = "rank " + std::to_string(rank),
                   .expected = "a writable temporary directory (TMPDIR)",
                   .found = ec.message()});
  }
  scratch_directory(const scratch_directory&) = delete;
  scratch_directory& operator=(const scratch_directory&) = delete;
  ~scratch_directory() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
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
  dist::communicator* comm = nullptr;  // the group, or null for one process

  bool writer() const { return comm == nullptr || comm->rank() == 0; }
  bool group() const { return comm != nullptr && comm->size() > 1; }
  int ranks() const { return comm ? comm->size() : 1; }
};

inline nlohmann::json summary_json(const run_state& rs, std::string_view status,
                                   const std::string& final_digest) {
  nlohmann::json reports = nlohmann::json::array();
  for (const auto& s : rs.stages) reports.push_back(s.file.filename().string());
  nlohmann::json j = {{"schema", "forge.run_report/1"},
                      {"status", status},
                      {"started_at", rs.started_at},
                      {"finished_at", utc_now()},
                      {"seed", rs.seed},
                      {"stages_planned", rs.planned},
                      {"stages_run", rs.stages.size()},
                      {"reports", reports},
                      {"versions", versions_json()},
                      {"ranks", rs.ranks()}};
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
      {"ranks", rs.ranks()},
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
    rs.comm = opts.comm;
    // Rank 0 alone prepares the directory; the others learn whether it could.
    std::string refused;
    if (rs.writer()) try {
        prepare_directory(rs.root);
      } catch (const std::exception& e) {
        if (!rs.group()) throw;
        refused = e.what();
      }
    if (rs.group()) {
      dist::broadcast_text(*rs.comm, refused, 0);
      if (!refused.empty())
        throw error({.what = "rank 0 could not prepare the run's output directory: " + refused,
                     .file = rs.root.string(),
                     .place = "rank " + std::to_string(rs.comm->rank())});
    }

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
    if (rs.writer())
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
      if (I == 0) {
        rs.input_digest = digest_of(*in);
        // Every rank must start from the same model, or their training would not agree.
        if (rs.group()) {
          const auto o = gather_outcomes(*rs.comm, true, rs.input_digest, I + 1);
          if (const int d = first_divergent(o); d >= 0)
            throw error(
                {.what = "the ranks were given different input models",
                 .place = "stage 1 (" + std::string(M::name) + "), rank " + std::to_string(d),
                 .expected = "rank 0's model, SHA-256 " + o[0].digest,
                 .found = o[std::size_t(d)].digest});
        }
      }
      r.input_sha256 = rs.input_digest;
      const fs::path artifact_dir = rs.root / stem;

      std::vector<data_record> data;
      std::optional<Out> out;
      std::exception_ptr failed;
      try {
        // Rank 0 writes into the run's directory, every other rank into its own scratch.
        std::optional<scratch_directory> scratch;
        if (rs.writer()) {
          std::error_code ec;
          fs::create_directories(artifact_dir, ec);
          if (ec)
            throw error({.what = "cannot create the stage's artifact directory",
                         .file = artifact_dir.string(),
                         .place = "stage " + std::to_string(I + 1),
                         .expected = "a writable directory",
                         .found = ec.message()});
        } else {
          scratch.emplace(rs.comm->rank(), stem);
        }
        const stage_context<B> ctx{.backend = backend,
                                   .kind = St::kind,
                                   .index = I + 1,
                                   .seed = r.seed,
                                   .artifact_dir = scratch ? scratch->path() : artifact_dir,
                                   .comm = rs.comm};
        const auto t0 = std::chrono::steady_clock::now();
        result_t res = M::apply(ctx, st.params(), st.data(), std::move(*in));
        r.wall_time_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        r.output_sha256 = digest_of(res.model);
        if (rs.writer())
          r.artifacts = record_artifacts(res.artifacts, artifact_dir, rs.root, r.index, M::name);
        r.metrics = std::move(res.metrics);
        data = std::move(res.data);
        out.emplace(std::move(res.model));
      } catch (const std::exception& e) {
        r.error = e.what();
        failed = std::current_exception();
      }
      // Over several ranks: did every rank finish, with the same model? Then every rank takes
      // rank 0's records, so that all evaluate the same gate and return the same report.
      std::optional<error> group_error;
      if (rs.group()) {
        const auto o = gather_outcomes(*rs.comm, !failed, r.output_sha256, I + 1);
        int first_failed = -1;
        for (std::size_t k = 0; k < o.size() && first_failed < 0; ++k)
          if (!o[k].ok) first_failed = int(k);
        const std::string where = "stage " + std::to_string(I + 1) + " (" + r.method + ")";
        if (first_failed >= 0) {
          std::string what = r.error;
          dist::broadcast_text(*rs.comm, what, first_failed);
          if (!failed) {
            group_error.emplace(
                error_info{.what = "rank " + std::to_string(first_failed) + " failed: " + what,
                           .place = where});
            r.error = group_error->what();
          }
        } else if (const int d = first_divergent(o); d >= 0) {
          group_error.emplace(
              error_info{.what = "the ranks' models differ after this stage (the ranks diverged)",
                         .place = where + ", rank " + std::to_string(d),
                         .expected = "rank 0's output, SHA-256 " + o[0].digest,
                         .found = o[std::size_t(d)].digest});
          r.error = group_error->what();
        } else {
          std::string records = rs.writer() ? encode_records(r) : std::string();
          dist::broadcast_text(*rs.comm, records, 0);
          if (!rs.writer()) decode_records(std::move(records), r);
        }
      }
      if (failed || group_error) {
        r.status = stage_status::error;
        if (!failed) r.output_sha256.clear();
        rs.stages.push_back(r);
        // Record the failure where a person will look; the original exception wins if the
        // records cannot be written either.
        if (rs.writer()) try {
            write_json(r.file, stage_json<St, B>(st, r, rs, data));
            write_json(rs.root / "run.json", summary_json(rs, "error", ""));
          } catch (...) {
          }
        if (failed) std::rethrow_exception(failed);
        throw *group_error;
      }
      r.gate = evaluate(st.criteria(), r.metrics);
      r.status = r.gate.passed() ? stage_status::passed : stage_status::gate_failed;
      if (rs.writer()) write_json(r.file, stage_json<St, B>(st, r, rs, data));
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
