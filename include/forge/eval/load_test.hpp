#pragma once
// Load test of a model as it will be served: N generation requests, one after another, each
// a seeded random prompt decoded to a fixed number of new tokens (no early stop), timed end
// to end (prefill + decode). Reports latency percentiles and throughput for the Deploy gate
// (load_p50_ms, load_p95_ms, load_tokens_per_s).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/core/rng.hpp"
#include "forge/model/generate.hpp"

namespace forge::eval {

/// What the load test sends.
struct load_test_options {
  std::int64_t requests = 16;        ///< number of requests, N >= 1
  std::int64_t prompt_tokens = 16;   ///< prompt length of every request
  std::int64_t max_new_tokens = 16;  ///< tokens generated per request (every one of them)
  std::uint64_t seed = 0;            ///< keys the prompts (Philox stream 0)
  std::int64_t warmup = 1;           ///< untimed requests first (caches, page faults)
};

/// What the load test measured.
struct load_test_result {
  std::vector<double> latencies_ms{};  ///< per timed request, in order sent
  double p50_ms = 0;                   ///< median latency, milliseconds
  double p95_ms = 0;                   ///< 95th percentile latency, milliseconds
  double mean_ms = 0;                  ///< mean latency, milliseconds
  std::int64_t generated_tokens = 0;   ///< new tokens over all timed requests
  double tokens_per_s = 0;             ///< generated_tokens / total timed seconds
};

/// The q-quantile (0..1) of `v` by linear interpolation between closest ranks (numpy's
/// default "linear" method, Hyndman & Fan 1996 definition 7). forge::error when empty.
inline double percentile(std::vector<double> v, double q) {
  require(!v.empty(), {.what = "percentile of no values", .place = "load test"});
  std::sort(v.begin(), v.end());
  const double h = q * double(v.size() - 1);
  const auto lo = std::size_t(std::floor(h));
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - double(lo)) * (v[hi] - v[lo]);
}

/// The seeded prompts a load test sends: `requests` rows of `prompt_tokens` ids drawn
/// uniformly from [0, vocab).
inline std::vector<std::vector<std::int64_t>> load_test_prompts(const load_test_options& o,
                                                                std::int64_t vocab) {
  philox g(o.seed, 0);
  std::vector<std::vector<std::int64_t>> p(std::size_t(o.requests));
  for (auto& row : p) {
    row.resize(std::size_t(o.prompt_tokens));
    for (auto& t : row) t = std::int64_t(g.below(std::uint32_t(vocab)));
  }
  return p;
}

/// Runs the load test of `m` on backend `be`: greedy decoding, stop tokens disabled so that
/// every request generates exactly max_new_tokens. forge::error for non-positive sizes.
template <class T, class Bk>
load_test_result load_test(Bk be, model::causal_lm<T>& m, const load_test_options& o) {
  require(o.requests >= 1 && o.prompt_tokens >= 1 && o.max_new_tokens >= 1 && o.warmup >= 0,
          {.what = "load test sizes must be positive",
           .place = "load_test_options",
           .expected = "requests, prompt_tokens, max_new_tokens >= 1",
           .found = std::to_string(o.requests) + ", " + std::to_string(o.prompt_tokens) + ", " +
                    std::to_string(o.max_new_tokens)});
  const auto prompts = load_test_prompts(o, m.config.vocab_size);
  model::generation_options g;
  g.max_new_tokens = o.max_new_tokens;
  g.eos_token_ids = {-1};  // no id matches: every request runs to max_new_tokens
  for (std::int64_t w = 0; w < o.warmup; ++w)
    (void)model::generate(be, m, {prompts[std::size_t(w) % prompts.size()]}, g);
  load_test_result r;
  double total_s = 0;
  for (const auto& p : prompts) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = model::generate(be, m, {p}, g);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    total_s += s;
    r.latencies_ms.push_back(s * 1e3);
    r.generated_tokens += std::int64_t(out.tokens.at(0).size());
  }
  r.p50_ms = percentile(r.latencies_ms, 0.50);
  r.p95_ms = percentile(r.latencies_ms, 0.95);
  r.mean_ms = total_s * 1e3 / double(r.latencies_ms.size());
  r.tokens_per_s = total_s > 0 ? double(r.generated_tokens) / total_s : 0;
  return r;
}

}  // namespace forge::eval
