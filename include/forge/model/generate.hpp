#pragma once
// Text generation with a KV cache, as transformers' generate() does it for decoder-only
// models: prompts of different lengths are left-padded into one batch (attention mask 0 on
// the padding, position ids = cumsum(mask) − 1), one prefill call fills the cache, then one
// token per row per decode call. Logits are processed in transformers' order:
// repetition penalty (Keskar et al. 2019: a seen token's logit is divided by the penalty if
// positive, multiplied if negative), then, when sampling, temperature, top-k, top-p
// (nucleus, Holtzman et al. 2020: keep the smallest set of most likely tokens whose mass
// exceeds top_p) and a draw from the softmax. Greedy picks the first maximal logit.
// Sampling draws from a Philox stream per (seed, row): same seed, same tokens.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/model/forward.hpp"

namespace forge::model {

/// Decoding options; defaults follow transformers' GenerationConfig.
struct generation_options {
  std::int64_t max_new_tokens = 32;
  bool do_sample = false;           ///< false: greedy decoding
  double temperature = 1.0;         ///< > 0; only when sampling
  std::int64_t top_k = 50;          ///< 0 = off; only when sampling
  double top_p = 1.0;               ///< in (0, 1]; only when sampling
  double repetition_penalty = 1.0;  ///< > 0; 1 = off
  std::uint64_t seed = 0;
  /// Stop tokens; empty = the model's generation config eos ids.
  std::vector<std::int64_t> eos_token_ids{};
  /// Stop when the decoded new text of a row contains one of these (needs `decode`).
  std::vector<std::string> stop_strings{};
  std::function<std::string(std::span<const std::int64_t>)> decode{};
};

/// Why a row stopped.
enum class finish_reason { length, eos, stop_string };

/// The new tokens of every prompt (stop token or the token completing a stop string
/// included) and why each row stopped.
struct generation_result {
  std::vector<std::vector<std::int64_t>> tokens;
  std::vector<finish_reason> reasons;
};

/// Applies the logits processors to one row of logits (in place) and picks a token.
inline std::int64_t pick_token(std::vector<double>& z, const std::vector<std::int64_t>& seen,
                               const generation_options& o, philox& rng) {
  const std::int64_t V = std::int64_t(z.size());
  if (o.repetition_penalty != 1.0)
    for (auto t : std::set<std::int64_t>(seen.begin(), seen.end()))
      z[t] = z[t] < 0 ? z[t] * o.repetition_penalty : z[t] / o.repetition_penalty;
  if (!o.do_sample) return std::int64_t(std::max_element(z.begin(), z.end()) - z.begin());
  for (auto& x : z) x /= o.temperature;
  const double neg = -std::numeric_limits<double>::infinity();
  if (o.top_k > 0 && o.top_k < V) {
    std::vector<double> s = z;
    std::nth_element(s.begin(), s.begin() + (o.top_k - 1), s.end(), std::greater<>());
    const double kth = s[o.top_k - 1];
    for (auto& x : z)
      if (x < kth) x = neg;  // ties with the k-th value stay, as in transformers
  }
  const double mx = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double sum = 0;
  for (std::int64_t i = 0; i < V; ++i) sum += p[i] = std::exp(z[i] - mx);
  for (auto& x : p) x /= sum;
  if (o.top_p < 1.0) {
    // Ascending order; drop tokens while the mass of what is dropped stays ≤ 1 − top_p;
    // the most likely token always stays.
    std::vector<std::int64_t> idx(static_cast<std::size_t>(V));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto b) { return p[a] < p[b]; });
    double cum = 0;
    for (std::int64_t r = 0; r + 1 < V; ++r) {
      cum += p[idx[r]];
      if (cum > 1.0 - o.top_p) break;
      p[idx[r]] = 0;
    }
    sum = std::accumulate(p.begin(), p.end(), 0.0);
    for (auto& x : p) x /= sum;
  }
  double u = rng.uniform_double(), c = 0;
  std::int64_t last = 0;
  for (std::int64_t i = 0; i < V; ++i) {
    if (p[i] <= 0) continue;
    last = i;
    c += p[i];
    if (u < c) return i;
  }
  return last;  // u within rounding of 1
}

/// Generates continuations of each prompt (token ids) with a KV cache.
template <class T, class Bk>
generation_result generate(Bk be, causal_lm<T>& m,
                           const std::vector<std::vector<std::int64_t>>& prompts,
                           const generation_options& o) {
  require(!prompts.empty(), {.what = "no prompts", .place = "generate"});
  require(o.max_new_tokens >= 0, {.what = "max_new_tokens must be >= 0",
                                  .place = "generate",
                                  .found = std::to_string(o.max_new_tokens)});
  require(
      !o.do_sample || (o.temperature > 0 && std::isfinite(o.temperature)),
      {.what = "temperature must be positive", .place = "generate", .found = str(o.temperature)});
  require(o.top_p > 0 && o.top_p <= 1,
          {.what = "top_p must be in (0, 1]", .place = "generate", .found = str(o.top_p)});
  require(o.top_k >= 0,
          {.what = "top_k must be >= 0", .place = "generate", .found = std::to_string(o.top_k)});
  require(o.repetition_penalty > 0, {.what = "repetition_penalty must be positive",
                                     .place = "generate",
                                     .found = str(o.repetition_penalty)});
  require(o.stop_strings.empty() || bool(o.decode),
          {.what = "stop strings need a decode function", .place = "generate"});
  const std::int64_t B = std::int64_t(prompts.size()), V = m.config.vocab_size;
  std::int64_t P = 0;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    require(!prompts[b].empty(), {.what = "empty prompt", .place = "prompt " + std::to_string(b)});
    P = std::max<std::int64_t>(P, std::int64_t(prompts[b].size()));
  }
  const auto& eos = o.eos_token_ids.empty() ? m.generation.eos_token_ids : o.eos_token_ids;
  // Padding is masked out, so its id only has to be a valid token.
  std::int64_t pad = m.generation.pad_token_id.value_or(eos.empty() ? 0 : eos[0]);
  if (pad < 0 || pad >= V) pad = 0;

  // Left-padded prefill batch.
  std::vector<std::int64_t> ids(std::size_t(B * P), pad), mask(std::size_t(B * P), 0),
      pos(std::size_t(B * P), 1), next_pos(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = std::int64_t(prompts[b].size()), off = P - n;
    for (std::int64_t i = 0; i < n; ++i) {
      ids[b * P + off + i] = prompts[b][i];
      mask[b * P + off + i] = 1;
      pos[b * P + off + i] = i;
    }
    next_pos[b] = n;
  }
  kv_cache<T> cache(m.config, B, P + std::max<std::int64_t>(o.max_new_tokens, 1));
  workspace<T> ws;
  generation_result res;
  res.tokens.assign(std::size_t(B), {});
  res.reasons.assign(std::size_t(B), finish_reason::length);
  std::vector<bool> done(std::size_t(B), o.max_new_tokens == 0);
  std::vector<philox> rngs;
  for (std::int64_t b = 0; b < B; ++b) rngs.emplace_back(o.seed, std::uint64_t(b));
  std::vector<double> z(static_cast<std::size_t>(V));

  forward(be, m, ws,
          {.batch = B, .seq = P, .input_ids = ids, .attention_mask = mask, .position_ids = pos},
          {.logits = logits_for::last}, &cache);
  for (std::int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto logits = ws.logits();
    std::vector<std::int64_t> step_ids(std::size_t(B), pad), step_pos(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      step_pos[b] = next_pos[b]++;
      if (done[b]) continue;
      for (std::int64_t v = 0; v < V; ++v) z[v] = double(logits[b * V + v]);
      std::vector<std::int64_t> seen = prompts[b];
      seen.insert(seen.end(), res.tokens[b].begin(), res.tokens[b].end());
      const std::int64_t t = pick_token(z, seen, o, rngs[b]);
      res.tokens[b].push_back(t);
      step_ids[b] = t;
      if (std::find(eos.begin(), eos.end(), t) != eos.end()) {
        done[b] = true, res.reasons[b] = finish_reason::eos;
      } else if (!o.stop_strings.empty()) {
        const std::string text = o.decode(res.tokens[b]);
        for (const auto& s : o.stop_strings)
          if (!s.empty() && text.find(s) != std::string::npos) {
            done[b] = true, res.reasons[b] = finish_reason::stop_string;
            break;
          }
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) ||
        step + 1 == o.max_new_tokens)
      break;
    forward(be, m, ws, {.batch = B, .seq = 1, .input_ids = step_ids, .position_ids = step_pos},
            {.logits = logits_for::last}, &cache);
  }
  return res;
}

}  // namespace forge::model
