#pragma once
// Rendering a parsed template: statements, expressions, filters, tests and the globals that
// transformers gives chat templates (`raise_exception`, `strftime_now`, plus jinja2's
// `range`, `namespace`, `dict`, `joiner`). Semantics follow jinja2 3.1 in the configuration
// of transformers' ImmutableSandboxedEnvironment: lists and dicts cannot be modified,
// `tojson` is json.dumps(ensure_ascii=False), Undefined is jinja2's default Undefined.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/text/detail/jinja_parser.hpp"
#include "forge/text/detail/jinja_value.hpp"

namespace forge::text::detail::jinja {

/// Bounds on one rendering, so a hostile template fails cleanly instead of exhausting
/// memory, time or the stack.
struct limits {
  std::size_t max_output_bytes = std::size_t{64} << 20;  ///< any string built, output included
  std::size_t max_steps = 10'000'000;            ///< statements executed plus loop iterations
  int max_depth = 500;                           ///< nested blocks, expressions and macro calls
  std::size_t max_range = std::size_t{1} << 20;  ///< elements `range()` may produce
};

// ---- string helpers (Python str methods) ----

inline std::string py_strip(std::string_view s, const value* chars, bool left, bool right) {
  auto cps = utf8_decode(s);
  std::vector<char32_t> set;
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  if (!ws && !chars->is_string())
    throw eval_failure{"strip arg must be None or str, not " + type_name(*chars)};
  if (!ws) set = utf8_decode(chars->as_string());
  auto strip_me = [&](char32_t c) {
    return ws ? is_py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  std::size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_me(cps[b])) ++b;
  if (right)
    while (e > b && strip_me(cps[e - 1])) --e;
  return utf8_encode(cps, b, e);
}

inline std::string py_upper(std::string_view s) {
  std::string out;
  for (char32_t c : utf8_decode(s)) utf8_append(out, to_upper_cp(c));
  return out;
}
inline std::string py_lower(std::string_view s) {
  std::string out;
  for (char32_t c : utf8_decode(s)) utf8_append(out, to_lower_cp(c));
  return out;
}
/// str.capitalize(): first code point upper, the rest lower.
inline std::string py_capitalize(std::string_view s) {
  auto cps = utf8_decode(s);
  std::string out;
  for (std::size_t i = 0; i < cps.size(); ++i)
    utf8_append(out, i == 0 ? to_upper_cp(cps[i]) : to_lower_cp(cps[i]));
  return out;
}
/// str.title(): a cased letter after a cased letter is lowered, any other is uppered.
inline std::string py_title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : utf8_decode(s)) {
    bool cased = is_cased_cp(c);
    utf8_append(out, cased ? (prev_cased ? to_lower_cp(c) : to_upper_cp(c)) : c);
    prev_cased = cased;
  }
  return out;
}
/// jinja2's `title` filter: words start after whitespace, '-', '(', '{', '[' or '<'.
inline std::string jinja_title(std::string_view s) {
  std::string out;
  bool start = true;
  for (char32_t c : utf8_decode(s)) {
    bool sep = is_py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    utf8_append(out, sep ? c : (start ? to_upper_cp(c) : to_lower_cp(c)));
    start = sep;
  }
  return out;
}

/// str.replace(old, new, count); an empty `old` inserts between code points, as Python does.
inline std::string py_replace(const std::string& s, const std::string& from, const std::string& to,
                              std::int64_t count, std::size_t max_bytes) {
  std::string out;
  auto check = [&] {
    if (out.size() > max_bytes) throw eval_failure{"string grew past the output limit"};
  };
  if (from.empty()) {
    auto cps = utf8_decode(s);
    std::int64_t n = 0;
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (i < cps.size()) utf8_append(out, cps[i]);
      check();
    }
    return out;
  }
  std::size_t p = 0;
  std::int64_t n = 0;
  while (count < 0 || n < count) {
    std::size_t q = s.find(from, p);
    if (q == std::string::npos) break;
    out.append(s, p, q - p);
    out += to;
    check();
    p = q + from.size();
    ++n;
  }
  out.append(s, p, std::string::npos);
  check();
  return out;
}

/// str.split(sep=None, maxsplit=-1).
inline list_t py_split(const std::string& s, const value* sep, std::int64_t maxsplit) {
  list_t out;
  if (!sep || sep->is_none()) {
    auto cps = utf8_decode(s);
    std::size_t i = 0;
    std::int64_t n = 0;
    while (true) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && n >= maxsplit) {
        std::size_t e = cps.size();
        while (e > i && is_py_space(cps[e - 1])) --e;
        out.push_back(value::string(utf8_encode(cps, i, e)));
        break;
      }
      std::size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      out.push_back(value::string(utf8_encode(cps, i, j)));
      ++n;
      i = j;
    }
    return out;
  }
  if (!sep->is_string()) throw eval_failure{"must be str or None, not " + type_name(*sep)};
  const std::string& d = sep->as_string();
  if (d.empty()) throw eval_failure{"empty separator"};
  std::size_t p = 0;
  std::int64_t n = 0;
  while (maxsplit < 0 || n < maxsplit) {
    std::size_t q = s.find(d, p);
    if (q == std::string::npos) break;
    out.push_back(value::string(s.substr(p, q - p)));
    p = q + d.size();
    ++n;
  }
  out.push_back(value::string(s.substr(p)));
  return out;
}

/// str.splitlines(): splits at \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029.
inline std::vector<std::string> py_splitlines(std::string_view s) {
  std::vector<std::string> out;
  auto cps = utf8_decode(s);
  std::size_t start = 0;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    char32_t c = cps[i];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    out.push_back(utf8_encode(cps, start, i));
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < cps.size()) out.push_back(utf8_encode(cps, start));
  return out;
}

inline std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

/// Python's slice.indices(): clamps start/stop for a sequence of length n.
inline std::vector<std::size_t> slice_indices(std::int64_t n, const value& start, const value& stop,
                                              const value& step_v) {
  auto as_index = [](const value& v) -> std::int64_t {
    if (v.is_bool()) return v.as_bool();
    if (v.is_int()) return v.as_int();
    throw eval_failure{"slice indices must be integers or None, not " + type_name(v)};
  };
  std::int64_t step = step_v.is_none() || step_v.is_undefined() ? 1 : as_index(step_v);
  if (step == 0) throw eval_failure{"slice step cannot be zero"};
  auto clamp = [&](const value& v, std::int64_t dflt) {
    if (v.is_none() || v.is_undefined()) return dflt;
    std::int64_t i = as_index(v);
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  std::int64_t b = clamp(start, step < 0 ? n - 1 : 0);
  std::int64_t e = clamp(stop, step < 0 ? -1 : n);
  std::vector<std::size_t> idx;
  // b and e lie in [-1, n], so the distances below cannot overflow; the step can be huge.
  if (step > 0) {
    for (std::int64_t i = b; i < e; i += step) {
      idx.push_back(static_cast<std::size_t>(i));
      if (e - i <= step) break;
    }
  } else {
    const std::int64_t back = step == INT64_MIN ? INT64_MAX : -step;
    for (std::int64_t i = b; i > e; i -= back) {
      idx.push_back(static_cast<std::size_t>(i));
      if (i - e <= back) break;
    }
  }
  return idx;
}

/// Python's ordering (<) for numbers, strings and lists; anything else is a TypeError.
inline int py_compare(const value& a, const value& b, std::string_view op) {
  if (a.is_undefined()) throw eval_failure{a.undefined_hint()};
  if (b.is_undefined()) throw eval_failure{b.undefined_hint()};
  if (a.is_number() && b.is_number()) {
    if (!a.is_real() && !b.is_real()) {
      auto ai = a.is_bool() ? std::int64_t{a.as_bool()} : a.as_int();
      auto bi = b.is_bool() ? std::int64_t{b.as_bool()} : b.as_int();
      return ai < bi ? -1 : ai > bi ? 1 : 0;
    }
    double x = a.to_double(), y = b.to_double();
    if (std::isnan(x) || std::isnan(y)) return 2;  // every ordering is false
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const auto &la = a.as_list(), &lb = b.as_list();
    for (std::size_t i = 0; i < la.size() && i < lb.size(); ++i) {
      if (py_equal(la[i], lb[i])) continue;
      return py_compare(la[i], lb[i], op);
    }
    return la.size() < lb.size() ? -1 : la.size() > lb.size() ? 1 : 0;
  }
  throw eval_failure{"'" + std::string(op) + "' not supported between instances of '" +
                     type_name(a) + "' and '" + type_name(b) + "'"};
}

/// Deepest nesting of lists and dicts a value may have (printing and comparing recurse).
inline constexpr int max_value_depth = 256;

/// Nesting depth of lists and dicts, stopping as soon as it exceeds the limit.
inline int value_depth(const value& v, int d) {
  if (d > max_value_depth) return d;
  int best = d;
  if (v.is_list()) {
    for (const auto& x : v.as_list())
      if (x.is_list() || x.is_dict()) best = std::max(best, value_depth(x, d + 1));
  } else if (v.is_dict()) {
    for (const auto& [k, x] : v.as_dict())
      if (x.is_list() || x.is_dict()) best = std::max(best, value_depth(x, d + 1));
  }
  return best;
}

class renderer {
 public:
  renderer(std::string origin, limits lim) : origin_(std::move(origin)), lim_(lim) {}

  std::string render(const body_t& body, const value& context) {
    if (!context.is_dict())
      throw forge::error({.what = "template context must be a JSON object",
                          .file = origin_,
                          .place = {},
                          .expected = {},
                          .found = type_name(context)});
    ctx_ = &context.as_dict();
    frame root{{}, nullptr};
    root_ = &root;
    cur_ = &root;
    std::string out;
    exec(body, out);
    return out;
  }

 private:
  struct frame {
    std::vector<std::pair<std::string, value>> vars;
    frame* parent;
  };
  enum class flow { normal, brk, cont };

  struct depth_guard {
    renderer& r;
    depth_guard(renderer& q, location l) : r(q) {
      if (++r.depth_ > r.lim_.max_depth)
        r.fail(l, "template evaluation nests too deeply",
               "at most " + std::to_string(r.lim_.max_depth) + " nested levels");
    }
    ~depth_guard() { --r.depth_; }
  };

  /// Makes the current frame `f` for the lifetime of the object.
  struct frame_scope {
    renderer& r;
    frame* saved;
    frame_scope(renderer& q, frame* f) : r(q), saved(q.cur_) { r.cur_ = f; }
    ~frame_scope() { r.cur_ = saved; }
  };

  [[noreturn]] void fail(location l, std::string what, std::string expected = {},
                         std::string found = {}) const {
    throw forge::error({.what = std::move(what),
                        .file = origin_,
                        .place = place_of(l),
                        .expected = std::move(expected),
                        .found = std::move(found)});
  }

  void step(location l) {
    if (++steps_ > lim_.max_steps)
      fail(l, "template rendering took too many steps",
           "at most " + std::to_string(lim_.max_steps));
  }

  void emit(std::string& out, std::string_view s, location l) const {
    if (out.size() + s.size() > lim_.max_output_bytes)
      fail(l, "rendered text exceeds the output limit",
           "at most " + std::to_string(lim_.max_output_bytes) + " bytes");
    out.append(s);
  }

  void check_size(std::size_t n) const {
    if (n > lim_.max_output_bytes) throw eval_failure{"value exceeds the output size limit"};
  }

  // ---- variables ----

  const value* find_var(const std::string& name) const {
    for (const frame* f = cur_; f; f = f->parent)
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it)
        if (it->first == name) return &it->second;
    if (const value* v = dict_find(*ctx_, name)) return v;
    return nullptr;
  }

  static void assign(frame& f, const std::string& name, value v) {
    for (auto& [k, x] : f.vars)
      if (k == name) {
        x = std::move(v);
        return;
      }
    f.vars.emplace_back(name, std::move(v));
  }

  value lookup(const std::string& name) {
    if (const value* v = find_var(name)) return *v;
    if (auto g = global(name); !g.is_undefined()) return g;
    return value::undefined("'" + name + "' is undefined");
  }

  // ---- statements ----

  flow exec(const body_t& body, std::string& out) {
    for (const stmt& s : body) {
      flow f = exec_stmt(s, out);
      if (f != flow::normal) return f;
    }
    return flow::normal;
  }

  flow exec_stmt(const stmt& s, std::string& out) {
    step(s.loc);
    depth_guard g(*this, s.loc);
    switch (s.kind) {
      case sk::text:
        emit(out, s.text, s.loc);
        return flow::normal;
      case sk::output: {
        value v = eval(*s.exprs[0]);
        emit(out, py_str(v), s.exprs[0]->loc);
        return flow::normal;
      }
      case sk::if_: {
        for (std::size_t i = 0; i < s.exprs.size(); ++i)
          if (truthy(eval(*s.exprs[i]))) return exec(s.bodies[i], out);
        if (s.bodies.size() > s.exprs.size()) return exec(s.bodies.back(), out);
        return flow::normal;
      }
      case sk::for_:
        return exec_for(s, out);
      case sk::set: {
        value v = eval(*s.exprs[0]);
        if (s.targets.size() == 1) {
          assign(*cur_, s.targets[0], std::move(v));
        } else {
          list_t parts = unpack(v, s.targets.size(), s.loc);
          for (std::size_t i = 0; i < parts.size(); ++i) assign(*cur_, s.targets[i], parts[i]);
        }
        return flow::normal;
      }
      case sk::set_attr: {
        const value* ns = find_var(s.targets[0]);
        if (!ns || !ns->is_namespace())
          fail(s.loc, "cannot assign attribute on non-namespace object", "a namespace()",
               ns ? type_name(*ns) : "undefined '" + s.targets[0] + "'");
        value v = eval(*s.exprs[0]);
        // Only a namespace carries values from one loop iteration to the next, so only here
        // can a template build unboundedly nested lists; bound it before printing recurses.
        if (value_depth(v, 0) > max_value_depth)
          fail(s.exprs[0]->loc, "value nests too deeply",
               "at most " + std::to_string(max_value_depth) + " levels of lists and dicts");
        dict_set(ns->as_namespace().attrs, value::string(s.text), std::move(v));
        return flow::normal;
      }
      case sk::set_block: {
        std::string inner;
        exec_scoped(s.bodies[0], inner);
        value v = value::string(std::move(inner));
        for (const auto& f : s.exprs) v = apply_filter(*f, std::move(v));
        assign(*cur_, s.targets[0], std::move(v));
        return flow::normal;
      }
      case sk::macro:
        assign(*cur_, s.text, make_macro(s));
        return flow::normal;
      case sk::break_:
        return flow::brk;
      case sk::continue_:
        return flow::cont;
      case sk::filter: {
        std::string inner;
        exec_scoped(s.bodies[0], inner);
        value v = value::string(std::move(inner));
        for (const auto& f : s.exprs) v = apply_filter(*f, std::move(v));
        emit(out, py_str(v), s.loc);
        return flow::normal;
      }
      case sk::with: {
        frame f{{}, cur_};
        for (std::size_t i = 0; i < s.targets.size(); ++i) {
          value v = eval(*s.exprs[i]);
          assign(f, s.targets[i], std::move(v));
        }
        frame_scope fs(*this, &f);
        return exec(s.bodies[0], out);
      }
      case sk::block:
        return exec(s.bodies[0], out);
    }
    return flow::normal;
  }

  void exec_scoped(const body_t& body, std::string& out) {
    frame f{{}, cur_};
    frame_scope fs(*this, &f);
    exec(body, out);
  }

  list_t unpack(const value& v, std::size_t n, location l) {
    list_t parts = iterate(v, l);
    if (parts.size() != n)
      fail(l, parts.size() > n ? "too many values to unpack" : "not enough values to unpack",
           std::to_string(n) + " values", std::to_string(parts.size()));
    return parts;
  }

  flow exec_for(const stmt& s, std::string& out) {
    list_t all = iterate(eval(*s.exprs[0]), s.exprs[0]->loc);
    list_t items;
    frame* outer = cur_;
    auto bind = [&](frame& f, const value& item) {
      if (s.targets.size() == 1) {
        assign(f, s.targets[0], item);
      } else {
        list_t parts = unpack(item, s.targets.size(), s.loc);
        for (std::size_t k = 0; k < parts.size(); ++k) assign(f, s.targets[k], parts[k]);
      }
    };
    if (s.has_filter_cond) {
      for (const value& item : all) {
        step(s.loc);
        frame f{{}, outer};
        bind(f, item);
        frame_scope fs(*this, &f);
        if (truthy(eval(*s.exprs[1]))) items.push_back(item);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) {
      exec_scoped(s.bodies[1], out);
      return flow::normal;
    }
    const auto n = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < n; ++i) {
      step(s.loc);
      frame f{{}, outer};
      bind(f, items[static_cast<std::size_t>(i)]);
      dict_t loop;
      loop.reserve(12);
      auto put = [&](const char* k, value v) { loop.emplace_back(value::string(k), std::move(v)); };
      put("index", value::integer(i + 1));
      put("index0", value::integer(i));
      put("revindex", value::integer(n - i));
      put("revindex0", value::integer(n - i - 1));
      put("first", value::boolean(i == 0));
      put("last", value::boolean(i == n - 1));
      put("length", value::integer(n));
      put("depth", value::integer(1));
      put("depth0", value::integer(0));
      put("previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)]
                            : value::undefined("there is no previous item"));
      put("nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)]
                                : value::undefined("there is no next item"));
      put("cycle", value::callable("loop.cycle", [i](call_args& a) {
            if (a.pos.empty()) throw eval_failure{"no items for cycling given"};
            return a.pos[static_cast<std::size_t>(i) % a.pos.size()];
          }));
      assign(f, "loop", value::dict(std::move(loop)));
      frame_scope fs(*this, &f);
      flow fl = exec(s.bodies[0], out);
      if (fl == flow::brk) break;
    }
    return flow::normal;
  }

  value make_macro(const stmt& s) {
    const stmt* m = &s;
    return value::callable(s.text, [this, m](call_args& a) {
      frame f{{}, root_};
      if (a.pos.size() > m->targets.size())
        throw eval_failure{"macro '" + m->text + "' takes not more than " +
                           std::to_string(m->targets.size()) + " argument(s)"};
      std::vector<bool> bound(m->targets.size(), false);
      for (std::size_t i = 0; i < a.pos.size(); ++i) {
        assign(f, m->targets[i], a.pos[i]);
        bound[i] = true;
      }
      for (auto& [k, v] : a.kw) {
        auto it = std::find(m->targets.begin(), m->targets.end(), k);
        if (it == m->targets.end())
          throw eval_failure{"macro '" + m->text + "' takes no keyword argument '" + k + "'"};
        auto i = static_cast<std::size_t>(it - m->targets.begin());
        if (bound[i])
          throw eval_failure{"macro '" + m->text + "' got multiple values for '" + k + "'"};
        assign(f, k, v);
        bound[i] = true;
      }
      frame_scope fs(*this, &f);
      for (std::size_t i = 0; i < m->targets.size(); ++i)
        if (!bound[i])
          assign(f, m->targets[i],
                 m->exprs[i]
                     ? eval(*m->exprs[i])
                     : value::undefined("parameter '" + m->targets[i] + "' was not provided"));
      std::string out;
      exec(m->bodies[0], out);
      return value::string(std::move(out));
    });
  }

  // ---- iteration, attributes, items ----

  list_t iterate(const value& v, location l) {
    if (v.is_list()) return v.as_list();
    if (v.is_undefined()) return {};
    if (v.is_dict()) {
      list_t keys;
      for (const auto& kv : v.as_dict()) keys.push_back(kv.first);
      return keys;
    }
    if (v.is_string()) {
      list_t chars;
      for (char32_t c : utf8_decode(v.as_string())) {
        std::string s;
        utf8_append(s, c);
        chars.push_back(value::string(std::move(s)));
      }
      return chars;
    }
    fail(l, "'" + type_name(v) + "' object is not iterable");
  }

  list_t iterate_f(const value& v) {  // for filters: a failure, located by the caller
    if (v.is_list() || v.is_undefined() || v.is_dict() || v.is_string()) return iterate(v, {});
    throw eval_failure{"'" + type_name(v) + "' object is not iterable"};
  }

  static value method(std::string name, std::function<value(call_args&)> fn) {
    return value::callable(std::move(name), std::move(fn));
  }

  static const value* arg(const call_args& a, std::size_t i, std::string_view name) {
    if (i < a.pos.size()) return &a.pos[i];
    for (const auto& [k, v] : a.kw)
      if (k == name) return &v;
    return nullptr;
  }
  static std::string str_arg(const call_args& a, std::size_t i, std::string_view name,
                             const char* fn) {
    const value* v = arg(a, i, name);
    if (!v) throw eval_failure{std::string(fn) + "() missing argument '" + std::string(name) + "'"};
    if (!v->is_string())
      throw eval_failure{std::string(fn) + "() argument '" + std::string(name) +
                         "' must be str, not " + type_name(*v)};
    return v->as_string();
  }
  static std::int64_t int_arg(const call_args& a, std::size_t i, std::string_view name,
                              std::int64_t dflt) {
    const value* v = arg(a, i, name);
    if (!v || v->is_none()) return dflt;
    if (v->is_int()) return v->as_int();
    if (v->is_bool()) return v->as_bool();
    throw eval_failure{"argument '" + std::string(name) + "' must be an integer, not " +
                       type_name(*v)};
  }
  static bool bool_arg(const call_args& a, std::size_t i, std::string_view name, bool dflt) {
    const value* v = arg(a, i, name);
    return v ? truthy(*v) : dflt;
  }

  value string_method(const std::string& s, const std::string& name) {
    auto bind = [&](auto fn) {
      return method("str." + name, [s, fn](call_args& a) -> value { return fn(s, a); });
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool l = name != "rstrip", r = name != "lstrip";
      return bind([l, r](const std::string& x, call_args& a) {
        return value::string(py_strip(x, arg(a, 0, "chars"), l, r));
      });
    }
    if (name == "upper")
      return bind([](const std::string& x, call_args&) { return value::string(py_upper(x)); });
    if (name == "lower")
      return bind([](const std::string& x, call_args&) { return value::string(py_lower(x)); });
    if (name == "title")
      return bind([](const std::string& x, call_args&) { return value::string(py_title(x)); });
    if (name == "capitalize")
      return bind([](const std::string& x, call_args&) { return value::string(py_capitalize(x)); });
    if (name == "split")
      return bind([](const std::string& x, call_args& a) {
        return value::list(py_split(x, arg(a, 0, "sep"), int_arg(a, 1, "maxsplit", -1)));
      });
    if (name == "startswith" || name == "endswith") {
      bool start = name == "startswith";
      return bind([start](const std::string& x, call_args& a) {
        const value* p = arg(a, 0, start ? "prefix" : "suffix");
        if (!p) throw eval_failure{"startswith/endswith takes one argument"};
        list_t cands = p->is_list() ? p->as_list() : list_t{*p};
        for (const auto& c : cands) {
          if (!c.is_string()) throw eval_failure{"startswith/endswith argument must be str"};
          const auto& t = c.as_string();
          if (t.size() <= x.size() && (start ? x.compare(0, t.size(), t) == 0
                                             : x.compare(x.size() - t.size(), t.size(), t) == 0))
            return value::boolean(true);
        }
        return value::boolean(false);
      });
    }
    if (name == "replace")
      return bind([this](const std::string& x, call_args& a) {
        return value::string(py_replace(x, str_arg(a, 0, "old", "replace"),
                                        str_arg(a, 1, "new", "replace"), int_arg(a, 2, "count", -1),
                                        lim_.max_output_bytes));
      });
    if (name == "find" || name == "count" || name == "rfind" || name == "index" ||
        name == "rindex") {
      std::string n = name;
      return bind([n](const std::string& x, call_args& a) -> value {
        std::string sub = str_arg(a, 0, "sub", n.c_str());
        if (n == "count") {
          if (sub.empty()) return value::integer(static_cast<std::int64_t>(utf8_length(x)) + 1);
          std::int64_t c = 0;
          for (std::size_t p = x.find(sub); p != std::string::npos; p = x.find(sub, p + sub.size()))
            ++c;
          return value::integer(c);
        }
        std::size_t p = n == "find" || n == "index" ? x.find(sub) : x.rfind(sub);
        if (p == std::string::npos) {
          if (n == "index" || n == "rindex") throw eval_failure{"substring not found"};
          return value::integer(-1);
        }
        return value::integer(
            static_cast<std::int64_t>(utf8_length(std::string_view(x).substr(0, p))));
      });
    }
    if (name == "join")
      return bind([this](const std::string& x, call_args& a) {
        const value* it = arg(a, 0, "iterable");
        if (!it) throw eval_failure{"join() takes exactly one argument"};
        std::string out;
        bool first = true;
        for (const auto& e : iterate_f(*it)) {
          if (!e.is_string())
            throw eval_failure{"sequence item: expected str instance, " + type_name(e) + " found"};
          if (!first) out += x;
          first = false;
          out += e.as_string();
          check_size(out.size());
        }
        return value::string(std::move(out));
      });
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum" ||
        name == "islower" || name == "isupper") {
      std::string n = name;
      return bind([n](const std::string& x, call_args&) {
        auto cps = utf8_decode(x);
        if (cps.empty()) return value::boolean(false);
        bool any_cased = false, ok = true;
        for (char32_t c : cps) {
          if (n == "isdigit")
            ok = ok && c < 0x80 && std::isdigit(static_cast<int>(c));
          else if (n == "isalpha")
            ok = ok && is_cased_cp(c);
          else if (n == "isalnum")
            ok = ok && (is_cased_cp(c) || (c < 0x80 && std::isdigit(static_cast<int>(c))));
          else if (n == "isspace")
            ok = ok && is_py_space(c);
          else if (is_cased_cp(c)) {
            any_cased = true;
            ok = ok && (n == "islower" ? to_lower_cp(c) == c : to_upper_cp(c) == c);
          }
        }
        if (n == "islower" || n == "isupper") ok = ok && any_cased;
        return value::boolean(ok);
      });
    }
    return value::undefined("'str object' has no attribute '" + name + "'");
  }

  value dict_method(const value& d, const std::string& name) {
    auto shared = std::get<std::shared_ptr<const dict_t>>(d.v);
    if (name == "get")
      return method("dict.get", [shared](call_args& a) {
        const value* k = arg(a, 0, "key");
        if (!k) throw eval_failure{"get() takes at least 1 argument"};
        if (const value* v = dict_find(*shared, *k)) return *v;
        const value* dflt = arg(a, 1, "default");
        return dflt ? *dflt : value::none();
      });
    if (name == "items" || name == "keys" || name == "values") {
      int which = name == "items" ? 0 : name == "keys" ? 1 : 2;
      return method("dict." + name, [shared, which](call_args&) {
        list_t out;
        for (const auto& [k, v] : *shared)
          out.push_back(which == 0 ? value::make_tuple({k, v}) : which == 1 ? k : v);
        return value::list(std::move(out));
      });
    }
    if (name == "copy") return method("dict.copy", [d](call_args&) { return d; });
    if (name == "pop" || name == "popitem" || name == "setdefault" || name == "update" ||
        name == "clear")  // the sandbox hands out an Undefined that fails when used
      return value::undefined("access to attribute '" + name +
                              "' of 'dict' object is unsafe (template values are immutable)");
    return {};
  }

  value list_method(const value& l, const std::string& name) {
    auto shared = std::get<std::shared_ptr<const list_t>>(l.v);
    if (name == "index" || name == "count") {
      bool idx = name == "index";
      return method("list." + name, [shared, idx](call_args& a) {
        const value* x = arg(a, 0, "value");
        if (!x) throw eval_failure{"list method takes exactly one argument"};
        std::int64_t c = 0;
        for (std::size_t i = 0; i < shared->size(); ++i)
          if (py_equal((*shared)[i], *x)) {
            if (idx) return value::integer(static_cast<std::int64_t>(i));
            ++c;
          }
        if (idx) throw eval_failure{py_repr(*x) + " is not in list"};
        return value::integer(c);
      });
    }
    if (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
        name == "remove" || name == "reverse" || name == "sort" || name == "clear")
      return value::undefined("access to attribute '" + name +
                              "' of 'list' object is unsafe (template values are immutable)");
    return value::undefined("'list object' has no attribute '" + name + "'");
  }

  /// `obj.name`: jinja2 tries the Python attribute first, then the item.
  value get_attr(const value& obj, const std::string& name) {
    if (obj.is_undefined()) throw eval_failure{obj.undefined_hint()};
    if (obj.is_dict()) {
      value m = dict_method(obj, name);
      if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
      if (const value* v = dict_find(obj.as_dict(), name)) return *v;
      return value::undefined("'dict object' has no attribute '" + name + "'");
    }
    if (obj.is_namespace()) {
      if (const value* v = dict_find(obj.as_namespace().attrs, name)) return *v;
      return value::undefined("'Namespace object' has no attribute '" + name + "'");
    }
    if (obj.is_string()) return string_method(obj.as_string(), name);
    if (obj.is_list()) return list_method(obj, name);
    return value::undefined("'" + type_name(obj) + " object' has no attribute '" + name + "'");
  }

  /// `obj[key]`: jinja2 tries the item first, then (for string keys) the attribute.
  value get_item(const value& obj, const value& key) {
    if (obj.is_undefined()) throw eval_failure{obj.undefined_hint()};
    if (obj.is_dict()) {
      if (const value* v = dict_find(obj.as_dict(), key)) return *v;
      if (key.is_string()) {
        value m = dict_method(obj, key.as_string());
        if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
      }
      return value::undefined("'dict object' has no attribute " + py_repr(key));
    }
    if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      std::int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
      if (obj.is_list()) {
        const auto& l = obj.as_list();
        auto n = static_cast<std::int64_t>(l.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return value::undefined(type_name(obj) + " index out of range");
        return l[static_cast<std::size_t>(i)];
      }
      auto cps = utf8_decode(obj.as_string());
      auto n = static_cast<std::int64_t>(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return value::undefined("string index out of range");
      return value::string(
          utf8_encode(cps, static_cast<std::size_t>(i), static_cast<std::size_t>(i) + 1));
    }
    if (key.is_string()) return get_attr(obj, key.as_string());
    return value::undefined("'" + type_name(obj) + " object' has no attribute " + py_repr(key));
  }

  /// jinja2's attribute getter for filters: "a.b.0" walks items.
  value attr_path(const value& obj, const std::string& path) {
    value cur = obj;
    std::size_t p = 0;
    while (true) {
      std::size_t q = path.find('.', p);
      std::string part = path.substr(p, q == std::string::npos ? std::string::npos : q - p);
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                 [](char c) { return c >= '0' && c <= '9'; });
      std::int64_t index = 0;
      bool numeric = digits && std::from_chars(part.data(), part.data() + part.size(), index).ec ==
                                   std::errc();
      cur = get_item(cur, numeric ? value::integer(index) : value::string(part));
      if (q == std::string::npos) return cur;
      p = q + 1;
    }
  }

  // ---- globals ----

  value global(const std::string& name) {
    if (name == "range")
      return method("range", [this](call_args& a) {
        std::int64_t start = 0, stop = 0, stepv = 1;
        auto num = [](const value& v) -> std::int64_t {
          if (v.is_int()) return v.as_int();
          if (v.is_bool()) return v.as_bool();
          throw eval_failure{"range() arguments must be integers, not " + type_name(v)};
        };
        if (a.pos.size() == 1)
          stop = num(a.pos[0]);
        else if (a.pos.size() == 2 || a.pos.size() == 3) {
          start = num(a.pos[0]);
          stop = num(a.pos[1]);
          if (a.pos.size() == 3) stepv = num(a.pos[2]);
        } else {
          throw eval_failure{"range expected 1 to 3 arguments, got " +
                             std::to_string(a.pos.size())};
        }
        if (stepv == 0) throw eval_failure{"range() arg 3 must not be zero"};
        list_t out;
        for (std::int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
          if (out.size() >= lim_.max_range)
            throw eval_failure{"range() longer than " + std::to_string(lim_.max_range) +
                               " elements"};
          out.push_back(value::integer(i));
          if ((stepv > 0 && i > INT64_MAX - stepv) || (stepv < 0 && i < INT64_MIN - stepv)) break;
        }
        return value::list(std::move(out));
      });
    if (name == "namespace")
      return method("namespace", [](call_args& a) {
        auto ns = std::make_shared<namespace_t>();
        for (const auto& p : a.pos) {
          if (!p.is_dict()) throw eval_failure{"namespace() positional argument must be a dict"};
          for (const auto& [k, v] : p.as_dict()) dict_set(ns->attrs, k, v);
        }
        for (const auto& [k, v] : a.kw) dict_set(ns->attrs, value::string(k), v);
        return value::from(std::move(ns));
      });
    if (name == "dict")
      return method("dict", [](call_args& a) {
        dict_t d;
        for (const auto& p : a.pos) {
          if (!p.is_dict()) throw eval_failure{"dict() positional argument must be a dict"};
          for (const auto& [k, v] : p.as_dict()) dict_set(d, k, v);
        }
        for (const auto& [k, v] : a.kw) dict_set(d, value::string(k), v);
        return value::dict(std::move(d));
      });
    if (name == "raise_exception")
      return method("raise_exception", [](call_args& a) -> value {
        throw eval_failure{a.pos.empty() ? std::string("raise_exception() called")
                                         : py_str(a.pos[0])};
      });
    if (name == "strftime_now")
      return method("strftime_now", [](call_args& a) {
        std::string fmt = str_arg(a, 0, "format", "strftime_now");
        std::time_t t = std::time(nullptr);
        std::tm tm{};
        localtime_r(&t, &tm);
        std::string buf(256 + fmt.size() * 8, '\0');
        std::size_t n = fmt.empty() ? 0 : std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
        buf.resize(n);
        return value::string(std::move(buf));
      });
    if (name == "joiner")
      return method("joiner", [](call_args& a) {
        std::string sep = arg(a, 0, "sep") ? str_arg(a, 0, "sep", "joiner") : ", ";
        auto used = std::make_shared<bool>(false);
        return method("joiner", [sep, used](call_args&) {
          if (!*used) {
            *used = true;
            return value::string("");
          }
          return value::string(sep);
        });
      });
    return {};
  }

  // ---- expressions ----

  value eval(const expr& e) {
    depth_guard g(*this, e.loc);
    try {
      return eval_inner(e);
    } catch (const eval_failure& f) {
      fail(e.loc, f.what);
    }
  }

  value eval_inner(const expr& e) {
    switch (e.kind) {
      case ek::literal:
        return e.lit;
      case ek::name:
        return lookup(e.name);
      case ek::attr:
        return get_attr(eval(*e.args[0]), e.name);
      case ek::item: {
        value obj = eval(*e.args[0]);
        return get_item(obj, eval(*e.args[1]));
      }
      case ek::slice: {
        value obj = eval(*e.args[0]);
        if (obj.is_undefined()) throw eval_failure{obj.undefined_hint()};
        value parts[3];
        for (int i = 0; i < 3; ++i) parts[i] = e.args[1 + i] ? eval(*e.args[1 + i]) : value::none();
        if (obj.is_list()) {
          const auto& l = obj.as_list();
          list_t out;
          for (auto i :
               slice_indices(static_cast<std::int64_t>(l.size()), parts[0], parts[1], parts[2]))
            out.push_back(l[i]);
          return value::list(std::move(out));
        }
        if (obj.is_string()) {
          auto cps = utf8_decode(obj.as_string());
          std::string out;
          for (auto i :
               slice_indices(static_cast<std::int64_t>(cps.size()), parts[0], parts[1], parts[2]))
            utf8_append(out, cps[i]);
          return value::string(std::move(out));
        }
        return value::undefined("'" + type_name(obj) + "' object is not subscriptable");
      }
      case ek::call: {
        value callee = eval(*e.args[0]);
        call_args a = eval_args(e);
        if (callee.is_undefined()) throw eval_failure{callee.undefined_hint()};
        if (!callee.is_callable())
          throw eval_failure{"'" + type_name(callee) + "' object is not callable"};
        return callee.as_callable().fn(a);
      }
      case ek::filter:
        return apply_filter(e, eval(*e.args[0]));
      case ek::test: {
        bool r = apply_test(e, eval(*e.args[0]));
        return value::boolean(e.negated ? !r : r);
      }
      case ek::neg:
      case ek::pos: {
        value v = eval(*e.args[0]);
        if (v.is_undefined()) throw eval_failure{v.undefined_hint()};
        if (!v.is_number())
          throw eval_failure{"bad operand type for unary " +
                             std::string(e.kind == ek::neg ? "-" : "+") + ": '" + type_name(v) +
                             "'"};
        if (e.kind == ek::pos) return v.is_bool() ? value::integer(v.as_bool()) : v;
        if (v.is_real()) return value::real(-v.as_real());
        std::int64_t i = v.is_bool() ? v.as_bool() : v.as_int();
        if (i == INT64_MIN) throw eval_failure{"integer overflow"};
        return value::integer(-i);
      }
      case ek::not_:
        return value::boolean(!truthy(eval(*e.args[0])));
      case ek::and_: {
        value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case ek::or_: {
        value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case ek::binop: {
        value a = eval(*e.args[0]);
        value b = eval(*e.args[1]);
        return binary(e.name, a, b);
      }
      case ek::compare: {
        value left = eval(*e.args[0]);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          value right = eval(*e.args[i + 1]);
          if (!compare(e.ops[i], left, right)) return value::boolean(false);
          left = std::move(right);
        }
        return value::boolean(true);
      }
      case ek::cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        if (e.args[2]) return eval(*e.args[2]);
        return value::undefined("the conditional expression evaluated to false and has no else");
      case ek::list:
      case ek::tuple: {
        list_t l;
        for (const auto& x : e.args) l.push_back(eval(*x));
        return e.kind == ek::tuple ? value::make_tuple(std::move(l)) : value::list(std::move(l));
      }
      case ek::dict: {
        dict_t d;
        for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
          value k = eval(*e.args[i]);
          if (k.is_list() || k.is_dict() || k.is_undefined() || k.is_namespace())
            throw eval_failure{"unhashable dict key of type '" + type_name(k) + "'"};
          dict_set(d, std::move(k), eval(*e.args[i + 1]));
        }
        return value::dict(std::move(d));
      }
    }
    return {};
  }

  call_args eval_args(const expr& e) {
    call_args a;
    for (std::size_t i = 1; i < e.args.size(); ++i) a.pos.push_back(eval(*e.args[i]));
    for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, eval(*x));
    return a;
  }

  bool contains(const value& container, const value& item) {
    if (container.is_undefined()) return false;
    if (container.is_string()) {
      if (!item.is_string())
        throw eval_failure{"'in <string>' requires string as left operand, not " + type_name(item)};
      return container.as_string().find(item.as_string()) != std::string::npos;
    }
    if (container.is_list()) {
      for (const auto& x : container.as_list())
        if (py_equal(x, item)) return true;
      return false;
    }
    if (container.is_dict()) return dict_find(container.as_dict(), item) != nullptr;
    throw eval_failure{"argument of type '" + type_name(container) + "' is not iterable"};
  }

  bool compare(const std::string& op, const value& a, const value& b) {
    if (op == "==") return py_equal(a, b);
    if (op == "!=") return !py_equal(a, b);
    if (op == "in") return contains(b, a);
    if (op == "not in") return !contains(b, a);
    int c = py_compare(a, b, op);
    if (c == 2) return false;
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  value binary(const std::string& op, const value& a, const value& b) {
    if (op == "~") {
      std::string s = py_str(a) + py_str(b);
      check_size(s.size());
      return value::string(std::move(s));
    }
    if (a.is_undefined()) throw eval_failure{a.undefined_hint()};
    if (b.is_undefined()) throw eval_failure{b.undefined_hint()};
    auto type_error = [&]() -> eval_failure {
      return eval_failure{"unsupported operand type(s) for " + op + ": '" + type_name(a) +
                          "' and '" + type_name(b) + "'"};
    };
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        check_size(a.as_string().size() + b.as_string().size());
        return value::string(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list()) {
        check_size((a.as_list().size() + b.as_list().size()) * sizeof(value));
        list_t l = a.as_list();
        l.insert(l.end(), b.as_list().begin(), b.as_list().end());
        return value::list(std::move(l));
      }
    }
    if (op == "*") {
      const value* seq = a.is_string() || a.is_list()   ? &a
                         : b.is_string() || b.is_list() ? &b
                                                        : nullptr;
      const value* cnt = seq == &a ? &b : &a;
      if (seq && (cnt->is_int() || cnt->is_bool())) {
        std::int64_t n = cnt->is_bool() ? cnt->as_bool() : cnt->as_int();
        if (n < 0) n = 0;
        std::size_t unit =
            seq->is_string() ? seq->as_string().size() : seq->as_list().size() * sizeof(value);
        if (unit == 0) n = 0;  // repeating nothing gives nothing, however often
        if (unit > 0 && static_cast<std::size_t>(n) > lim_.max_output_bytes / unit)
          throw eval_failure{"value exceeds the output size limit"};
        if (seq->is_string()) {
          std::string s;
          for (std::int64_t i = 0; i < n; ++i) s += seq->as_string();
          return value::string(std::move(s));
        }
        list_t l;
        for (std::int64_t i = 0; i < n; ++i)
          l.insert(l.end(), seq->as_list().begin(), seq->as_list().end());
        return value::list(std::move(l));
      }
    }
    if (!a.is_number() || !b.is_number()) throw type_error();
    const bool ints = !a.is_real() && !b.is_real();
    if (ints) {
      std::int64_t x = a.is_bool() ? a.as_bool() : a.as_int();
      std::int64_t y = b.is_bool() ? b.as_bool() : b.as_int();
      std::int64_t r = 0;
      if (op == "+") {
        if (__builtin_add_overflow(x, y, &r)) throw eval_failure{"integer overflow"};
        return value::integer(r);
      }
      if (op == "-") {
        if (__builtin_sub_overflow(x, y, &r)) throw eval_failure{"integer overflow"};
        return value::integer(r);
      }
      if (op == "*") {
        if (__builtin_mul_overflow(x, y, &r)) throw eval_failure{"integer overflow"};
        return value::integer(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) throw eval_failure{"integer division or modulo by zero"};
        if (x == INT64_MIN && y == -1) throw eval_failure{"integer overflow"};
        std::int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward negative infinity
          --q;
          m += y;
        }
        return value::integer(op == "//" ? q : m);
      }
      if (op == "**" && y >= 0) {
        std::int64_t acc = 1;
        for (std::int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(acc, x, &acc)) throw eval_failure{"integer overflow"};
          if (acc == 0 || acc == 1) break;
          if (acc == -1 && x == -1) {
            acc = (y % 2 == 0) ? 1 : -1;
            break;
          }
        }
        return value::integer(acc);
      }
    }
    double x = a.to_double(), y = b.to_double();
    if (op == "+") return value::real(x + y);
    if (op == "-") return value::real(x - y);
    if (op == "*") return value::real(x * y);
    if (op == "/") {
      if (y == 0) throw eval_failure{"division by zero"};
      return value::real(x / y);
    }
    if (op == "//" || op == "%") {
      // CPython's float_divmod, so signs and rounding match Python exactly.
      if (y == 0) throw eval_failure{"float division or modulo by zero"};
      double m = std::fmod(x, y);
      double div = (x - m) / y;
      if (m != 0) {
        if ((y < 0) != (m < 0)) {
          m += y;
          div -= 1.0;
        }
      } else {
        m = std::copysign(0.0, y);
      }
      double fl = 0;
      if (div != 0) {
        fl = std::floor(div);
        if (div - fl > 0.5) fl += 1.0;
      } else {
        fl = std::copysign(0.0, x / y);
      }
      return value::real(op == "%" ? m : fl);
    }
    if (op == "**") {
      if (x == 0 && y < 0) throw eval_failure{"0.0 cannot be raised to a negative power"};
      return value::real(std::pow(x, y));
    }
    throw type_error();
  }

  // ---- tests ----

  bool run_test(const std::string& name, const value& v, const call_args& a) {
    auto other = [&]() -> const value& {
      if (a.pos.empty()) throw eval_failure{"test '" + name + "' needs an argument"};
      return a.pos[0];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_real();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_dict();
    if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
    if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
    if (name == "callable") return v.is_callable();
    if (name == "escaped") return false;
    if (name == "lower" || name == "upper") {
      // str(value).islower() / isupper(): some cased letter, and all cased letters match.
      bool any = false, all = true;
      for (char32_t c : utf8_decode(py_str(v))) {
        if (!is_cased_cp(c)) continue;
        any = true;
        all = all &&
              (name == "lower" ? to_upper_cp(c) != c || to_lower_cp(c) == c
                               : to_lower_cp(c) != c || to_upper_cp(c) == c) &&
              (name == "lower" ? to_lower_cp(c) == c : to_upper_cp(c) == c);
      }
      return any && all;
    }
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!v.is_int() && !v.is_bool()) throw eval_failure{"test '" + name + "' needs an integer"};
      std::int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
      if (name == "odd") return x % 2 != 0;
      if (name == "even") return x % 2 == 0;
      const value& d = other();
      if (!d.is_int() || d.as_int() == 0)
        throw eval_failure{"divisibleby needs a non-zero integer"};
      return x % d.as_int() == 0;
    }
    if (name == "sameas") {
      const value& o = other();
      if (v.is_none() || o.is_none() || v.is_bool() || o.is_bool())
        return v.v.index() == o.v.index() && py_equal(v, o);
      return py_equal(v, o) && v.v.index() == o.v.index() && !v.is_list() && !v.is_dict();
    }
    if (name == "in") return contains(other(), v);
    if (name == "eq" || name == "equalto" || name == "==") return py_equal(v, other());
    if (name == "ne" || name == "!=") return !py_equal(v, other());
    std::string op = name == "lt" || name == "lessthan"      ? "<"
                     : name == "le"                          ? "<="
                     : name == "gt" || name == "greaterthan" ? ">"
                     : name == "ge"                          ? ">="
                                                             : name;
    if (op == "<" || op == "<=" || op == ">" || op == ">=") return compare(op, v, other());
    throw eval_failure{"no test named '" + name + "'"};
  }

  bool apply_test(const expr& e, const value& v) {
    call_args a = eval_args(e);
    return run_test(e.name, v, a);
  }

  // ---- filters ----

  value apply_filter(const expr& e, value v) {
    call_args a = eval_args(e);
    return run_filter(e.name, std::move(v), a);
  }

  static std::string lower_if(const value& v, bool case_sensitive) {
    return v.is_string() && !case_sensitive ? py_lower(v.as_string()) : std::string();
  }

  /// Sort key comparison used by sort/dictsort/unique/min/max (case-insensitive by default).
  static bool less_value(const value& x, const value& y, bool case_sensitive) {
    if (!case_sensitive && x.is_string() && y.is_string())
      return py_lower(x.as_string()) < py_lower(y.as_string());
    int c = py_compare(x, y, "<");
    return c == -1;
  }
  static bool same_value(const value& x, const value& y, bool case_sensitive) {
    if (!case_sensitive && x.is_string() && y.is_string())
      return py_lower(x.as_string()) == py_lower(y.as_string());
    return py_equal(x, y);
  }

  value run_filter(const std::string& name, value v, call_args& a) {
    if (name == "safe") return v;
    if (name == "default" || name == "d") {
      const value* d = arg(a, 0, "default_value");
      bool boolean = bool_arg(a, 1, "boolean", false);
      if (v.is_undefined() || (boolean && !truthy(v))) return d ? *d : value::string("");
      return v;
    }
    if (name == "length" || name == "count") {
      if (v.is_string())
        return value::integer(static_cast<std::int64_t>(utf8_length(v.as_string())));
      if (v.is_list()) return value::integer(static_cast<std::int64_t>(v.as_list().size()));
      if (v.is_dict()) return value::integer(static_cast<std::int64_t>(v.as_dict().size()));
      if (v.is_undefined()) return value::integer(0);
      throw eval_failure{"object of type '" + type_name(v) + "' has no len()"};
    }
    if (name == "string") return value::string(py_str(v));
    if (name == "trim") return value::string(py_strip(py_str(v), arg(a, 0, "chars"), true, true));
    if (name == "upper") return value::string(py_upper(py_str(v)));
    if (name == "lower") return value::string(py_lower(py_str(v)));
    if (name == "capitalize") return value::string(py_capitalize(py_str(v)));
    if (name == "title") return value::string(jinja_title(py_str(v)));
    if (name == "e" || name == "escape" || name == "forceescape")
      return value::string(html_escape(py_str(v)));
    if (name == "replace") {
      if (v.is_undefined()) v = value::string("");
      return value::string(py_replace(py_str(v),
                                      py_str(a.pos.size() > 0 ? a.pos[0] : value::string("")),
                                      py_str(a.pos.size() > 1 ? a.pos[1] : value::string("")),
                                      int_arg(a, 2, "count", -1), lim_.max_output_bytes));
    }
    if (name == "tojson") {
      // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None,
      // sort_keys=False), so a positional argument is ensure_ascii, not indent.
      json_style st;
      if (const value* asc = arg(a, 0, "ensure_ascii")) st.ensure_ascii = truthy(*asc);
      const value* ind = arg(a, 1, "indent");
      if (ind && !ind->is_none() && !ind->is_undefined()) {
        st.indented = true;
        if (ind->is_string())
          st.indent = ind->as_string();
        else if (ind->is_int())
          st.indent = std::string(
              static_cast<std::size_t>(std::clamp<std::int64_t>(ind->as_int(), 0, 64)), ' ');
        else
          throw eval_failure{"tojson indent must be an integer or a string"};
        st.item_sep = ",";
      }
      if (const value* seps = arg(a, 2, "separators"); seps && !seps->is_none()) {
        if (!seps->is_list() || seps->as_list().size() != 2 || !seps->as_list()[0].is_string() ||
            !seps->as_list()[1].is_string())
          throw eval_failure{"tojson separators must be a pair of strings"};
        st.item_sep = seps->as_list()[0].as_string();
        st.key_sep = seps->as_list()[1].as_string();
      }
      if (const value* sk = arg(a, 3, "sort_keys")) st.sort_keys = truthy(*sk);
      std::string out;
      json_dump_checked(out, v, st, 0);
      return value::string(std::move(out));
    }
    if (name == "first" || name == "last") {
      list_t l = iterate_f(v);
      if (l.empty()) return value::undefined("No " + name + " item, sequence was empty.");
      return name == "first" ? l.front() : l.back();
    }
    if (name == "list") return value::list(iterate_f(v));
    if (name == "items") {
      if (v.is_undefined()) return value::list({});
      if (!v.is_dict()) throw eval_failure{"items filter needs a mapping, not " + type_name(v)};
      list_t out;
      for (const auto& [k, x] : v.as_dict()) out.push_back(value::make_tuple({k, x}));
      return value::list(std::move(out));
    }
    if (name == "join") {
      std::string sep = arg(a, 0, "d") ? py_str(*arg(a, 0, "d")) : "";
      const value* attr = arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (const auto& x : iterate_f(v)) {
        if (!first) out += sep;
        first = false;
        out += py_str(attr && !attr->is_none() ? attr_path(x, py_str(*attr)) : x);
        check_size(out.size());
      }
      return value::string(std::move(out));
    }
    if (name == "reverse") {
      if (v.is_string()) {
        auto cps = utf8_decode(v.as_string());
        std::reverse(cps.begin(), cps.end());
        return value::string(utf8_encode(cps));
      }
      list_t l = iterate_f(v);
      std::reverse(l.begin(), l.end());
      return value::list(std::move(l));
    }
    if (name == "int") {
      const value* d = arg(a, 0, "default");
      value dflt = d ? *d : value::integer(0);
      std::int64_t base = int_arg(a, 1, "base", 10);
      if (v.is_int()) return v;
      if (v.is_bool()) return value::integer(v.as_bool());
      if (v.is_real()) {
        double x = v.as_real();
        if (!std::isfinite(x) || std::fabs(x) >= 9.2e18) return dflt;
        return value::integer(static_cast<std::int64_t>(x));
      }
      if (v.is_string()) {
        std::string s = py_strip(v.as_string(), nullptr, true, true);
        std::string digits;
        for (char c : s)
          if (c != '_') digits.push_back(c);
        if (base >= 2 && base <= 36 && !digits.empty()) {
          std::int64_t r = 0;
          const char* b = digits.data();
          if (*b == '+') ++b;
          auto res = std::from_chars(b, digits.data() + digits.size(), r, static_cast<int>(base));
          if (res.ec == std::errc() && res.ptr == digits.data() + digits.size())
            return value::integer(r);
        }
        char* end = nullptr;
        double x = std::strtod(s.c_str(), &end);
        if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(x) && std::fabs(x) < 9.2e18)
          return value::integer(static_cast<std::int64_t>(x));
      }
      return dflt;
    }
    if (name == "float") {
      const value* d = arg(a, 0, "default");
      value dflt = d ? *d : value::real(0.0);
      if (v.is_number()) return value::real(v.to_double());
      if (v.is_string()) {
        std::string s = py_strip(v.as_string(), nullptr, true, true);
        char* end = nullptr;
        double x = std::strtod(s.c_str(), &end);
        if (!s.empty() && end == s.c_str() + s.size()) return value::real(x);
      }
      return dflt;
    }
    if (name == "abs") {
      if (v.is_real()) return value::real(std::fabs(v.as_real()));
      if (v.is_int() || v.is_bool()) {
        std::int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
        if (x == INT64_MIN) throw eval_failure{"integer overflow"};
        return value::integer(x < 0 ? -x : x);
      }
      throw eval_failure{"bad operand type for abs(): '" + type_name(v) + "'"};
    }
    if (name == "round") {
      if (!v.is_number()) throw eval_failure{"round filter needs a number, not " + type_name(v)};
      std::int64_t prec = int_arg(a, 0, "precision", 0);
      std::string method = arg(a, 1, "method") ? py_str(*arg(a, 1, "method")) : "common";
      double x = v.to_double();
      if (method == "common") {
        if (!v.is_real())
          return v.is_bool() ? value::integer(v.as_bool()) : v;  // round(int) is int
        // Python's round(): correctly rounded, ties to even on the exact binary value.
        char buf[512];
        int p = static_cast<int>(std::clamp<std::int64_t>(prec, 0, 300));
        if (!std::isfinite(x)) return value::real(x);
        std::snprintf(buf, sizeof buf, "%.*f", p, x);
        return value::real(std::strtod(buf, nullptr));
      }
      double m = std::pow(10.0, static_cast<double>(prec));
      if (method == "ceil") return value::real(std::ceil(x * m) / m);
      if (method == "floor") return value::real(std::floor(x * m) / m);
      throw eval_failure{"method must be common, ceil or floor"};
    }
    if (name == "attr") return get_attr(v, str_arg(a, 0, "name", "attr"));
    if (name == "map") {
      list_t out;
      if (const value* at = arg(a, 99, "attribute")) {
        const value* d = arg(a, 99, "default");
        for (const auto& x : iterate_f(v)) {
          value r = attr_path(x, py_str(*at));
          out.push_back(r.is_undefined() && d ? *d : r);
        }
        return value::list(std::move(out));
      }
      if (a.pos.empty()) throw eval_failure{"map requires a filter argument"};
      std::string fname = py_str(a.pos[0]);
      if (!known_filter(fname)) throw eval_failure{"no filter named '" + fname + "'"};
      call_args rest;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      rest.kw = a.kw;
      for (const auto& x : iterate_f(v)) out.push_back(run_filter(fname, x, rest));
      return value::list(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      bool by_attr = name.ends_with("attr");
      bool keep_if = name.starts_with("select");
      std::size_t first = by_attr ? 1 : 0;
      if (by_attr && a.pos.empty()) throw eval_failure{name + " needs an attribute name"};
      std::string test = a.pos.size() > first ? py_str(a.pos[first]) : "";
      if (!test.empty() && !known_test(test)) throw eval_failure{"no test named '" + test + "'"};
      call_args rest;
      if (a.pos.size() > first + 1)
        rest.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(first + 1), a.pos.end());
      list_t out;
      for (const auto& x : iterate_f(v)) {
        value subject = by_attr ? attr_path(x, py_str(a.pos[0])) : x;
        bool r = test.empty() ? truthy(subject) : run_test(test, subject, rest);
        if (r == keep_if) out.push_back(x);
      }
      return value::list(std::move(out));
    }
    if (name == "unique" || name == "min" || name == "max" || name == "sort" || name == "sum" ||
        name == "dictsort") {
      bool cs = bool_arg(a, 99, "case_sensitive", false);
      const value* at = arg(a, 99, "attribute");
      auto key = [&](const value& x) {
        return at && !at->is_none() ? attr_path(x, py_str(*at)) : x;
      };
      if (name == "dictsort") {
        if (!v.is_dict()) throw eval_failure{"dictsort needs a mapping"};
        cs = bool_arg(a, 0, "case_sensitive", false);
        std::string by = arg(a, 1, "by") ? py_str(*arg(a, 1, "by")) : "key";
        bool rev = bool_arg(a, 2, "reverse", false);
        list_t pairs;
        for (const auto& [k, x] : v.as_dict()) pairs.push_back(value::make_tuple({k, x}));
        std::size_t which = by == "value" ? 1 : 0;
        std::stable_sort(pairs.begin(), pairs.end(), [&](const value& p, const value& q) {
          return rev ? less_value(q.as_list()[which], p.as_list()[which], cs)
                     : less_value(p.as_list()[which], q.as_list()[which], cs);
        });
        return value::list(std::move(pairs));
      }
      list_t l = iterate_f(v);
      if (name == "sum") {
        value acc = arg(a, 99, "start") ? *arg(a, 99, "start") : value::integer(0);
        for (const auto& x : l) acc = binary("+", acc, key(x));
        return acc;
      }
      if (name == "unique") {
        list_t out;
        for (const auto& x : l) {
          bool seen = false;
          for (const auto& y : out) seen = seen || same_value(key(x), key(y), cs);
          if (!seen) out.push_back(x);
        }
        return value::list(std::move(out));
      }
      if (name == "sort") {
        bool rev = bool_arg(a, 0, "reverse", false);
        cs = bool_arg(a, 1, "case_sensitive", false);
        at = arg(a, 2, "attribute");
        std::stable_sort(l.begin(), l.end(), [&](const value& x, const value& y) {
          return rev ? less_value(key(y), key(x), cs) : less_value(key(x), key(y), cs);
        });
        return value::list(std::move(l));
      }
      if (l.empty()) return value::undefined("No aggregated item, sequence was empty.");
      std::size_t best = 0;
      for (std::size_t i = 1; i < l.size(); ++i) {
        bool better = name == "min" ? less_value(key(l[i]), key(l[best]), cs)
                                    : less_value(key(l[best]), key(l[i]), cs);
        if (better) best = i;
      }
      return l[best];
    }
    if (name == "indent") {
      const value* w = arg(a, 0, "width");
      std::string ind = !w ? "    "
                        : w->is_string()
                            ? w->as_string()
                            : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(
                                              int_arg(a, 0, "width", 4), 0, 256)),
                                          ' ');
      bool first = bool_arg(a, 1, "first", false);
      bool blank = bool_arg(a, 2, "blank", false);
      // jinja2's do_indent: (s + "\n").splitlines(), blank lines indented only with blank.
      std::vector<std::string> lines = py_splitlines(py_str(v) + "\n");
      std::string out = lines[0];
      for (std::size_t i = 1; i < lines.size(); ++i) {
        out += "\n";
        if (blank || !lines[i].empty()) out += ind;
        out += lines[i];
        check_size(out.size());
      }
      if (first) out = ind + out;
      return value::string(std::move(out));
    }
    throw eval_failure{"no filter named '" + name + "'"};
  }

  void json_dump_checked(std::string& out, const value& v, const json_style& st, int level) {
    if (level > lim_.max_depth) throw eval_failure{"value nests too deeply for tojson"};
    json_dump(out, v, st, level);
    check_size(out.size());
  }

  std::string origin_;
  limits lim_;
  const dict_t* ctx_ = nullptr;
  frame* root_ = nullptr;
  frame* cur_ = nullptr;
  int depth_ = 0;
  std::size_t steps_ = 0;
};

}  // namespace forge::text::detail::jinja
