#pragma once
// The built-in model's tokenizer: byte-level BPE (text/bpe_trainer.hpp) trained on the
// built-in corpus, with the special tokens and chat template of builtin/chat.hpp.
//
//   auto bpe = forge::builtin::train_tokenizer(forge::builtin::corpus(1, 60000), 2048);
//   forge::builtin::save_tokenizer(bpe, dir, 256);

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "forge/builtin/chat.hpp"
#include "forge/text/bpe_trainer.hpp"

namespace forge::builtin {

/// Feeds `doc` to `tr` without its special-token strings: the text between them is fed
/// piece by piece, so no merge is ever learnt from "<|im_start|>" and friends.
inline void feed_without_specials(text::bpe_trainer& tr, std::string_view doc) {
  const auto specials = special_tokens();
  std::size_t i = 0;
  while (i < doc.size()) {
    std::size_t next = doc.size(), len = 0;
    for (const auto& s : specials) {
      const auto at = doc.find(s, i);
      if (at < next) next = at, len = s.size();
    }
    if (next > i) tr.feed(doc.substr(i, next - i));
    i = next + len;
  }
}

/// Trains the tokenizer on `docs`: `vocab_size` ids, min frequency 2, special_tokens() first.
inline text::trained_bpe train_tokenizer(const std::vector<std::string>& docs,
                                         std::size_t vocab_size) {
  text::bpe_trainer tr(
      {.vocab_size = vocab_size, .min_frequency = 2, .special_tokens = special_tokens()});
  for (const auto& d : docs) feed_without_specials(tr, d);
  return tr.train();
}

/// Writes tokenizer.json and tokenizer_config.json (BOS <|begin_of_text|>, EOS <|im_end|>,
/// PAD <|pad|>, the chat template, model_max_length = `context`) into `dir`.
inline void save_tokenizer(const text::trained_bpe& bpe, const std::filesystem::path& dir,
                           std::size_t context) {
  text::save_bpe_tokenizer(bpe, dir,
                           {.bos_token = std::string(bos_token),
                            .eos_token = std::string(im_end_token),
                            .pad_token = std::string(pad_token),
                            .chat_template = chat_template_source(),
                            .model_max_length = context});
}

}  // namespace forge::builtin
