#pragma once
// forge::text::sentencepiece_tokenizer — a SentencePiece tokenizer.model (Llama-2, Mistral)
// through libsentencepiece, behind the forge::text::Tokenizer interface.
//
// BOS/EOS follow the Hugging Face LlamaTokenizer convention: with add_special_tokens, BOS is
// prepended unless tokenizer_config.json says "add_bos_token": false, and EOS is appended only
// if it says "add_eos_token": true. Control pieces (BOS/EOS/PAD) and the unknown piece are the
// special tokens.

#include <sentencepiece_processor.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/detail/utf8.hpp"
#include "forge/text/tokenizer.hpp"

namespace forge::text {

/// A SentencePiece model. Thread-safe (the library's processor is const after loading).
class sentencepiece_tokenizer {
 public:
  /// Loads a tokenizer.model; forge::error naming the file if it is missing or not a model.
  static sentencepiece_tokenizer from_file(const std::filesystem::path& path,
                                           const tokenizer_config& config = {}) {
    // Reading the bytes ourselves gives a uniform "cannot open" error for a missing file.
    return from_bytes(io::read_file(path), path.string(), config);
  }

  /// Loads a serialized model (the bytes of a tokenizer.model); `source` names it in errors.
  static sentencepiece_tokenizer from_bytes(std::string_view model_bytes,
                                            const std::string& source = "<memory>",
                                            const tokenizer_config& config = {}) {
    sentencepiece_tokenizer t;
    t.source_ = source;
    auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->LoadFromSerializedProto(model_bytes);
    if (!status.ok())
      throw error({.what = "not a SentencePiece model: " + status.ToString(),
                   .file = source,
                   .expected = "a serialized sentencepiece ModelProto"});
    t.sp_ = std::move(sp);
    t.add_bos_ = config.add_bos_token.value_or(true);
    t.add_eos_ = config.add_eos_token.value_or(false);
    return t;
  }

  /// Token ids of UTF-8 `text`; add_special_tokens adds BOS/EOS as configured.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    detail::require_utf8(text, "text to encode");
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok())
      throw error({.what = "SentencePiece encode failed: " + status.ToString(), .file = source_});
    std::vector<std::int32_t> out;
    out.reserve(ids.size() + 2);
    if (add_special_tokens && add_bos_ && sp_->bos_id() >= 0) out.push_back(sp_->bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    if (add_special_tokens && add_eos_ && sp_->eos_id() >= 0) out.push_back(sp_->eos_id());
    return out;
  }

  /// UTF-8 text of `ids`; skip_special_tokens drops control and unknown pieces. forge::error
  /// if an id is outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const {
    std::vector<int> keep;
    keep.reserve(ids.size());
    const int n = sp_->GetPieceSize();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      if (id < 0 || id >= n)
        throw error({.what = "token id not in the vocabulary",
                     .file = source_,
                     .place = "position " + std::to_string(i),
                     .expected = "an id below " + std::to_string(n),
                     .found = std::to_string(id)});
      if (skip_special_tokens && is_special(id)) continue;
      keep.push_back(id);
    }
    std::string text;
    const auto status = sp_->Decode(keep, &text);
    if (!status.ok())
      throw error({.what = "SentencePiece decode failed: " + status.ToString(), .file = source_});
    return text;
  }

  /// Number of pieces (ids are 0 .. vocab_size() - 1).
  std::size_t vocab_size() const { return static_cast<std::size_t>(sp_->GetPieceSize()); }

  /// Id of piece `token` ("▁the", "<s>", "<0x0A>"), or nullopt if the model has no such piece.
  std::optional<std::int32_t> token_to_id(std::string_view token) const {
    const int id = sp_->PieceToId(token);
    // PieceToId answers unknown pieces with the unknown id; only an exact piece counts.
    if (id < 0 || sp_->IdToPiece(id) != token) return std::nullopt;
    return id;
  }

  /// The piece of `id`, or nullopt outside the vocabulary.
  std::optional<std::string> id_to_token(std::int32_t id) const {
    if (id < 0 || id >= sp_->GetPieceSize()) return std::nullopt;
    return sp_->IdToPiece(id);
  }

  /// BOS/EOS/PAD ids of the model (nullopt where the model disables them).
  std::optional<std::int32_t> bos_id() const { return optional_id(sp_->bos_id()); }
  std::optional<std::int32_t> eos_id() const { return optional_id(sp_->eos_id()); }
  std::optional<std::int32_t> pad_id() const { return optional_id(sp_->pad_id()); }

  /// True for control pieces (BOS, EOS, PAD) and the unknown piece.
  bool is_special(std::int32_t id) const {
    if (id < 0 || id >= sp_->GetPieceSize()) return false;
    return sp_->IsControl(id) || sp_->IsUnknown(id);
  }

  /// The library's processor, for what this interface does not cover (sampling, n-best).
  const sentencepiece::SentencePieceProcessor& processor() const { return *sp_; }

 private:
  sentencepiece_tokenizer() = default;
  static std::optional<std::int32_t> optional_id(int id) {
    if (id < 0) return std::nullopt;
    return id;
  }

  std::string source_;
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp_;
  bool add_bos_ = true;
  bool add_eos_ = false;
};

static_assert(Tokenizer<sentencepiece_tokenizer>,
              "sentencepiece_tokenizer must model forge::text::Tokenizer");

}  // namespace forge::text
