#pragma once
// forge::text::bpe_trainer — trains a byte-level BPE tokenizer (GPT-2 style: the GPT-2 split
// pattern, then every byte mapped to a printable character) and writes it as a Hugging Face
// tokenizer.json that forge::text::load_tokenizer and the `tokenizers` library both load.
//
// The algorithm is the one of the `tokenizers` library's BpeTrainer, so that the same corpus
// and settings give the same vocabulary ids and merges:
//   1. Each text is split by the GPT-2 pattern and byte-mapped; identical pieces ("words")
//      are counted.
//   2. Ids: the special tokens in the order given, then the 256 byte symbols sorted by code
//      point (the whole byte alphabet, as with `initial_alphabet=ByteLevel.alphabet()`),
//      then one id per merge.
//   3. Repeatedly the adjacent symbol pair with the highest count (summed over words, weighted
//      by word count) is merged; ties go to the pair whose (left id, right id) is smallest.
//      Counts are kept in a lazily corrected max-heap, and each heap entry carries the words
//      it was created in, exactly as the reference does, so that even its corner cases (a
//      merge whose string already is a token) come out the same.
//   4. Training stops at `vocab_size` ids or when the best pair occurs fewer than
//      `min_frequency` times.
// Special-token strings inside the training text are not treated specially (the reference
// adds them after training); callers that do not want them split into merges cut them out.
//
//   forge::text::bpe_trainer tr({.vocab_size = 2048, .min_frequency = 2,
//                                .special_tokens = {"<|begin_of_text|>", "<|end_of_text|>"}});
//   for (const auto& doc : docs) tr.feed(doc);
//   forge::text::trained_bpe bpe = tr.train();
//   forge::text::save_bpe_tokenizer(bpe, dir, {.bos_token = "<|begin_of_text|>", ...});

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/detail/byte_level.hpp"
#include "forge/text/detail/pre_tokenizer.hpp"
#include "forge/text/detail/regex.hpp"
#include "forge/text/detail/utf8.hpp"

namespace forge::text {

/// Settings of a BPE training run (the reference BpeTrainer's arguments of the same names).
struct bpe_trainer_options {
  /// Final number of ids, special tokens and the 256 byte symbols included.
  std::size_t vocab_size = 2048;
  /// A pair is merged only if it occurs at least this often in the corpus.
  std::uint64_t min_frequency = 2;
  /// Special tokens, given ids 0, 1, ... in this order.
  std::vector<std::string> special_tokens{};
};

/// The result of training: the vocabulary in id order and the merges in rank order.
struct trained_bpe {
  std::vector<std::string> vocab{};  ///< vocab[id] = token string (byte-level form)
  std::vector<std::pair<std::string, std::string>> merges{};  ///< rank order
  std::vector<std::string> special_tokens{};                  ///< also at the start of vocab
};

/// Accumulates word counts from text, then trains (see the file comment).
class bpe_trainer {
 public:
  /// Throws forge::error if vocab_size cannot even hold the special tokens and the bytes.
  explicit bpe_trainer(bpe_trainer_options opt) : opt_(std::move(opt)) {
    if (opt_.vocab_size < opt_.special_tokens.size() + 256)
      throw error({.what = "BPE vocab_size too small",
                   .file = {},
                   .place = "vocab_size",
                   .expected = "at least " + std::to_string(opt_.special_tokens.size() + 256) +
                               " (special tokens + 256 bytes)",
                   .found = std::to_string(opt_.vocab_size)});
    detail::pre_tokenizer_step st;
    st.k = detail::pre_tokenizer_step::kind::byte_level;
    st.add_prefix_space = false;
    st.use_regex = true;
    st.pattern = std::make_shared<const detail::regex>(detail::gpt2_pattern, "<gpt2 pattern>");
    pre_.steps.push_back(std::move(st));
    scratch_ = pre_.make_scratch();
  }

  /// Adds one text (valid UTF-8; forge::error naming the byte offset otherwise).
  void feed(std::string_view text) {
    detail::require_utf8(text, "bpe_trainer input");
    pre_.run(text, true, scratch_, [&](std::string_view piece) { ++counts_[std::string(piece)]; });
  }

  /// Number of distinct pre-tokenized words seen so far.
  std::size_t distinct_words() const noexcept { return counts_.size(); }

  /// Runs the merges over the words fed so far.
  trained_bpe train() const;

 private:
  bpe_trainer_options opt_;
  detail::pre_tokenizer pre_;
  std::vector<detail::pre_tokenizer_scratch> scratch_;
  // Ordered so that word indices (and thus the whole run) never depend on hashing.
  std::map<std::string, std::uint64_t> counts_;
};

namespace detail {

using bpe_pair = std::pair<std::uint32_t, std::uint32_t>;

struct bpe_pair_hash {
  std::size_t operator()(const bpe_pair& p) const noexcept {
    return std::hash<std::uint64_t>{}((std::uint64_t{p.first} << 32) | p.second);
  }
};

// One heap entry: a pair, its count when pushed, and the words it was created in.
struct bpe_merge_entry {
  bpe_pair pair{};
  std::uint64_t count = 0;
  std::vector<std::size_t> pos{};
};

// Heap order: higher count first; on equal counts the smaller pair first.
struct bpe_entry_less {
  bool operator()(const bpe_merge_entry& x, const bpe_merge_entry& y) const noexcept {
    if (x.count != y.count) return x.count < y.count;
    return x.pair > y.pair;
  }
};

// Merges every non-overlapping (a, b) in `w` left to right into `rep`, reporting the pair
// count changes with the reference's bookkeeping (the merged pair's own occurrences are not
// reported; the trainer never looks at that pair again unless it is re-created).
inline void bpe_merge_word(std::vector<std::uint32_t>& w, std::uint32_t a, std::uint32_t b,
                           std::uint32_t rep, std::vector<std::pair<bpe_pair, int>>& changes) {
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (w[i] != a || i + 1 >= w.size() || w[i + 1] != b) continue;
    if (i > 0) {
      changes.push_back({{w[i - 1], a}, -1});
      changes.push_back({{w[i - 1], rep}, 1});
    }
    w[i] = rep;
    w.erase(w.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    if (i + 1 < w.size()) {
      changes.push_back({{b, w[i + 1]}, -1});
      changes.push_back({{rep, w[i + 1]}, 1});
    }
  }
}

}  // namespace detail

inline trained_bpe bpe_trainer::train() const {
  using detail::bpe_pair;
  trained_bpe out;
  out.special_tokens = opt_.special_tokens;
  std::unordered_map<std::string, std::uint32_t> w2id;
  auto add = [&](const std::string& s) {
    if (w2id.count(s)) return;
    w2id.emplace(s, static_cast<std::uint32_t>(out.vocab.size()));
    out.vocab.push_back(s);
  };
  for (const auto& s : opt_.special_tokens) add(s);
  // The byte alphabet, sorted by code point.
  // (UTF-8 byte order is code point order.)
  std::vector<std::string> alphabet;
  for (int b = 0; b < 256; ++b)
    alphabet.push_back(detail::byte_level_table::get().encode(static_cast<unsigned char>(b)));
  std::sort(alphabet.begin(), alphabet.end());
  for (const auto& c : alphabet) add(c);

  // Words as symbol ids.
  std::vector<std::vector<std::uint32_t>> words;
  std::vector<std::uint64_t> wcount;
  words.reserve(counts_.size());
  for (const auto& [word, n] : counts_) {
    std::vector<std::uint32_t> syms;
    for (std::size_t i = 0; i < word.size();) {
      const std::size_t len = detail::utf8_sequence_length(word, i);
      syms.push_back(w2id.at(word.substr(i, len)));
      i += len;
    }
    words.push_back(std::move(syms));
    wcount.push_back(n);
  }

  std::unordered_map<bpe_pair, std::int64_t, detail::bpe_pair_hash> pair_counts;
  std::map<bpe_pair, std::vector<std::size_t>> where;  // ordered: deterministic pushes
  for (std::size_t i = 0; i < words.size(); ++i) {
    const auto& w = words[i];
    for (std::size_t j = 0; j + 1 < w.size(); ++j) {
      const bpe_pair p{w[j], w[j + 1]};
      pair_counts[p] += static_cast<std::int64_t>(wcount[i]);
      auto& v = where[p];
      if (v.empty() || v.back() != i) v.push_back(i);
    }
  }
  std::vector<detail::bpe_merge_entry> heap;
  const detail::bpe_entry_less less;
  auto push = [&](detail::bpe_merge_entry e) {
    heap.push_back(std::move(e));
    std::push_heap(heap.begin(), heap.end(), less);
  };
  auto flush = [&] {
    for (auto& [p, pos] : where) {
      const std::int64_t c = pair_counts[p];
      if (c > 0) push({p, static_cast<std::uint64_t>(c), std::move(pos)});
    }
    where.clear();
  };
  flush();

  std::vector<std::pair<bpe_pair, int>> changes;
  while (out.vocab.size() < opt_.vocab_size && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), less);
    detail::bpe_merge_entry top = std::move(heap.back());
    heap.pop_back();
    const std::int64_t actual = pair_counts[top.pair];
    if (top.count != static_cast<std::uint64_t>(std::max<std::int64_t>(actual, 0))) {
      top.count = static_cast<std::uint64_t>(std::max<std::int64_t>(actual, 0));
      push(std::move(top));
      continue;
    }
    if (top.count < 1 || opt_.min_frequency > top.count) break;
    const auto [a, b] = top.pair;
    const std::string token = out.vocab[a] + out.vocab[b];
    add(token);
    const std::uint32_t rep = w2id.at(token);
    out.merges.emplace_back(out.vocab[a], out.vocab[b]);
    for (std::size_t i : top.pos) {
      changes.clear();
      detail::bpe_merge_word(words[i], a, b, rep, changes);
      for (const auto& [p, d] : changes) {
        pair_counts[p] += static_cast<std::int64_t>(d) * static_cast<std::int64_t>(wcount[i]);
        if (d > 0) {
          auto& v = where[p];
          if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
        }
      }
    }
    flush();
  }
  return out;
}

/// What goes into tokenizer_config.json besides the tokenizer itself.
struct bpe_tokenizer_files {
  std::optional<std::string> bos_token{};      ///< must be one of the special tokens
  std::optional<std::string> eos_token{};      ///< must be one of the special tokens
  std::optional<std::string> pad_token{};      ///< must be one of the special tokens
  std::optional<std::string> chat_template{};  ///< Jinja source, stored in tokenizer_config.json
  std::size_t model_max_length = 0;            ///< 0: not written
};

/// The tokenizer.json document of `bpe` (format of the `tokenizers` library, version 1.0):
/// special tokens as added tokens (not normalized, special), ByteLevel pre-tokenizer without
/// prefix space, ByteLevel decoder, BPE model with merges as [left, right] pairs.
inline nlohmann::ordered_json bpe_tokenizer_json(const trained_bpe& bpe) {
  using oj = nlohmann::ordered_json;
  oj added = oj::array();
  for (std::size_t i = 0; i < bpe.special_tokens.size(); ++i) {
    const auto it = std::find(bpe.vocab.begin(), bpe.vocab.end(), bpe.special_tokens[i]);
    added.push_back(oj{{"id", it - bpe.vocab.begin()},
                       {"content", bpe.special_tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", true}});
  }
  oj vocab = oj::object();
  for (std::size_t i = 0; i < bpe.vocab.size(); ++i) vocab[bpe.vocab[i]] = i;
  oj merges = oj::array();
  for (const auto& [l, r] : bpe.merges) merges.push_back(oj::array({l, r}));
  const oj byte_level = {{"type", "ByteLevel"},
                         {"add_prefix_space", false},
                         {"trim_offsets", true},
                         {"use_regex", true}};
  return oj{{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", std::move(added)},
            {"normalizer", nullptr},
            {"pre_tokenizer", byte_level},
            {"post_processor", byte_level},
            {"decoder", byte_level},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"ignore_merges", false},
              {"vocab", std::move(vocab)},
              {"merges", std::move(merges)}}}};
}

/// Writes `dir`/tokenizer.json and `dir`/tokenizer_config.json (atomically; creates `dir`).
/// forge::error if a bos/eos/pad token is not one of the special tokens.
inline void save_bpe_tokenizer(const trained_bpe& bpe, const std::filesystem::path& dir,
                               const bpe_tokenizer_files& files = {}) {
  using oj = nlohmann::ordered_json;
  oj config = oj::object();
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  auto special = [&](const char* key, const std::optional<std::string>& t) {
    if (!t) return;
    if (std::find(bpe.special_tokens.begin(), bpe.special_tokens.end(), *t) ==
        bpe.special_tokens.end())
      throw error({.what = "tokenizer config names a token that is not a special token",
                   .file = (dir / "tokenizer_config.json").string(),
                   .place = key,
                   .expected = "one of the trained special tokens",
                   .found = *t});
    config[key] = *t;
  };
  special("bos_token", files.bos_token);
  special("eos_token", files.eos_token);
  special("pad_token", files.pad_token);
  if (files.model_max_length > 0) config["model_max_length"] = files.model_max_length;
  config["clean_up_tokenization_spaces"] = false;
  if (files.chat_template) config["chat_template"] = *files.chat_template;
  std::filesystem::create_directories(dir);
  io::write_atomic(dir / "tokenizer.json", bpe_tokenizer_json(bpe).dump(2) + "\n");
  io::write_atomic(dir / "tokenizer_config.json", config.dump(2) + "\n");
}

}  // namespace forge::text
