// Cross-entropy with ignore index on the GPU against a double-precision CPU reference of
// backend/cross_entropy.hpp's definition, on random logits with a quarter of the rows ignored;
// plus the all-ignored batch (loss 0, zero gradient) and the out-of-range target error.

#include <cmath>

#include "cuda_test.cuh"
#include "forge/backend/cuda/cross_entropy.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class T>
void check_ce(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t vocab,
              double ignored_fraction) {
  std::vector<double> z;
  auto hz = random_vector<T>(std::size_t(rows * vocab), [&] { return 3.0 * rng.normal(); }, z);
  std::vector<std::int64_t> y(static_cast<std::size_t>(rows));
  for (auto& t : y)
    t = rng.uniform() < ignored_fraction ? -100 : std::int64_t(rng.next() % std::uint64_t(vocab));
  const double grad_scale = 0.5;
  std::int64_t n = 0;
  for (auto t : y) n += t != -100;
  double loss = 0;
  std::vector<double> dz(z.size(), 0.0);
  for (std::int64_t t = 0; t < rows; ++t) {
    if (y[std::size_t(t)] == -100) continue;
    const double* zt = z.data() + t * vocab;
    double mx = zt[0];
    for (std::int64_t i = 1; i < vocab; ++i) mx = std::max(mx, zt[i]);
    double s = 0;
    for (std::int64_t i = 0; i < vocab; ++i) s += std::exp(zt[i] - mx);
    const double lse = mx + std::log(s);
    loss += lse - zt[y[std::size_t(t)]];
    for (std::int64_t i = 0; i < vocab; ++i)
      dz[std::size_t(t * vocab + i)] =
          (std::exp(zt[i] - lse) - (i == y[std::size_t(t)] ? 1.0 : 0.0)) * grad_scale / double(n);
  }
  loss = n ? loss / double(n) : 0.0;
  device_buffer<T> dZ(hz.data(), hz.size()), dDZ(hz.size());
  device_buffer<std::int64_t> dY(y.data(), y.size());
  FORGE_CUDA_CHECK(cudaMemset(dDZ.data(), 0xff, dDZ.bytes()));
  const double got = cross_entropy<T>(ctx, rows, vocab, dZ.data(), dY.data(), dDZ.data(), grad_scale);
  const std::string tag = std::string(type_name<T>()) + " " + std::to_string(rows) + "x" +
                          std::to_string(vocab) + " ignored " + std::to_string(rows - n);
  // The loss is formed in f32 per row (logsumexp over vocab terms, ~1e-7 relative) and
  // averaged in double: 1e-5 leaves two orders of margin.
  if (n > 0) {
    rep.check("cross_entropy loss " + tag, std::abs(got - loss) / std::abs(loss), 1e-5);
    rep.check("cross_entropy dlogits " + tag, rel_err(dz, dDZ.download()), store_tol<T>());
  } else {
    rep.expect("cross_entropy all rows ignored: loss 0 " + tag, got == 0.0);
    bool zero = true;
    for (auto v : dDZ.download()) zero = zero && to_double(v) == 0.0;
    rep.expect("cross_entropy all rows ignored: zero gradient " + tag, zero);
  }
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("losses");
    test_rng rng(11);
    check_ce<float>(rep, ctx, rng, 64, 32000, 0.25);
    check_ce<__nv_bfloat16>(rep, ctx, rng, 64, 32000, 0.25);
    check_ce<__half>(rep, ctx, rng, 33, 1000, 0.25);
    check_ce<float>(rep, ctx, rng, 7, 77, 0.0);
    check_ce<float>(rep, ctx, rng, 4, 100, 1.0);
    {
      std::vector<float> z(3 * 10, 0.5f);
      std::vector<std::int64_t> y = {1, 10, -100};
      device_buffer<float> dZ(z.data(), z.size());
      device_buffer<std::int64_t> dY(y.data(), y.size());
      std::string msg;
      try {
        cross_entropy<float>(ctx, 3, 10, dZ.data(), dY.data(), nullptr);
      } catch (const forge::error& e) {
        msg = e.what();
      }
      rep.expect("cross_entropy names the row of an out-of-range target",
                 msg.find("row 1") != std::string::npos && msg.find("found 10") != std::string::npos);
    }
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
