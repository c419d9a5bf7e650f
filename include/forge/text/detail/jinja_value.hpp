#pragma once
// The values a chat template computes with, and how Python prints them.
//
// Chat templates are rendered by transformers with jinja2 on Python objects, so every value
// here behaves like its Python counterpart: `str()` of a list is `[1, 'a', None]`, a float
// prints with Python's shortest round-trip repr (`1.0`, `1e+16`), `len()` of a string counts
// code points, dicts keep insertion order. Undefined is jinja2's default `Undefined`: it
// prints as nothing, is false, iterates as empty, and fails on anything else.

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace forge::text::detail::jinja {

struct value;
struct call_args;

/// A failure inside a value operation (a Python TypeError, say); the renderer adds the
/// template name, line and column and rethrows it as forge::error.
struct eval_failure {
  std::string what;
};

/// jinja2's Undefined; `hint` is the message used when it is used in a way that fails.
struct undefined_t {
  std::string hint;
};
struct none_t {};
using list_t = std::vector<value>;
/// A Python dict: (key, value) pairs in insertion order; chat messages have few keys.
using dict_t = std::vector<std::pair<value, value>>;
/// jinja2's `namespace()`: the only mutable object a sandboxed template can change.
struct namespace_t;
/// A global function, a bound method or a macro.
struct callable_t {
  std::string name;
  std::function<value(call_args&)> fn;
};

struct value {
  std::variant<undefined_t, none_t, bool, std::int64_t, double, std::string,
               std::shared_ptr<const list_t>, std::shared_ptr<const dict_t>,
               std::shared_ptr<namespace_t>, std::shared_ptr<const callable_t>>
      v;
  /// A list that Python would hold as a tuple (`(a, b)`, dict.items() pairs): prints as one.
  bool tuple = false;

  value() : v(undefined_t{}) {}
  static value undefined(std::string hint) { return from(undefined_t{std::move(hint)}); }
  static value none() { return from(none_t{}); }
  static value boolean(bool b) { return from(b); }
  static value integer(std::int64_t i) { return from(i); }
  static value real(double d) { return from(d); }
  static value string(std::string s) { return from(std::move(s)); }
  static value list(list_t l) { return from(std::make_shared<const list_t>(std::move(l))); }
  static value make_tuple(list_t l) {
    value r = list(std::move(l));
    r.tuple = true;
    return r;
  }
  static value dict(dict_t d) { return from(std::make_shared<const dict_t>(std::move(d))); }
  static value callable(std::string name, std::function<value(call_args&)> fn) {
    return from(std::make_shared<const callable_t>(callable_t{std::move(name), std::move(fn)}));
  }
  template <class T>
  static value from(T&& x) {
    value r;
    r.v = std::forward<T>(x);
    return r;
  }

  bool is_undefined() const { return std::holds_alternative<undefined_t>(v); }
  bool is_none() const { return std::holds_alternative<none_t>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_int() const { return std::holds_alternative<std::int64_t>(v); }
  bool is_real() const { return std::holds_alternative<double>(v); }
  /// int, float or bool: Python's numbers.Number (bool is an int subclass).
  bool is_number() const { return is_int() || is_real() || is_bool(); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<const list_t>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<const dict_t>>(v); }
  bool is_namespace() const { return std::holds_alternative<std::shared_ptr<namespace_t>>(v); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<const callable_t>>(v); }

  bool as_bool() const { return std::get<bool>(v); }
  std::int64_t as_int() const { return std::get<std::int64_t>(v); }
  double as_real() const { return std::get<double>(v); }
  const std::string& as_string() const { return std::get<std::string>(v); }
  const list_t& as_list() const { return *std::get<std::shared_ptr<const list_t>>(v); }
  const dict_t& as_dict() const { return *std::get<std::shared_ptr<const dict_t>>(v); }
  namespace_t& as_namespace() const { return *std::get<std::shared_ptr<namespace_t>>(v); }
  const callable_t& as_callable() const { return *std::get<std::shared_ptr<const callable_t>>(v); }
  const std::string& undefined_hint() const { return std::get<undefined_t>(v).hint; }
  /// A number as a double (bool counts as 0/1).
  double to_double() const {
    if (is_real()) return as_real();
    if (is_int()) return static_cast<double>(as_int());
    return as_bool() ? 1.0 : 0.0;
  }
};

struct namespace_t {
  dict_t attrs;
};

/// Arguments of a call: positional, then keyword, in source order.
struct call_args {
  std::vector<value> pos;
  std::vector<std::pair<std::string, value>> kw;
};

/// Python's type name of a value, for error messages ("str", "int", "dict").
inline std::string type_name(const value& x) {
  switch (x.v.index()) {
    case 0:
      return "Undefined";
    case 1:
      return "NoneType";
    case 2:
      return "bool";
    case 3:
      return "int";
    case 4:
      return "float";
    case 5:
      return "str";
    case 6:
      return "list";
    case 7:
      return "dict";
    case 8:
      return "Namespace";
    default:
      return "function";
  }
}

/// Python truthiness; Undefined is false.
inline bool truthy(const value& x) {
  switch (x.v.index()) {
    case 0:
    case 1:
      return false;
    case 2:
      return x.as_bool();
    case 3:
      return x.as_int() != 0;
    case 4:
      return x.as_real() != 0.0;
    case 5:
      return !x.as_string().empty();
    case 6:
      return !x.as_list().empty();
    case 7:
      return !x.as_dict().empty();
    default:
      return true;
  }
}

// ---- UTF-8: Python strings are sequences of code points ----

/// Decodes UTF-8 into code points; invalid bytes decode as themselves (U+0080..U+00FF are
/// never produced from valid input, so a byte that is not UTF-8 survives a round trip).
inline std::vector<char32_t> utf8_decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp = 0;
    auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                              static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (n <= 0) {
      out.push_back(0xDC00u + static_cast<unsigned char>(s[i]));  // Python's surrogateescape
      ++i;
    } else {
      out.push_back(static_cast<char32_t>(cp));
      i += static_cast<std::size_t>(n);
    }
  }
  return out;
}

inline void utf8_append(std::string& out, char32_t c) {
  if (c >= 0xDC80u && c <= 0xDCFFu) {  // an undecodable byte carried through
    out.push_back(static_cast<char>(c - 0xDC00u));
    return;
  }
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline std::string utf8_encode(const std::vector<char32_t>& cps, std::size_t begin = 0,
                               std::size_t end = std::string::npos) {
  std::string out;
  end = std::min(end, cps.size());
  for (std::size_t i = begin; i < end; ++i) utf8_append(out, cps[i]);
  return out;
}

/// Number of code points (Python's len(str)).
inline std::size_t utf8_length(std::string_view s) {
  return utf8_decode(s).size();
}

/// Python's str.isspace() for one code point.
inline bool is_py_space(char32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85) return true;
  if (c < 0xA0 || c >= 0xDC00u) return false;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

inline char32_t to_upper_cp(char32_t c) {
  return c >= 0xDC00u && c <= 0xDFFFu
             ? c
             : static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
inline char32_t to_lower_cp(char32_t c) {
  return c >= 0xDC00u && c <= 0xDFFFu
             ? c
             : static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
/// A cased letter (Lu, Ll, Lt), as Python's title() and capitalize() see them.
inline bool is_cased_cp(char32_t c) {
  if (c >= 0xDC00u && c <= 0xDFFFu) return false;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// ---- printing as Python does ----

/// Python's repr(float): the shortest digits that round-trip, fixed notation for decimal
/// exponents in [-4, 16), scientific otherwise ("1e+16", "1.5e-05"), ".0" on integral values.
inline std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-d.ddde+XX"
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  auto epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(static_cast<std::size_t>(exp + 1) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(exp + 1)) + "." +
            digits.substr(static_cast<std::size_t>(exp + 1));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += e;
  }
  return sign + out;
}

/// Python's repr(str): single quotes unless the text has ' and no ".
inline std::string py_string_repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : utf8_decode(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || (c >= 0xDC80u && c <= 0xDCFFu)) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c < 0x100 ? c : c - 0xDC00u));
      out += b;
    } else {
      utf8_append(out, c);
    }
  }
  out.push_back(q);
  return out;
}

inline std::string py_str(const value& x);

/// Python's repr(): strings quoted, everything else as str().
inline std::string py_repr(const value& x) {
  if (x.is_string()) return py_string_repr(x.as_string());
  if (x.is_undefined()) return "Undefined";  // jinja2's Undefined.__repr__
  return py_str(x);
}

/// Python's str(), which is what `{{ x }}`, `~` and the `string` filter produce.
inline std::string py_str(const value& x) {
  switch (x.v.index()) {
    case 0:
      return "";
    case 1:
      return "None";
    case 2:
      return x.as_bool() ? "True" : "False";
    case 3:
      return std::to_string(x.as_int());
    case 4:
      return py_float_repr(x.as_real());
    case 5:
      return x.as_string();
    case 6: {
      std::string s = x.tuple ? "(" : "[";
      bool first = true;
      for (const auto& e : x.as_list()) {
        if (!first) s += ", ";
        first = false;
        s += py_repr(e);
      }
      if (x.tuple && x.as_list().size() == 1) s += ",";
      return s + (x.tuple ? ")" : "]");
    }
    case 7: {
      std::string s = "{";
      bool first = true;
      for (const auto& [k, e] : x.as_dict()) {
        if (!first) s += ", ";
        first = false;
        s += py_repr(k) + ": " + py_repr(e);
      }
      return s + "}";
    }
    case 8:
      return "<Namespace>";  // not its contents: a namespace may hold itself
    default:
      return "<function " + x.as_callable().name + ">";
  }
}

/// Python's == : numbers compare by value across int/float/bool, containers deeply (dicts
/// ignoring order), Undefined equals only Undefined.
inline bool py_equal(const value& a, const value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_real() || b.is_real()) return a.to_double() == b.to_double();
    auto ai = a.is_bool() ? std::int64_t{a.as_bool()} : a.as_int();
    auto bi = b.is_bool() ? std::int64_t{b.as_bool()} : b.as_int();
    return ai == bi;
  }
  if (a.v.index() != b.v.index()) return false;
  switch (a.v.index()) {
    case 0:
    case 1:
      return true;
    case 5:
      return a.as_string() == b.as_string();
    case 6: {
      const auto &la = a.as_list(), &lb = b.as_list();
      if (la.size() != lb.size()) return false;
      for (std::size_t i = 0; i < la.size(); ++i)
        if (!py_equal(la[i], lb[i])) return false;
      return true;
    }
    case 7: {
      const auto &da = a.as_dict(), &db = b.as_dict();
      if (da.size() != db.size()) return false;
      for (const auto& [k, e] : da) {
        bool found = false;
        for (const auto& [k2, e2] : db)
          if (py_equal(k, k2)) {
            if (!py_equal(e, e2)) return false;
            found = true;
            break;
          }
        if (!found) return false;
      }
      return true;
    }
    case 8:
      return &a.as_namespace() == &b.as_namespace();
    case 9:
      return &a.as_callable() == &b.as_callable();
    default:
      return false;
  }
}

/// Looks a key up in a dict; nullptr when absent.
inline const value* dict_find(const dict_t& d, const value& key) {
  for (const auto& [k, e] : d)
    if (py_equal(k, key)) return &e;
  return nullptr;
}
inline const value* dict_find(const dict_t& d, std::string_view key) {
  for (const auto& [k, e] : d)
    if (k.is_string() && k.as_string() == key) return &e;
  return nullptr;
}

/// Inserts or replaces, keeping first-insertion order as Python dicts do.
inline void dict_set(dict_t& d, value key, value x) {
  for (auto& [k, e] : d)
    if (py_equal(k, key)) {
      e = std::move(x);
      return;
    }
  d.emplace_back(std::move(key), std::move(x));
}

// ---- JSON in and out ----

/// Converts a JSON value (nlohmann::json or nlohmann::ordered_json) into a template value;
/// object keys keep the order the JSON type iterates in.
template <class Json>
value from_json(const Json& j, int depth = 0) {
  if (depth > 256) throw eval_failure{"context JSON nests deeper than 256 levels"};
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return value::none();
    case nlohmann::json::value_t::boolean:
      return value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return value::integer(j.template get<std::int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      auto u = j.template get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return value::real(static_cast<double>(u));
      return value::integer(static_cast<std::int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return value::real(j.template get<double>());
    case nlohmann::json::value_t::string:
      return value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      list_t l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e, depth + 1));
      return value::list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      dict_t d;
      d.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it)
        d.emplace_back(value::string(it.key()), from_json(it.value(), depth + 1));
      return value::dict(std::move(d));
    }
    default:
      return value::none();  // binary and discarded values do not occur in parsed JSON
  }
}

/// json.dumps(s, ensure_ascii=False) for one string: quotes, backslash, control characters.
inline void json_quote(std::string& out, std::string_view s, bool ensure_ascii = false) {
  if (ensure_ascii) {  // json.dumps(ensure_ascii=True): \uXXXX, surrogate pairs above U+FFFF
    std::string escaped;
    for (char32_t c : utf8_decode(s)) {
      if (c >= 0xDC80u && c <= 0xDCFFu) c -= 0xDC00u;  // an undecodable byte, as Latin-1
      if (c < 0x80) {
        std::string one(1, static_cast<char>(c));
        std::string q;
        json_quote(q, one, false);
        escaped.append(q, 1, q.size() - 2);
        continue;
      }
      char b[16];
      if (c > 0xFFFF) {
        char32_t v = c - 0x10000;
        std::snprintf(b, sizeof b, "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
      }
      escaped += b;
    }
    out += '"' + escaped + '"';
    return;
  }
  out.push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
          out += b;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

/// Options of transformers' `tojson` filter (json.dumps with ensure_ascii=False).
struct json_style {
  bool indented = false;
  std::string indent;  ///< one level of indentation when `indented`
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};

inline void json_dump(std::string& out, const value& x, const json_style& st, int level);

inline void json_newline(std::string& out, const json_style& st, int level) {
  out.push_back('\n');
  for (int i = 0; i < level; ++i) out += st.indent;
}

/// json.dumps of a dict key: strings as they are, numbers, booleans and None converted.
inline std::string json_key(const value& k) {
  if (k.is_string()) return k.as_string();
  if (k.is_bool()) return k.as_bool() ? "true" : "false";
  if (k.is_none()) return "null";
  if (k.is_int() || k.is_real()) return py_str(k);
  throw eval_failure{"keys must be str, int, float, bool or None, not " + type_name(k)};
}

/// json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...).
inline void json_dump(std::string& out, const value& x, const json_style& st, int level) {
  switch (x.v.index()) {
    case 1:
      out += "null";
      return;
    case 2:
      out += x.as_bool() ? "true" : "false";
      return;
    case 3:
      out += std::to_string(x.as_int());
      return;
    case 4: {
      double d = x.as_real();
      if (std::isnan(d))
        out += "NaN";
      else if (std::isinf(d))
        out += d < 0 ? "-Infinity" : "Infinity";
      else
        out += py_float_repr(d);
      return;
    }
    case 5:
      json_quote(out, x.as_string(), st.ensure_ascii);
      return;
    case 6: {
      const auto& l = x.as_list();
      if (l.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (std::size_t i = 0; i < l.size(); ++i) {
        if (i) out += st.item_sep;
        if (st.indented) json_newline(out, st, level + 1);
        json_dump(out, l[i], st, level + 1);
      }
      if (st.indented) json_newline(out, st, level);
      out.push_back(']');
      return;
    }
    case 7: {
      const auto& d = x.as_dict();
      if (d.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const value*>> items;
      items.reserve(d.size());
      for (const auto& [k, e] : d) items.emplace_back(json_key(k), &e);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      out.push_back('{');
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        if (st.indented) json_newline(out, st, level + 1);
        json_quote(out, items[i].first, st.ensure_ascii);
        out += st.key_sep;
        json_dump(out, *items[i].second, st, level + 1);
      }
      if (st.indented) json_newline(out, st, level);
      out.push_back('}');
      return;
    }
    default:
      throw eval_failure{"Object of type " + type_name(x) + " is not JSON serializable" +
                         (x.is_undefined() && !x.undefined_hint().empty()
                              ? " (" + x.undefined_hint() + ")"
                              : std::string())};
  }
}

}  // namespace forge::text::detail::jinja
