#pragma once
// Chat templates: turning a list of chat messages into the exact prompt text a model was
// trained on, by rendering the Jinja template that ships with the model
// (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`).
//
// Rendering matches transformers' `apply_chat_template` (transformers
// `utils/chat_template_utils.py`): jinja2 with trim_blocks and lstrip_blocks, the loop
// controls extension, `tojson` as json.dumps(ensure_ascii=False), `raise_exception(msg)`,
// `strftime_now(fmt)`, and the context `messages`, `tools`, `documents`,
// `add_generation_prompt` plus the tokenizer's special tokens. The interpreter covers the
// Jinja subset real chat templates use (docs/chat_templates.md lists it); anything else is
// a forge::error naming the template, line and column.
//
//   auto t = forge::text::load_chat_template(model_dir);
//   std::string prompt = forge::text::apply_chat_template(
//       t, messages, forge::text::chat_options_from_config(model_dir, {.add_generation_prompt =
//       true}));

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/detail/jinja_lexer.hpp"
#include "forge/text/detail/jinja_parser.hpp"
#include "forge/text/detail/jinja_render.hpp"
#include "forge/text/detail/jinja_value.hpp"

namespace forge::text {

/// Bounds on one rendering (output bytes, steps, nesting depth, range() length); the
/// defaults are far above what any chat template needs.
using render_limits = detail::jinja::limits;

/// A parsed Jinja chat template; cheap to copy (the syntax tree is shared and immutable).
class chat_template {
 public:
  /// Parses `source`; `origin` names it in errors (a file path, "tokenizer_config.json").
  /// Throws forge::error naming origin, line and column for syntax the renderer lacks.
  static chat_template parse(std::string source, std::string origin = "<chat_template>") {
    chat_template t;
    detail::jinja::lexer lx(source, origin, {});
    detail::jinja::parser ps(lx.run(), origin);
    t.body_ = std::make_shared<const detail::jinja::body_t>(ps.parse_template());
    t.source_ = std::move(source);
    t.origin_ = std::move(origin);
    return t;
  }

  /// Renders with the variables of a JSON object (`messages`, `add_generation_prompt` ...).
  /// Object key order is what the template sees when it iterates a dict or calls tojson:
  /// pass nlohmann::ordered_json to keep the order of the input, as Python does.
  std::string render(const nlohmann::ordered_json& context, const render_limits& lim = {}) const {
    return render_value(convert(context), lim);
  }
  /// As above, for nlohmann::json (whose objects iterate in sorted key order).
  std::string render(const nlohmann::json& context, const render_limits& lim = {}) const {
    return render_value(convert(context), lim);
  }

  /// The template text as given to parse().
  const std::string& source() const noexcept { return source_; }
  /// The name used in error messages.
  const std::string& origin() const noexcept { return origin_; }

 private:
  template <class Json>
  detail::jinja::value convert(const Json& j) const {
    if (!j.is_object())
      throw forge::error({.what = "chat template context must be a JSON object",
                          .file = origin_,
                          .place = {},
                          .expected = {},
                          .found = std::string(j.type_name())});
    try {
      return detail::jinja::from_json(j);
    } catch (const detail::jinja::eval_failure& f) {
      throw forge::error(
          {.what = f.what, .file = origin_, .place = {}, .expected = {}, .found = {}});
    }
  }

  std::string render_value(const detail::jinja::value& ctx, const render_limits& lim) const {
    detail::jinja::renderer r(origin_, lim);
    return r.render(*body_, ctx);
  }

  std::shared_ptr<const detail::jinja::body_t> body_;
  std::string source_;
  std::string origin_;
};

/// What apply_chat_template passes besides the messages (transformers' keyword arguments).
struct chat_options {
  bool add_generation_prompt = false;  ///< end with the header of an assistant turn
  /// Cut the text right after the last message's content, so generation continues it
  /// (a prefilled assistant reply); excludes add_generation_prompt, as in transformers.
  bool continue_final_message = false;
  std::optional<std::string> bos_token;        ///< `bos_token` variable, when the tokenizer has one
  std::optional<std::string> eos_token;        ///< `eos_token` variable, when the tokenizer has one
  nlohmann::ordered_json tools = nullptr;      ///< list of tool JSON schemas, or null
  nlohmann::ordered_json documents = nullptr;  ///< list of documents for RAG templates, or null
  /// More variables (other special tokens, template-specific switches); they override the
  /// ones above on a name clash.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

/// Renders `messages` (a JSON array of {"role", "content", ...} objects) with the context
/// transformers builds: messages, tools, documents, add_generation_prompt, bos/eos tokens
/// and `extra`. Throws forge::error on template errors and `raise_exception` calls.
inline std::string apply_chat_template(const chat_template& t,
                                       const nlohmann::ordered_json& messages,
                                       const chat_options& opt = {},
                                       const render_limits& lim = {}) {
  if (!messages.is_array())
    throw forge::error({.what = "chat messages must be a JSON array",
                        .file = t.origin(),
                        .place = {},
                        .expected = "array",
                        .found = std::string(messages.type_name())});
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["tools"] = opt.tools;
  ctx["documents"] = opt.documents;
  ctx["add_generation_prompt"] = opt.add_generation_prompt;
  if (opt.bos_token) ctx["bos_token"] = *opt.bos_token;
  if (opt.eos_token) ctx["eos_token"] = *opt.eos_token;
  if (!opt.extra.is_null()) {
    if (!opt.extra.is_object())
      throw forge::error({.what = "chat_options::extra must be a JSON object",
                          .file = t.origin(),
                          .place = {},
                          .expected = {},
                          .found = std::string(opt.extra.type_name())});
    for (auto it = opt.extra.begin(); it != opt.extra.end(); ++it) ctx[it.key()] = it.value();
  }
  std::string text = t.render(ctx, lim);
  if (!opt.continue_final_message) return text;
  // transformers (apply_chat_template): the last message's text, stripped, is found from the
  // right and everything after it dropped, then trailing whitespace is removed.
  if (opt.add_generation_prompt)
    throw forge::error(
        {.what = "continue_final_message and add_generation_prompt are not compatible",
         .file = t.origin(),
         .place = {},
         .expected = {},
         .found = {}});
  if (messages.empty() || !messages.back().is_object() || !messages.back().contains("content"))
    throw forge::error({.what = "continue_final_message needs a final message with content",
                        .file = t.origin(),
                        .place = "messages[-1]",
                        .expected = {},
                        .found = {}});
  const auto& content = messages.back()["content"];
  std::string final_text;
  if (content.is_string()) {
    final_text = content.get<std::string>();
  } else if (content.is_array() && !content.empty() && content.back().is_object() &&
             content.back().contains("text") && content.back()["text"].is_string()) {
    final_text = content.back()["text"].get<std::string>();
  } else {
    throw forge::error({.what = "continue_final_message needs text content in the final message",
                        .file = t.origin(),
                        .place = "messages[-1].content",
                        .expected = "a string or a list ending in {\"text\": ...}",
                        .found = std::string(content.type_name())});
  }
  final_text = detail::jinja::py_strip(final_text, nullptr, true, true);
  const std::size_t at = text.rfind(final_text);
  if (at == std::string::npos)
    throw forge::error({.what = "the final message does not appear in the rendered chat",
                        .file = t.origin(),
                        .place = "messages[-1].content",
                        .expected = {},
                        .found = {}});
  return detail::jinja::py_strip(text.substr(0, at + final_text.size()), nullptr, false, true);
}

namespace detail {

inline nlohmann::ordered_json read_tokenizer_config(const std::filesystem::path& file) {
  std::string text = io::read_file(file);
  try {
    auto j = nlohmann::ordered_json::parse(text);
    if (!j.is_object())
      throw forge::error({.what = "tokenizer config is not a JSON object",
                          .file = file.string(),
                          .place = {},
                          .expected = {},
                          .found = std::string(j.type_name())});
    return j;
  } catch (const nlohmann::json::parse_error& e) {
    throw forge::error({.what = std::string("invalid JSON: ") + e.what(),
                        .file = file.string(),
                        .place = at_byte(e.byte),
                        .expected = {},
                        .found = {}});
  }
}

/// A special token in tokenizer_config.json: a string, or an AddedToken {"content": ...}.
inline std::optional<std::string> token_text(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace detail

/// Loads a model directory's chat template the way transformers does: `chat_template.jinja`
/// if present, else `chat_template` of `tokenizer_config.json` — a string, or a list of
/// {"name", "template"} from which `name` is chosen ("default" unless told otherwise).
inline chat_template load_chat_template(const std::filesystem::path& dir,
                                        std::string_view name = "default") {
  const auto jinja = dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja))
    return chat_template::parse(io::read_file(jinja), jinja.string());
  const auto cfg_path = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(cfg_path))
    throw forge::error({.what = "no chat template found",
                        .file = dir.string(),
                        .place = {},
                        .expected = "chat_template.jinja or tokenizer_config.json",
                        .found = {}});
  auto cfg = detail::read_tokenizer_config(cfg_path);
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null())
    throw forge::error({.what = "tokenizer config has no chat template",
                        .file = cfg_path.string(),
                        .place = {},
                        .expected = "a \"chat_template\" field",
                        .found = {}});
  const auto& ct = cfg["chat_template"];
  if (ct.is_string()) return chat_template::parse(ct.get<std::string>(), cfg_path.string());
  if (ct.is_array()) {
    std::string names;
    for (const auto& item : ct) {
      if (!item.is_object() || !item.contains("name") || !item["name"].is_string() ||
          !item.contains("template") || !item["template"].is_string())
        throw forge::error({.what = "malformed named chat template",
                            .file = cfg_path.string(),
                            .place = "chat_template",
                            .expected = "{\"name\": string, \"template\": string}",
                            .found = item.dump()});
      if (item["name"].get<std::string>() == name)
        return chat_template::parse(item["template"].get<std::string>(),
                                    cfg_path.string() + " [" + std::string(name) + "]");
      names += (names.empty() ? "" : ", ") + item["name"].get<std::string>();
    }
    throw forge::error({.what = "no chat template named '" + std::string(name) + "'",
                        .file = cfg_path.string(),
                        .place = "chat_template",
                        .expected = "one of " + names,
                        .found = {}});
  }
  throw forge::error({.what = "chat_template has the wrong type",
                      .file = cfg_path.string(),
                      .place = {},
                      .expected = "a string or a list of named templates",
                      .found = std::string(ct.type_name())});
}

/// chat_options with the special tokens of `dir/tokenizer_config.json` filled in
/// (bos_token, eos_token; unk/pad/sep/cls/mask tokens and additional_special_tokens go to
/// `extra`), as transformers passes its special_tokens_map. Fields already set in `base`
/// win. A missing tokenizer_config.json leaves `base` unchanged.
inline chat_options chat_options_from_config(const std::filesystem::path& dir,
                                             chat_options base = {}) {
  const auto cfg_path = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(cfg_path)) return base;
  auto cfg = detail::read_tokenizer_config(cfg_path);
  auto get = [&](const char* k) -> std::optional<std::string> {
    return cfg.contains(k) ? detail::token_text(cfg[k]) : std::nullopt;
  };
  if (!base.bos_token) base.bos_token = get("bos_token");
  if (!base.eos_token) base.eos_token = get("eos_token");
  for (const char* k : {"unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    if (auto v = get(k); v && !base.extra.contains(k)) base.extra[k] = *v;
  if (cfg.contains("additional_special_tokens") && cfg["additional_special_tokens"].is_array() &&
      !base.extra.contains("additional_special_tokens")) {
    auto list = nlohmann::ordered_json::array();
    for (const auto& v : cfg["additional_special_tokens"])
      if (auto s = detail::token_text(v)) list.push_back(*s);
    base.extra["additional_special_tokens"] = list;
  }
  return base;
}

}  // namespace forge::text
