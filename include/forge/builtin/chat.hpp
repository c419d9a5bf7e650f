#pragma once
// The chat format of the built-in model: special tokens and a ChatML-style template.
//
//   <|begin_of_text|><|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n
//   2 plus 3 is 5.<|im_end|>\n
//
// `chat_template_source()` is the Jinja text stored in tokenizer_config.json (what
// forge::text::apply_chat_template and transformers render); `render_chat` produces the
// same string directly, for the generators that write chat-formatted text.

#include <string>
#include <string_view>
#include <vector>

#include "forge/data/records.hpp"

namespace forge::builtin {

/// Start of every document and conversation (BOS, id 0).
inline constexpr std::string_view bos_token = "<|begin_of_text|>";
/// End of a pre-training document (id 1).
inline constexpr std::string_view end_of_text_token = "<|end_of_text|>";
/// Opens a chat turn (id 2).
inline constexpr std::string_view im_start_token = "<|im_start|>";
/// Closes a chat turn; the chat EOS that generation stops at (id 3).
inline constexpr std::string_view im_end_token = "<|im_end|>";
/// Padding (id 4).
inline constexpr std::string_view pad_token = "<|pad|>";

/// The special tokens in id order.
inline std::vector<std::string> special_tokens() {
  return {std::string(bos_token), std::string(end_of_text_token), std::string(im_start_token),
          std::string(im_end_token), std::string(pad_token)};
}

/// The Jinja chat template (transformers' conventions: `messages`, `add_generation_prompt`,
/// `bos_token`).
inline std::string chat_template_source() {
  return "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
         "{{ message['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
}

/// The template's rendering of `messages`, written directly.
inline std::string render_chat(const std::vector<data::message>& messages,
                               bool add_generation_prompt = false) {
  std::string s(bos_token);
  for (const auto& m : messages) {
    s += im_start_token;
    s += m.role;
    s += '\n';
    s += m.content;
    s += im_end_token;
    s += '\n';
  }
  if (add_generation_prompt) {
    s += im_start_token;
    s += "assistant\n";
  }
  return s;
}

}  // namespace forge::builtin
