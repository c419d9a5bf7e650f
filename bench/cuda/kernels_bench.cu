// Timings of the other CUDA kernels on one GPU, each beside the ceiling that bounds it
// (memory bandwidth from a device-to-device copy in the same run, or the cuBLAS rate):
// NF4 and int8 decode matmuls, cuBLAS bf16 GEMM, RMSNorm, cross-entropy, attention forward.
// Usage: forge_cuda_kernels_bench [results.md]

#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "forge/backend/cuda/attention.cuh"
#include "forge/backend/cuda/cross_entropy.cuh"
#include "forge/backend/cuda/gemm.cuh"
#include "forge/backend/cuda/int8.cuh"
#include "forge/backend/cuda/nf4.cuh"
#include "forge/backend/cuda/rmsnorm.cuh"

using namespace forge::cuda;
using namespace forge::cuda::bench;

int main(int argc, char** argv) {
  try {
    context ctx;
    cudaStream_t s = ctx.stream();
    const auto& p = ctx.properties();
    std::string md;
    char line[512];
    auto row = [&](const char* what, double ms, const char* rate) {
      std::snprintf(line, sizeof line, "| %s | %.4f | %s |\n", what, ms, rate);
      std::printf("%s", line);
      std::fflush(stdout);
      md += line;
    };
    std::snprintf(line, sizeof line,
                  "device: %s, %d SMs\n\n| kernel | ms | rate |\n|---|---|---|\n", p.name,
                  p.multiProcessorCount);
    md += line;
    std::printf("%s", md.c_str());
    char rate[128];

    const std::size_t copy_bytes = std::size_t(1) << 30;
    device_buffer<std::uint8_t> src(copy_bytes), dst(copy_bytes);
    fill_random_bytes<<<4096, 256, 0, s>>>(src.data(), copy_bytes, 1);
    const double copy_ms = stream_median_ms(s, 1, 10, [&](int) {
      FORGE_CUDA_CHECK(
          cudaMemcpyAsync(dst.data(), src.data(), copy_bytes, cudaMemcpyDeviceToDevice, s));
    });
    const double hbm = 2.0 * double(copy_bytes) / (copy_ms * 1e-3) / 1e9;
    std::snprintf(rate, sizeof rate, "%.0f GB/s (read + write)", hbm);
    row("device-to-device copy 1 GiB", copy_ms, rate);

    {  // NF4 and int8 decode, 11008 x 4096, batch 1, rotating weight copies past L2.
      const std::int64_t n = 11008, k = 4096;
      const int copies = 6;
      std::vector<std::uint8_t> codes(std::size_t(n * k));
      std::uint32_t st = 1;
      for (auto& c : codes) c = std::uint8_t((st = st * 1664525u + 1013904223u) >> 24);
      std::vector<float> scales(std::size_t(n * k / 64), 0.02f);
      std::vector<nf4_matrix> nf;
      std::vector<int8_matrix> i8;
      for (int i = 0; i < copies; ++i) {
        nf.push_back(nf4_upload(ctx, n, k, codes.data(), scales.data()));
        i8.push_back(int8_upload(ctx, n, k, reinterpret_cast<const std::int8_t*>(codes.data()),
                                 scales.data()));
      }
      device_buffer<__half> x(static_cast<std::size_t>(k)), y(static_cast<std::size_t>(n));
      fill_random_half<<<64, 256, 0, s>>>(x.data(), x.size(), 3);
      const double tn = graph_median_ms(s, 4 * copies, 20, [&](int i) {
        nf4_matmul(ctx, nf[std::size_t(i % copies)], 1, x.data(), k, y.data(), n);
      });
      std::snprintf(rate, sizeof rate, "%.0f GB/s of weights (%.0f%% of copy)",
                    double(nf[0].weight_bytes()) / (tn * 1e-3) / 1e9,
                    100.0 * double(nf[0].weight_bytes()) / (tn * 1e-3) / 1e9 / hbm);
      row("nf4 matmul 11008x4096 batch 1", tn, rate);
      const double ti = graph_median_ms(s, 4 * copies, 20, [&](int i) {
        int8_matmul(ctx, i8[std::size_t(i % copies)], 1, x.data(), k, y.data(), n);
      });
      std::snprintf(rate, sizeof rate, "%.0f GB/s of weights (%.0f%% of copy)",
                    double(i8[0].weight_bytes()) / (ti * 1e-3) / 1e9,
                    100.0 * double(i8[0].weight_bytes()) / (ti * 1e-3) / 1e9 / hbm);
      row("int8 matmul 11008x4096 batch 1", ti, rate);
    }
    {  // cuBLAS bf16 GEMM through forge::cuda::gemm.
      const std::int64_t m = 8192;
      device_buffer<__nv_bfloat16> a(std::size_t(m * m)), b(std::size_t(m * m)),
          c(std::size_t(m * m));
      fill_random_half<<<4096, 256, 0, s>>>(reinterpret_cast<__half*>(a.data()), a.size(), 4);
      fill_random_half<<<4096, 256, 0, s>>>(reinterpret_cast<__half*>(b.data()), b.size(), 5);
      const double t = stream_median_ms(s, 3, 5, [&](int) {
        gemm<__nv_bfloat16, __nv_bfloat16>(ctx, false, true, m, m, m, 1.0f, a.data(), m, b.data(),
                                           m, 0.0f, c.data(), m);
      });
      std::snprintf(rate, sizeof rate, "%.0f TFLOP/s", 2.0 * double(m) * m * m / (t * 1e-3) / 1e12);
      row("gemm bf16 8192x8192x8192 (A·Bᵀ)", t, rate);
    }
    {  // RMSNorm forward, 8192 x 4096 bf16.
      const std::int64_t rows = 8192, n = 4096;
      device_buffer<__nv_bfloat16> x(std::size_t(rows * n)), y(x.size()),
          w(static_cast<std::size_t>(n));
      fill_random_half<<<4096, 256, 0, s>>>(reinterpret_cast<__half*>(x.data()), x.size(), 6);
      fill_random_half<<<64, 256, 0, s>>>(reinterpret_cast<__half*>(w.data()), w.size(), 7);
      device_buffer<float> r(static_cast<std::size_t>(rows));
      const double t = graph_median_ms(s, 20, 20, [&](int) {
        rmsnorm_forward<__nv_bfloat16>(ctx, rows, n, x.data(), w.data(), 1e-6f, y.data(), r.data());
      });
      std::snprintf(rate, sizeof rate, "%.0f GB/s (read + write)",
                    2.0 * double(x.bytes()) / (t * 1e-3) / 1e9);
      row("rmsnorm forward bf16 8192x4096", t, rate);
    }
    {  // Cross-entropy with gradient, 4096 tokens x 32000 vocab, bf16.
      const std::int64_t rows = 4096, vocab = 32000;
      device_buffer<__nv_bfloat16> z(std::size_t(rows * vocab)), dz(z.size());
      fill_random_half<<<4096, 256, 0, s>>>(reinterpret_cast<__half*>(z.data()), z.size(), 8);
      std::vector<std::int64_t> y(static_cast<std::size_t>(rows));
      for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::int64_t((i * 7919) % vocab);
      device_buffer<std::int64_t> dy(y.data(), y.size());
      const double t = stream_median_ms(s, 1, 5, [&](int) {
        cross_entropy<__nv_bfloat16>(ctx, rows, vocab, z.data(), dy.data(), dz.data());
      });
      std::snprintf(rate, sizeof rate, "%.0f GB/s (logits read twice, gradient written)",
                    3.0 * double(z.bytes()) / (t * 1e-3) / 1e9);
      row("cross_entropy fwd+bwd bf16 4096x32000 (incl. host sync)", t, rate);
    }
    {  // Attention forward, causal, 1 x 2048 tokens, 32 heads / 8 kv heads, D 128, bf16.
      attention_dims a{.batch = 1,
                       .q_len = 2048,
                       .kv_len = 2048,
                       .kv_stride = 2048,
                       .heads = 32,
                       .kv_heads = 8,
                       .head_dim = 128,
                       .q_offset = 0,
                       .window = 0,
                       .scale = 0.0883883f};
      device_buffer<__nv_bfloat16> q(std::size_t(2048 * 32 * 128)), k(std::size_t(2048 * 8 * 128)),
          v(k.size()), o(q.size());
      device_buffer<float> lse(std::size_t(32 * 2048));
      for (auto* b : {&q, &k, &v})
        fill_random_half<<<1024, 256, 0, s>>>(reinterpret_cast<__half*>(b->data()), b->size(), 9);
      const double t = stream_median_ms(s, 3, 5, [&](int) {
        attention_forward<__nv_bfloat16>(ctx, a, q.data(), k.data(), v.data(), nullptr, o.data(),
                                         lse.data());
      });
      // Causal: half of the 2·2·L²·H·D multiply-adds of the full score and output products.
      std::snprintf(rate, sizeof rate, "%.1f TFLOP/s (causal half counted)",
                    2.0 * 2048.0 * 2048.0 * 32 * 128 / (t * 1e-3) / 1e12);
      row("attention forward bf16 L 2048 h 32/8 d 128", t, rate);
    }
    ctx.synchronize();
    if (argc > 1) {
      FILE* f = std::fopen(argv[1], "w");
      if (!f) throw forge::error({.what = "cannot open the results file", .file = argv[1]});
      std::fputs(md.c_str(), f);
      std::fclose(f);
    }
    return 0;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
