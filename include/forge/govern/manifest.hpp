#pragma once
// The release manifest: every file of a release directory with its SHA-256 and size, plus
// the hashes of the base model and datasets the release claims to descend from. It is
// serialized as canonical JSON (keys sorted, no insignificant whitespace, files sorted by
// path bytes, one trailing newline) so that the same release always yields the same bytes,
// and those bytes are what the Ed25519 signature covers.
//
//   {"bindings":{"base_model":"<sha256>","datasets":{"<name>":"<sha256>",...}},
//    "files":[{"path":"model/model.gguf","sha256":"<hex>","size":123},...],
//    "format":"forge-manifest/1","release":{"name":"...","version":"..."}}
//
// Paths are relative, '/'-separated, without "." or ".." components: a manifest can never
// point outside the directory it describes.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/core/json.hpp"
#include "forge/govern/hash.hpp"

namespace forge::govern {

/// One file of a release.
struct manifest_entry {
  std::string path{};      ///< relative, '/'-separated
  std::string sha256{};    ///< 64 lowercase hex characters
  std::uint64_t size = 0;  ///< bytes
  friend bool operator==(const manifest_entry&, const manifest_entry&) = default;
};

/// What a scan of a directory found: regular files (hashed) and anything else (symbolic
/// links, sockets, devices), which a release must not contain.
struct tree_scan {
  std::vector<manifest_entry> files{};   ///< sorted by path
  std::vector<std::string> irregular{};  ///< relative paths of non-regular entries
};

/// Whether `p` is a safe relative manifest path: non-empty, '/'-separated, no empty, "." or
/// ".." components, no backslash or NUL.
inline bool valid_manifest_path(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.back() == '/') return false;
  if (p.find('\\') != std::string_view::npos || p.find('\0') != std::string_view::npos)
    return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    auto end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    const auto part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

/// Hashes every regular file under `dir` (recursively), skipping the relative paths in
/// `exclude`; directories are not listed, other entries are reported as irregular.
inline tree_scan scan_tree(const std::filesystem::path& dir,
                           const std::set<std::string>& exclude = {}) {
  namespace fs = std::filesystem;
  tree_scan out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec);
  if (ec) throw error({.what = "cannot list directory: " + ec.message(), .file = dir.string()});
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw error({.what = "cannot list directory: " + ec.message(), .file = dir.string()});
    const auto rel = it->path().lexically_relative(dir).generic_string();
    const auto st = it->symlink_status();
    if (fs::is_directory(st)) continue;
    if (exclude.count(rel)) continue;
    if (!fs::is_regular_file(st)) {
      out.irregular.push_back(rel);
      continue;
    }
    out.files.push_back({rel, sha256_file(it->path()), fs::file_size(it->path())});
  }
  std::sort(out.files.begin(), out.files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  std::sort(out.irregular.begin(), out.irregular.end());
  return out;
}

/// A release manifest (see the header comment for the JSON form).
struct manifest {
  static constexpr std::string_view format_id = "forge-manifest/1";
  std::string release_name{};
  std::string release_version{};
  std::string base_model_sha256{};                ///< the base model the release descends from
  std::map<std::string, std::string> datasets{};  ///< dataset name → sha256
  std::vector<manifest_entry> files{};            ///< sorted by path

  /// The canonical JSON text (the bytes that get signed).
  std::string to_json() const {
    json j;
    j["format"] = format_id;
    j["release"] = {{"name", release_name}, {"version", release_version}};
    j["bindings"]["base_model"] = base_model_sha256;
    j["bindings"]["datasets"] = json::object();
    for (const auto& [k, v] : datasets) j["bindings"]["datasets"][k] = v;
    j["files"] = json::array();
    for (const auto& f : files)
      j["files"].push_back({{"path", f.path}, {"sha256", f.sha256}, {"size", f.size}});
    return j.dump() + "\n";
  }

  /// The entry for `path`, or nullptr.
  const manifest_entry* find(std::string_view path) const {
    for (const auto& f : files)
      if (f.path == path) return &f;
    return nullptr;
  }

  /// Parses and validates a manifest: known format, well-formed hashes, safe unique paths in
  /// sorted order. forge::error naming `source` and the field otherwise.
  static manifest parse(std::string_view text, const std::string& source) {
    const json j = parse_json(text, source);
    auto fail = [&](const std::string& what, const std::string& place,
                    const std::string& expected = {}, const std::string& found = {}) {
      throw error(
          {.what = what, .file = source, .place = place, .expected = expected, .found = found});
    };
    if (get_field<std::string>(j, "format", source) != format_id)
      fail("unknown manifest format", "format", std::string(format_id), j["format"].dump());
    manifest m;
    const auto rel = get_field<json>(j, "release", source);
    m.release_name = get_field<std::string>(rel, "name", source, "release");
    m.release_version = get_field<std::string>(rel, "version", source, "release");
    const auto b = get_field<json>(j, "bindings", source);
    m.base_model_sha256 = get_field<std::string>(b, "base_model", source, "bindings");
    if (!is_sha256_hex(m.base_model_sha256))
      fail("malformed hash", "bindings.base_model", "64 lowercase hex characters",
           m.base_model_sha256);
    m.datasets = get_field<std::map<std::string, std::string>>(b, "datasets", source, "bindings");
    for (const auto& [k, v] : m.datasets)
      if (!is_sha256_hex(v))
        fail("malformed hash", "bindings.datasets." + k, "64 lowercase hex characters", v);
    const auto files = get_field<json>(j, "files", source);
    if (!files.is_array()) fail("files is not an array", "files", "an array");
    for (std::size_t i = 0; i < files.size(); ++i) {
      const std::string where = "files[" + std::to_string(i) + "]";
      manifest_entry e;
      e.path = get_field<std::string>(files[i], "path", source, where);
      e.sha256 = get_field<std::string>(files[i], "sha256", source, where);
      e.size = get_field<std::uint64_t>(files[i], "size", source, where);
      if (!valid_manifest_path(e.path))
        fail("unsafe or malformed path", where + ".path", "a relative path without . or ..",
             e.path);
      if (!is_sha256_hex(e.sha256))
        fail("malformed hash", where + ".sha256", "64 lowercase hex characters", e.sha256);
      if (!m.files.empty() && !(m.files.back().path < e.path))
        fail("paths not strictly sorted (duplicate or out of order)", where + ".path",
             "a path after " + m.files.back().path, e.path);
      m.files.push_back(std::move(e));
    }
    return m;
  }

  /// Whether `s` is 64 lowercase hex characters.
  static bool is_sha256_hex(std::string_view s) {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
             return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
  }
};

}  // namespace forge::govern
