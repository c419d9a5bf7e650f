#pragma once
// Test doubles for SFT encoding: a whitespace tokenizer and a ChatML-like renderer. They
// live in tests only; the real tokenizer and chat template come from forge/text.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace forge::test {

/// Splits on spaces and newlines; each distinct word gets the next id (0 is "<s>", added
/// when add_special_tokens is set).
struct whitespace_tokenizer_test_double {
  mutable std::map<std::string, std::int32_t> vocab{{"<s>", 0}};
  mutable std::vector<std::string> words{"<s>"};

  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens) const {
    std::vector<std::int32_t> ids;
    if (add_special_tokens) ids.push_back(0);
    std::size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && (text[i] == ' ' || text[i] == '\n')) ++i;
      std::size_t j = i;
      while (j < text.size() && text[j] != ' ' && text[j] != '\n') ++j;
      if (j > i) {
        const std::string w(text.substr(i, j - i));
        auto [it, fresh] = vocab.try_emplace(w, static_cast<std::int32_t>(words.size()));
        if (fresh) words.push_back(w);
        ids.push_back(it->second);
      }
      i = j;
    }
    return ids;
  }
  const std::string& word(std::int32_t id) const { return words.at(static_cast<std::size_t>(id)); }
};

/// "<|im_start|> role\ncontent <|im_end|>\n" per message; the generation prompt is
/// "<|im_start|> assistant\n" (or, with `broken_prompt`, "<|im_start|> assistant:" which
/// is not a prefix of the rendered turn, to test the consistency check).
struct chatml_renderer_test_double {
  bool broken_prompt = false;
  std::string operator()(const nlohmann::json& messages, bool add_generation_prompt) const {
    std::string s;
    for (const auto& m : messages) {
      s += "<|im_start|> ";
      s += m["role"].get<std::string>();
      s += "\n";
      s += m["content"].get<std::string>();
      s += " <|im_end|>\n";
    }
    if (add_generation_prompt)
      s += broken_prompt ? "<|im_start|> assistant:" : "<|im_start|> assistant\n";
    return s;
  }
};

}  // namespace forge::test
