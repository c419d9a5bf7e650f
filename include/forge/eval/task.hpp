#pragma once
// Task evaluation of a causal LM: greedy answers to held-out prompts, compared with their
// reference answers token for token (exact match), with the model's confidence in each
// answer (the product of its greedy token probabilities) for calibration.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "forge/eval/metrics.hpp"
#include "forge/model/generate.hpp"

namespace forge::eval {

/// A prompt and its exact reference answer (token ids, the answer without the eos).
struct task_item {
  std::vector<std::int64_t> prompt{};
  std::vector<std::int64_t> answer{};
};

/// Task results: exact match and calibration of the greedy answers.
struct task_scores {
  double exact_match = 0;
  double ece = 0, mce = 0;
  std::vector<std::vector<std::int64_t>> answers{};  ///< generated, eos removed
};

/// Greedy-decodes up to max(answer length) + 1 tokens per prompt (stopping at `eos`), in
/// batches of `batch`, and scores them against the references.
template <class T, class Bk>
task_scores evaluate_task(Bk be, model::causal_lm<T>& m, const std::vector<task_item>& items,
                          std::vector<std::int64_t> eos, std::size_t batch = 64) {
  task_scores s;
  std::vector<double> conf;
  std::vector<bool> ok_bits;
  std::size_t ok = 0;
  for (std::size_t i = 0; i < items.size(); i += batch) {
    std::vector<std::vector<std::int64_t>> prompts;
    std::int64_t longest = 0;
    for (std::size_t j = i; j < std::min(items.size(), i + batch); ++j) {
      prompts.push_back(items[j].prompt);
      longest = std::max<std::int64_t>(longest, std::int64_t(items[j].answer.size()));
    }
    auto g = model::generate(be, m, prompts, {.max_new_tokens = longest + 1, .eos_token_ids = eos});
    for (std::size_t r = 0; r < prompts.size(); ++r) {
      auto ans = g.tokens[r];
      while (!ans.empty() && std::find(eos.begin(), eos.end(), ans.back()) != eos.end())
        ans.pop_back();
      const bool good = ans == items[i + r].answer;
      ok += good;
      ok_bits.push_back(good);
      // Confidence: Π p(token) of the greedy answer under teacher forcing.
      std::vector<std::int64_t> seq = prompts[r];
      seq.insert(seq.end(), g.tokens[r].begin(), g.tokens[r].end());
      double logp = 0;
      if (!g.tokens[r].empty()) {
        model::workspace<T> ws;
        const auto z = model::forward(
            be, m, ws, {.batch = 1, .seq = std::int64_t(seq.size()), .input_ids = seq});
        const auto V = m.config.vocab_size;
        for (std::size_t t = prompts[r].size(); t < seq.size(); ++t) {
          const T* row = z.data() + (t - 1) * V;
          double mx = row[0], sum = 0;
          for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
          for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
          logp += double(row[seq[t]]) - mx - std::log(sum);
        }
      }
      conf.push_back(std::exp(logp));
      s.answers.push_back(std::move(ans));
    }
  }
  s.exact_match = items.empty() ? 0.0 : double(ok) / double(items.size());
  std::vector<char> okc(ok_bits.begin(), ok_bits.end());
  std::unique_ptr<bool[]> flags(new bool[okc.size()]);
  for (std::size_t i = 0; i < okc.size(); ++i) flags[i] = okc[i];
  const auto c = calibration_error(conf, std::span<const bool>(flags.get(), okc.size()));
  s.ece = c.ece, s.mce = c.mce;
  return s;
}

}  // namespace forge::eval
