#pragma once
// The adapter registry: which adapters exist, what base model each was trained on, which
// tenants may use it, how it was made and evaluated, and its lifecycle status. Loading is
// gated by check_load, which refuses an adapter on a different base model (its base hash
// must match to the bit), outside its tenant scope, or not active.
//
// Record fields follow the adapter registration table of the adaptation guide this project
// implements: adapter id "{base model name}-{task namespace}-v{version}", base model SHA-256,
// tokenizer hash, training objective, hyperparameters (method, rank, alpha, dropout, target
// modules), tenant scope, merge and stacking policy, eval results, and a rollback path.
//
// Lifecycle: candidate → active → retired. One adapter is active per (base model name, task
// namespace) "slot". activate() retires the slot's current active adapter and remembers it
// as the new one's rollback target; rollback() retires the active adapter and re-activates
// its rollback target.
//
// The registry is one JSON file. Every update takes an exclusive lock (flock on
// "<file>.lock"), re-reads the file, applies the change to a copy, and replaces the file
// with write_atomic; a crash at any moment leaves the old or the new version, both complete.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/core/json.hpp"
#include "forge/govern/manifest.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge::govern {

/// Lifecycle status of an adapter.
enum class adapter_status { candidate, active, retired };

/// "candidate", "active", "retired".
inline std::string_view name(adapter_status s) {
  switch (s) {
    case adapter_status::candidate:
      return "candidate";
    case adapter_status::active:
      return "active";
    case adapter_status::retired:
      return "retired";
  }
  return "unknown";
}

/// One registered adapter.
struct adapter_record {
  std::string id{};               ///< "{base_model_name}-{task}-v{version}"
  std::string base_model_name{};  ///< e.g. "llama_a"
  std::string task{};             ///< task namespace, e.g. "sql"
  unsigned version = 1;
  std::string base_model_sha256{};     ///< the exact base checkpoint it was trained on
  std::string tokenizer_sha256{};      ///< tokenizer it was trained with (optional)
  std::string artifact_sha256{};       ///< the adapter file(s) (optional)
  std::vector<std::string> tenants{};  ///< tenant scope; "*" admits every tenant
  std::string method = "lora";         ///< "lora", "qlora", "dora" ...
  unsigned rank = 0;
  double alpha = 0;
  double dropout = 0;
  std::vector<std::string> target_modules{};
  std::string objective{};                    ///< "sft", "dpo" ...
  std::string merge_policy = "runtime";       ///< "runtime" (kept separate) or "static"
  std::string stacking_policy = "exclusive";  ///< "exclusive" or "stackable"
  std::map<std::string, double> eval{};       ///< metric → value
  adapter_status status = adapter_status::candidate;
  std::string rollback_to{};  ///< adapter re-activated by rollback(); "" = base model
};

namespace detail {
inline json to_json(const adapter_record& r) {
  return {{"id", r.id},
          {"base_model_name", r.base_model_name},
          {"task", r.task},
          {"version", r.version},
          {"base_model_sha256", r.base_model_sha256},
          {"tokenizer_sha256", r.tokenizer_sha256},
          {"artifact_sha256", r.artifact_sha256},
          {"tenants", r.tenants},
          {"method", r.method},
          {"rank", r.rank},
          {"alpha", r.alpha},
          {"dropout", r.dropout},
          {"target_modules", r.target_modules},
          {"objective", r.objective},
          {"merge_policy", r.merge_policy},
          {"stacking_policy", r.stacking_policy},
          {"eval", r.eval},
          {"status", std::string(name(r.status))},
          {"rollback_to", r.rollback_to}};
}

inline adapter_record from_json(const json& j, const std::string& src, const std::string& where) {
  adapter_record r;
  r.id = get_field<std::string>(j, "id", src, where);
  r.base_model_name = get_field<std::string>(j, "base_model_name", src, where);
  r.task = get_field<std::string>(j, "task", src, where);
  r.version = get_field<unsigned>(j, "version", src, where);
  r.base_model_sha256 = get_field<std::string>(j, "base_model_sha256", src, where);
  r.tokenizer_sha256 = get_field_or<std::string>(j, "tokenizer_sha256", "", src, where);
  r.artifact_sha256 = get_field_or<std::string>(j, "artifact_sha256", "", src, where);
  r.tenants = get_field<std::vector<std::string>>(j, "tenants", src, where);
  r.method = get_field<std::string>(j, "method", src, where);
  r.rank = get_field<unsigned>(j, "rank", src, where);
  r.alpha = get_field<double>(j, "alpha", src, where);
  r.dropout = get_field_or<double>(j, "dropout", 0.0, src, where);
  r.target_modules = get_field_or<std::vector<std::string>>(j, "target_modules", {}, src, where);
  r.objective = get_field_or<std::string>(j, "objective", "", src, where);
  r.merge_policy = get_field_or<std::string>(j, "merge_policy", "runtime", src, where);
  r.stacking_policy = get_field_or<std::string>(j, "stacking_policy", "exclusive", src, where);
  r.eval = get_field_or<std::map<std::string, double>>(j, "eval", {}, src, where);
  const auto s = get_field<std::string>(j, "status", src, where);
  if (s == "candidate")
    r.status = adapter_status::candidate;
  else if (s == "active")
    r.status = adapter_status::active;
  else if (s == "retired")
    r.status = adapter_status::retired;
  else
    throw error({.what = "unknown adapter status",
                 .file = src,
                 .place = where + ".status",
                 .expected = "candidate, active or retired",
                 .found = s});
  r.rollback_to = get_field_or<std::string>(j, "rollback_to", "", src, where);
  return r;
}

/// An exclusive advisory lock held for the lifetime of the object.
class file_lock {
 public:
  explicit file_lock(const std::filesystem::path& path) {
    if (!path.parent_path().empty()) std::filesystem::create_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw error({.what = "cannot open lock file", .file = path.string()});
    while (::flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) {
        ::close(fd_);
        throw error({.what = "cannot lock", .file = path.string()});
      }
  }
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;
  ~file_lock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_ = -1;
};
}  // namespace detail

/// The adapter registry stored in one JSON file.
class adapter_registry {
 public:
  /// Opens (or, if absent, starts) the registry at `path`.
  explicit adapter_registry(std::filesystem::path path) : path_(std::move(path)) { reload(); }

  /// Re-reads the file (records written by other processes become visible).
  void reload() { records_ = load(path_); }

  /// All records, in registration order.
  const std::vector<adapter_record>& records() const { return records_; }

  /// The record with `id`; forge::error if unknown.
  const adapter_record& at(std::string_view id) const {
    for (const auto& r : records_)
      if (r.id == id) return r;
    throw error(
        {.what = "unknown adapter", .file = path_.string(), .place = "adapter " + std::string(id)});
  }

  /// The active adapter of a (base model name, task) slot, or nullptr.
  const adapter_record* active(std::string_view base_model_name, std::string_view task) const {
    for (const auto& r : records_)
      if (r.status == adapter_status::active && r.base_model_name == base_model_name &&
          r.task == task)
        return &r;
    return nullptr;
  }

  /// Registers a new adapter as a candidate. forge::error if the id is malformed or does not
  /// spell "{base_model_name}-{task}-v{version}", is already registered, the base hash is not
  /// a SHA-256, the tenant scope is empty, or the rank is zero.
  void add(adapter_record r) {
    validate_new(r);
    update([&](std::vector<adapter_record>& rs) {
      for (const auto& o : rs)
        if (o.id == r.id ||
            (o.base_model_name == r.base_model_name && o.task == r.task && o.version == r.version))
          throw error({.what = "adapter already registered",
                       .file = path_.string(),
                       .place = "adapter " + r.id,
                       .expected = "a new id and version"});
      r.status = adapter_status::candidate;
      r.rollback_to.clear();
      rs.push_back(r);
    });
  }

  /// Makes `id` the active adapter of its slot; the previous active one is retired and
  /// becomes the rollback target. Retired adapters may be re-activated.
  void activate(std::string_view id) {
    update([&](std::vector<adapter_record>& rs) {
      auto& r = find(rs, id);
      if (r.status == adapter_status::active) return;
      std::string previous;
      for (auto& o : rs)
        if (o.status == adapter_status::active && o.base_model_name == r.base_model_name &&
            o.task == r.task) {
          o.status = adapter_status::retired;
          previous = o.id;
        }
      r.status = adapter_status::active;
      r.rollback_to = previous;
    });
  }

  /// Retires the active adapter of the slot of `id` and re-activates its rollback target
  /// (or leaves the slot on the base model if it had none). Returns the id now active ("" for
  /// the base model). forge::error if `id` is not active.
  std::string rollback(std::string_view id) {
    std::string now;
    update([&](std::vector<adapter_record>& rs) {
      auto& r = find(rs, id);
      if (r.status != adapter_status::active)
        throw error({.what = "only the active adapter can be rolled back",
                     .file = path_.string(),
                     .place = "adapter " + r.id,
                     .expected = "active",
                     .found = std::string(name(r.status))});
      r.status = adapter_status::retired;
      now = r.rollback_to;
      if (!now.empty()) find(rs, now).status = adapter_status::active;
    });
    return now;
  }

  /// Retires an adapter (it can no longer be loaded).
  void retire(std::string_view id) {
    update([&](std::vector<adapter_record>& rs) { find(rs, id).status = adapter_status::retired; });
  }

  /// Records evaluation results for an adapter (merged into its eval map).
  void record_eval(std::string_view id, const std::map<std::string, double>& results) {
    update([&](std::vector<adapter_record>& rs) {
      auto& r = find(rs, id);
      for (const auto& [k, v] : results) r.eval[k] = v;
    });
  }

  /// Checks that `id` may be loaded onto the base model with hash `base_model_sha256` for
  /// `tenant`; returns its record. forge::error, naming the adapter and what differs, if it is
  /// unknown, not active, trained on another base model, or outside its tenant scope.
  const adapter_record& check_load(std::string_view id, std::string_view base_model_sha256,
                                   std::string_view tenant) const {
    const auto& r = at(id);
    const std::string place = "adapter " + r.id;
    if (r.status != adapter_status::active)
      throw error({.what = "adapter is not active and may not be loaded",
                   .file = path_.string(),
                   .place = place,
                   .expected = "status active",
                   .found = "status " + std::string(name(r.status))});
    if (r.base_model_sha256 != base_model_sha256)
      throw error({.what = "adapter was trained on a different base model",
                   .file = path_.string(),
                   .place = place,
                   .expected = "base model sha256 " + r.base_model_sha256,
                   .found = "base model sha256 " + std::string(base_model_sha256)});
    const bool in_scope = std::any_of(r.tenants.begin(), r.tenants.end(),
                                      [&](const auto& t) { return t == "*" || t == tenant; });
    if (!in_scope) {
      std::string scope;
      for (const auto& t : r.tenants) {
        if (!scope.empty()) scope += ", ";
        scope += t;
      }
      throw error({.what = "tenant is outside the adapter's scope",
                   .file = path_.string(),
                   .place = place,
                   .expected = "one of: " + scope,
                   .found = "tenant " + std::string(tenant)});
    }
    return r;
  }

  /// Parses and validates the text of a registry file (`source` names it in errors): the
  /// format tag, every record's required fields and types, its status, unique ids, and
  /// rollback targets that exist.
  static std::vector<adapter_record> parse_records(std::string_view text,
                                                   const std::string& source) {
    std::vector<adapter_record> out;
    const json j = parse_json(text, source);
    if (get_field<std::string>(j, "format", source) != "forge-adapter-registry/1")
      throw error({.what = "unknown registry format",
                   .file = source,
                   .place = "format",
                   .expected = "forge-adapter-registry/1"});
    const auto arr = get_field<json>(j, "adapters", source);
    if (!arr.is_array())
      throw error({.what = "adapters is not an array", .file = source, .place = "adapters"});
    std::set<std::string> ids;
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const std::string where = "adapters[" + std::to_string(i) + "]";
      out.push_back(detail::from_json(arr[i], source, where));
      if (!ids.insert(out.back().id).second)
        throw error({.what = "duplicate adapter id",
                     .file = source,
                     .place = where + ".id",
                     .found = out.back().id});
    }
    for (std::size_t i = 0; i < out.size(); ++i)
      if (!out[i].rollback_to.empty() && !ids.count(out[i].rollback_to))
        throw error({.what = "rollback target is not a registered adapter",
                     .file = source,
                     .place = "adapters[" + std::to_string(i) + "].rollback_to",
                     .found = out[i].rollback_to});
    return out;
  }

  /// The file path.
  const std::filesystem::path& path() const { return path_; }

 private:
  static std::vector<adapter_record> load(const std::filesystem::path& p) {
    if (!std::filesystem::exists(p)) return {};
    return parse_records(io::read_file(p), p.string());
  }

  static void save(const std::filesystem::path& p, const std::vector<adapter_record>& rs) {
    json j;
    j["format"] = "forge-adapter-registry/1";
    j["adapters"] = json::array();
    for (const auto& r : rs) j["adapters"].push_back(detail::to_json(r));
    io::write_atomic(p, j.dump(2) + "\n");
  }

  /// Lock, re-read, change a copy, write atomically, then adopt the copy: a throwing change
  /// or a failed write leaves both the file and this object as they were.
  void update(const std::function<void(std::vector<adapter_record>&)>& change) {
    std::filesystem::path lock_path = path_;
    lock_path += ".lock";
    detail::file_lock lock(lock_path);
    auto copy = load(path_);
    change(copy);
    save(path_, copy);
    records_ = std::move(copy);
  }

  adapter_record& find(std::vector<adapter_record>& rs, std::string_view id) const {
    for (auto& r : rs)
      if (r.id == id) return r;
    throw error(
        {.what = "unknown adapter", .file = path_.string(), .place = "adapter " + std::string(id)});
  }

  void validate_new(const adapter_record& r) const {
    const std::string place = "adapter " + r.id;
    // Names: letters, digits, '.', '_' and inner single '-' ("llama-3.2-1b").
    auto valid_name = [](const std::string& n) {
      if (n.empty() || n.front() == '-' || n.back() == '-' || n.find("--") != std::string::npos)
        return false;
      return std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
      });
    };
    auto fail = [&](const std::string& what, const std::string& expected,
                    const std::string& found) {
      throw error({.what = what,
                   .file = path_.string(),
                   .place = place,
                   .expected = expected,
                   .found = found});
    };
    if (!valid_name(r.base_model_name) || !valid_name(r.task))
      fail("base model name and task must be non-empty names", "letters, digits, . _ -",
           r.base_model_name + " / " + r.task);
    const std::string expected_id =
        r.base_model_name + "-" + r.task + "-v" + std::to_string(r.version);
    if (r.id != expected_id)
      fail("adapter id does not follow {base}-{task}-v{version}", expected_id, r.id);
    if (!manifest::is_sha256_hex(r.base_model_sha256))
      fail("base model hash is not a SHA-256", "64 lowercase hex characters", r.base_model_sha256);
    if (r.tenants.empty()) fail("empty tenant scope", "at least one tenant (or \"*\")", "none");
    if (r.rank == 0) fail("rank must be positive", "rank >= 1", "0");
  }

  std::filesystem::path path_;
  std::vector<adapter_record> records_;
};

}  // namespace forge::govern
