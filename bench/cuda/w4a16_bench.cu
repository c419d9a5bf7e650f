// W4A16 decode matmul against cuBLAS f16 (GemmEx, f32 accumulation) on the same shapes, and
// against the device's memory bandwidth measured by a large device-to-device copy in the same
// run. Weight sets rotate so that every call reads its weights from HBM, not from L2.
// Usage: forge_cuda_w4a16_bench [results.md]

#include <cublas_v2.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "forge/backend/cuda/w4a16.cuh"

using namespace forge::cuda;
using namespace forge::cuda::bench;

namespace {

/// A copy of `w` whose code bytes are fresh random data (same shapes and layout).
w4a16_matrix random_copy(context& ctx, const w4a16_matrix& w, std::uint32_t seed) {
  w4a16_matrix c;
  c.rows = w.rows;
  c.cols = w.cols;
  c.group = w.group;
  c.codes = ctx.alloc<std::uint32_t>(w.codes.size());
  fill_random_bytes<<<1024, 256, 0, ctx.stream()>>>(reinterpret_cast<std::uint8_t*>(c.codes.data()),
                                                    c.codes.bytes(), seed);
  c.scales = ctx.alloc<__half>(w.scales.size());
  FORGE_CUDA_CHECK(cudaMemcpyAsync(c.scales.data(), w.scales.data(), w.scales.bytes(),
                                   cudaMemcpyDeviceToDevice, ctx.stream()));
  if (w.zeros.size()) {
    c.zeros = ctx.alloc<__half>(w.zeros.size());
    FORGE_CUDA_CHECK(cudaMemcpyAsync(c.zeros.data(), w.zeros.data(), w.zeros.bytes(),
                                     cudaMemcpyDeviceToDevice, ctx.stream()));
  }
  FORGE_CUDA_CHECK_LAUNCH("fill_random_bytes");
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    context ctx;
    const auto& p = ctx.properties();
    cudaStream_t s = ctx.stream();
    std::string md;
    char line[512];
    std::snprintf(line, sizeof line, "device: %s, %d SMs, L2 %d MiB, sm_%d%d\n\n", p.name,
                  p.multiProcessorCount, p.l2CacheSize >> 20, p.major, p.minor);
    md += line;

    // Memory bandwidth: a 2 GiB device-to-device copy, bytes read plus bytes written.
    const std::size_t copy_bytes = std::size_t(2) << 30;
    device_buffer<std::uint8_t> src(copy_bytes), dst(copy_bytes);
    fill_random_bytes<<<4096, 256, 0, s>>>(src.data(), copy_bytes, 7);
    FORGE_CUDA_CHECK_LAUNCH("fill_random_bytes");
    const double copy_ms = stream_median_ms(s, 1, 10, [&](int) {
      FORGE_CUDA_CHECK(
          cudaMemcpyAsync(dst.data(), src.data(), copy_bytes, cudaMemcpyDeviceToDevice, s));
    });
    const double hbm = 2.0 * double(copy_bytes) / (copy_ms * 1e-3) / 1e9;  // GB/s
    std::snprintf(line, sizeof line,
                  "HBM bandwidth (2 GiB device-to-device copy, read + write): %.0f GB/s\n\n", hbm);
    md += line;

    md +=
        "| shape (n x k) | batch | W4A16 ms | cuBLAS f16 ms | speedup | W4A16 weight bytes | "
        "W4A16 GB/s | % of copy bandwidth | W4A16 serial launch ms | W4A16 ms (no graph) |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|\n";
    std::printf("%s", md.c_str());

    std::string variants =
        "\nKernel shapes at batch 1 (graph, overlapped launch), same weight sets:\n\n"
        "| shape (n x k) | kernel | rows per warp | loads per row in flight | ms | % of copy "
        "bandwidth |\n"
        "|---|---|---|---|---|---|\n";
    cublasHandle_t h = ctx.blas();
    const long shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {14336, 4096}};
    for (const auto& sh : shapes) {
      const std::int64_t n = sh[0], k = sh[1];
      // Host matrix: codes random bytes, scales ~ 1e-2, symmetric, group 128.
      std::vector<std::uint8_t> codes(std::size_t(n * k / 2));
      std::uint32_t st = 12345;
      for (auto& c : codes) c = std::uint8_t((st = st * 1664525u + 1013904223u) >> 24);
      std::vector<float> scales(std::size_t(n * (k / 128)));
      for (auto& v : scales)
        v = __half2float(
            __float2half(0.01f + float((st = st * 1664525u + 1013904223u) >> 24) * 1e-5f));
      const w4a16_matrix base =
          w4a16_upload(ctx, n, k, 128, codes.data(), scales.data(), nullptr, nullptr);
      // Enough copies that one round of reads exceeds twice the L2 size.
      const std::size_t l2 = std::size_t(p.l2CacheSize);
      const int nw = int(std::max<std::size_t>(2, (4 * l2) / base.weight_bytes() + 1));
      std::vector<w4a16_matrix> ws;
      for (int i = 0; i < nw; ++i) ws.push_back(random_copy(ctx, base, 100u + i));
      const int nf = int(std::max<std::size_t>(2, (4 * l2) / std::size_t(n * k * 2) + 1));
      std::vector<device_buffer<__half>> wf;
      for (int i = 0; i < nf; ++i) {
        wf.push_back(ctx.alloc<__half>(std::size_t(n * k)));
        fill_random_half<<<2048, 256, 0, s>>>(wf.back().data(), std::size_t(n * k), 200u + i);
        FORGE_CUDA_CHECK_LAUNCH("fill_random_half");
      }
      {
        device_buffer<__half> x = ctx.alloc<__half>(static_cast<std::size_t>(k));
        device_buffer<__half> y = ctx.alloc<__half>(static_cast<std::size_t>(n));
        fill_random_half<<<256, 256, 0, s>>>(x.data(), x.size(), 400u);
        const int log2g = 7;
        auto variant = [&](const char* kind, int R, int U, auto launch) {
          const double t = graph_median_ms(s, 4 * nw, 20, [&](int i) {
            launch(ws[std::size_t(i % nw)], x.data(), k, y.data(), n, log2g, s, true);
          });
          std::snprintf(line, sizeof line, "| %lldx%lld | %s | %d | %d | %.4f | %.0f%% |\n",
                        (long long)n, (long long)k, kind, R, U, t,
                        100.0 * double(ws[0].weight_bytes()) / (t * 1e-3) / 1e9 / hbm);
          variants += line;
        };
        namespace d = forge::cuda::detail;
        auto persistent2 = [](const w4a16_matrix& w, const __half* xx, std::int64_t, __half* yy,
                              std::int64_t, int l, cudaStream_t st,
                              bool pdl) { d::w4a16_launch_persistent<2>(w, xx, yy, l, st, pdl); };
        auto persistent4 = [](const w4a16_matrix& w, const __half* xx, std::int64_t, __half* yy,
                              std::int64_t, int l, cudaStream_t st,
                              bool pdl) { d::w4a16_launch_persistent<4>(w, xx, yy, l, st, pdl); };
        // First calls outside graph capture (the launcher sizes its grid once per kernel).
        persistent2(ws[0], x.data(), k, y.data(), n, log2g, s, true);
        persistent4(ws[0], x.data(), k, y.data(), n, log2g, s, true);
        ctx.synchronize();
        variant("persistent", 2, 4, persistent4);
        variant("persistent", 2, 2, persistent2);
        variant("blocked", 1, 4, d::w4a16_launch_rows<1, 1, 4>);
        variant("blocked", 2, 2, d::w4a16_launch_rows<1, 2, 2>);
        variant("blocked", 2, 4, d::w4a16_launch_rows<1, 2, 4>);
        variant("blocked", 4, 2, d::w4a16_launch_rows<1, 4, 2>);
      }
      for (int batch : {1, 2, 4, 8, 16}) {
        device_buffer<__half> x = ctx.alloc<__half>(std::size_t(batch * k));
        device_buffer<__half> y = ctx.alloc<__half>(std::size_t(batch * n));
        fill_random_half<<<256, 256, 0, s>>>(x.data(), x.size(), 300u + batch);
        FORGE_CUDA_CHECK_LAUNCH("fill_random_half");
        ctx.synchronize();
        const int reps = 4 * nw;
        auto timed = [&](w4a16_launch_mode mode) {
          try {
            return graph_median_ms(s, reps, 20, [&](int i) {
              w4a16_matmul(ctx, ws[std::size_t(i % nw)], batch, x.data(), k, y.data(), n, mode);
            });
          } catch (const forge::error& e) {  // report and go on with the other columns
            std::printf("graph of W4A16 products failed: %s\n", e.what());
            (void)cudaGetLastError();
            ctx.synchronize();
            return -1.0;
          }
        };
        const double t4 = timed(w4a16_launch_mode::overlap);
        const double t4p = timed(w4a16_launch_mode::serial);
        const double t4s = stream_median_ms(s, reps, 10, [&](int i) {
          w4a16_matmul(ctx, ws[std::size_t(i % nw)], batch, x.data(), k, y.data(), n);
        });
        const float one = 1.0f, zero = 0.0f;
        const double tf = graph_median_ms(s, 4 * nf, 20, [&](int i) {
          FORGE_CUDA_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n), batch, int(k), &one,
                                        wf[std::size_t(i % nf)].data(), CUDA_R_16F, int(k),
                                        x.data(), CUDA_R_16F, int(k), &zero, y.data(), CUDA_R_16F,
                                        int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        });
        ctx.synchronize();
        const double gbs = double(ws[0].weight_bytes()) / (t4 * 1e-3) / 1e9;
        std::snprintf(
            line, sizeof line,
            "| %lldx%lld | %d | %.4f | %.4f | %.2fx | %zu | %.0f | %.0f%% | %.4f | %.4f |\n",
            (long long)n, (long long)k, batch, t4, tf, tf / t4, ws[0].weight_bytes(), gbs,
            100.0 * gbs / hbm, t4p, t4s);
        std::printf("%s", line);
        std::fflush(stdout);
        md += line;
      }
    }
    std::printf("%s", variants.c_str());
    md += variants;
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
