#pragma once
// Test support (not library code): a character-level vocabulary, a tiny Llama config and two
// generated tasks with exact answers, for training tests that run in seconds on one core.
//   generic text (the "base" pre-training):  "xkqa>xkqa"   copy a random lower/upper string
//   the task (SFT, answer only trained):     "xkqa=XKQA"   upper-case it
// The base learns to copy, so before SFT it answers the task with the lower-case string
// (exact match ≈ 0); SFT must teach the new mapping.

#include <cstdint>
#include <string>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/data/sft.hpp"
#include "forge/eval/task.hpp"
#include "forge/model/config.hpp"
#include "forge/model/init.hpp"
#include "forge/train/trainer.hpp"

namespace forge::test {

// 0 pad, 1 bos, 2 eos, then the characters below.
inline const std::string tiny_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ>=";
inline constexpr std::int32_t tiny_pad = 0, tiny_bos = 1, tiny_eos = 2;

inline std::int32_t tiny_id(char c) {
  return std::int32_t(3 + tiny_chars.find(c));
}

inline model::model_config tiny_config(std::int64_t hidden = 64) {
  model::model_config c;
  c.vocab_size = 3 + std::int64_t(tiny_chars.size());
  c.hidden_size = hidden, c.intermediate_size = 2 * hidden, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 4, c.head_dim = hidden / 4;
  c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(2, 0);  // one entry per layer: full attention
  c.eos_token_ids = {tiny_eos};
  return c;
}

inline std::string random_word(philox& g, std::size_t n, bool lower_only) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += tiny_chars[g.below(lower_only ? 26 : 52)];
  return s;
}

// bos + prompt + answer + eos; labels on the answer and eos only (or on everything).
inline data::sft_example tiny_example(const std::string& prompt, const std::string& answer,
                                      bool train_prompt) {
  data::sft_example e;
  e.id = prompt;
  e.input_ids.push_back(tiny_bos);
  for (char c : prompt) e.input_ids.push_back(tiny_id(c));
  const std::size_t answer_at = e.input_ids.size();
  for (char c : answer) e.input_ids.push_back(tiny_id(c));
  e.input_ids.push_back(tiny_eos);
  for (std::size_t i = 0; i < e.input_ids.size(); ++i)
    e.labels.push_back(train_prompt || i >= answer_at ? e.input_ids[i] : data::ignore_index);
  if (!train_prompt) e.labels[0] = data::ignore_index;
  return e;
}

inline std::string upper(std::string s) {
  for (auto& c : s) c = char(c - 'a' + 'A');
  return s;
}

/// Copy task "w>w" over mixed-case words: the generic pre-training text (all tokens trained).
inline std::vector<data::sft_example> generic_text(std::size_t n, std::uint64_t seed) {
  philox g(seed, 1);
  std::vector<data::sft_example> out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto w = random_word(g, 4, false);
    out.push_back(tiny_example(w + ">", w, true));
  }
  return out;
}

/// Upper-casing task "w=" → "W" over lower-case words; answers only are trained. Words
/// drawn from stream `stream` (train and held-out sets use different streams).
inline std::vector<data::sft_example> upper_task(std::size_t n, std::uint64_t seed,
                                                 std::uint64_t stream) {
  philox g(seed, stream);
  std::vector<data::sft_example> out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto w = random_word(g, 4, true);
    out.push_back(tiny_example(w + "=", upper(w), false));
  }
  return out;
}

/// The held-out task items (prompt = bos + "w=", answer = "W").
inline std::vector<eval::task_item> upper_items(std::size_t n, std::uint64_t seed,
                                                std::uint64_t stream) {
  std::vector<eval::task_item> out;
  for (auto& e : upper_task(n, seed, stream)) {
    eval::task_item it;
    for (std::size_t i = 0; i < e.input_ids.size(); ++i) {
      if (e.labels[i] == data::ignore_index)
        it.prompt.push_back(e.input_ids[i]);
      else if (e.input_ids[i] != tiny_eos)
        it.answer.push_back(e.input_ids[i]);
    }
    out.push_back(std::move(it));
  }
  return out;
}

/// Held-out copy items (prompt = bos + "w>", answer = "w") of the generic text.
inline std::vector<eval::task_item> copy_items(std::size_t n, std::uint64_t seed) {
  std::vector<eval::task_item> out;
  for (auto& e : generic_text(n, seed)) {
    eval::task_item it;
    const auto sep = std::size_t(1 + 4 + 1);  // bos, four characters, '>'
    it.prompt.assign(e.input_ids.begin(), e.input_ids.begin() + sep);
    it.answer.assign(e.input_ids.begin() + sep, e.input_ids.end() - 1);
    out.push_back(std::move(it));
  }
  return out;
}

/// The "base": a tiny random Llama pre-trained (full fine-tuning, 300 steps) on the copy text,
/// then frozen. Single-threaded so every test sees the same weights.
inline model::causal_lm<float> pretrained_tiny_base() {
  auto m = model::random_model<float>(tiny_config(), {.seed = 5});
  const auto text = generic_text(4000, 5);
  train::train_sft(backend::simd<>{}, m, train::model_parameters(m), nullptr, text, {},
                   {.max_steps = 300,
                    .batch_size = 16,
                    .optim = {.lr = 3e-3, .weight_decay = 0},
                    .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 20},
                    .seed = 5});
  m.set_trainable(false);
  m.enable_grads();
  return m;
}

}  // namespace forge::test
