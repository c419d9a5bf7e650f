#pragma once
// A signed release directory and its verification.
//
//   <release>/
//     model/...                 artifacts (GGUF, safetensors, PEFT adapter ...), as given
//     reports/NN_<kind>.json    the stage reports
//     datasheet.md              the data sheet of the training data
//     MODEL_CARD.md             the model card (model_card.hpp)
//     sbom.cdx.json             CycloneDX 1.6 ML-BOM (sbom.hpp)
//     provenance.intoto.json    in-toto Statement v1, SLSA provenance predicate
//     signing_key.pub           the Ed25519 public key of the signer
//     MANIFEST.json             path, SHA-256 and size of every file above; base model and
//                               dataset bindings (manifest.hpp)
//     MANIFEST.json.sig         Ed25519 signature of MANIFEST.json's bytes, 128 hex + "\n"
//
// The release is built in a hidden sibling directory and renamed into place, so an
// interrupted run never leaves a half-made release. The private key is only ever in memory:
// the signer passes a signing_key and nothing derived from its secret half is written.
//
// verify_release checks, with a public key the auditor trusts (obtained out of band):
// the signature over MANIFEST.json; that signing_key.pub is that key; every listed file
// exists with the listed size and SHA-256; no file is present that is not listed (a listed
// file found under another path is reported as renamed); no symbolic links or special files;
// and that the manifest's bindings agree with the stage reports (see check_bindings). Every
// problem is listed, not just the first.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/core/json.hpp"
#include "forge/govern/hash.hpp"
#include "forge/govern/manifest.hpp"
#include "forge/govern/model_card.hpp"
#include "forge/govern/provenance.hpp"
#include "forge/govern/sbom.hpp"
#include "forge/govern/signing.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge::govern {

/// File names of the fixed parts of a release.
namespace release_files {
inline constexpr const char* manifest = "MANIFEST.json";
inline constexpr const char* signature = "MANIFEST.json.sig";
inline constexpr const char* public_key = "signing_key.pub";
inline constexpr const char* model_card = "MODEL_CARD.md";
inline constexpr const char* sbom = "sbom.cdx.json";
inline constexpr const char* provenance = "provenance.intoto.json";
inline constexpr const char* datasheet = "datasheet.md";
inline constexpr const char* reports_dir = "reports";
}  // namespace release_files

/// A file to place in the release: copied from `source`, or written from `content` when
/// `source` is empty. `path` is relative to the release root.
struct release_file {
  std::string path{};
  std::filesystem::path source{};
  std::string content{};
};

/// What goes into a release.
struct release_spec {
  model_card_record card{};               ///< name, version, base model, datasets, stages ...
  std::vector<release_file> artifacts{};  ///< model files, under model/ by convention
  std::vector<release_file> reports{};    ///< stage report JSON texts, placed under reports/
  std::string datasheet{};                ///< Markdown
  json parameters = json::object();       ///< pipeline parameters (provenance externalParameters)
  json internal_parameters = json::object();
  std::string invocation_id{};
  std::string started_on{};   ///< RFC 3339 UTC; now if empty
  std::string finished_on{};  ///< RFC 3339 UTC; now if empty
  std::string builder_id = "urn:forge:builder:local";
};

/// One problem found by verify_release.
struct verify_problem {
  enum class kind {
    missing_file,         ///< listed in the manifest, absent
    extra_file,           ///< present, not listed
    renamed_file,         ///< a listed file's content found under another path
    hash_mismatch,        ///< present with other content (size or SHA-256 differ)
    irregular_file,       ///< symbolic link, device, socket ...
    bad_signature,        ///< signature absent, malformed or not valid for the manifest
    public_key_mismatch,  ///< signing_key.pub is not the trusted key
    malformed_manifest,   ///< MANIFEST.json does not parse or is not canonical
    bad_report,           ///< a stage report is missing fields or malformed
    unbound_base_model,   ///< reports name a base model the manifest does not bind
    unbound_dataset,      ///< reports name a dataset the manifest does not bind
    broken_chain,         ///< a stage's input is not the previous stage's output
  };
  kind what = kind::missing_file;
  std::string path{};    ///< the file concerned (relative)
  std::string detail{};  ///< a sentence for a person
};

/// Name of a problem kind, for messages.
inline std::string_view name(verify_problem::kind k) {
  using K = verify_problem::kind;
  switch (k) {
    case K::missing_file:
      return "missing file";
    case K::extra_file:
      return "extra file";
    case K::renamed_file:
      return "renamed file";
    case K::hash_mismatch:
      return "hash mismatch";
    case K::irregular_file:
      return "irregular file";
    case K::bad_signature:
      return "bad signature";
    case K::public_key_mismatch:
      return "public key mismatch";
    case K::malformed_manifest:
      return "malformed manifest";
    case K::bad_report:
      return "bad report";
    case K::unbound_base_model:
      return "unbound base model";
    case K::unbound_dataset:
      return "unbound dataset";
    case K::broken_chain:
      return "broken chain";
  }
  return "unknown";
}

/// The outcome of verify_release: valid iff no problems.
struct verify_result {
  std::vector<verify_problem> problems{};
  bool signature_valid = false;
  bool ok() const { return problems.empty(); }
  /// Whether some problem concerns `path`.
  bool names(std::string_view path) const {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const auto& p) { return p.path == path; });
  }
  /// Whether some problem is of kind `k`.
  bool has(verify_problem::kind k) const {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const auto& p) { return p.what == k; });
  }
  /// One line per problem.
  std::string summary() const {
    std::string s;
    for (const auto& p : problems) {
      s += std::string(name(p.what));
      s += ": ";
      s += p.path;
      s += ": ";
      s += p.detail;
      s += "\n";
    }
    return s.empty() ? "release verified\n" : s;
  }
};

/// A stage report as far as verification reads it. Two layouts are read (other fields are
/// ignored):
///  * the pipeline's report (`"schema": "forge.stage_report/1"`, written by pipeline/run.hpp):
///      {"schema": "forge.stage_report/1", "stage": {"index": 1, "kind": "adapt", ...},
///       "input": {"sha256": "<sha256>", ...}, "output": {"sha256": "<sha256>" | null, ...},
///       "data": [{"name": "<dataset name>", "sha256": "<sha256>"}, ...], ...}
///  * the flat layout of reports made by other tools (no "schema" field):
///      {"stage": "adapt", "index": 0, "input_hash": "<sha256>", "output_hash": "<sha256>",
///       "data_hashes": {"<dataset name>": "<sha256>", ...}}
/// `index` orders the stages (file name order when absent); the output hash and the data
/// hashes are optional.
struct report_binding {
  std::string file{};
  std::string stage{};
  long long index = -1;
  std::string input_hash{};
  std::string output_hash{};
  std::map<std::string, std::string> data_hashes{};
};

/// The schema name of the pipeline's stage reports.
inline constexpr const char* stage_report_schema = "forge.stage_report/1";

namespace detail {
inline const json& object_field(const json& j, const char* key, const std::string& file) {
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_object())
    throw error({.what = "stage report field is missing or not an object",
                 .file = file,
                 .place = key,
                 .expected = "a JSON object",
                 .found = j.is_object() && j.contains(key) ? j.at(key).type_name() : "absent"});
  return j.at(key);
}

// The pipeline's nested layout (pipeline/run.hpp, stage_json).
inline void read_pipeline_report(const json& j, const std::string& file, report_binding& b) {
  const json& stage = object_field(j, "stage", file);
  b.stage = get_field<std::string>(stage, "kind", file, "stage");
  b.index = get_field_or<long long>(stage, "index", -1, file, "stage");
  b.input_hash = get_field<std::string>(object_field(j, "input", file), "sha256", file, "input");
  const json& out = object_field(j, "output", file);
  if (out.contains("sha256") && !out.at("sha256").is_null())
    b.output_hash = get_field<std::string>(out, "sha256", file, "output");
  if (!j.contains("data")) return;
  if (!j.at("data").is_array())
    throw error({.what = "stage report field is not an array",
                 .file = file,
                 .place = "data",
                 .expected = "an array of {name, sha256}",
                 .found = j.at("data").type_name()});
  std::size_t i = 0;
  for (const auto& d : j.at("data")) {
    const std::string where = "data[" + std::to_string(i++) + "]";
    const auto name = get_field<std::string>(d, "name", file, where);
    const auto hash = get_field<std::string>(d, "sha256", file, where);
    if (!b.data_hashes.emplace(name, hash).second && b.data_hashes[name] != hash)
      throw error({.what = "a stage report names one dataset with two hashes",
                   .file = file,
                   .place = where,
                   .expected = b.data_hashes[name],
                   .found = hash});
  }
}
}  // namespace detail

/// Reads a report's binding fields (either layout above); forge::error naming the file and
/// field if malformed.
inline report_binding read_report_binding(const std::string& text, const std::string& file) {
  const json j = parse_json(text, file);
  report_binding b;
  b.file = file;
  if (j.is_object() && j.contains("schema")) {
    const auto schema = get_field<std::string>(j, "schema", file);
    if (schema != stage_report_schema)
      throw error({.what = "unknown stage report schema",
                   .file = file,
                   .place = "schema",
                   .expected = stage_report_schema,
                   .found = schema});
    detail::read_pipeline_report(j, file, b);
  } else {
    b.stage = get_field<std::string>(j, "stage", file);
    b.index = get_field_or<long long>(j, "index", -1, file);
    b.input_hash = get_field<std::string>(j, "input_hash", file);
    b.output_hash = get_field_or<std::string>(j, "output_hash", "", file);
    b.data_hashes = get_field_or<std::map<std::string, std::string>>(j, "data_hashes", {}, file);
  }
  auto check = [&](const std::string& h, const std::string& field) {
    if (!manifest::is_sha256_hex(h))
      throw error({.what = "malformed hash",
                   .file = file,
                   .place = field,
                   .expected = "64 lowercase hex characters",
                   .found = h});
  };
  check(b.input_hash, "input hash");
  if (!b.output_hash.empty()) check(b.output_hash, "output hash");
  for (const auto& [k, v] : b.data_hashes) check(v, "hash of dataset " + k);
  return b;
}

/// Checks that the manifest binds what the reports name: the first stage's input is the
/// bound base model, each stage's input is the previous stage's output (where recorded), and
/// every dataset hash a report names is bound under the same name. Returns the problems.
inline std::vector<verify_problem> check_bindings(const manifest& m,
                                                  std::vector<report_binding> reports) {
  using K = verify_problem::kind;
  std::vector<verify_problem> out;
  if (reports.empty()) {
    out.push_back({K::bad_report, release_files::reports_dir,
                   "the release has no stage reports, so nothing binds its inputs"});
    return out;
  }
  std::stable_sort(reports.begin(), reports.end(), [](const auto& a, const auto& b) {
    return a.index != b.index ? a.index < b.index : a.file < b.file;
  });
  if (reports.front().input_hash != m.base_model_sha256)
    out.push_back({K::unbound_base_model, reports.front().file,
                   "first stage input " + reports.front().input_hash +
                       " is not the base model bound by the manifest (" + m.base_model_sha256 +
                       ")"});
  for (std::size_t i = 1; i < reports.size(); ++i)
    if (!reports[i - 1].output_hash.empty() && reports[i].input_hash != reports[i - 1].output_hash)
      out.push_back({K::broken_chain, reports[i].file,
                     "input " + reports[i].input_hash + " is not the output of " +
                         reports[i - 1].file + " (" + reports[i - 1].output_hash + ")"});
  for (const auto& r : reports)
    for (const auto& [name, h] : r.data_hashes) {
      auto it = m.datasets.find(name);
      if (it == m.datasets.end())
        out.push_back(
            {K::unbound_dataset, r.file, "dataset \"" + name + "\" is not bound by the manifest"});
      else if (it->second != h)
        out.push_back(
            {K::unbound_dataset, r.file,
             "dataset \"" + name + "\" has hash " + h + " but the manifest binds " + it->second});
    }
  return out;
}

namespace detail {
inline void fsync_file(const std::filesystem::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error({.what = "cannot open for fsync", .file = p.string()});
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw error({.what = "fsync failed", .file = p.string()});
}

inline std::vector<report_binding> read_reports(const std::filesystem::path& dir,
                                                std::vector<verify_problem>* problems) {
  namespace fs = std::filesystem;
  std::vector<report_binding> out;
  const auto rdir = dir / release_files::reports_dir;
  if (!fs::is_directory(rdir)) return out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(rdir))
    if (e.is_regular_file() && !e.is_symlink() && e.path().extension() == ".json")
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const auto rel = f.lexically_relative(dir).generic_string();
    try {
      out.push_back(read_report_binding(io::read_file(f), rel));
    } catch (const error& e) {
      if (!problems) throw;
      problems->push_back({verify_problem::kind::bad_report, rel, e.what()});
    }
  }
  return out;
}
}  // namespace detail

/// Assembles and signs a release in `dir` (which must not exist or be empty). Returns the
/// manifest that was signed. forge::error for unsafe artifact paths, duplicates, a clash
/// with the fixed file names, or reports that do not bind to the card's base model and
/// datasets (a release that could not verify is never signed).
inline manifest assemble_release(const std::filesystem::path& dir, const release_spec& spec,
                                 const signing_key& key) {
  namespace fs = std::filesystem;
  if (fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir)))
    throw error({.what = "release directory exists and is not empty", .file = dir.string()});
  const fs::path staging = dir.parent_path() / ("." + dir.filename().string() + ".staging");
  fs::remove_all(staging);
  fs::create_directories(staging);
  try {
    std::set<std::string> used = {release_files::manifest,   release_files::signature,
                                  release_files::public_key, release_files::model_card,
                                  release_files::sbom,       release_files::provenance,
                                  release_files::datasheet};
    auto place = [&](const release_file& f) {
      if (!valid_manifest_path(f.path))
        throw error({.what = "unsafe release path",
                     .place = f.path,
                     .expected = "a relative path without . or .."});
      if (!used.insert(f.path).second)
        throw error({.what = "release path used twice or reserved", .place = f.path});
      const fs::path target = staging / f.path;
      fs::create_directories(target.parent_path());
      if (!f.source.empty()) {
        fs::copy_file(f.source, target);
        detail::fsync_file(target);  // the rename below publishes it: make it durable first
      } else {
        io::write_atomic(target, f.content);
      }
    };
    std::vector<manifest_entry> artifact_hashes;
    for (const auto& a : spec.artifacts) {
      place(a);
      artifact_hashes.push_back(
          {a.path, sha256_file(staging / a.path), fs::file_size(staging / a.path)});
    }
    std::vector<report_binding> bindings;
    for (const auto& r : spec.reports) {
      release_file rf = r;
      rf.path = std::string(release_files::reports_dir) + "/" + r.path;
      if (!rf.source.empty()) {
        rf.content = io::read_file(rf.source);
        rf.source.clear();
      }
      bindings.push_back(read_report_binding(rf.content, rf.path));
      place(rf);
    }
    io::write_atomic(staging / release_files::datasheet, spec.datasheet);
    io::write_atomic(staging / release_files::model_card, render_model_card(spec.card));
    const std::string started = spec.started_on.empty() ? utc_now_rfc3339() : spec.started_on;
    const std::string finished = spec.finished_on.empty() ? utc_now_rfc3339() : spec.finished_on;
    io::write_atomic(staging / release_files::sbom,
                     make_sbom(spec.card, artifact_hashes, finished).dump(2) + "\n");
    io::write_atomic(staging / release_files::public_key, public_key_text(key.public_part()));

    provenance_record pr;
    pr.subjects =
        scan_tree(staging).files;  // everything so far; the statement is not its own subject
    pr.external_parameters = spec.parameters;
    pr.internal_parameters = spec.internal_parameters;
    pr.inputs.push_back({spec.card.base_model_name, "", spec.card.base_model_sha256});
    for (const auto& d : spec.card.datasets) pr.inputs.push_back({d.name, "", d.sha256});
    pr.builder_id = spec.builder_id;
    pr.builder_version = FORGE_VERSION_STRING;
    pr.invocation_id =
        spec.invocation_id.empty()
            ? content_uuid("forge-invocation/1", started + spec.card.name + spec.card.version)
            : spec.invocation_id;
    pr.started_on = started;
    pr.finished_on = finished;
    io::write_atomic(staging / release_files::provenance, make_provenance(pr).dump(2) + "\n");

    manifest m;
    m.release_name = spec.card.name;
    m.release_version = spec.card.version;
    m.base_model_sha256 = spec.card.base_model_sha256;
    for (const auto& d : spec.card.datasets) m.datasets[d.name] = d.sha256;
    const auto scan = scan_tree(staging);
    m.files = scan.files;
    const auto problems = check_bindings(m, bindings);
    if (!problems.empty())
      throw error({.what = "stage reports do not bind to the release's base model and data: " +
                           problems.front().detail,
                   .place = problems.front().path});
    const std::string text = m.to_json();
    io::write_atomic(staging / release_files::manifest, text);
    io::write_atomic(staging / release_files::signature, key.sign(text).hex() + "\n");
    if (fs::exists(dir)) fs::remove(dir);  // empty, checked above
    fs::create_directories(dir.parent_path().empty() ? fs::path(".") : dir.parent_path());
    fs::rename(staging, dir);
    io::detail::fsync_dir(dir.parent_path());
    return m;
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
}

/// Verifies a release against a trusted public key; lists every problem found.
inline verify_result verify_release(const std::filesystem::path& dir, const public_key& trusted) {
  namespace fs = std::filesystem;
  using K = verify_problem::kind;
  verify_result res;
  auto add = [&](K k, std::string path, std::string detail) {
    res.problems.push_back({k, std::move(path), std::move(detail)});
  };
  if (!fs::is_directory(dir)) {
    add(K::missing_file, ".", "release directory " + dir.string() + " does not exist");
    return res;
  }
  // The signature and the key.
  std::string text;
  const bool have_manifest = fs::is_regular_file(fs::symlink_status(dir / release_files::manifest));
  if (have_manifest)
    text = io::read_file(dir / release_files::manifest);
  else
    add(K::missing_file, release_files::manifest, "the manifest is absent");
  if (!fs::is_regular_file(fs::symlink_status(dir / release_files::signature))) {
    add(K::bad_signature, release_files::signature, "the signature file is absent");
  } else if (have_manifest) {
    try {
      const auto sig =
          parse_signature(io::read_file(dir / release_files::signature), release_files::signature);
      res.signature_valid = verify_signature(trusted, text, sig);
      if (!res.signature_valid)
        add(K::bad_signature, release_files::signature,
            "the signature does not verify MANIFEST.json under the trusted key " + trusted.hex());
    } catch (const error& e) {
      add(K::bad_signature, release_files::signature, e.what());
    }
  }
  if (fs::is_regular_file(fs::symlink_status(dir / release_files::public_key))) {
    try {
      const auto k = load_public_key(dir / release_files::public_key);
      if (!(k == trusted))
        add(K::public_key_mismatch, release_files::public_key,
            "the release names key " + k.hex() + ", the trusted key is " + trusted.hex());
    } catch (const error& e) {
      add(K::public_key_mismatch, release_files::public_key, e.what());
    }
  }
  if (!have_manifest) return res;
  manifest m;
  try {
    m = manifest::parse(text, release_files::manifest);
    if (m.to_json() != text)
      add(K::malformed_manifest, release_files::manifest,
          "the manifest is not in canonical form (it was not written by forge or was edited)");
  } catch (const error& e) {
    add(K::malformed_manifest, release_files::manifest, e.what());
    return res;
  }

  // Every file: present, same size and hash; nothing extra.
  const auto scan = scan_tree(dir, {release_files::manifest, release_files::signature});
  for (const auto& p : scan.irregular)
    add(K::irregular_file, p, "symbolic links and special files are not allowed in a release");
  std::map<std::string, const manifest_entry*> present;
  for (const auto& f : scan.files) present[f.path] = &f;
  std::vector<const manifest_entry*> missing;
  for (const auto& e : m.files) {
    auto it = present.find(e.path);
    if (it == present.end()) {
      missing.push_back(&e);
      continue;
    }
    const auto& f = *it->second;
    if (f.size != e.size || f.sha256 != e.sha256)
      add(K::hash_mismatch, e.path,
          "listed with " + std::to_string(e.size) + " bytes, sha256 " + e.sha256 + "; found " +
              std::to_string(f.size) + " bytes, sha256 " + f.sha256);
    present.erase(it);
  }
  for (const auto* e : missing) {
    auto moved = std::find_if(present.begin(), present.end(), [&](const auto& kv) {
      return kv.second->sha256 == e->sha256 && kv.second->size == e->size && !m.find(kv.first);
    });
    if (moved != present.end()) {
      add(K::renamed_file, e->path, "its content is now at " + moved->first);
      add(K::renamed_file, moved->first, "not listed; it has the content of " + e->path);
      present.erase(moved);
    } else {
      add(K::missing_file, e->path, "listed in the manifest but absent");
    }
  }
  for (const auto& [p, _] : present)
    add(K::extra_file, p, "present but not listed in the manifest");

  // Bindings between the signed manifest and the stage reports.
  auto reports = detail::read_reports(dir, &res.problems);
  for (auto& p : check_bindings(m, std::move(reports))) res.problems.push_back(std::move(p));
  return res;
}

}  // namespace forge::govern
