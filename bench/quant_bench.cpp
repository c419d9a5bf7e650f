// Benchmarks of the quantization layer. Run (2 threads, the machine's cores):
//   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DFORGE_BUILD_BENCH=ON
//   cmake --build build-bench --target bench_quant
//   OMP_NUM_THREADS=2 build-bench/bench/bench_quant --benchmark_repetitions=3
//
// Memory: the "dram" matvec benchmarks cycle through copies of the weights totalling more than
// 1 GiB, so each call streams its matrix from memory; the "cache" ones reuse one matrix. The
// bandwidth figures come from a STREAM-style triad and a read-only sweep over 1.1 GiB in the
// same run. Counter "GBps" counts weight bytes (codes + constants) per second.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "forge/backend/qmatmul.hpp"
#include "forge/backend/qmatmul_int4_panels.hpp"
#include "forge/backend/qmatmul_int8_panels.hpp"
#include "forge/backend/qmatmul_nf4_panels.hpp"
#include "forge/backend/qmatmul_q4_k_panels.hpp"
#include "forge/backend/qmatmul_q8.hpp"
#include "forge/core/parallel.hpp"
#include "forge/core/rng.hpp"
#include "forge/quant/awq.hpp"
#include "forge/quant/gptq.hpp"
#include "forge/quant/k_quants.hpp"
#include "forge/quant/rtn.hpp"

using namespace forge;
using namespace forge::quant;

namespace {

constexpr std::size_t dram_bytes = std::size_t(1100) << 20;  // > 1 GiB of weights per run

std::vector<float> randn(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  parallel_chunks(static_cast<std::ptrdiff_t>(n), num_threads(),
                  [&](int p, std::ptrdiff_t lo, std::ptrdiff_t hi) {
                    philox g(seed, static_cast<std::uint64_t>(p));
                    for (auto i = lo; i < hi; ++i)
                      v[static_cast<std::size_t>(i)] = scale * g.normal();
                  });
  return v;
}

// ---- memory bandwidth -------------------------------------------------------------------
void BM_stream_triad(benchmark::State& st) {
  const std::size_t n = dram_bytes / 3 / sizeof(float);
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  for (auto _ : st) {
    parallel_for(0, static_cast<std::ptrdiff_t>(n / 4096), [&](std::ptrdiff_t blk) {
      const std::size_t lo = static_cast<std::size_t>(blk) * 4096;
      for (std::size_t i = lo; i < lo + 4096; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    benchmark::DoNotOptimize(a.data());
  }
  // STREAM counts 3 arrays (2 read, 1 written).
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(3 * n * sizeof(float)) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_stream_triad)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_read_sweep(benchmark::State& st) {
  const std::size_t n = dram_bytes / sizeof(float);
  std::vector<float> a(n, 1.0f);
  for (auto _ : st) {
    std::vector<float> part(static_cast<std::size_t>(num_threads()) * 16, 0.0f);
    parallel_chunks(static_cast<std::ptrdiff_t>(n / 16), num_threads(),
                    [&](int p, std::ptrdiff_t lo, std::ptrdiff_t hi) {
                      using batch = xsimd::batch<float>;
                      batch s(0.0f), t(0.0f);
                      for (auto i = lo; i < hi; i += 2) {
                        s += batch::load_unaligned(a.data() + i * 16);
                        if (i + 1 < hi) t += batch::load_unaligned(a.data() + (i + 1) * 16);
                      }
                      part[static_cast<std::size_t>(p) * 16] = xsimd::hadd(s + t);
                    });
    benchmark::DoNotOptimize(part.data());
  }
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(n * sizeof(float)) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_read_sweep)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- decode: quantized matvec ---------------------------------------------------------------
template <class F>
const qtensor<F>& quantized(std::int64_t rows, std::int64_t cols) {
  // Quantized once per shape for all repetitions (Q4_K's fit takes seconds on big matrices).
  static std::map<std::pair<std::int64_t, std::int64_t>, qtensor<F>> cache;
  auto it = cache.find({rows, cols});
  if (it == cache.end())
    it = cache
             .emplace(
                 std::pair{rows, cols},
                 F::quantize(randn(static_cast<std::size_t>(rows * cols), 1, 0.02f), rows, cols))
             .first;
  return it->second;
}

template <class F>
std::vector<qtensor<F>> copies(std::int64_t rows, std::int64_t cols, bool dram) {
  const auto& t = quantized<F>(rows, cols);
  const std::size_t count = dram ? dram_bytes / t.bytes() + 1 : 1;
  return std::vector<qtensor<F>>(count, t);  // distinct buffers holding the same values
}

template <class F>
void BM_qmatvec(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const bool dram = st.range(2) != 0;
  auto ws = copies<F>(rows, cols, dram);
  auto x = randn(static_cast<std::size_t>(cols), 2);
  std::vector<float> y(static_cast<std::size_t>(rows));
  std::size_t i = 0;
  for (auto _ : st) {
    backend::qmatvec(backend::simd<xsimd::avx512bw>{}, x, ws[i], y);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % ws.size();
  }
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(ws[0].bytes()) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.counters["bits_per_w"] =
      8.0 * static_cast<double>(ws[0].bytes()) / static_cast<double>(rows * cols);
  st.SetLabel(std::string(F::name) + (dram ? " dram" : " cache"));
}

// int4 weights with activations quantized to int8 per block of 32 (VNNI dot products).
void BM_qmatvec_q8_int4(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const bool dram = st.range(2) != 0;
  auto ws = copies<int4_g128>(rows, cols, dram);
  auto x = randn(static_cast<std::size_t>(cols), 2);
  std::vector<float> y(static_cast<std::size_t>(rows));
  std::size_t i = 0;
  for (auto _ : st) {
    backend::qmatmul_q8(backend::simd<xsimd::avx512bw>{}, x, 1, ws[i], y);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % ws.size();
  }
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(ws[0].bytes()) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.SetLabel(dram ? "int4_g128 x q8 dram" : "int4_g128 x q8 cache");
}

void BM_eigen_matvec_f32(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const bool dram = st.range(2) != 0;
  const std::size_t bytes = static_cast<std::size_t>(rows * cols) * 4;
  const std::size_t count = dram ? dram_bytes / bytes + 1 : 1;
  auto w = randn(static_cast<std::size_t>(rows * cols), 1, 0.02f);
  std::vector<std::vector<float>> ws(count, w);
  auto x = randn(static_cast<std::size_t>(cols), 2);
  Eigen::VectorXf y(rows);
  Eigen::Map<const Eigen::VectorXf> xv(x.data(), cols);
  std::size_t i = 0;
  for (auto _ : st) {
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> W(
        ws[i].data(), rows, cols);
    y.noalias() = W * xv;
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % ws.size();
  }
  st.counters["GBps"] =
      benchmark::Counter(static_cast<double>(bytes) * static_cast<double>(st.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
  st.SetLabel(dram ? "f32 eigen dram" : "f32 eigen cache");
}

// Weights repacked once into 16-row VNNI panels (int4 groups, GGUF Q4_K, int8_channel, NF4),
// activations quantized to int8 per 32: the kernels quantized_base_q8 runs for decode and
// prefill.
template <class F>
auto pack_panels(const qtensor<F>& w) {
  if constexpr (std::is_same_v<F, q4_k>)
    return backend::pack_q4_k_panels(w);
  else if constexpr (std::is_same_v<F, int8_channel>)
    return backend::pack_int8_panels(w);
  else if constexpr (std::is_same_v<F, nf4>)
    return backend::pack_nf4_panels(w);
  else
    return backend::pack_int4_panels(w);
}
template <class F, class Arch = xsimd::avx512bw>
void BM_qmatvec_q8_panels(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const bool dram = st.range(2) != 0;
  const auto p =
      pack_panels(F::quantize(randn(static_cast<std::size_t>(rows * cols), 1, 0.02f), rows, cols));
  const std::size_t count = dram ? dram_bytes / p.bytes() + 1 : 1;
  const std::vector<std::decay_t<decltype(p)>> ws(count,
                                                  p);  // distinct buffers holding the same values
  auto x = randn(static_cast<std::size_t>(cols), 2);
  std::vector<float> y(static_cast<std::size_t>(rows));
  std::size_t i = 0;
  for (auto _ : st) {
    backend::qmatmul_q8(backend::simd<Arch>{}, x, 1, ws[i], y);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % ws.size();
  }
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(p.bytes()) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.counters["bits_per_w"] =
      8.0 * static_cast<double>(p.bytes()) / static_cast<double>(rows * cols);
  st.SetLabel(std::string(F::name) + " x q8 panels " + Arch::name() + (dram ? " dram" : " cache"));
}
// The same through the AVX2 panel kernel (vpmaddubsw + vpmaddwd instead of VNNI).
template <class F>
void BM_qmatvec_q8_panels_avx2(benchmark::State& st) {
  BM_qmatvec_q8_panels<F, xsimd::avx2>(st);
}
// GGUF Q4_K as blocks: the row-streaming VNNI decode kernel.
void BM_qmatvec_q8_q4_k(benchmark::State& st) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const bool dram = st.range(2) != 0;
  auto ws = copies<q4_k>(rows, cols, dram);
  auto x = randn(static_cast<std::size_t>(cols), 2);
  std::vector<float> y(static_cast<std::size_t>(rows));
  std::size_t i = 0;
  for (auto _ : st) {
    backend::qmatmul_q8(backend::simd<xsimd::avx512bw>{}, x, 1, ws[i], y);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % ws.size();
  }
  st.counters["GBps"] = benchmark::Counter(
      static_cast<double>(ws[0].bytes()) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.SetLabel(dram ? "q4_k x q8 blocks dram" : "q4_k x q8 blocks cache");
}

#define SHAPES(B)                     \
  BENCHMARK(B)                        \
      ->Args({4096, 4096, 1})         \
      ->Args({11008, 4096, 1})        \
      ->Args({4096, 14336, 1})        \
      ->Args({4096, 4096, 0})         \
      ->Unit(benchmark::kMicrosecond) \
      ->UseRealTime()
SHAPES(BM_qmatvec<int4_g128>);
SHAPES(BM_qmatvec<int8_channel>);
SHAPES(BM_qmatvec<nf4>);
SHAPES(BM_qmatvec_q8_int4);
SHAPES(BM_qmatvec_q8_panels<int4_g128>);
SHAPES(BM_qmatvec_q8_panels<q4_k>);
SHAPES(BM_qmatvec_q8_panels<int8_channel>);
SHAPES(BM_qmatvec_q8_panels_avx2<int4_g128>);
SHAPES(BM_qmatvec_q8_panels<nf4>);
SHAPES(BM_qmatvec_q8_q4_k);
BENCHMARK(BM_eigen_matvec_f32)
    ->Args({4096, 4096, 1})
    ->Args({4096, 4096, 0})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// ---- prefill: quantized matmul --------------------------------------------------------------
template <class F>
void BM_qmatmul(benchmark::State& st) {
  const std::int64_t m = st.range(0), rows = st.range(1), cols = st.range(2);
  const auto& w = quantized<F>(rows, cols);
  auto x = randn(static_cast<std::size_t>(m * cols), 2);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  for (auto _ : st) {
    backend::qmatmul(backend::simd<xsimd::avx512bw>{}, x, m, w, y);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOPs"] = benchmark::Counter(
      2.0 * static_cast<double>(m * rows * cols) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.SetLabel(F::name);
}
void BM_eigen_sgemm(benchmark::State& st) {
  const std::int64_t m = st.range(0), rows = st.range(1), cols = st.range(2);
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M W = Eigen::Map<M>(randn(static_cast<std::size_t>(rows * cols), 1, 0.02f).data(), rows, cols);
  M X = Eigen::Map<M>(randn(static_cast<std::size_t>(m * cols), 2).data(), m, cols);
  M Y(m, rows);
  for (auto _ : st) {
    Y.noalias() = X * W.transpose();
    benchmark::DoNotOptimize(Y.data());
  }
  st.counters["GFLOPs"] = benchmark::Counter(
      2.0 * static_cast<double>(m * rows * cols) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.SetLabel("f32 eigen");
}
template <class F>
void BM_qmatmul_q8_panels(benchmark::State& st) {
  const std::int64_t m = st.range(0), rows = st.range(1), cols = st.range(2);
  const auto p =
      pack_panels(F::quantize(randn(static_cast<std::size_t>(rows * cols), 1, 0.02f), rows, cols));
  auto x = randn(static_cast<std::size_t>(m * cols), 2);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  for (auto _ : st) {
    backend::qmatmul_q8(backend::simd<xsimd::avx512bw>{}, x, m, p, y);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOPs"] = benchmark::Counter(
      2.0 * static_cast<double>(m * rows * cols) * static_cast<double>(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  st.SetLabel(std::string(F::name) + " x q8 panels");
}
BENCHMARK(BM_qmatmul_q8_panels<int4_g128>)
    ->Args({512, 4096, 14336})
    ->Args({64, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_qmatmul_q8_panels<q4_k>)
    ->Args({512, 4096, 14336})
    ->Args({64, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_qmatmul_q8_panels<int8_channel>)
    ->Args({512, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_qmatmul_q8_panels<nf4>)
    ->Args({512, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_qmatmul<q4_k>)->Args({512, 4096, 14336})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_qmatmul<int4_g128>)
    ->Args({512, 4096, 14336})
    ->Args({64, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_qmatmul<nf4>)->Args({512, 4096, 14336})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_qmatmul<int8_channel>)
    ->Args({512, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_eigen_sgemm)
    ->Args({512, 4096, 14336})
    ->Args({64, 4096, 14336})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- quality: layer output error of each method on a synthetic layer -------------------------
// A 512 x 1024 layer, calibration X (2048 x 1024) with correlated features of unequal scale and
// a few salient channels; error = ||X Wᵀ - X Qᵀ||² / ||X Wᵀ||² on held-out activations.
struct quality_setup {
  std::int64_t rows = 512, cols = 1024, m = 2048;
  std::vector<float> w, x, xt;
  quality_setup() {
    w = randn(static_cast<std::size_t>(rows * cols), 11, 0.02f);
    auto make = [&](std::uint64_t seed) {
      auto z = randn(static_cast<std::size_t>(m * cols), seed);
      std::vector<float> v(z.size());
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < cols; ++j) {
          float s = 0.3f + static_cast<float>((j * 37) % 11) / 5.0f;
          if (j % 97 == 0) s *= 10.0f;
          float e = z[static_cast<std::size_t>(i * cols + j)];
          if (j > 0) e += 0.7f * z[static_cast<std::size_t>(i * cols + j - 1)];
          v[static_cast<std::size_t>(i * cols + j)] = s * e;
        }
      return v;
    };
    x = make(12);
    xt = make(13);
  }
  double rel_error(const std::vector<float>& q) const {
    double e = 0, n = 0;
    for (std::int64_t i = 0; i < m; i += 4)
      for (std::int64_t r = 0; r < rows; ++r) {
        double a = 0, b = 0;
        for (std::int64_t k = 0; k < cols; ++k) {
          const double xv = xt[static_cast<std::size_t>(i * cols + k)];
          a += xv * w[static_cast<std::size_t>(r * cols + k)];
          b += xv * q[static_cast<std::size_t>(r * cols + k)];
        }
        e += (a - b) * (a - b);
        n += a * a;
      }
    return e / n;
  }
};
const quality_setup& setup() {
  static const quality_setup s;
  return s;
}

template <class F>
void report(benchmark::State& st, const qtensor<F>& q, const char* method) {
  st.counters["rel_out_err"] = setup().rel_error(dequantize(q));
  st.counters["bits_per_w"] =
      8.0 * static_cast<double>(q.bytes()) / static_cast<double>(q.rows * q.cols);
  st.SetLabel(std::string(method) + " " + F::name);
}
template <class F>
void BM_quality_rtn(benchmark::State& st) {
  const auto& s = setup();
  qtensor<F> q;
  for (auto _ : st) q = quantize_rtn<F>(s.w, s.rows, s.cols);
  report(st, q, "rtn");
}
template <bool Act>
void BM_quality_gptq(benchmark::State& st) {
  const auto& s = setup();
  qtensor<int4_g128> q;
  for (auto _ : st) {
    hessian_accumulator h(s.cols);
    h.add_batch(s.x, s.m);
    q = quantize_gptq<int4_g128>(s.w, s.rows, s.cols, h.get(), {.act_order = Act});
  }
  report(st, q, Act ? "gptq act-order" : "gptq");
}
void BM_quality_awq(benchmark::State& st) {
  const auto& s = setup();
  qtensor<int4_g128> q;
  awq_result r;
  for (auto _ : st) {
    std::vector<awq_linear> l = {{s.w, s.rows}};
    r = awq_search<int4_g128>(l, s.cols, std::span<const float>(s.x).first(512 * s.cols), 512);
    q = quantize_awq<int4_g128>(s.w, s.rows, s.cols, r.scales);
  }
  st.counters["alpha"] = r.ratio;
  // The layer sees x / s: Q applied to x / s equals dequantized Q diag(1/s) applied to x.
  auto d = dequantize(q);
  for (std::int64_t row = 0; row < s.rows; ++row)
    for (std::int64_t c = 0; c < s.cols; ++c)
      d[static_cast<std::size_t>(row * s.cols + c)] /= r.scales[static_cast<std::size_t>(c)];
  st.counters["rel_out_err"] = s.rel_error(d);
  st.counters["bits_per_w"] =
      8.0 * static_cast<double>(q.bytes()) / static_cast<double>(q.rows * q.cols);
  st.SetLabel("awq int4_g128_sym");
}
BENCHMARK(BM_quality_rtn<int8_channel>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<q8_0>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<int4_g128>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<int4_g128_asym>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<int4_g32>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<q4_0>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_rtn<nf4>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_gptq<false>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_gptq<true>)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quality_awq)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
