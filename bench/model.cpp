// Throughput of the model core and the machine limits it is judged against:
//   eigen_sgemm      the machine's Eigen SGEMM rate at the shapes a training step uses
//   memory_bandwidth streaming read rate (bytes/s), the bound for f32 decoding
//   prefill          forward over a prompt, logits for the last position (tokens/s)
//   decode           one token per step with the KV cache (tokens/s)
//   train_step       forward + causal-LM loss + backward (tokens/s, GEMM FLOP/s)
//   train_gemms      only the GEMMs of that training step, same shapes and order
// Every benchmark reports peak_rss_MB, the process's peak resident set so far (run one
// benchmark per process with --benchmark_filter to attribute it).
// Models: "100m" (a ~100M-parameter Llama config, random weights) and "fixture" (the
// tiny Llama checkpoint of the test fixtures; FORGE_FIXTURES points at its root).

#include <sys/resource.h>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <numeric>

#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;
using be_t = backend::simd<>;

namespace {

model_config config_100m() {
  model_config c;
  c.vocab_size = 32000, c.hidden_size = 768, c.intermediate_size = 2048;
  c.num_hidden_layers = 12, c.num_attention_heads = 12, c.num_key_value_heads = 4;
  c.head_dim = 64, c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.sliding_window.assign(12, 0);
  return c;
}

causal_lm<float>& model(int which) {
  static causal_lm<float> m100 = random_model<float>(config_100m(), {.seed = 1});
  static causal_lm<float> fixture = [] {
    const char* e = std::getenv("FORGE_FIXTURES");
    const std::filesystem::path root = e && *e ? e : "../shared/fixtures";
    return io::load_hf_checkpoint<float>(root / "hf" / "llama_a" / "model");
  }();
  return which == 0 ? m100 : fixture;
}

void peak_rss(benchmark::State& st) {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  st.counters["peak_rss_MB"] = double(u.ru_maxrss) / 1024.0;
}

std::vector<std::int64_t> tokens(std::int64_t n, std::int64_t vocab) {
  std::vector<std::int64_t> t(static_cast<std::size_t>(n));
  philox r(3, 3);
  for (auto& x : t) x = std::int64_t(r.next_u64() % std::uint64_t(vocab));
  return t;
}

// GEMM FLOPs of one forward token (projections + head), attention scores excluded.
double gemm_flops_per_token(const model_config& c) {
  const double H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const double Q = c.num_attention_heads * D, K = c.num_key_value_heads * D;
  return 2.0 * (c.num_hidden_layers * (H * Q + 2 * H * K + Q * H + 3 * H * I) + H * c.vocab_size);
}

void eigen_sgemm(benchmark::State& st) {
  const std::int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  std::vector<float> a(M * K, 0.5f), b(N * K, 0.25f), c(M * N);
  for (auto _ : st) {
    backend::gemm_nt(be_t{}, M, N, K, a.data(), b.data(), c.data(), false);
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["FLOP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
  peak_rss(st);
}
BENCHMARK(eigen_sgemm)
    ->Args({256, 768, 768})
    ->Args({256, 2048, 768})
    ->Args({256, 768, 2048})
    ->Args({256, 32000, 768})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void memory_bandwidth(benchmark::State& st) {
  const std::size_t n = std::size_t(256) << 20 >> 2;  // 256 MiB of floats
  std::vector<float> v(n, 1.0f);
  using batch = xsimd::batch<float>;
  constexpr std::size_t W = batch::size;
  for (auto _ : st) {
    float s = 0;
    // Four independent vector accumulators per thread, so the loop waits on memory and not
    // on the latency of a chain of additions.
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (std::size_t c = 0; c < n; c += 1 << 16) {
      batch a0(0.f), a1(0.f), a2(0.f), a3(0.f);
      const float* p = v.data() + c;
      for (std::size_t i = 0; i < (std::size_t(1) << 16); i += 4 * W) {
        a0 += batch::load_unaligned(p + i);
        a1 += batch::load_unaligned(p + i + W);
        a2 += batch::load_unaligned(p + i + 2 * W);
        a3 += batch::load_unaligned(p + i + 3 * W);
      }
      s += xsimd::hadd((a0 + a1) + (a2 + a3));
    }
    benchmark::DoNotOptimize(s);
  }
  st.counters["bytes/s"] =
      benchmark::Counter(double(n * 4), benchmark::Counter::kIsIterationInvariantRate);
  peak_rss(st);
}
BENCHMARK(memory_bandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

void prefill(benchmark::State& st) {
  auto& m = model(int(st.range(0)));
  const std::int64_t S = st.range(1);
  const auto ids = tokens(S, m.config.vocab_size);
  workspace<float> ws;
  for (auto _ : st) {
    auto z = forward(be_t{}, m, ws, {.batch = 1, .seq = S, .input_ids = ids},
                     {.logits = logits_for::last});
    benchmark::DoNotOptimize(z.data());
  }
  st.counters["tokens/s"] =
      benchmark::Counter(double(S), benchmark::Counter::kIsIterationInvariantRate);
  peak_rss(st);
}
BENCHMARK(prefill)->Args({0, 128})->Args({1, 18})->Unit(benchmark::kMillisecond)->UseRealTime();

void decode(benchmark::State& st) {
  auto& m = model(int(st.range(0)));
  const std::int64_t P = 16, cap = 256;
  const auto ids = tokens(cap, m.config.vocab_size);
  kv_cache<float> cache(m.config, 1, cap);
  workspace<float> ws;
  forward(be_t{}, m, ws, {.batch = 1, .seq = P, .input_ids = std::span(ids).first(P)},
          {.logits = logits_for::last}, &cache);
  for (auto _ : st) {
    if (cache.length == cap) cache.truncate(P);
    auto z = forward(be_t{}, m, ws,
                     {.batch = 1, .seq = 1, .input_ids = std::span(ids).subspan(cache.length, 1)},
                     {.logits = logits_for::last}, &cache);
    benchmark::DoNotOptimize(z.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  double bytes = 0;
  m.for_each_parameter([&](const parameter<float>& p) { bytes += 4.0 * double(p.numel()); });
  st.counters["model_MB"] = bytes / 1e6;
  peak_rss(st);
}
BENCHMARK(decode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void train_step(benchmark::State& st) {
  auto& m = model(int(st.range(0)));
  const std::int64_t B = st.range(1), S = st.range(2);
  const bool recompute = st.range(3) != 0;
  const auto ids = tokens(B * S, m.config.vocab_size);
  m.enable_grads();
  workspace<float> ws;
  for (auto _ : st) {
    forward(be_t{}, m, ws, {.batch = B, .seq = S, .input_ids = ids},
            {.for_backward = true, .recompute = recompute});
    benchmark::DoNotOptimize(causal_lm_loss(be_t{}, ws, ids));
    backward(be_t{}, m, ws);
  }
  const double tok = double(B * S);
  st.counters["tokens/s"] = benchmark::Counter(tok, benchmark::Counter::kIsIterationInvariantRate);
  // forward + backward GEMMs = 3 × forward (recomputation adds one more forward).
  st.counters["GEMM_FLOP/s"] =
      benchmark::Counter((recompute ? 4.0 : 3.0) * tok * gemm_flops_per_token(m.config),
                         benchmark::Counter::kIsIterationInvariantRate);
  st.counters["arena_MB"] = double(ws.arena_size()) * 4 / 1e6;
  peak_rss(st);
}
BENCHMARK(train_step)
    ->Args({0, 4, 64, 0})
    ->Args({0, 4, 64, 1})
    ->Args({1, 2, 18, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Exactly the GEMM calls of train_step (no recomputation), on scratch buffers.
void train_gemms(benchmark::State& st) {
  const auto c = model(int(st.range(0))).config;
  const std::int64_t N = st.range(1) * st.range(2);
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const std::int64_t Q = c.num_attention_heads * c.head_dim, K = c.num_key_value_heads * c.head_dim;
  struct lin {
    std::int64_t out, in;
  };
  const std::vector<lin> layer = {{Q, H}, {K, H}, {K, H}, {H, Q}, {I, H}, {I, H}, {H, I}};
  const std::int64_t big = std::max({H, I, Q, V});
  std::vector<float> x(N * big, 0.1f), y(N * big), w(big * std::max(H, I), 0.01f),
      gw(big * std::max(H, I));
  auto run = [&](std::int64_t out, std::int64_t in) {
    backend::gemm_nt(be_t{}, N, out, in, x.data(), w.data(), y.data(), false);
  };
  auto back = [&](std::int64_t out, std::int64_t in) {
    backend::gemm_nn(be_t{}, N, out, in, y.data(), w.data(), x.data(), false);
    backend::gemm_tn(be_t{}, N, out, in, y.data(), x.data(), gw.data(), true);
  };
  for (auto _ : st) {
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (auto [o, i] : layer) run(o, i);
    run(V, H);
    back(V, H);
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (auto [o, i] : layer) back(o, i);
    benchmark::DoNotOptimize(gw.data());
  }
  st.counters["GEMM_FLOP/s"] = benchmark::Counter(3.0 * double(N) * gemm_flops_per_token(c),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  peak_rss(st);
}
BENCHMARK(train_gemms)
    ->Args({0, 4, 64})
    ->Args({1, 2, 18})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
