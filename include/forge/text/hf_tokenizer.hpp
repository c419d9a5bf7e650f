#pragma once
// forge::text::hf_tokenizer — a Hugging Face tokenizer.json (the `tokenizers` library's
// format) with a BPE model, producing the same ids as the reference library.
//
// Encoding follows the reference pipeline: added tokens are cut out of the raw text first
// (those with "normalized": false), each remaining segment is normalized, normalized added
// tokens are cut out, the pre-tokenizer splits segments into pieces, BPE turns each piece
// into ids, and the post-processor adds the template's special tokens.
//
// Supported components (others are rejected with a forge::error naming the JSON path):
//   model          BPE (merges as "a b" strings or ["a", "b"] pairs; byte_fallback,
//                  ignore_merges, unk_token/fuse_unk, continuing_subword_prefix,
//                  end_of_word_suffix; dropout must be null or 0)
//   normalizer     NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, ByteLevel, Sequence
//   pre_tokenizer  ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence
//   post_processor TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence
//   decoder        ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder, Sequence
//
// Deliberate differences from the reference: invalid UTF-8 input and unknown ids passed to
// decode raise forge::error (the reference cannot receive the former and drops the latter).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/text/detail/added_tokens.hpp"
#include "forge/text/detail/bpe.hpp"
#include "forge/text/detail/decoder.hpp"
#include "forge/text/detail/json_reader.hpp"
#include "forge/text/detail/normalizer.hpp"
#include "forge/text/detail/pre_tokenizer.hpp"
#include "forge/text/detail/regex.hpp"
#include "forge/text/detail/utf8.hpp"
#include "forge/text/tokenizer.hpp"

namespace forge::text {

namespace detail {

/// A post-processing step: a template over the single sequence "A".
struct post_step {
  struct piece {
    bool is_sequence = false;
    std::vector<std::int32_t> ids;  ///< the special token's ids when !is_sequence
  };
  std::vector<piece> single;  ///< empty: the step leaves the ids unchanged (ByteLevel)
};

/// Everything an hf_tokenizer holds; kept behind a pointer so the tokenizer is cheap to move.
struct hf_state {
  std::string source;
  bpe_model model;
  normalizer norm;
  pre_tokenizer pre;
  decoder dec;
  std::vector<post_step> post;
  std::vector<added_token> added;
  std::unordered_map<std::int32_t, std::size_t> added_by_id;
  vocab_map added_by_content;
  std::unordered_set<std::string> special_contents;
  added_token_matcher raw_matcher, normalized_matcher;
  std::size_t n_ids = 0;
  std::optional<std::int32_t> bos, eos, pad;

  // Per-call working memory. One set is kept for reuse (with the word cache); a call that
  // finds it taken by another thread works with its own.
  struct work {
    bpe_scratch bpe;
    std::vector<pre_tokenizer_scratch> pre;
    std::vector<segment> raw_segments, norm_segments;
    std::string normalized;
    word_cache cache;
  };
  std::mutex work_mutex;
  std::unique_ptr<work> shared_work;
};

// ---- parsing tokenizer.json ----

inline split_behavior parse_behavior(const json_node& n) {
  const std::string& s = n.str_ref();
  if (s == "Removed") return split_behavior::removed;
  if (s == "Isolated") return split_behavior::isolated;
  if (s == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (s == "MergedWithNext") return split_behavior::merged_with_next;
  if (s == "Contiguous") return split_behavior::contiguous;
  n.fail("unknown split behavior",
         "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
}

// {"String": "..."} or {"Regex": "..."} -> compiled pattern.
inline std::shared_ptr<const regex> parse_pattern(const json_node& n) {
  if (auto s = n.find("String")) return compile_literal(s->str_ref(), n.file());
  if (auto r = n.find("Regex")) {
    try {
      return compile_shared(r->str_ref(), n.file());
    } catch (const error& e) {
      throw error({.what = e.problem(),
                   .file = n.file(),
                   .place = r->path(),
                   .expected = e.expected(),
                   .found = e.found()});
    }
  }
  n.fail("expected a pattern object", "{\"String\": ...} or {\"Regex\": ...}");
}

// A single code point given as a JSON string (Metaspace "replacement", Strip "content").
inline char32_t parse_char(const json_node& n) {
  const std::string& s = n.str_ref();
  std::size_t i = 0;
  if (s.empty()) n.fail("expected a single character", "a one-character string");
  const char32_t c = next_code_point(s, i);
  if (i != s.size()) n.fail("expected a single character", "a one-character string");
  return c;
}

inline void parse_normalizer(const json_node& n, normalizer& out) {
  const std::string type = n.at("type").str();
  using k = normalizer_step::kind;
  normalizer_step st;
  if (type == "Sequence") {
    const auto list = n.at("normalizers");
    for (std::size_t i = 0; i < list.size(); ++i) parse_normalizer(list[i], out);
    return;
  } else if (type == "NFC") {
    st.k = k::nfc;
  } else if (type == "NFD") {
    st.k = k::nfd;
  } else if (type == "NFKC") {
    st.k = k::nfkc;
  } else if (type == "NFKD") {
    st.k = k::nfkd;
  } else if (type == "Prepend") {
    st.k = k::prepend;
    st.text = n.at("prepend").str();
  } else if (type == "Replace") {
    st.k = k::replace;
    st.pattern = parse_pattern(n.at("pattern"));
    st.text = n.at("content").str();
  } else if (type == "Strip") {
    st.k = k::strip;
    st.left = n.boolean_or("strip_left", false);
    st.right = n.boolean_or("strip_right", false);
  } else if (type == "ByteLevel") {
    st.k = k::byte_level;
  } else {
    n.at("type").fail("unsupported normalizer type",
                      "NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, ByteLevel or Sequence");
  }
  out.steps.push_back(std::move(st));
}

inline prepend_scheme parse_scheme(const json_node& n) {
  std::optional<std::string> s = n.str_opt("prepend_scheme");
  // Older files carry add_prefix_space instead of a scheme.
  if (!s)
    return n.boolean_or("add_prefix_space", true) ? prepend_scheme::always : prepend_scheme::never;
  if (*s == "always") return prepend_scheme::always;
  if (*s == "first") return prepend_scheme::first;
  if (*s == "never") return prepend_scheme::never;
  n.at("prepend_scheme").fail("unknown prepend scheme", "always, first or never");
}

inline void parse_pre_tokenizer(const json_node& n, pre_tokenizer& out) {
  const std::string type = n.at("type").str();
  using k = pre_tokenizer_step::kind;
  pre_tokenizer_step st;
  if (type == "Sequence") {
    const auto list = n.at("pretokenizers");
    for (std::size_t i = 0; i < list.size(); ++i) parse_pre_tokenizer(list[i], out);
    return;
  } else if (type == "ByteLevel") {
    st.k = k::byte_level;
    st.add_prefix_space = n.boolean_or("add_prefix_space", true);
    st.use_regex = n.boolean_or("use_regex", true);
    if (st.use_regex) {
      static const auto gpt2 = std::make_shared<const regex>(gpt2_pattern, "<gpt2 pattern>");
      st.pattern = gpt2;
    }
  } else if (type == "Split") {
    st.k = k::split;
    st.pattern = parse_pattern(n.at("pattern"));
    st.behavior = parse_behavior(n.at("behavior"));
    st.invert = n.boolean_or("invert", false);
  } else if (type == "Metaspace") {
    st.k = k::metaspace;
    st.replacement_char = parse_char(n.at("replacement"));
    st.replacement = utf8_of(st.replacement_char);
    st.scheme = parse_scheme(n);
    st.split = n.boolean_or("split", true);
  } else if (type == "Digits") {
    st.k = k::digits;
    st.individual_digits = n.boolean_or("individual_digits", false);
  } else if (type == "WhitespaceSplit") {
    st.k = k::whitespace_split;
  } else {
    n.at("type").fail("unsupported pre-tokenizer type",
                      "ByteLevel, Split, Metaspace, Digits, WhitespaceSplit or Sequence");
  }
  out.steps.push_back(std::move(st));
}

inline void parse_decoder(const json_node& n, decoder& out) {
  const std::string type = n.at("type").str();
  using k = decoder_step::kind;
  decoder_step st;
  if (type == "Sequence") {
    const auto list = n.at("decoders");
    for (std::size_t i = 0; i < list.size(); ++i) parse_decoder(list[i], out);
    return;
  } else if (type == "ByteLevel") {
    st.k = k::byte_level;
  } else if (type == "ByteFallback") {
    st.k = k::byte_fallback;
  } else if (type == "Fuse") {
    st.k = k::fuse;
  } else if (type == "Strip") {
    st.k = k::strip;
    st.strip_char = parse_char(n.at("content"));
    st.start = static_cast<std::size_t>(n.at("start").integer(0, 1 << 20));
    st.stop = static_cast<std::size_t>(n.at("stop").integer(0, 1 << 20));
  } else if (type == "Replace") {
    st.k = k::replace;
    st.pattern = parse_pattern(n.at("pattern"));
    st.content = n.at("content").str();
  } else if (type == "Metaspace") {
    st.k = k::metaspace;
    st.replacement_char = parse_char(n.at("replacement"));
    st.scheme = parse_scheme(n);
  } else if (type == "BPEDecoder") {
    st.k = k::bpe;
    st.suffix = n.str_opt("suffix").value_or("</w>");
  } else {
    n.at("type").fail("unsupported decoder type",
                      "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder or "
                      "Sequence");
  }
  out.steps.push_back(std::move(st));
}

inline std::int32_t parse_id(const json_node& n) {
  return static_cast<std::int32_t>(n.integer(0, (std::int64_t{1} << 31) - 1));
}

// [token, id] as in Bert/RobertaProcessing.
inline post_step::piece parse_token_id_pair(const json_node& n) {
  if (n.size() != 2) n.fail("expected [token, id]", "a two-element array");
  n[0].str();
  return {false, {parse_id(n[1])}};
}

inline void parse_post_processor(const json_node& n, std::vector<post_step>& out) {
  const std::string type = n.at("type").str();
  post_step st;
  if (type == "Sequence") {
    const auto list = n.at("processors");
    for (std::size_t i = 0; i < list.size(); ++i) parse_post_processor(list[i], out);
    return;
  } else if (type == "ByteLevel") {
    return;  // only trims offsets, which forge does not report
  } else if (type == "TemplateProcessing") {
    const auto specials = n.at("special_tokens");
    const auto single = n.at("single");
    for (std::size_t i = 0; i < single.size(); ++i) {
      const auto p = single[i];
      if (auto seq = p.find("Sequence")) {
        const std::string id = seq->at("id").str();
        if (id != "A" && id != "B") seq->at("id").fail("unknown sequence id", "\"A\" or \"B\"");
        st.single.push_back({true, {}});
      } else if (auto sp = p.find("SpecialToken")) {
        const std::string name = sp->at("id").str();
        auto entry = specials.find(name);
        if (!entry)
          sp->at("id").fail("special token missing from special_tokens", "a key of special_tokens");
        const auto ids = entry->at("ids");
        post_step::piece piece{false, {}};
        for (std::size_t k = 0; k < ids.size(); ++k) piece.ids.push_back(parse_id(ids[k]));
        st.single.push_back(std::move(piece));
      } else {
        p.fail("expected a template piece", "{\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    st.single.push_back(parse_token_id_pair(n.at("cls")));
    st.single.push_back({true, {}});
    st.single.push_back(parse_token_id_pair(n.at("sep")));
  } else {
    n.at("type").fail("unsupported post-processor type",
                      "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing or "
                      "Sequence");
  }
  out.push_back(std::move(st));
}

// Ids are stored densely, so they are bounded by the number of vocabulary and added-token
// entries: a dense vocabulary with added tokens after it always fits, and a corrupt id such as
// 2^31 cannot make the tables huge.
inline std::int32_t parse_bounded_id(const json_node& n, std::size_t bound) {
  const auto hi = static_cast<std::int64_t>(std::min<std::size_t>(bound, std::size_t{1} << 31)) - 1;
  if (hi < 0) n.fail("no id is possible in an empty vocabulary");
  return static_cast<std::int32_t>(n.integer(0, hi));
}

inline void parse_bpe_model(const json_node& m, bpe_model& model, std::size_t& n_ids,
                            std::size_t id_bound) {
  const std::string type = m.find("type") ? m.at("type").str() : "BPE";
  if (type != "BPE") m.at("type").fail("unsupported model type", "BPE");
  if (auto d = m.find("dropout")) {
    const auto& v = d->value();
    if (!v.is_number() || v.get<double>() != 0.0)
      d->fail("BPE dropout is random and not supported", "null or 0");
  }
  const auto vocab = m.at("vocab");
  if (!vocab.is_object()) vocab.fail("expected an object", "{token: id, ...}");
  model.vocab.reserve(vocab.value().size());
  for (auto it = vocab.value().begin(); it != vocab.value().end(); ++it) {
    const json_node entry(it.value(), m.file(), vocab.path() + "/" + it.key());
    const std::int32_t id = parse_bounded_id(entry, id_bound);
    model.vocab.insert_or_assign(it.key(), id);
    if (static_cast<std::size_t>(id) >= model.id_to_token.size()) {
      model.id_to_token.resize(static_cast<std::size_t>(id) + 1);
      model.has_id.resize(static_cast<std::size_t>(id) + 1, false);
    }
    model.id_to_token[static_cast<std::size_t>(id)] = it.key();
    model.has_id[static_cast<std::size_t>(id)] = true;
  }
  n_ids = std::max(n_ids, model.id_to_token.size());
  model.continuing_subword_prefix = m.str_opt("continuing_subword_prefix").value_or("");
  model.end_of_word_suffix = m.str_opt("end_of_word_suffix").value_or("");
  model.fuse_unk = m.boolean_or("fuse_unk", false);
  model.byte_fallback = m.boolean_or("byte_fallback", false);
  model.ignore_merges = m.boolean_or("ignore_merges", false);
  if (auto unk = m.find("unk_token")) {
    auto id = model.find(unk->str_ref());
    if (!id) unk->fail("unk_token is not in the vocabulary", "a token of model.vocab");
    model.unk_id = *id;
  }
  if (model.byte_fallback) model.index_bytes();
  model.index_meta_boundaries();

  const auto merges = m.at("merges");
  const std::size_t n = merges.size();
  model.merges.reserve(n);
  const std::size_t prefix_len = model.continuing_subword_prefix.size();
  std::string merged;
  for (std::size_t i = 0; i < n; ++i) {
    const auto e = merges[i];
    std::string a, b;
    if (e.is_string()) {
      // Legacy form "a b": exactly one space separates the two tokens.
      const std::string& s = e.str_ref();
      const std::size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        e.fail("a merge string must hold two tokens separated by one space", "\"left right\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array()) {
      if (e.size() != 2) e.fail("a merge pair must have two tokens", "[\"left\", \"right\"]");
      a = e[0].str();
      b = e[1].str();
    } else {
      e.fail("expected a merge", "\"left right\" or [\"left\", \"right\"]");
    }
    const auto ia = model.find(a);
    if (!ia) e.fail("merge token is not in the vocabulary", "tokens of model.vocab");
    const auto ib = model.find(b);
    if (!ib) e.fail("merge token is not in the vocabulary", "tokens of model.vocab");
    // The merged token drops the right side's continuing-subword prefix.
    if (b.size() < prefix_len) e.fail("merge token shorter than continuing_subword_prefix");
    merged = a;
    merged.append(b, prefix_len, std::string::npos);
    const auto im = model.find(merged);
    if (!im)
      e.fail("merged token \"" + merged + "\" is not in the vocabulary", "tokens of model.vocab");
    model.merges.put(*ia, *ib, {static_cast<std::uint32_t>(i), *im});
  }
}

inline void parse_added_tokens(const json_node& list, hf_state& st, std::size_t id_bound) {
  const std::size_t n = list.size();
  for (std::size_t i = 0; i < n; ++i) {
    const auto e = list[i];
    added_token t;
    t.content = e.at("content").str();
    t.id = parse_bounded_id(e.at("id"), id_bound);
    t.special = e.boolean_or("special", false);
    t.single_word = e.boolean_or("single_word", false);
    t.lstrip = e.boolean_or("lstrip", false);
    t.rstrip = e.boolean_or("rstrip", false);
    t.normalized = e.boolean_or("normalized", !t.special);
    if (t.content.empty()) continue;  // the reference ignores empty added tokens
    // A token the model already knows keeps the model's id, as in the reference.
    if (auto id = st.model.find(t.content)) t.id = *id;
    t.match_form = t.content;
    if (t.normalized && !st.norm.empty()) st.norm.apply(t.match_form);
    st.added.push_back(std::move(t));
  }
}

}  // namespace detail

/// A tokenizer.json tokenizer with a BPE model. Thread-safe: encode/decode may be called
/// concurrently. Move-only.
class hf_tokenizer {
 public:
  /// Loads `path` (a tokenizer.json); special-token names come from `config` if given.
  static hf_tokenizer from_file(const std::filesystem::path& path,
                                const tokenizer_config& config = {}) {
    return from_json(io::read_file(path), path.string(), config);
  }

  /// Parses tokenizer.json text; `source` names it in error messages.
  static hf_tokenizer from_json(std::string_view json_text, const std::string& source = "<memory>",
                                const tokenizer_config& config = {}) {
    const nlohmann::json doc = detail::parse_json(json_text, source);
    const detail::json_node root(doc, source);
    if (!root.is_object()) root.fail("expected an object", "a tokenizer.json object");
    auto st = std::make_unique<detail::hf_state>();
    st->source = source;
    const auto model = root.at("model");
    const auto added = root.find("added_tokens");
    const std::size_t id_bound = model.at("vocab").value().size() + (added ? added->size() : 0);
    detail::parse_bpe_model(model, st->model, st->n_ids, id_bound);
    if (auto n = root.find("normalizer")) detail::parse_normalizer(*n, st->norm);
    if (auto n = root.find("pre_tokenizer")) detail::parse_pre_tokenizer(*n, st->pre);
    if (auto n = root.find("post_processor")) detail::parse_post_processor(*n, st->post);
    if (auto n = root.find("decoder")) detail::parse_decoder(*n, st->dec);
    if (added) detail::parse_added_tokens(*added, *st, id_bound);
    for (std::size_t i = 0; i < st->added.size(); ++i) {
      const auto& t = st->added[i];
      st->added_by_id[t.id] = i;
      st->added_by_content.insert_or_assign(t.content, t.id);
      if (t.special) st->special_contents.insert(t.content);
      st->n_ids = std::max(st->n_ids, static_cast<std::size_t>(t.id) + 1);
    }
    st->raw_matcher = detail::added_token_matcher(st->added, false);
    st->normalized_matcher = detail::added_token_matcher(st->added, true);
    for (const auto& step : st->post)
      for (const auto& p : step.single)
        for (std::int32_t id : p.ids)
          if (static_cast<std::size_t>(id) >= st->n_ids)
            throw error({.what = "post-processor token id outside the vocabulary",
                         .file = source,
                         .place = "/post_processor",
                         .expected = "ids below " + std::to_string(st->n_ids),
                         .found = std::to_string(id)});
    hf_tokenizer t(std::move(st));
    t.st_->bos = t.config_id(config.bos_token, "bos_token");
    t.st_->eos = t.config_id(config.eos_token, "eos_token");
    t.st_->pad = t.config_id(config.pad_token, "pad_token");
    return t;
  }

  /// Token ids of UTF-8 `text`; add_special_tokens applies the post-processor's template
  /// (BOS/EOS). forge::error naming the byte offset if `text` is not valid UTF-8.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    detail::require_utf8(text, "text to encode");
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::unique_lock lock(st_->work_mutex, std::try_to_lock);
    std::unique_ptr<detail::hf_state::work> own;
    detail::hf_state::work* w = nullptr;
    if (lock.owns_lock()) {
      if (!st_->shared_work) st_->shared_work = make_work();
      w = st_->shared_work.get();
    } else {
      own = make_work();
      w = own.get();
    }
    encode_into(text, ids, *w);
    if (!st_->post.empty()) ids = post_process(std::move(ids), add_special_tokens);
    return ids;
  }

  /// UTF-8 text of `ids`; skip_special_tokens drops special added tokens. forge::error if an
  /// id is not in the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      const std::string* tok = token_string(id);
      if (!tok)
        throw error(
            {.what = "token id not in the vocabulary",
             .file = st_->source,
             .place = "position " + std::to_string(i),
             .expected = "an id below " + std::to_string(st_->n_ids) + " that names a token",
             .found = std::to_string(id)});
      if (skip_special_tokens && st_->special_contents.count(*tok)) continue;
      tokens.push_back(*tok);
    }
    return st_->dec.decode(std::move(tokens));
  }

  /// Number of ids: one more than the largest id of the model or the added tokens.
  std::size_t vocab_size() const { return st_->n_ids; }

  /// Id of token string `token` (added tokens first, then the model vocabulary).
  std::optional<std::int32_t> token_to_id(std::string_view token) const {
    if (const auto* id = st_->added_by_content.find(token)) return *id;
    return st_->model.find(token);
  }

  /// Token string of `id` as stored in the vocabulary (byte-level form for byte-level models).
  std::optional<std::string> id_to_token(std::int32_t id) const {
    auto it = st_->added_by_id.find(id);
    if (it != st_->added_by_id.end()) return st_->added[it->second].content;
    if (id < 0 || static_cast<std::size_t>(id) >= st_->model.id_to_token.size())
      return std::nullopt;
    if (!st_->model.has_id[static_cast<std::size_t>(id)]) return std::nullopt;
    return st_->model.id_to_token[static_cast<std::size_t>(id)];
  }

  /// BOS/EOS/PAD ids, from the tokenizer_config given at load (nullopt if none was named).
  std::optional<std::int32_t> bos_id() const { return st_->bos; }
  std::optional<std::int32_t> eos_id() const { return st_->eos; }
  std::optional<std::int32_t> pad_id() const { return st_->pad; }

  /// True if `id` is an added token marked special.
  bool is_special(std::int32_t id) const {
    auto it = st_->added_by_id.find(id);
    return it != st_->added_by_id.end() && st_->added[it->second].special;
  }

 private:
  explicit hf_tokenizer(std::unique_ptr<detail::hf_state> st) : st_(std::move(st)) {}

  std::optional<std::int32_t> config_id(const std::optional<std::string>& name,
                                        const char* key) const {
    if (!name) return std::nullopt;
    auto id = token_to_id(*name);
    if (!id)
      throw error(
          {.what = std::string("tokenizer_config ") + key + " is not a token of the vocabulary",
           .file = st_->source,
           .expected = "a token of tokenizer.json",
           .found = "\"" + *name + "\""});
    return id;
  }

  std::unique_ptr<detail::hf_state::work> make_work() const {
    auto w = std::make_unique<detail::hf_state::work>();
    w->pre = st_->pre.make_scratch();
    return w;
  }

  // The string a decoder sees for `id`: a normalized added token in its normalized form (so a
  // byte-level decoder can invert it), other added tokens as written, else the model's token.
  const std::string* token_string(std::int32_t id) const {
    auto it = st_->added_by_id.find(id);
    if (it != st_->added_by_id.end()) return &st_->added[it->second].match_form;
    if (id < 0 || static_cast<std::size_t>(id) >= st_->model.id_to_token.size()) return nullptr;
    if (!st_->model.has_id[static_cast<std::size_t>(id)]) return nullptr;
    return &st_->model.id_to_token[static_cast<std::size_t>(id)];
  }

  void encode_into(std::string_view text, std::vector<std::int32_t>& ids,
                   detail::hf_state::work& w) const {
    const auto& st = *st_;
    const auto model_sink = [&](std::string_view piece) {
      st.model.tokenize(piece, ids, w.bpe, &w.cache);
    };
    st.raw_matcher.split(text, w.raw_segments);
    // Segments are copied: the normalized pass below reuses the scratch vectors.
    const std::vector<detail::segment> raw = w.raw_segments;
    for (const auto& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      const std::string_view part = text.substr(seg.r.first, seg.r.second - seg.r.first);
      const bool at_start = seg.r.first == 0;
      std::string_view normalized = part;
      if (!st.norm.empty()) {
        w.normalized.assign(part);
        st.norm.apply(w.normalized);
        normalized = w.normalized;
      }
      st.normalized_matcher.split(normalized, w.norm_segments);
      for (const auto& sub : w.norm_segments) {
        if (sub.id >= 0) {
          ids.push_back(sub.id);
          continue;
        }
        st.pre.run(normalized.substr(sub.r.first, sub.r.second - sub.r.first),
                   at_start && sub.r.first == 0, w.pre, model_sink);
      }
    }
  }

  std::vector<std::int32_t> post_process(std::vector<std::int32_t> ids, bool add_special) const {
    for (const auto& step : st_->post) {
      if (step.single.empty()) continue;
      std::vector<std::int32_t> out;
      out.reserve(ids.size() + 4);
      for (const auto& p : step.single) {
        if (p.is_sequence)
          out.insert(out.end(), ids.begin(), ids.end());
        else if (add_special)
          out.insert(out.end(), p.ids.begin(), p.ids.end());
      }
      ids = std::move(out);
    }
    return ids;
  }

  std::unique_ptr<detail::hf_state> st_;
};

static_assert(Tokenizer<hf_tokenizer>, "hf_tokenizer must model forge::text::Tokenizer");

}  // namespace forge::text
