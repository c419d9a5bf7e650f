#pragma once
// The record shapes of post-training data, as the JSONL files of the Hugging Face / TRL
// ecosystem write them (TRL "dataset formats" page: language modeling, prompt-completion,
// preference, unpaired preference; each standard or conversational):
//   text_record        {"text": "..."}
//   sft_record         {"messages": [{"role","content"}...]}  or  {"prompt", "completion"}
//                      (strings, or message lists in the conversational form)
//   preference_record  {"prompt", "chosen", "rejected"} as strings or message lists; with
//                      message lists the prompt may be implicit (the shared leading turns)
//   kto_record         {"prompt", "completion", "label": bool}
// Every shape parses from a JSON object with `parse` and throws record_fault naming the
// field, the expected type and what was found. An "id" field (string or integer) becomes
// the record id; otherwise the reader sets "<file>:<line>".

#include <concepts>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace forge::data {

/// Why a JSON object is not a valid record: category, field and the mismatch.
struct record_fault {
  std::string reason{};    ///< missing_field, wrong_type or invalid_record
  std::string field{};     ///< "messages[2].content"
  std::string expected{};  ///< "string"
  std::string found{};     ///< "number"
  /// One line for a person.
  std::string message() const {
    std::string s = reason + " '" + field + "'";
    if (!expected.empty())
      s += " (expected " + expected + (found.empty() ? "" : ", found " + found) + ")";
    return s;
  }
};

/// One chat turn.
struct message {
  std::string role{};     ///< system, user, assistant, tool ...
  std::string content{};  ///< the turn's text
  bool operator==(const message&) const = default;
};

namespace detail {
inline const char* json_kind(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "object";
    case nlohmann::json::value_t::array:
      return "array";
    case nlohmann::json::value_t::string:
      return "string";
    case nlohmann::json::value_t::boolean:
      return "boolean";
    case nlohmann::json::value_t::discarded:
      return "discarded";
    default:
      return "number";
  }
}

inline const nlohmann::json& field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) throw record_fault{"missing_field", name, "", ""};
  return *it;
}

inline std::string string_field(const nlohmann::json& j, const char* name) {
  const auto& v = field(j, name);
  if (!v.is_string()) throw record_fault{"wrong_type", name, "string", json_kind(v)};
  return v.get<std::string>();
}

inline std::vector<message> parse_messages(const nlohmann::json& v, const std::string& name) {
  if (!v.is_array()) throw record_fault{"wrong_type", name, "array of messages", json_kind(v)};
  std::vector<message> out{};
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& m = v[i];
    const std::string at = name + "[" + std::to_string(i) + "]";
    if (!m.is_object()) throw record_fault{"wrong_type", at, "object", json_kind(m)};
    message msg;
    for (const char* key : {"role", "content"}) {
      auto it = m.find(key);
      if (it == m.end()) throw record_fault{"missing_field", at + "." + key, "", ""};
      if (!it->is_string())
        throw record_fault{"wrong_type", at + "." + key, "string", json_kind(*it)};
    }
    msg.role = m["role"].get<std::string>();
    msg.content = m["content"].get<std::string>();
    if (msg.role.empty())
      throw record_fault{"invalid_record", at + ".role", "a non-empty role", "\"\""};
    out.push_back(std::move(msg));
  }
  return out;
}

/// A string field becomes one message of `role`; an array is a message list.
inline std::vector<message> turns_field(const nlohmann::json& j, const char* name,
                                        const char* role) {
  const auto& v = field(j, name);
  if (v.is_string()) return {message{role, v.get<std::string>()}};
  if (v.is_array()) return parse_messages(v, name);
  throw record_fault{"wrong_type", name, "string or array of messages", json_kind(v)};
}

inline std::string id_field(const nlohmann::json& j) {
  auto it = j.find("id");
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return it->dump();
  throw record_fault{"wrong_type", "id", "string or integer", json_kind(*it)};
}

inline nlohmann::json messages_json(const std::vector<message>& ms) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& m : ms) a.push_back({{"role", m.role}, {"content", m.content}});
  return a;
}

inline void require_object(const nlohmann::json& j) {
  if (!j.is_object()) throw record_fault{"wrong_type", "<record>", "object", json_kind(j)};
}
}  // namespace detail

/// Plain text for language-model training: {"text": ...}.
struct text_record {
  std::string id{};
  std::string text{};

  static text_record parse(const nlohmann::json& j) {
    detail::require_object(j);
    return {detail::id_field(j), detail::string_field(j, "text")};
  }
  /// The content (without id) as JSON: the key for hashing, splitting and writing back.
  nlohmann::json content() const { return {{"text", text}}; }
  /// Calls f(std::string&) on every free-text field.
  template <class F>
  void for_each_text(F&& f) {
    f(text);
  }
  template <class F>
  void for_each_text(F&& f) const {
    f(text);
  }
};

/// A supervised conversation; the assistant turns are what is trained.
struct sft_record {
  std::string id{};
  std::vector<message> messages{};

  /// {"messages": [...]} or {"prompt": s|[...], "completion": s|[...]}; needs an assistant turn.
  static sft_record parse(const nlohmann::json& j) {
    detail::require_object(j);
    sft_record r{detail::id_field(j), {}};
    if (j.contains("messages")) {
      r.messages = detail::parse_messages(j["messages"], "messages");
    } else if (j.contains("prompt") || j.contains("completion")) {
      r.messages = detail::turns_field(j, "prompt", "user");
      auto c = detail::turns_field(j, "completion", "assistant");
      r.messages.insert(r.messages.end(), c.begin(), c.end());
    } else {
      throw record_fault{"missing_field", "messages", "", ""};
    }
    bool assistant = false;
    for (const auto& m : r.messages) assistant = assistant || m.role == "assistant";
    if (!assistant)
      throw record_fault{"invalid_record", "messages", "at least one assistant turn", "none"};
    return r;
  }
  nlohmann::json content() const { return {{"messages", detail::messages_json(messages)}}; }
  template <class F>
  void for_each_text(F&& f) {
    for (auto& m : messages) f(m.content);
  }
  template <class F>
  void for_each_text(F&& f) const {
    for (const auto& m : messages) f(m.content);
  }
};

/// A paired preference: the same prompt, a preferred and a dispreferred continuation.
struct preference_record {
  std::string id{};
  std::vector<message> prompt{};
  std::vector<message> chosen{};
  std::vector<message> rejected{};

  /// Explicit prompt, or implicit: chosen/rejected message lists sharing their leading turns.
  static preference_record parse(const nlohmann::json& j) {
    detail::require_object(j);
    preference_record r{detail::id_field(j), {}, {}, {}};
    r.chosen = detail::turns_field(j, "chosen", "assistant");
    r.rejected = detail::turns_field(j, "rejected", "assistant");
    if (j.contains("prompt")) {
      r.prompt = detail::turns_field(j, "prompt", "user");
    } else {
      if (!j["chosen"].is_array() || !j["rejected"].is_array())
        throw record_fault{"missing_field", "prompt", "", ""};
      // Implicit prompt (TRL): the longest common leading run of turns.
      std::size_t k = 0;
      while (k < r.chosen.size() && k < r.rejected.size() && r.chosen[k] == r.rejected[k]) ++k;
      if (k == 0)
        throw record_fault{"missing_field", "prompt", "explicit or shared leading turns",
                           "none shared"};
      r.prompt.assign(r.chosen.begin(), r.chosen.begin() + static_cast<std::ptrdiff_t>(k));
      r.chosen.erase(r.chosen.begin(), r.chosen.begin() + static_cast<std::ptrdiff_t>(k));
      r.rejected.erase(r.rejected.begin(), r.rejected.begin() + static_cast<std::ptrdiff_t>(k));
    }
    if (r.chosen.empty() || r.rejected.empty())
      throw record_fault{"invalid_record", r.chosen.empty() ? "chosen" : "rejected",
                         "a continuation after the prompt", "none"};
    return r;
  }
  nlohmann::json content() const {
    return {{"prompt", detail::messages_json(prompt)},
            {"chosen", detail::messages_json(chosen)},
            {"rejected", detail::messages_json(rejected)}};
  }
  template <class F>
  void for_each_text(F&& f) {
    for (auto* v : {&prompt, &chosen, &rejected})
      for (auto& m : *v) f(m.content);
  }
  template <class F>
  void for_each_text(F&& f) const {
    for (const auto* v : {&prompt, &chosen, &rejected})
      for (const auto& m : *v) f(m.content);
  }
};

/// An unpaired preference (KTO): one completion labelled desirable (true) or not.
struct kto_record {
  std::string id{};
  std::vector<message> prompt{};
  std::vector<message> completion{};
  bool label = false;

  static kto_record parse(const nlohmann::json& j) {
    detail::require_object(j);
    kto_record r{detail::id_field(j), detail::turns_field(j, "prompt", "user"),
                 detail::turns_field(j, "completion", "assistant"), false};
    const auto& l = detail::field(j, "label");
    if (!l.is_boolean()) throw record_fault{"wrong_type", "label", "boolean", detail::json_kind(l)};
    r.label = l.get<bool>();
    return r;
  }
  nlohmann::json content() const {
    return {{"prompt", detail::messages_json(prompt)},
            {"completion", detail::messages_json(completion)},
            {"label", label}};
  }
  template <class F>
  void for_each_text(F&& f) {
    for (auto* v : {&prompt, &completion})
      for (auto& m : *v) f(m.content);
  }
  template <class F>
  void for_each_text(F&& f) const {
    for (const auto* v : {&prompt, &completion})
      for (const auto& m : *v) f(m.content);
  }
};

/// A record shape the JSONL reader can produce: parsed from JSON, has an id, exposes its
/// content and its free-text fields (for_each_text(f) calls f(std::string&) on each; the
/// const overload passes const std::string&).
template <class R>
concept Record = requires(const nlohmann::json& j, R& r, const R& cr) {
  { R::parse(j) } -> std::same_as<R>;
  { r.id } -> std::convertible_to<std::string>;
  { cr.content() } -> std::same_as<nlohmann::json>;
  r.for_each_text([](std::string&) {});
};

/// Concatenation of a record's text fields, separated by '\n' (for dedup and contamination).
template <Record R>
std::string joined_text(const R& r) {
  std::string out{};
  r.for_each_text([&](const std::string& t) {
    if (!out.empty()) out += '\n';
    out += t;
  });
  return out;
}

}  // namespace forge::data
