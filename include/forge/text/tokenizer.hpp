#pragma once
// forge::text::Tokenizer — what every tokenizer in forge provides, and the Hugging Face
// tokenizer_config.json settings that go with a tokenizer directory.
//
// Ids are std::int32_t (token ids of every supported family fit, and the model code indexes
// embeddings with them). Text is UTF-8; encode rejects invalid UTF-8 with a forge::error that
// names the byte offset, decode always returns valid UTF-8.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "forge/io/atomic_file.hpp"
#include "forge/text/detail/json_reader.hpp"

namespace forge::text {

/// A tokenizer: text <-> token ids, plus the vocabulary and its special tokens.
template <class T>
concept Tokenizer = requires(const T& t, std::string_view text, std::span<const std::int32_t> ids,
                             std::int32_t id, bool flag) {
  /// Token ids of `text`; with add_special_tokens the model's BOS/EOS convention is applied.
  { t.encode(text) } -> std::same_as<std::vector<std::int32_t>>;
  { t.encode(text, flag) } -> std::same_as<std::vector<std::int32_t>>;
  /// The text of `ids`; skip_special_tokens drops special tokens (BOS, EOS, chat markers).
  { t.decode(ids) } -> std::same_as<std::string>;
  { t.decode(ids, flag) } -> std::same_as<std::string>;
  /// Number of ids: one more than the largest id.
  { t.vocab_size() } -> std::same_as<std::size_t>;
  { t.token_to_id(text) } -> std::same_as<std::optional<std::int32_t>>;
  { t.id_to_token(id) } -> std::same_as<std::optional<std::string>>;
  { t.bos_id() } -> std::same_as<std::optional<std::int32_t>>;
  { t.eos_id() } -> std::same_as<std::optional<std::int32_t>>;
  { t.pad_id() } -> std::same_as<std::optional<std::int32_t>>;
  /// True for special tokens (those decode(..., true) drops).
  { t.is_special(id) } -> std::same_as<bool>;
};

/// The parts of a Hugging Face tokenizer_config.json that forge uses. Absent keys stay empty.
struct tokenizer_config {
  std::optional<std::string> bos_token;  ///< e.g. "<s>", "<|begin_of_text|>"
  std::optional<std::string> eos_token;  ///< e.g. "</s>", "<|end_of_text|>"
  std::optional<std::string> pad_token;
  std::optional<std::string> unk_token;
  std::optional<bool> add_bos_token;         ///< SentencePiece models: prepend BOS on encode
  std::optional<bool> add_eos_token;         ///< SentencePiece models: append EOS on encode
  std::optional<std::string> chat_template;  ///< the raw Jinja template, not rendered here
  std::optional<std::string> tokenizer_class;
};

namespace detail {
// A special token in tokenizer_config.json is a string or an AddedToken object {"content": ..}.
inline std::optional<std::string> config_token(const json_node& root, std::string_view key) {
  auto m = root.find(key);
  if (!m) return std::nullopt;
  if (m->is_string()) return m->str();
  if (m->is_object()) return m->at("content").str();
  m->fail("expected a token string or an object with \"content\"",
          "a string or {\"content\": ...}");
}
}  // namespace detail

/// Parses tokenizer_config.json text. `chat_template` may be a string or a list of
/// {"name", "template"} entries (the one named "default", else the first, is taken).
inline tokenizer_config parse_tokenizer_config(std::string_view json_text,
                                               const std::string& source) {
  const nlohmann::json doc = detail::parse_json(json_text, source);
  const detail::json_node root(doc, source);
  if (!root.is_object()) root.fail("expected an object", "a JSON object");
  tokenizer_config c;
  c.bos_token = detail::config_token(root, "bos_token");
  c.eos_token = detail::config_token(root, "eos_token");
  c.pad_token = detail::config_token(root, "pad_token");
  c.unk_token = detail::config_token(root, "unk_token");
  if (auto m = root.find("add_bos_token")) c.add_bos_token = m->boolean();
  if (auto m = root.find("add_eos_token")) c.add_eos_token = m->boolean();
  c.tokenizer_class = root.str_opt("tokenizer_class");
  if (auto m = root.find("chat_template")) {
    if (m->is_string()) {
      c.chat_template = m->str();
    } else {
      const std::size_t n = m->size();
      for (std::size_t i = 0; i < n; ++i) {
        const auto e = (*m)[i];
        if (!c.chat_template || e.at("name").str() == "default")
          c.chat_template = e.at("template").str();
      }
    }
  }
  return c;
}

/// Reads `dir`/tokenizer_config.json if present (else an empty config); a separate
/// `dir`/chat_template.jinja supplies the chat template when the config has none.
inline tokenizer_config read_tokenizer_config(const std::filesystem::path& dir) {
  tokenizer_config c;
  const auto path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(path)) c = parse_tokenizer_config(io::read_file(path), path.string());
  const auto jinja = dir / "chat_template.jinja";
  if (!c.chat_template && std::filesystem::exists(jinja)) c.chat_template = io::read_file(jinja);
  return c;
}

}  // namespace forge::text
