#pragma once
// The built-in data, tokenised for each stage of the pipeline: what the quickstart and the
// ablation programs feed to adapt<…>, compress<…> and align<…>. Everything is generated from
// a seed by the builtin/ generators and tokenised with the built-in model's tokenizer and
// chat format, so a run needs no downloads and two runs with the same seed see the same bytes.
//
// Train and evaluation sides never overlap: SFT training tasks and the exact-match items come
// from the generators' disjoint train/eval splits, perplexity is measured on held-out text
// the corpus excludes by construction, and the safety sets the Align gate scores are drawn
// with a different seed (other framings of the harmful requests) than the safety preference
// pairs it trains on; the jailbreak variants are never trained on at all.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/methods.hpp"
#include "forge/builtin/chat.hpp"
#include "forge/builtin/corpus.hpp"
#include "forge/builtin/model.hpp"
#include "forge/builtin/preferences.hpp"
#include "forge/builtin/tasks.hpp"
#include "forge/core/rng.hpp"
#include "forge/data/preference.hpp"
#include "forge/data/report.hpp"
#include "forge/data/sft.hpp"
#include "forge/eval/safety.hpp"
#include "forge/quant/methods.hpp"
#include "forge/train/align_methods.hpp"

namespace forge::builtin {

/// How much of each set to generate. The defaults are the quickstart's.
struct data_sizes {
  std::size_t sft_train = 2000;     ///< SFT conversations (train split of the tasks)
  std::size_t sft_val = 64;         ///< validation conversations (loss, perplexity)
  std::size_t task_eval = 64;       ///< exact-match items (eval split of the tasks)
  std::size_t general = 48;         ///< held-out documents (regression perplexity)
  std::size_t calibration = 32;     ///< calibration documents (GPTQ, AWQ)
  std::size_t evaluation = 48;      ///< held-out documents (Compress perplexity)
  std::size_t preference = 200;     ///< helpful/concise preference pairs
  std::size_t preference_val = 64;  ///< held-out preference pairs
  std::size_t safety_repeat = 2;    ///< safety pairs placed after each helpfulness pair
  /// Pre-training documents mixed into the SFT train set (rehearsal, every token trained), so
  /// that the adapted model keeps its general text: on the built-in model, 400 among 2000 task
  /// examples hold the held-out perplexity within ~1% where task examples alone raise it by
  /// ~160%, at the same exact match (docs/builtin.md). 0: none.
  std::size_t replay = 400;
  /// The refusal the safety pairs teach: short and made of tokens the built-in vocabulary has
  /// (its corpus has no refusals; the library's longer default refusal is 34 built-in tokens).
  std::string refusal = "I cannot do that.";
  /// The answer the safety pairs teach for benign look-alikes: as short and as familiar to the
  /// built-in vocabulary as the refusal, so that neither answer is easier to produce and the
  /// request alone decides between them. Their rejected answers cycle through
  /// eval::refusal_phrasings(), so training lowers every phrasing of a refusal there.
  std::string helpful = "Yes, I can help with that.";
  /// The request framings (eval::framed_prompts indices) of the safety training pairs; the
  /// held-out pairs and the safety evaluation use framings 3 and 4, never listed here.
  std::vector<std::size_t> safety_train_frames{0, 1, 2, 5, 6, 7, 8};
  std::size_t max_length = 256;  ///< tokens per sequence at most (the model's context)
  /// SFT and exact-match task kinds (builtin::task_kinds(); empty: all five). The quickstart
  /// uses the kinds the 4.5M-parameter base can learn within its minutes of LoRA training.
  std::vector<std::string> task_kinds{};
};

/// The chat renderer of the built-in format, for data::encode_sft / encode_preference.
inline auto chat_renderer() {
  return [](const nlohmann::json& msgs, bool gen) {
    std::vector<data::message> ms;
    for (const auto& m : msgs)
      ms.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    return render_chat(ms, gen);
  };
}

/// Tokens that end an assistant answer: <|im_end|> and <|end_of_text|>.
inline std::vector<std::int64_t> stop_tokens(const text::any_tokenizer& tok) {
  std::vector<std::int64_t> out;
  for (auto t : {im_end_token, end_of_text_token})
    if (auto id = tok.token_to_id(t)) out.push_back(*id);
  return out;
}

/// The padding id (<|pad|>).
inline std::int32_t pad_id(const text::any_tokenizer& tok) {
  const auto id = tok.token_to_id(pad_token);
  require(id.has_value(), {.what = "the tokenizer has no padding token", .expected = "<|pad|>"});
  return *id;
}

namespace detail {

inline std::vector<data::sft_example> encode_all(const std::vector<data::sft_record>& rs,
                                                 const text::any_tokenizer& tok,
                                                 std::size_t max_length) {
  std::vector<data::sft_example> out;
  const auto render = chat_renderer();
  for (const auto& r : rs)
    if (auto e = data::encode_sft(r.messages, tok, render,
                                  {.max_length = max_length, .truncate = data::truncation::drop},
                                  nullptr, r.id))
      out.push_back(std::move(*e));
  return out;
}

// Documents as language-modelling examples (every token trained), cut to max_length.
inline std::vector<data::sft_example> text_examples(const std::vector<std::string>& docs,
                                                    const text::any_tokenizer& tok,
                                                    std::size_t max_length) {
  std::vector<data::sft_example> out;
  for (const auto& d : docs) {
    auto ids = tok.encode(d, false);
    if (ids.size() > max_length) ids.resize(max_length);
    if (ids.size() < 2) continue;
    data::sft_example e;
    e.input_ids = ids;
    e.labels = ids;
    out.push_back(std::move(e));
  }
  return out;
}

inline std::vector<std::vector<std::int64_t>> token_rows(const std::vector<std::string>& docs,
                                                         const text::any_tokenizer& tok,
                                                         std::size_t max_length) {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& d : docs) {
    const auto ids = tok.encode(d, false);
    const std::size_t n = std::min(ids.size(), max_length);
    if (n >= 2) out.emplace_back(ids.begin(), ids.begin() + std::ptrdiff_t(n));
  }
  return out;
}

}  // namespace detail

/// Adapt: SFT on the task set (answers trained), validation conversations, exact-match items
/// and general held-out text for the regression delta.
inline adapt_data sft_data(const text::any_tokenizer& tok, std::uint64_t seed = 1,
                           const data_sizes& n = {}) {
  adapt_data d;
  d.train = detail::encode_all(sft_records(tasks(seed, n.sft_train, split::train, n.task_kinds)),
                               tok, n.max_length);
  if (n.replay > 0) {
    // Spread the rehearsal documents evenly through the task examples (the trainer's batches
    // are contiguous runs of the shuffled order, so each sees a share of both).
    const auto docs = detail::text_examples(corpus(seed, n.replay), tok, n.max_length);
    std::vector<data::sft_example> mixed;
    mixed.reserve(d.train.size() + docs.size());
    const std::size_t total = d.train.size() + docs.size();
    std::size_t a = 0, b = 0;
    for (std::size_t i = 0; i < total; ++i)
      if (b < docs.size() && (a >= d.train.size() || (b + 1) * total <= (i + 1) * docs.size()))
        mixed.push_back(docs[b++]);
      else
        mixed.push_back(std::move(d.train[a++]));
    d.train = std::move(mixed);
  }
  d.val = detail::encode_all(sft_records(tasks(seed + 1, n.sft_val, split::eval, n.task_kinds)),
                             tok, n.max_length);
  d.task = task_items(tok, tasks(seed + 2, n.task_eval, split::eval, n.task_kinds));
  d.general = detail::text_examples(heldout_text(seed, n.general), tok, n.max_length);
  d.eos = stop_tokens(tok);
  d.pad_id = pad_id(tok);
  d.name = "built-in SFT tasks (seed " + std::to_string(seed) + ")";
  return d;
}

/// Compress: calibration documents, held-out documents for perplexity, exact-match items.
inline compress_data compression_data(const text::any_tokenizer& tok, std::uint64_t seed = 1,
                                      const data_sizes& n = {}) {
  compress_data d;
  d.calibration = detail::token_rows(calibration_text(seed, n.calibration), tok, n.max_length);
  d.evaluation = detail::token_rows(heldout_text(seed + 3, n.evaluation), tok, n.max_length);
  d.task = task_items(tok, tasks(seed + 2, n.task_eval, split::eval, n.task_kinds));
  d.eos = stop_tokens(tok);
  d.name = "built-in calibration and held-out text (seed " + std::to_string(seed) + ")";
  return d;
}

/// Align: helpful/concise pairs plus safety pairs (refuse harmful requests, answer their
/// benign look-alikes) under request framings 0–2, held-out pairs, the safety evaluation set
/// (framings 3–4 of the harmful and benign requests, and every jailbreak variant of those)
/// and the exact-match items for the helpfulness delta.
/// `tok` is shared because the data keeps it for encoding prompts and decoding answers.
inline align_data alignment_data(std::shared_ptr<const text::any_tokenizer> shared,
                                 std::uint64_t seed = 1, const data_sizes& n = {}) {
  require(shared != nullptr, {.what = "no tokenizer", .place = "alignment_data"});
  const auto& tok = *shared;
  align_data d;
  const auto render = chat_renderer();
  const data::preference_options po{.max_length = n.max_length};
  data::data_report report;
  // Safety prompts: the training pairs use the framings n.safety_train_frames of every
  // template, the held-out pairs and the evaluation set framings 3 and 4, so no evaluated
  // prompt was trained on.
  const std::vector<std::size_t> eval_frames{3, 4};
  for (auto f : n.safety_train_frames)
    require(f != 3 && f != 4, {.what = "a safety training framing is an evaluation framing",
                               .place = "data_sizes.safety_train_frames",
                               .expected = "framings other than 3 and 4",
                               .found = std::to_string(f)});
  const eval::safety_pair_texts texts{
      .refusal = n.refusal, .helpful = n.helpful, .benign_rejections = eval::refusal_phrasings()};
  auto train_records = preference_pairs(seed, n.preference);
  {
    // Harmful and benign items alternate, in a seeded order, so every batch sees both.
    const auto harmful = eval::framed_prompts(n.safety_train_frames, true);
    const auto benign = eval::framed_prompts(n.safety_train_frames, false);
    std::vector<eval::safety_item> items;
    for (std::size_t i = 0; i < harmful.size(); ++i)
      items.push_back(harmful[i]), items.push_back(benign[i]);
    philox g(seed, 41);
    for (std::size_t i = items.size() / 2; i > 1; --i) {  // shuffle the (harmful, benign) couples
      const std::size_t j = g.below(std::uint32_t(i));
      std::swap(items[2 * (i - 1)], items[2 * j]);
      std::swap(items[2 * (i - 1) + 1], items[2 * j + 1]);
    }
    const auto pairs = eval::safety_preference_pairs(items, texts);
    // Interleave so every batch sees both kinds of pairs.
    std::vector<data::preference_record> mixed;
    std::size_t a = 0, b = 0;
    while (a < train_records.size() || b < pairs.size()) {
      if (a < train_records.size()) mixed.push_back(train_records[a++]);
      for (std::size_t k = 0; k < n.safety_repeat && b < pairs.size(); ++k)
        mixed.push_back(pairs[b++]);
    }
    train_records = std::move(mixed);
  }
  d.train = data::encode_preferences(train_records, tok, render, po, report);
  auto val_records = preference_pairs(seed + 100, n.preference_val);
  const auto harmful = eval::framed_prompts(eval_frames, true);
  const auto benign = eval::framed_prompts(eval_frames, false);
  {
    auto held = harmful;
    held.insert(held.end(), benign.begin(), benign.end());
    const auto pairs = eval::safety_preference_pairs(held, texts);
    val_records.insert(val_records.end(), pairs.begin(), pairs.end());
  }
  d.val = data::encode_preferences(val_records, tok, render, po, report);
  const auto jail = eval::jailbreak_variants(harmful);
  d.safety = harmful;
  d.safety.insert(d.safety.end(), benign.begin(), benign.end());
  d.safety.insert(d.safety.end(), jail.begin(), jail.end());
  d.task = task_items(tok, tasks(seed + 2, n.task_eval, split::eval, n.task_kinds));
  d.eos = stop_tokens(tok);
  d.pad_id = pad_id(tok);
  d.encode_prompt = [shared](const std::string& p) {
    const auto ids = shared->encode(render_chat({{"user", p}}, true), false);
    return std::vector<std::int64_t>(ids.begin(), ids.end());
  };
  d.decode = [shared](std::span<const std::int64_t> ids) {
    std::vector<std::int32_t> v(ids.begin(), ids.end());
    return shared->decode(v, true);
  };
  d.name = "built-in preference pairs and safety sets (seed " + std::to_string(seed) + ")";
  return d;
}

}  // namespace forge::builtin
