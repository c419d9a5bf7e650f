#pragma once
// JSON on nlohmann-json with forge's error discipline: parse errors name the file, line and
// column; missing or mistyped fields name the JSON path; writes are atomic.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge {

using json = nlohmann::json;

/// "line L, column C" of byte offset `byte` (1-based, counted in bytes) in `text`.
inline std::string line_column(std::string_view text, std::size_t byte) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

/// Parses JSON text; errors name `source` and the line and column.
inline json parse_json(std::string_view text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann's byte is 1-based and points just past the offending character.
    throw error({.what = std::string("invalid JSON: ") + e.what(),
                 .file = source,
                 .place = line_column(text, e.byte > 0 ? e.byte - 1 : 0),
                 .expected = "well-formed JSON"});
  } catch (const json::exception& e) {
    throw error({.what = std::string("invalid JSON: ") + e.what(), .file = source});
  }
}

/// Reads and parses a JSON file.
inline json load_json(const std::filesystem::path& path) {
  return parse_json(io::read_file(path), path.string());
}

/// Writes JSON atomically, indented by 2 (a trailing newline included).
inline void save_json(const std::filesystem::path& path, const json& j) {
  io::write_atomic(path, j.dump(2) + "\n");
}

/// The member `key` of object `j` as T; errors name `source` and the path `where.key`.
template <class T>
T get_field(const json& j, std::string_view key, const std::string& source,
            const std::string& where = {}) {
  const std::string path = where.empty() ? std::string(key) : where + "." + std::string(key);
  if (!j.is_object())
    throw error({.what = "not a JSON object",
                 .file = source,
                 .place = where.empty() ? "top level" : where,
                 .expected = "an object",
                 .found = j.type_name()});
  auto it = j.find(key);
  if (it == j.end())
    throw error({.what = "missing field",
                 .file = source,
                 .place = path,
                 .expected = "a value for \"" + std::string(key) + "\""});
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw error({.what = "field has the wrong type",
                 .file = source,
                 .place = path,
                 .found = std::string(it->type_name()) + " " + it->dump()});
  }
}

/// Like get_field, but absent or null members give `fallback`.
template <class T>
T get_field_or(const json& j, std::string_view key, T fallback, const std::string& source,
               const std::string& where = {}) {
  if (!j.is_object()) return get_field<T>(j, key, source, where);  // reports the error
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return get_field<T>(j, key, source, where);
}

}  // namespace forge
