#pragma once
// The two things data preparation needs from the text layer, as concepts, so that encoding
// and length filtering work with any tokenizer and any chat-template renderer.

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace forge::data {

/// A tokenizer: `encode(text, add_special_tokens)` returns token ids. With
/// add_special_tokens = false no BOS/EOS is added (chat templates write their own).
template <class T>
concept Tokenizer = requires(const T& t, std::string_view text, bool add_special_tokens) {
  { t.encode(text, add_special_tokens) } -> std::same_as<std::vector<std::int32_t>>;
};

/// A chat-template renderer: `render(messages, add_generation_prompt)` returns the prompt
/// text for a JSON array of {"role","content"} objects, as transformers'
/// apply_chat_template(tokenize=False) does.
template <class F>
concept ChatRenderer = requires(const F& f, const nlohmann::json& messages, bool gen) {
  { f(messages, gen) } -> std::convertible_to<std::string>;
};

}  // namespace forge::data
