// NF4 dequantize-matmul and int8 per-channel matmul on the GPU against double-precision CPU
// references computed from the host formats (bitsandbytes NF4 packing, first weight in the
// high nibble; int8 row-major with one scale per row), on random codes and activations.
// Tolerance 1e-3 relative norm error: products and sums are f32 (~1e-6 relative) and the
// output is rounded once to f16 (2^-12 relative on average); a decoding or indexing error
// gives errors of order 1.

#include "cuda_test.cuh"
#include "forge/backend/cuda/int8.cuh"
#include "forge/backend/cuda/nf4.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

std::vector<__half> random_x(test_rng& rng, std::size_t n, std::vector<double>& xd) {
  return random_vector<__half>(
      n, [&] { return rng.normal(); }, xd);
}

void check_nf4(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t cols,
               std::int64_t batch) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(rows * cols / 2));
  for (auto& c : codes) c = std::uint8_t(rng.next());
  std::vector<float> absmax(static_cast<std::size_t>(rows * cols / 64));
  for (auto& a : absmax) a = float(rng.uniform(0.01, 0.1));
  std::vector<double> xd;
  const auto x = random_x(rng, std::size_t(batch * cols), xd);
  std::vector<double> ref(std::size_t(batch * rows), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t k = 0; k < cols; ++k) {
      const std::int64_t flat = r * cols + k;
      const auto byte = codes[std::size_t(flat / 2)];
      const int q = (flat & 1) ? (byte & 15) : (byte >> 4);
      const double w = double(nf4_values[q]) * double(absmax[std::size_t(flat / 64)]);
      for (std::int64_t b = 0; b < batch; ++b)
        ref[std::size_t(b * rows + r)] += w * xd[std::size_t(b * cols + k)];
    }
  const nf4_matrix w = nf4_upload(ctx, rows, cols, codes.data(), absmax.data());
  device_buffer<__half> dx(x.data(), x.size()), dy(ref.size());
  FORGE_CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.bytes()));
  nf4_matmul(ctx, w, batch, dx.data(), cols, dy.data(), rows);
  ctx.synchronize();
  rep.check("nf4 matmul " + std::to_string(rows) + "x" + std::to_string(cols) + " batch " +
                std::to_string(batch),
            rel_err(ref, dy.download()), 1e-3);
}

void check_int8(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t cols,
                std::int64_t batch) {
  std::vector<std::int8_t> codes(static_cast<std::size_t>(rows * cols));
  for (auto& c : codes) c = std::int8_t(int(rng.next() % 255) - 127);
  std::vector<float> scales(static_cast<std::size_t>(rows));
  for (auto& s : scales) s = float(rng.uniform(1e-4, 1e-3));
  std::vector<double> xd;
  const auto x = random_x(rng, std::size_t(batch * cols), xd);
  std::vector<double> ref(std::size_t(batch * rows), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t b = 0; b < batch; ++b) {
      double acc = 0;
      for (std::int64_t k = 0; k < cols; ++k)
        acc += double(codes[std::size_t(r * cols + k)]) * xd[std::size_t(b * cols + k)];
      ref[std::size_t(b * rows + r)] = acc * double(scales[std::size_t(r)]);
    }
  const int8_matrix w = int8_upload(ctx, rows, cols, codes.data(), scales.data());
  device_buffer<__half> dx(x.data(), x.size()), dy(ref.size());
  FORGE_CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.bytes()));
  int8_matmul(ctx, w, batch, dx.data(), cols, dy.data(), rows);
  ctx.synchronize();
  rep.check("int8 matmul " + std::to_string(rows) + "x" + std::to_string(cols) + " batch " +
                std::to_string(batch),
            rel_err(ref, dy.download()), 1e-3);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("quantized");
    test_rng rng(13);
    check_nf4(rep, ctx, rng, 4096, 4096, 1);
    check_nf4(rep, ctx, rng, 301, 11008, 3);
    check_nf4(rep, ctx, rng, 64, 192, 6);
    check_int8(rep, ctx, rng, 4096, 4096, 1);
    check_int8(rep, ctx, rng, 301, 11008, 4);
    check_int8(rep, ctx, rng, 33, 48, 7);
    bool threw = false;
    try {
      std::vector<std::uint8_t> c(16);
      std::vector<float> a(1);
      (void)nf4_upload(ctx, 1, 32, c.data(), a.data());
    } catch (const forge::error&) {
      threw = true;
    }
    rep.expect("nf4 rejects cols not a multiple of 64", threw);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
