#pragma once
// forge::text::load_tokenizer — opens the tokenizer of a Hugging Face model directory:
// tokenizer.json if present (hf_tokenizer), else tokenizer.model (sentencepiece_tokenizer),
// together with tokenizer_config.json (special tokens, add_bos_token, the raw chat template).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/text/hf_tokenizer.hpp"
#include "forge/text/sentencepiece.hpp"
#include "forge/text/tokenizer.hpp"

namespace forge::text {

/// Either kind of tokenizer plus its tokenizer_config; models forge::text::Tokenizer.
class any_tokenizer {
 public:
  using variant = std::variant<hf_tokenizer, sentencepiece_tokenizer>;

  /// Wraps a loaded tokenizer with the config read beside it.
  any_tokenizer(variant t, tokenizer_config config)
      : t_(std::move(t)), config_(std::move(config)) {}

  /// Token ids of UTF-8 `text` (see hf_tokenizer::encode / sentencepiece_tokenizer::encode).
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    return std::visit([&](const auto& t) { return t.encode(text, add_special_tokens); }, t_);
  }
  /// UTF-8 text of `ids`; skip_special_tokens drops special tokens.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const {
    return std::visit([&](const auto& t) { return t.decode(ids, skip_special_tokens); }, t_);
  }
  /// Number of ids: one more than the largest id.
  std::size_t vocab_size() const {
    return std::visit([](const auto& t) { return t.vocab_size(); }, t_);
  }
  /// Id of a token string, as stored in the vocabulary.
  std::optional<std::int32_t> token_to_id(std::string_view token) const {
    return std::visit([&](const auto& t) { return t.token_to_id(token); }, t_);
  }
  /// Token string of an id, as stored in the vocabulary.
  std::optional<std::string> id_to_token(std::int32_t id) const {
    return std::visit([&](const auto& t) { return t.id_to_token(id); }, t_);
  }
  /// BOS/EOS/PAD ids (nullopt where the tokenizer has none).
  std::optional<std::int32_t> bos_id() const {
    return std::visit([](const auto& t) { return t.bos_id(); }, t_);
  }
  std::optional<std::int32_t> eos_id() const {
    return std::visit([](const auto& t) { return t.eos_id(); }, t_);
  }
  std::optional<std::int32_t> pad_id() const {
    return std::visit([](const auto& t) { return t.pad_id(); }, t_);
  }
  /// True for special tokens.
  bool is_special(std::int32_t id) const {
    return std::visit([&](const auto& t) { return t.is_special(id); }, t_);
  }

  /// The settings read from tokenizer_config.json (and chat_template.jinja).
  const tokenizer_config& config() const { return config_; }
  /// The raw Jinja chat template, if the directory has one.
  const std::optional<std::string>& chat_template() const { return config_.chat_template; }

  /// The concrete tokenizer.
  const variant& get() const { return t_; }

 private:
  variant t_;
  tokenizer_config config_;
};

static_assert(Tokenizer<any_tokenizer>, "any_tokenizer must model forge::text::Tokenizer");

/// Loads the tokenizer of model directory `dir` (tokenizer.json preferred over
/// tokenizer.model). forge::error naming the directory if it has neither.
inline any_tokenizer load_tokenizer(const std::filesystem::path& dir) {
  tokenizer_config config = read_tokenizer_config(dir);
  const auto json = dir / "tokenizer.json";
  // The tokenizer is built before `config` is moved into the result.
  if (std::filesystem::exists(json)) {
    auto t = hf_tokenizer::from_file(json, config);
    return any_tokenizer(std::move(t), std::move(config));
  }
  const auto model = dir / "tokenizer.model";
  if (std::filesystem::exists(model)) {
    auto t = sentencepiece_tokenizer::from_file(model, config);
    return any_tokenizer(std::move(t), std::move(config));
  }
  throw error({.what = "no tokenizer in model directory",
               .file = dir.string(),
               .expected = "tokenizer.json or tokenizer.model"});
}

}  // namespace forge::text
