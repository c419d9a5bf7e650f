#pragma once
// Reading a JSON document with errors that name the file and the JSON path of the bad value
// ("tokenizer.json: /model/merges/17: expected a string ..."). Built on nlohmann::json.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"

namespace forge::text::detail {

/// Parses `text` as JSON; forge::error naming `source` and the byte offset on a syntax error.
inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw error({.what = "invalid JSON: " + std::string(e.what()),
                 .file = source,
                 .place = at_byte(e.byte),
                 .expected = "a JSON document"});
  }
}

/// A value inside a parsed JSON document together with its file name and JSON path.
class json_node {
 public:
  json_node(const nlohmann::json& v, std::string file, std::string path = "")
      : v_(&v), file_(std::move(file)), path_(std::move(path)) {}

  const nlohmann::json& value() const { return *v_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  bool is_null() const { return v_->is_null(); }
  bool is_object() const { return v_->is_object(); }
  bool is_array() const { return v_->is_array(); }
  bool is_string() const { return v_->is_string(); }

  /// Throws forge::error at this node.
  [[noreturn]] void fail(const std::string& what, const std::string& expected = "") const {
    throw error({.what = what,
                 .file = file_,
                 .place = path_.empty() ? "/" : path_,
                 .expected = expected,
                 .found = describe()});
  }

  /// A short description of the value here, for error messages.
  std::string describe() const {
    std::string d = v_->type_name();
    if (v_->is_primitive()) {
      std::string s = v_->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (s.size() > 60) s = s.substr(0, 57) + "...";
      d += " " + s;
    }
    return d;
  }

  /// Member `key`, which must exist (and this must be an object).
  json_node at(std::string_view key) const {
    auto m = find(key);
    if (!m) {
      json_node missing(*v_, file_, child_path(key));
      throw error({.what = "missing member",
                   .file = file_,
                   .place = missing.path_,
                   .expected = "member \"" + std::string(key) + "\""});
    }
    return *m;
  }

  /// Member `key` if this is an object holding it (null counts as absent).
  std::optional<json_node> find(std::string_view key) const {
    if (!v_->is_object()) fail("expected an object", "a JSON object");
    auto it = v_->find(key);
    if (it == v_->end() || it->is_null()) return std::nullopt;
    return json_node(*it, file_, child_path(key));
  }

  /// Element `i` of an array.
  json_node operator[](std::size_t i) const {
    return json_node((*v_)[i], file_, path_ + "/" + std::to_string(i));
  }

  /// Number of elements; this must be an array.
  std::size_t size() const {
    if (!v_->is_array()) fail("expected an array", "a JSON array");
    return v_->size();
  }

  std::string str() const {
    if (!v_->is_string()) fail("expected a string", "a JSON string");
    return v_->get<std::string>();
  }
  const std::string& str_ref() const {
    if (!v_->is_string()) fail("expected a string", "a JSON string");
    return v_->get_ref<const std::string&>();
  }
  bool boolean() const {
    if (!v_->is_boolean()) fail("expected a boolean", "true or false");
    return v_->get<bool>();
  }
  /// An integer in [lo, hi].
  std::int64_t integer(std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                       std::int64_t hi = std::numeric_limits<std::int64_t>::max()) const {
    if (!v_->is_number_integer()) fail("expected an integer", "an integer");
    std::int64_t x = 0;
    if (v_->is_number_unsigned()) {
      const auto u = v_->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail("integer out of range",
             "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      x = static_cast<std::int64_t>(u);
    } else {
      x = v_->get<std::int64_t>();
    }
    if (x < lo || x > hi)
      fail("integer out of range",
           "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  /// Optional member helpers with defaults.
  bool boolean_or(std::string_view key, bool dflt) const {
    auto m = find(key);
    return m ? m->boolean() : dflt;
  }
  std::optional<std::string> str_opt(std::string_view key) const {
    auto m = find(key);
    if (!m) return std::nullopt;
    return m->str();
  }

 private:
  std::string child_path(std::string_view key) const {
    // JSON Pointer escaping (RFC 6901): '~' -> "~0", '/' -> "~1".
    std::string p = path_ + "/";
    for (char c : key) {
      if (c == '~')
        p += "~0";
      else if (c == '/')
        p += "~1";
      else
        p += c;
    }
    return p;
  }

  const nlohmann::json* v_;
  std::string file_;
  std::string path_;
};

}  // namespace forge::text::detail
