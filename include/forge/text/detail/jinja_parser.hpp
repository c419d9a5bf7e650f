#pragma once
// The syntax tree of a Jinja template and a recursive-descent parser for the subset that
// chat templates use. Operator precedence and the places filters, tests and conditional
// expressions bind follow jinja2's parser (jinja2/parser.py): `a + b | f` filters `b`,
// `not x is defined` negates the test, `x if c` without `else` is undefined when false.
// Anything outside the subset is a forge::error naming the line and column.

#include <charconv>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/text/detail/jinja_lexer.hpp"
#include "forge/text/detail/jinja_value.hpp"

namespace forge::text::detail::jinja {

enum class ek {
  literal,  ///< lit
  name,     ///< name
  attr,     ///< args[0].name
  item,     ///< args[0][args[1]]
  slice,    ///< args[0][args[1]:args[2]:args[3]], absent parts null
  call,     ///< args[0](args[1..], kwargs)
  filter,   ///< args[0] | name(args[1..], kwargs); args[0] null inside filter blocks
  test,     ///< args[0] is [not] name(args[1..])
  neg,
  pos,
  not_,
  binop,  ///< args[0] name args[1] for + - * / // % ** ~
  and_,
  or_,
  compare,  ///< args[0] ops[0] args[1] ops[1] args[2] ... (chained as in Python)
  cond,     ///< args[0] if args[1] else args[2] (null: undefined)
  list,
  tuple,
  dict  ///< args = key0, value0, key1, value1, ...
};

struct expr;
using expr_ptr = std::unique_ptr<expr>;

struct expr {
  ek kind;
  location loc;
  value lit;
  std::string name;
  std::vector<expr_ptr> args;
  std::vector<std::pair<std::string, expr_ptr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

enum class sk {
  text,       ///< text
  output,     ///< {{ exprs[0] }}
  if_,        ///< exprs[i] guards bodies[i]; a last extra body is the else branch
  for_,       ///< for targets in exprs[0] [if exprs[1]]: bodies[0], else bodies[1]
  set,        ///< set targets = exprs[0]
  set_attr,   ///< set targets[0].text = exprs[0] (namespace attribute)
  set_block,  ///< set targets[0] | exprs (filters) %} bodies[0] {% endset
  macro,      ///< macro text(targets = exprs defaults, null when none) bodies[0]
  break_,
  continue_,
  filter,  ///< filter exprs (chain) bodies[0] endfilter
  with,    ///< with targets = exprs: bodies[0]
  block    ///< bodies[0] rendered in place (the `generation` tag of transformers)
};

struct stmt;
using body_t = std::vector<stmt>;

struct stmt {
  sk kind;
  location loc;
  std::string text;
  std::vector<std::string> targets;
  std::vector<expr_ptr> exprs;
  std::vector<body_t> bodies;
  bool has_filter_cond = false;  ///< for_: exprs[1] is the `if` filter
};

/// Filters and tests the renderer implements; a template naming another fails at parse time
/// with its line and column, as jinja2 does ("No filter named ...").
inline bool known_filter(std::string_view n) {
  static constexpr std::string_view names[] = {
      "abs",    "attr",   "capitalize", "count",      "d",           "default", "dictsort",
      "e",      "escape", "first",      "float",      "forceescape", "indent",  "int",
      "items",  "join",   "last",       "length",     "list",        "lower",   "map",
      "max",    "min",    "reject",     "rejectattr", "replace",     "reverse", "round",
      "safe",   "select", "selectattr", "sort",       "string",      "sum",     "title",
      "tojson", "trim",   "unique",     "upper"};
  for (auto x : names)
    if (x == n) return true;
  return false;
}

inline bool known_test(std::string_view n) {
  static constexpr std::string_view names[] = {
      "boolean", "callable",  "defined", "divisibleby", "eq",          "equalto",  "escaped",
      "even",    "false",     "float",   "ge",          "greaterthan", "gt",       "in",
      "integer", "iterable",  "le",      "lessthan",    "lower",       "lt",       "mapping",
      "ne",      "none",      "number",  "odd",         "sameas",      "sequence", "string",
      "true",    "undefined", "upper",   "==",          "!=",          "<",        "<=",
      ">",       ">="};
  for (auto x : names)
    if (x == n) return true;
  return false;
}

/// Limits that keep a hostile template from exhausting the stack while parsing.
inline constexpr int max_parse_depth = 64;

class parser {
 public:
  parser(std::vector<token> toks, std::string origin)
      : t_(std::move(toks)), origin_(std::move(origin)) {}

  body_t parse_template() {
    body_t b = parse_body({});
    if (cur().type != tok::eof)
      fail(cur().loc, "unexpected tag", "end of template", describe(cur()));
    check_names(b, false);
    return b;
  }

 private:
  // ---- token helpers ----
  const token& cur() const { return t_[i_]; }
  const token& peek(std::size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  bool is_op(std::string_view s) const { return cur().type == tok::op && cur().text == s; }
  bool is_name(std::string_view s) const { return cur().type == tok::name && cur().text == s; }
  bool skip_op(std::string_view s) {
    if (!is_op(s)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view s) {
    if (!is_name(s)) return false;
    advance();
    return true;
  }
  static std::string describe(const token& t) {
    switch (t.type) {
      case tok::eof:
        return "end of template";
      case tok::text:
        return "template text";
      case tok::var_begin:
        return "'{{'";
      case tok::var_end:
        return "'}}'";
      case tok::block_begin:
        return "'{%'";
      case tok::block_end:
        return "'%}'";
      case tok::string:
        return "a string";
      case tok::integer:
      case tok::real:
        return "number " + t.text;
      default:
        return "'" + t.text + "'";
    }
  }
  [[noreturn]] void fail(location l, std::string what, std::string expected = {},
                         std::string found = {}) const {
    throw forge::error({.what = std::move(what),
                        .file = origin_,
                        .place = place_of(l),
                        .expected = std::move(expected),
                        .found = std::move(found)});
  }
  void expect_op(std::string_view s) {
    if (!skip_op(s))
      fail(cur().loc, "unexpected token", "'" + std::string(s) + "'", describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != tok::name) fail(cur().loc, "unexpected token", "a name", describe(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().type != tok::block_end)
      fail(cur().loc, "unexpected token in tag", "'%}'", describe(cur()));
    advance();
  }

  struct depth_guard {
    parser& p;
    depth_guard(parser& q, location l) : p(q) {
      if (++p.depth_ > max_parse_depth)
        p.fail(
            l, "template nests too deeply",
            "at most " + std::to_string(max_parse_depth) + " levels of nested tags or expressions");
    }
    ~depth_guard() { --p.depth_; }
  };

  static expr_ptr make(ek k, location l) {
    auto e = std::make_unique<expr>();
    e->kind = k;
    e->loc = l;
    return e;
  }

  // ---- statements ----

  /// Parses until a block tag whose name is in `ends`; leaves the stream at that name.
  body_t parse_body(std::initializer_list<std::string_view> ends) {
    body_t body;
    while (true) {
      const token& tk = cur();
      if (tk.type == tok::eof) {
        if (ends.size() == 0) return body;
        std::string want;
        for (auto e : ends) want += (want.empty() ? "'" : " or '") + std::string(e) + "'";
        fail(tk.loc, "unclosed block", want, "end of template");
      }
      if (tk.type == tok::text) {
        stmt s{sk::text, tk.loc, tk.text, {}, {}, {}};
        body.push_back(std::move(s));
        advance();
        continue;
      }
      if (tk.type == tok::var_begin) {
        location l = tk.loc;
        advance();
        stmt s{sk::output, l, {}, {}, {}, {}};
        s.exprs.push_back(parse_tuple(true));
        if (cur().type != tok::var_end)
          fail(cur().loc, "unexpected token in expression", "'}}'", describe(cur()));
        advance();
        body.push_back(std::move(s));
        continue;
      }
      if (tk.type != tok::block_begin)
        fail(tk.loc, "unexpected token", "template text or a tag", describe(tk));
      const token& nm = peek();
      if (nm.type != tok::name) fail(nm.loc, "expected a tag name", "a tag name", describe(nm));
      for (auto e : ends)
        if (nm.text == e) {
          advance();  // onto the name; the caller consumes it
          return body;
        }
      advance();
      body.push_back(parse_statement());
    }
  }

  stmt parse_statement() {
    const token nm = cur();
    depth_guard g(*this, nm.loc);
    advance();
    const std::string& k = nm.text;
    if (k == "if") return parse_if(nm.loc);
    if (k == "for") return parse_for(nm.loc);
    if (k == "set") return parse_set(nm.loc);
    if (k == "macro") return parse_macro(nm.loc);
    if (k == "break" || k == "continue") {
      if (loop_depth_ == 0) fail(nm.loc, "'" + k + "' outside of a loop");
      expect_block_end();
      return stmt{k == "break" ? sk::break_ : sk::continue_, nm.loc, {}, {}, {}, {}};
    }
    if (k == "filter") {
      stmt s{sk::filter, nm.loc, {}, {}, {}, {}};
      s.exprs.push_back(parse_filter(nullptr));
      parse_filter_chain(s.exprs);
      expect_block_end();
      s.bodies.push_back(parse_body({"endfilter"}));
      advance();
      expect_block_end();
      return s;
    }
    if (k == "with") {
      stmt s{sk::with, nm.loc, {}, {}, {}, {}};
      while (cur().type != tok::block_end) {
        if (!s.targets.empty()) expect_op(",");
        s.targets.push_back(expect_name());
        expect_op("=");
        s.exprs.push_back(parse_expression(true));
      }
      advance();
      s.bodies.push_back(parse_body({"endwith"}));
      advance();
      expect_block_end();
      return s;
    }
    if (k == "generation") {  // transformers' assistant-mask extension: renders its body
      expect_block_end();
      stmt s{sk::block, nm.loc, {}, {}, {}, {}};
      s.bodies.push_back(parse_body({"endgeneration"}));
      advance();
      expect_block_end();
      return s;
    }
    if (k.starts_with("end") || k == "else" || k == "elif")
      fail(nm.loc, "unexpected '" + k + "' tag", "a tag that opens a block");
    fail(nm.loc, "unsupported tag '" + k + "'",
         "one of if, for, set, macro, break, continue, filter, with, generation, raw");
  }

  stmt parse_if(location l) {
    stmt s{sk::if_, l, {}, {}, {}, {}};
    s.exprs.push_back(parse_tuple(false));
    expect_block_end();
    while (true) {
      s.bodies.push_back(parse_body({"elif", "else", "endif"}));
      std::string which = cur().text;
      advance();
      if (which == "elif") {
        s.exprs.push_back(parse_tuple(false));
        expect_block_end();
        continue;
      }
      if (which == "else") {
        expect_block_end();
        s.bodies.push_back(parse_body({"endif"}));
        advance();
      }
      expect_block_end();
      return s;
    }
  }

  stmt parse_for(location l) {
    stmt s{sk::for_, l, {}, {}, {}, {}};
    bool paren = skip_op("(");
    s.targets.push_back(expect_name());
    while (skip_op(",")) {
      if (is_name("in")) break;
      s.targets.push_back(expect_name());
    }
    if (paren) expect_op(")");
    if (!skip_name("in")) fail(cur().loc, "unexpected token in 'for'", "'in'", describe(cur()));
    s.exprs.push_back(parse_tuple(false, false));
    if (skip_name("if")) {
      s.exprs.push_back(parse_expression(true));
      s.has_filter_cond = true;
    }
    if (is_name("recursive")) fail(cur().loc, "unsupported construct: recursive loops");
    expect_block_end();
    ++loop_depth_;
    s.bodies.push_back(parse_body({"else", "endfor"}));
    --loop_depth_;
    std::string which = cur().text;
    advance();
    if (which == "else") {
      expect_block_end();
      s.bodies.push_back(parse_body({"endfor"}));
      advance();
    } else {
      s.bodies.emplace_back();
    }
    expect_block_end();
    return s;
  }

  stmt parse_set(location l) {
    std::string first = expect_name();
    if (skip_op(".")) {
      stmt s{sk::set_attr, l, expect_name(), {first}, {}, {}};
      expect_op("=");
      s.exprs.push_back(parse_tuple(true));
      expect_block_end();
      return s;
    }
    stmt s{sk::set, l, {}, {first}, {}, {}};
    while (skip_op(",")) s.targets.push_back(expect_name());
    if (skip_op("=")) {
      s.exprs.push_back(parse_tuple(true));
      expect_block_end();
      return s;
    }
    if (s.targets.size() != 1) fail(cur().loc, "unexpected token in 'set'", "'='", describe(cur()));
    s.kind = sk::set_block;
    parse_filter_chain(s.exprs);
    expect_block_end();
    s.bodies.push_back(parse_body({"endset"}));
    advance();
    expect_block_end();
    return s;
  }

  stmt parse_macro(location l) {
    stmt s{sk::macro, l, expect_name(), {}, {}, {}};
    expect_op("(");
    while (!skip_op(")")) {
      if (!s.targets.empty()) expect_op(",");
      if (skip_op(")")) break;
      s.targets.push_back(expect_name());
      s.exprs.push_back(skip_op("=") ? parse_expression(true) : nullptr);
    }
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;  // a macro body cannot break out of the loop it is defined in
    s.bodies.push_back(parse_body({"endmacro"}));
    loop_depth_ = saved;
    advance();
    if (cur().type == tok::name) advance();  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  /// `| name(args) | name ...` after `filter` or a block `set`: operand left null.
  void parse_filter_chain(std::vector<expr_ptr>& out) {
    while (skip_op("|")) out.push_back(parse_filter(nullptr));
  }

  // ---- expressions ----

  /// An expression or a bare tuple `a, b` (jinja2's parse_tuple).
  expr_ptr parse_tuple(bool with_condexpr, bool allow_empty = false) {
    location l = cur().loc;
    std::vector<expr_ptr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        is_tuple = true;
      }
      if (cur().type == tok::block_end || cur().type == tok::var_end || is_op(")") ||
          is_name("if") || is_name("in") || is_name("recursive")) {
        if (!items.empty()) break;
        if (!allow_empty)
          fail(cur().loc, "expected an expression", "an expression", describe(cur()));
        break;
      }
      items.push_back(parse_expression(with_condexpr));
    }
    if (!is_tuple && items.size() == 1) return std::move(items[0]);
    auto e = make(ek::tuple, l);
    e->args = std::move(items);
    return e;
  }

  expr_ptr parse_expression(bool with_condexpr) {
    depth_guard g(*this, cur().loc);
    if (!with_condexpr) return parse_or();
    expr_ptr e = parse_or();
    while (is_name("if")) {
      location l = cur().loc;
      advance();
      auto c = make(ek::cond, l);
      c->args.push_back(std::move(e));
      c->args.push_back(parse_or());
      c->args.push_back(skip_name("else") ? parse_expression(true) : nullptr);
      e = std::move(c);
    }
    return e;
  }

  expr_ptr parse_or() {
    expr_ptr e = parse_and();
    while (is_name("or")) {
      auto n = make(ek::or_, cur().loc);
      advance();
      n->args.push_back(std::move(e));
      n->args.push_back(parse_and());
      e = std::move(n);
    }
    return e;
  }

  expr_ptr parse_and() {
    expr_ptr e = parse_not();
    while (is_name("and")) {
      auto n = make(ek::and_, cur().loc);
      advance();
      n->args.push_back(std::move(e));
      n->args.push_back(parse_not());
      e = std::move(n);
    }
    return e;
  }

  expr_ptr parse_not() {
    if (is_name("not")) {
      depth_guard g(*this, cur().loc);
      auto n = make(ek::not_, cur().loc);
      advance();
      n->args.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }

  expr_ptr parse_compare() {
    location l = cur().loc;
    expr_ptr first = parse_math1();
    std::vector<expr_ptr> operands;
    std::vector<std::string> ops;
    while (true) {
      std::string op;
      if (cur().type == tok::op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == tok::name && peek().text == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto n = make(ek::compare, l);
    n->args.push_back(std::move(first));
    for (auto& o : operands) n->args.push_back(std::move(o));
    n->ops = std::move(ops);
    return n;
  }

  expr_ptr binop(expr_ptr a, std::string op, expr_ptr b, location l) {
    auto n = make(ek::binop, l);
    n->name = std::move(op);
    n->args.push_back(std::move(a));
    n->args.push_back(std::move(b));
    return n;
  }

  expr_ptr parse_math1() {
    expr_ptr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      token op = cur();
      advance();
      e = binop(std::move(e), op.text, parse_concat(), op.loc);
    }
    return e;
  }

  expr_ptr parse_concat() {
    expr_ptr e = parse_math2();
    while (is_op("~")) {
      token op = cur();
      advance();
      e = binop(std::move(e), "~", parse_math2(), op.loc);
    }
    return e;
  }

  expr_ptr parse_math2() {
    expr_ptr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      token op = cur();
      advance();
      e = binop(std::move(e), op.text, parse_pow(), op.loc);
    }
    return e;
  }

  expr_ptr parse_pow() {
    expr_ptr e = parse_unary(true);
    while (is_op("**")) {
      token op = cur();
      advance();
      e = binop(std::move(e), "**", parse_unary(true), op.loc);
    }
    return e;
  }

  expr_ptr parse_unary(bool with_filter) {
    depth_guard g(*this, cur().loc);
    expr_ptr e;
    if (is_op("-") || is_op("+")) {
      auto n = make(is_op("-") ? ek::neg : ek::pos, cur().loc);
      advance();
      n->args.push_back(parse_unary(false));
      e = std::move(n);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  expr_ptr parse_primary() {
    const token tk = cur();
    switch (tk.type) {
      case tok::name: {
        advance();
        if (tk.text == "true" || tk.text == "True") return literal(value::boolean(true), tk.loc);
        if (tk.text == "false" || tk.text == "False") return literal(value::boolean(false), tk.loc);
        if (tk.text == "none" || tk.text == "None") return literal(value::none(), tk.loc);
        auto n = make(ek::name, tk.loc);
        n->name = tk.text;
        return n;
      }
      case tok::string: {
        std::string s = tk.text;
        advance();
        while (cur().type == tok::string) {  // adjacent literals concatenate
          s += cur().text;
          advance();
        }
        return literal(value::string(std::move(s)), tk.loc);
      }
      case tok::integer: {
        advance();
        std::int64_t v = 0;
        auto r = std::from_chars(tk.text.data(), tk.text.data() + tk.text.size(), v);
        if (r.ec != std::errc())
          fail(tk.loc, "integer literal out of range", "a 64-bit integer", tk.text);
        return literal(value::integer(v), tk.loc);
      }
      case tok::real: {
        advance();
        double d = std::strtod(tk.text.c_str(), nullptr);
        return literal(value::real(d), tk.loc);
      }
      case tok::op:
        if (tk.text == "(") {
          advance();
          if (skip_op(")")) {
            auto e = make(ek::tuple, tk.loc);
            return e;
          }
          expr_ptr e = parse_tuple(true);
          expect_op(")");
          return e;
        }
        if (tk.text == "[") {
          advance();
          auto e = make(ek::list, tk.loc);
          while (!skip_op("]")) {
            if (!e->args.empty()) {
              expect_op(",");
              if (skip_op("]")) break;
            }
            e->args.push_back(parse_expression(true));
          }
          return e;
        }
        if (tk.text == "{") {
          advance();
          auto e = make(ek::dict, tk.loc);
          while (!skip_op("}")) {
            if (!e->args.empty()) {
              expect_op(",");
              if (skip_op("}")) break;
            }
            e->args.push_back(parse_expression(true));
            expect_op(":");
            e->args.push_back(parse_expression(true));
          }
          return e;
        }
        break;
      default:
        break;
    }
    fail(tk.loc, "unexpected token in expression", "an expression", describe(tk));
  }

  static expr_ptr literal(value v, location l) {
    auto e = make(ek::literal, l);
    e->lit = std::move(v);
    return e;
  }

  expr_ptr parse_postfix(expr_ptr e) {
    while (true) {
      if (is_op(".")) {
        location l = cur().loc;
        advance();
        if (cur().type == tok::integer) {  // foo.0 is foo[0]
          auto n = make(ek::item, l);
          n->args.push_back(std::move(e));
          std::int64_t index = 0;
          const std::string& digits = cur().text;
          if (std::from_chars(digits.data(), digits.data() + digits.size(), index).ec !=
              std::errc())
            fail(cur().loc, "integer literal out of range", "a 64-bit integer", digits);
          n->args.push_back(literal(value::integer(index), cur().loc));
          advance();
          e = std::move(n);
          continue;
        }
        auto n = make(ek::attr, l);
        n->name = expect_name();
        n->args.push_back(std::move(e));
        e = std::move(n);
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  expr_ptr parse_subscript(expr_ptr obj) {
    location l = cur().loc;
    depth_guard g(*this, l);
    advance();  // [
    expr_ptr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (skip_op(":")) {
        if (++colons > 2) fail(cur().loc, "too many ':' in subscript", "']'", "':'");
        continue;
      }
      if (parts[colons])
        fail(cur().loc, "unexpected token in subscript", "':' or ']'", describe(cur()));
      parts[colons] = parse_expression(true);
      if (colons == 0 && is_op(",")) {  // x[a, b] subscripts with a tuple
        auto t = make(ek::tuple, parts[0]->loc);
        t->args.push_back(std::move(parts[0]));
        while (skip_op(",")) {
          if (is_op("]")) break;
          t->args.push_back(parse_expression(true));
        }
        parts[0] = std::move(t);
      }
    }
    advance();  // ]
    if (colons == 0) {
      if (!parts[0]) fail(l, "empty subscript", "an index or a slice", "'[]'");
      auto n = make(ek::item, l);
      n->args.push_back(std::move(obj));
      n->args.push_back(std::move(parts[0]));
      return n;
    }
    auto n = make(ek::slice, l);
    n->args.push_back(std::move(obj));
    for (auto& p : parts) n->args.push_back(std::move(p));
    return n;
  }

  /// `(args, name=value)`; fills `into` (positional after any operand already in args).
  void parse_call_args(expr& into) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) {
        expect_op(",");
        if (skip_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**"))
        fail(cur().loc, "unsupported construct: '*' and '**' arguments");
      if (cur().type == tok::name && peek().type == tok::op && peek().text == "=") {
        std::string k = cur().text;
        advance();
        advance();
        into.kwargs.emplace_back(std::move(k), parse_expression(true));
      } else {
        if (!into.kwargs.empty()) fail(cur().loc, "positional argument after keyword argument");
        into.args.push_back(parse_expression(true));
      }
    }
  }

  expr_ptr parse_call(expr_ptr callee) {
    auto n = make(ek::call, callee->loc);
    depth_guard g(*this, cur().loc);
    n->args.push_back(std::move(callee));
    parse_call_args(*n);
    return n;
  }

  expr_ptr parse_filter(expr_ptr operand) {
    location l = cur().loc;
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    auto n = make(ek::filter, l);
    n->name = std::move(name);
    n->args.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(*n);
    return n;
  }

  expr_ptr parse_filter_expr(expr_ptr e) {
    while (true) {
      if (is_op("|")) {
        depth_guard g(*this, cur().loc);
        advance();
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        depth_guard g(*this, cur().loc);
        advance();
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  expr_ptr parse_test(expr_ptr operand) {
    location l = cur().loc;
    bool negated = skip_name("not");
    std::string name;
    if (cur().type == tok::name) {
      name = expect_name();
      while (skip_op(".")) name += "." + expect_name();
    } else if (cur().type == tok::op &&
               (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
      name = cur().text;
      advance();
    } else {
      fail(cur().loc, "expected a test name after 'is'", "a test name", describe(cur()));
    }
    auto n = make(ek::test, l);
    n->name = std::move(name);
    n->negated = negated;
    n->args.push_back(std::move(operand));
    if (is_op("(")) {
      parse_call_args(*n);
    } else if ((cur().type == tok::name || cur().type == tok::string ||
                cur().type == tok::integer || cur().type == tok::real || is_op("(") || is_op("[") ||
                is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail(cur().loc, "tests cannot be chained with 'is'");
      n->args.push_back(parse_postfix(parse_primary()));  // `x is divisibleby 3`
    }
    return n;
  }

  // ---- unknown filters and tests ----
  // jinja2 rejects an unknown filter or test when compiling, except where the code may never
  // run: the test and branches of an `if`, and conditional expressions ("soft" frames in
  // jinja2's code generator). There it fails only if evaluated; a loop, macro, `with`,
  // filter or block-set body starts a new frame and is strict again.

  void check_names(const body_t& body, bool soft) {
    for (const stmt& s : body) {
      switch (s.kind) {
        case sk::if_:
          for (const auto& e : s.exprs) check_expr(e.get(), true);
          for (const auto& b : s.bodies) check_names(b, true);
          break;
        case sk::for_:
          for (const auto& e : s.exprs) check_expr(e.get(), soft);
          for (const auto& b : s.bodies) check_names(b, false);
          break;
        case sk::macro:
        case sk::with:
        case sk::filter:
          for (const auto& e : s.exprs) check_expr(e.get(), false);
          for (const auto& b : s.bodies) check_names(b, false);
          break;
        case sk::set_block:
          for (const auto& e : s.exprs) check_expr(e.get(), soft);
          for (const auto& b : s.bodies) check_names(b, false);
          break;
        default:
          for (const auto& e : s.exprs) check_expr(e.get(), soft);
          for (const auto& b : s.bodies) check_names(b, soft);
      }
    }
  }

  void check_expr(const expr* e, bool soft) {
    if (!e) return;
    if (!soft && e->kind == ek::filter && !known_filter(e->name))
      fail(e->loc, "unknown filter '" + e->name + "'");
    if (!soft && e->kind == ek::test && !known_test(e->name))
      fail(e->loc, "unknown test '" + e->name + "'");
    const bool inner = soft || e->kind == ek::cond;
    for (const auto& a : e->args) check_expr(a.get(), inner);
    for (const auto& kv : e->kwargs) check_expr(kv.second.get(), inner);
  }

  std::vector<token> t_;
  std::size_t i_ = 0;
  std::string origin_;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace forge::text::detail::jinja
