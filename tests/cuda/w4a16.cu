// W4A16 int4-group matmul on the GPU against a double-precision CPU reference computed from
// the same codes, scales and zeros (the host int4_group format, quantized here by the rule
// documented in quant/int4.hpp), on random weights and activations.
//
// Tolerance 2e-3 relative norm error: the kernel forms each product (q − z)·x in f16 with one
// rounding (2^-11 relative), sums 4 of them per half lane before f32 takes over, and rounds
// the output to f16 (2^-11): together a few 1e-4 on random data. An indexing or packing error
// gives errors of order 1.

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cuda_test.cuh"
#include "forge/backend/cuda/w4a16.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

/// A host int4_group matrix in forge's format (quant/int4.hpp): codes, f32 scales (exact f16
/// values), zero codes (asymmetric only), optional act-order permutation.
struct host_int4 {
  std::int64_t rows = 0, cols = 0;
  int group = 128;
  bool sym = true;
  std::vector<std::uint8_t> codes{}, zeros{};
  std::vector<float> scales{};
  std::vector<std::int32_t> perm{};
  int code(std::int64_t r, std::int64_t k) const {
    const auto b = codes[std::size_t((r * cols + k) / 2)];
    return (k & 1) ? (b >> 4) : (b & 0xf);
  }
  /// Dequantized weight of row r, *input* feature order, in double.
  std::vector<double> dequant_row(std::int64_t r) const {
    std::vector<double> out(static_cast<std::size_t>(cols));
    const std::int64_t ng = cols / group;
    for (std::int64_t k = 0; k < cols; ++k) {
      const auto gi = std::size_t(r * ng + k / group);
      const double z = sym ? 8.0 : double(zeros[gi]);
      const double v = double(scales[gi]) * (double(code(r, k)) - z);
      out[std::size_t(perm.empty() ? k : perm[std::size_t(k)])] = v;
    }
    return out;
  }
};

host_int4 quantize(test_rng& rng, std::int64_t rows, std::int64_t cols, int group, bool sym,
                   bool act_order) {
  host_int4 t;
  t.rows = rows;
  t.cols = cols;
  t.group = group;
  t.sym = sym;
  t.codes.assign(std::size_t(rows * cols / 2), 0);
  const std::int64_t ng = cols / group;
  t.scales.resize(std::size_t(rows * ng));
  if (!sym) t.zeros.resize(std::size_t(rows * ng));
  std::vector<float> x(static_cast<std::size_t>(group));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < ng; ++g) {
      // Row-dependent offsets make asymmetric zero points differ from 8.
      const double shift = sym ? 0.0 : 0.01 * rng.uniform(-1, 1);
      float lo = 0, hi = 0;
      for (auto& v : x) {
        v = float(0.02 * rng.normal() + shift);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      if (sym) {
        const float m = std::max(-lo, hi);
        lo = -m;
        hi = m;
      }
      const float s = __half2float(__float2half_rn((hi - lo) / 15.0f));
      const float z = sym ? 8.0f : std::clamp(std::nearbyint(-lo / s), 0.0f, 15.0f);
      const auto gi = std::size_t(r * ng + g);
      t.scales[gi] = s;
      if (!sym) t.zeros[gi] = std::uint8_t(z);
      for (int i = 0; i < group; ++i) {
        const auto q =
            std::uint8_t(std::clamp(std::nearbyint(x[std::size_t(i)] / s) + z, 0.0f, 15.0f));
        const std::int64_t k = g * group + i;
        auto& b = t.codes[std::size_t((r * cols + k) / 2)];
        b = (k & 1) ? std::uint8_t((b & 0x0f) | (q << 4)) : std::uint8_t((b & 0xf0) | q);
      }
    }
  if (act_order) {
    t.perm.resize(static_cast<std::size_t>(cols));
    std::iota(t.perm.begin(), t.perm.end(), 0);
    for (std::int64_t i = cols - 1; i > 0; --i)
      std::swap(t.perm[std::size_t(i)], t.perm[std::size_t(rng.next() % std::uint64_t(i + 1))]);
  }
  return t;
}

void check_case(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t cols,
                int group, bool sym, bool act_order, std::int64_t batch) {
  const host_int4 t = quantize(rng, rows, cols, group, sym, act_order);
  const w4a16_matrix w =
      w4a16_upload(ctx, rows, cols, group, t.codes.data(), t.scales.data(),
                   sym ? nullptr : t.zeros.data(), act_order ? t.perm.data() : nullptr);
  std::vector<__half> x(std::size_t(batch * cols));
  for (auto& v : x) v = __float2half_rn(float(rng.normal()));
  const std::vector<double> xd = as_double(x);
  std::vector<double> ref(std::size_t(batch * rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto wr = t.dequant_row(r);
    for (std::int64_t b = 0; b < batch; ++b) {
      double acc = 0;
      for (std::int64_t k = 0; k < cols; ++k)
        acc += wr[std::size_t(k)] * xd[std::size_t(b * cols + k)];
      ref[std::size_t(b * rows + r)] = acc;
    }
  }
  device_buffer<__half> dx(x.data(), x.size(), &ctx.pool());
  device_buffer<__half> dy(ref.size(), &ctx.pool());
  FORGE_CUDA_CHECK(cudaMemsetAsync(dy.data(), 0xff, dy.bytes(), ctx.stream()));  // NaN poison
  w4a16_matmul(ctx, w, batch, dx.data(), cols, dy.data(), rows);
  ctx.synchronize();
  const std::string name = "matmul " + std::to_string(rows) + "x" + std::to_string(cols) + " g" +
                           std::to_string(group) + (sym ? " sym" : " asym") +
                           (act_order ? " act-order" : "") + " batch " + std::to_string(batch);
  rep.check(name, rel_err(ref, dy.download()), 2e-3);

  if (rows * cols <= (std::int64_t(1) << 22)) {
    // Dequantization: each element is s·(q − z) rounded once to f16 (2^-11 relative), so the
    // norm error sits near 3e-4; 1e-3 leaves room while a misplaced element fails.
    device_buffer<__half> dw(std::size_t(rows * cols), &ctx.pool());
    FORGE_CUDA_CHECK(cudaMemsetAsync(dw.data(), 0xff, dw.bytes(), ctx.stream()));
    w4a16_dequantize(ctx, w, dw.data());
    ctx.synchronize();
    std::vector<double> wref;
    wref.reserve(std::size_t(rows * cols));
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto wr = t.dequant_row(r);
      wref.insert(wref.end(), wr.begin(), wr.end());
    }
    rep.check("dequantize " + std::to_string(rows) + "x" + std::to_string(cols) + " g" +
                  std::to_string(group) + (sym ? " sym" : " asym") +
                  (act_order ? " act-order" : ""),
              rel_err(wref, dw.download()), 1e-3);
  }
}

// Two products in a row where the second reads the first's output: the overlapped launch
// must wait for its producer before reading x (a missing wait reads stale or poisoned values).
void check_chain(report& rep, context& ctx, test_rng& rng, w4a16_launch_mode mode,
                 const char* name) {
  const std::int64_t n = 4096;
  const host_int4 t1 = quantize(rng, n, n, 128, true, false);
  const host_int4 t2 = quantize(rng, n, n, 128, false, false);
  const auto w1 = w4a16_upload(ctx, n, n, 128, t1.codes.data(), t1.scales.data(), nullptr, nullptr);
  const auto w2 =
      w4a16_upload(ctx, n, n, 128, t2.codes.data(), t2.scales.data(), t2.zeros.data(), nullptr);
  std::vector<__half> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = __float2half_rn(float(rng.normal()));
  device_buffer<__half> dx(x.data(), x.size()), y1(x.size()), y2(x.size());
  double worst = 0;
  for (int round = 0; round < 20; ++round) {
    FORGE_CUDA_CHECK(cudaMemsetAsync(y1.data(), 0xff, y1.bytes(), ctx.stream()));
    FORGE_CUDA_CHECK(cudaMemsetAsync(y2.data(), 0xff, y2.bytes(), ctx.stream()));
    w4a16_matmul(ctx, w1, 1, dx.data(), n, y1.data(), n, mode);
    w4a16_matmul(ctx, w2, 1, y1.data(), n, y2.data(), n, mode);
    ctx.synchronize();
    // Reference for the second product from the first product's actual (f16) output.
    const std::vector<double> mid = as_double(y1.download());
    std::vector<double> ref(static_cast<std::size_t>(n));
    for (std::int64_t r = 0; r < n; ++r) {
      const auto wr = t2.dequant_row(r);
      double acc = 0;
      for (std::int64_t k = 0; k < n; ++k) acc += wr[std::size_t(k)] * mid[std::size_t(k)];
      ref[std::size_t(r)] = acc;
    }
    const double e = rel_err(ref, y2.download());
    worst = std::isnan(e) || std::isnan(worst) ? NAN : std::max(worst, e);
    if (round == 0) {  // the first product against its own reference, once
      std::vector<double> r1(static_cast<std::size_t>(n));
      const std::vector<double> xd = as_double(x);
      for (std::int64_t r = 0; r < n; ++r) {
        const auto wr = t1.dequant_row(r);
        double acc = 0;
        for (std::int64_t k = 0; k < n; ++k) acc += wr[std::size_t(k)] * xd[std::size_t(k)];
        r1[std::size_t(r)] = acc;
      }
      rep.check(std::string("chained product, first ") + name, rel_err(r1, mid), 2e-3);
    }
  }
  rep.check(std::string("chained product, second reads first (20 rounds) ") + name, worst, 2e-3);
}

// Every kernel shape the benchmark compares computes the same product.
template <int R, int U, bool Persistent = false>
void check_shape_variant(report& rep, context& ctx, test_rng& rng) {
  const std::int64_t rows = 1030, cols = 11008;
  const host_int4 t = quantize(rng, rows, cols, 128, false, false);
  const auto w =
      w4a16_upload(ctx, rows, cols, 128, t.codes.data(), t.scales.data(), t.zeros.data(), nullptr);
  std::vector<__half> x(static_cast<std::size_t>(cols));
  for (auto& v : x) v = __float2half_rn(float(rng.normal()));
  const std::vector<double> xd = as_double(x);
  std::vector<double> ref(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto wr = t.dequant_row(r);
    double acc = 0;
    for (std::int64_t k = 0; k < cols; ++k) acc += wr[std::size_t(k)] * xd[std::size_t(k)];
    ref[std::size_t(r)] = acc;
  }
  device_buffer<__half> dx(x.data(), x.size()), dy(ref.size());
  FORGE_CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.bytes()));
  if constexpr (Persistent)
    detail::w4a16_launch_persistent<U>(w, dx.data(), dy.data(), 7, ctx.stream(), true);
  else
    detail::w4a16_launch_rows<1, R, U>(w, dx.data(), cols, dy.data(), rows, 7, ctx.stream(), true);
  ctx.synchronize();
  rep.check(std::string(Persistent ? "persistent" : "blocked") + " kernel rows/warp " +
                std::to_string(R) + " loads/row " + std::to_string(U) +
                " 1030x11008 g128 asym batch 1",
            rel_err(ref, dy.download()), 2e-3);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("w4a16");
    test_rng rng(20261124);
    check_case(rep, ctx, rng, 4096, 4096, 128, true, false, 1);
    check_case(rep, ctx, rng, 11008, 4096, 128, false, false, 1);
    check_case(rep, ctx, rng, 4096, 11008, 128, true, false, 1);
    check_case(rep, ctx, rng, 1001, 4096, 128, false, false, 1);  // odd rows, batch 1
    check_case(rep, ctx, rng, 513, 1024, 64, false, true, 1);     // act-order, batch 1
    check_case(rep, ctx, rng, 300, 512, 128, true, false, 3);     // rows not a multiple of 16
    check_case(rep, ctx, rng, 1024, 11008, 64, false, false, 8);  // chunks not a multiple of 32
    check_case(rep, ctx, rng, 257, 1024, 32, true, false, 5);
    check_case(rep, ctx, rng, 512, 1024, 128, false, true, 2);  // act-order permutation
    check_case(rep, ctx, rng, 128, 256, 128, true, false, 11);  // batch in pieces of 8 + 3
    check_shape_variant<2, 2, true>(rep, ctx, rng);
    check_shape_variant<2, 4, true>(rep, ctx, rng);
    check_shape_variant<2, 4>(rep, ctx, rng);
    check_shape_variant<1, 4>(rep, ctx, rng);
    check_shape_variant<1, 8>(rep, ctx, rng);
    check_shape_variant<2, 2>(rep, ctx, rng);
    check_shape_variant<4, 2>(rep, ctx, rng);
    check_chain(rep, ctx, rng, w4a16_launch_mode::overlap, "overlapped launch");
    check_chain(rep, ctx, rng, w4a16_launch_mode::serial, "serial launch");
    bool threw = false;
    try {
      std::vector<std::uint8_t> c(64 * 96 / 2);
      std::vector<float> s(64);
      (void)w4a16_upload(ctx, 64, 96, 128, c.data(), s.data(), nullptr, nullptr);
    } catch (const forge::error&) {
      threw = true;
    }
    rep.expect("cols not a multiple of the group size is rejected", threw);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
