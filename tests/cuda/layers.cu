// RMSNorm, RoPE and SwiGLU forward and backward on the GPU against double-precision CPU
// references of the formulas in backend/{rmsnorm,rope,swiglu}.hpp, on random inputs, for
// f32, f16 and bf16 storage. Inputs are rounded to the storage type first and the reference
// uses those rounded values, so the tolerance covers the kernel's own arithmetic (f32) and
// the one rounding of its output (store_tol in cuda_test.cuh states the bound).

#include <cmath>

#include "cuda_test.cuh"
#include "forge/backend/cuda/rmsnorm.cuh"
#include "forge/backend/cuda/rope.cuh"
#include "forge/backend/cuda/swiglu.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class T>
void check_rmsnorm(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t n) {
  const double eps = 1e-6;
  std::vector<double> x, w, dy, dx0;
  auto hx = random_vector<T>(
      std::size_t(rows * n), [&] { return 2.0 * rng.normal(); }, x);
  auto hw = random_vector<T>(
      std::size_t(n), [&] { return 1.0 + 0.1 * rng.normal(); }, w);
  auto hdy = random_vector<T>(
      std::size_t(rows * n), [&] { return rng.normal(); }, dy);
  auto hdx0 = random_vector<T>(
      std::size_t(rows * n), [&] { return rng.normal(); }, dx0);
  std::vector<double> y(x.size()), r(static_cast<std::size_t>(rows)), dx(x.size()),
      dw(static_cast<std::size_t>(n));
  std::vector<float> dw0(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) dw0[std::size_t(i)] = float(rng.normal());
  for (std::int64_t i = 0; i < n; ++i) dw[std::size_t(i)] = dw0[std::size_t(i)];
  for (std::int64_t t = 0; t < rows; ++t) {
    double ss = 0;
    for (std::int64_t i = 0; i < n; ++i)
      ss += x[std::size_t(t * n + i)] * x[std::size_t(t * n + i)];
    const double rt = 1.0 / std::sqrt(ss / double(n) + eps);
    r[std::size_t(t)] = rt;
    double m = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const auto k = std::size_t(t * n + i);
      y[k] = w[std::size_t(i)] * x[k] * rt;
      m += dy[k] * w[std::size_t(i)] * x[k] * rt;
    }
    m /= double(n);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto k = std::size_t(t * n + i);
      dx[k] = dx0[k] + rt * (dy[k] * w[std::size_t(i)] - x[k] * rt * m);  // accumulate = true
      dw[std::size_t(i)] += dy[k] * x[k] * rt;
    }
  }
  device_buffer<T> dX(hx.data(), hx.size()), dW(hw.data(), hw.size()), dY(hx.size()),
      dDY(hdy.data(), hdy.size()), dDX(hdx0.data(), hdx0.size());
  device_buffer<float> dR(static_cast<std::size_t>(rows)), dDW(dw0.data(), dw0.size());
  FORGE_CUDA_CHECK(cudaMemset(dY.data(), 0xff, dY.bytes()));
  FORGE_CUDA_CHECK(cudaMemset(dR.data(), 0xff, dR.bytes()));
  rmsnorm_forward<T>(ctx, rows, n, dX.data(), dW.data(), float(eps), dY.data(), dR.data());
  rmsnorm_backward<T>(ctx, rows, n, dX.data(), dW.data(), dR.data(), dDY.data(), dDX.data(),
                      dDW.data(), true);
  ctx.synchronize();
  const std::string tag =
      std::string(type_name<T>()) + " " + std::to_string(rows) + "x" + std::to_string(n);
  rep.check("rmsnorm forward y " + tag, rel_err(y, dY.download()), store_tol<T>());
  rep.check("rmsnorm forward rstd " + tag, rel_err(r, dR.download()), 1e-5);
  // dx accumulates into a value already rounded to T: one more rounding of the sum.
  rep.check("rmsnorm backward dx (accumulate) " + tag, rel_err(dx, dDX.download()), store_tol<T>());
  rep.check("rmsnorm backward dw " + tag, rel_err(dw, dDW.download()), 1e-5);
}

template <class T>
void check_rope(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t heads,
                std::int64_t D) {
  const std::int64_t h2 = D / 2;
  std::vector<double> x;
  auto hx = random_vector<T>(
      std::size_t(rows * heads * D), [&] { return rng.normal(); }, x);
  std::vector<float> c(std::size_t(rows * h2)), s(c.size());
  for (std::int64_t t = 0; t < rows; ++t)
    for (std::int64_t i = 0; i < h2; ++i) {
      const double ang = double(t) * std::pow(10000.0, -2.0 * double(i) / double(D));
      c[std::size_t(t * h2 + i)] = float(std::cos(ang));
      s[std::size_t(t * h2 + i)] = float(std::sin(ang));
    }
  std::vector<double> fwd(x.size()), bwd(x.size());
  for (std::int64_t t = 0; t < rows; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < h2; ++i) {
        const auto k = std::size_t((t * heads + h) * D + i);
        const double a = x[k], b = x[k + std::size_t(h2)], cc = c[std::size_t(t * h2 + i)],
                     ss = s[std::size_t(t * h2 + i)];
        fwd[k] = a * cc - b * ss;
        fwd[k + std::size_t(h2)] = b * cc + a * ss;
        bwd[k] = a * cc + b * ss;
        bwd[k + std::size_t(h2)] = b * cc - a * ss;
      }
  device_buffer<float> dc(c.data(), c.size()), ds(s.data(), s.size());
  device_buffer<T> d1(hx.data(), hx.size()), d2(hx.data(), hx.size());
  rope_forward<T>(ctx, rows, heads, D, d1.data(), dc.data(), ds.data());
  rope_backward<T>(ctx, rows, heads, D, d2.data(), dc.data(), ds.data());
  ctx.synchronize();
  const std::string tag = std::string(type_name<T>()) + " rows " + std::to_string(rows) +
                          " heads " + std::to_string(heads) + " D " + std::to_string(D);
  rep.check("rope forward " + tag, rel_err(fwd, d1.download()), store_tol<T>());
  rep.check("rope backward " + tag, rel_err(bwd, d2.download()), store_tol<T>());
}

template <class T>
void check_swiglu(report& rep, context& ctx, test_rng& rng, std::int64_t n) {
  std::vector<double> g, u, dh;
  auto hg = random_vector<T>(
      std::size_t(n), [&] { return 3.0 * rng.normal(); }, g);
  auto hu = random_vector<T>(
      std::size_t(n), [&] { return rng.normal(); }, u);
  auto hdh = random_vector<T>(
      std::size_t(n), [&] { return rng.normal(); }, dh);
  std::vector<double> h(g.size()), dg(g.size()), du(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double sg = 1.0 / (1.0 + std::exp(-g[i]));
    h[i] = g[i] * sg * u[i];
    dg[i] = dh[i] * u[i] * sg * (1.0 + g[i] * (1.0 - sg));
    du[i] = dh[i] * g[i] * sg;
  }
  device_buffer<T> dG(hg.data(), hg.size()), dU(hu.data(), hu.size()), dDH(hdh.data(), hdh.size()),
      dH(hg.size()), dDG(hg.size()), dDU(hg.size());
  for (auto* b : {&dH, &dDG, &dDU}) FORGE_CUDA_CHECK(cudaMemset(b->data(), 0xff, b->bytes()));
  swiglu_forward<T>(ctx, n, dG.data(), dU.data(), dH.data());
  swiglu_backward<T>(ctx, n, dG.data(), dU.data(), dDH.data(), dDG.data(), dDU.data());
  ctx.synchronize();
  const std::string tag = std::string(type_name<T>()) + " n " + std::to_string(n);
  rep.check("swiglu forward " + tag, rel_err(h, dH.download()), store_tol<T>());
  rep.check("swiglu backward dg " + tag, rel_err(dg, dDG.download()), store_tol<T>());
  rep.check("swiglu backward du " + tag, rel_err(du, dDU.download()), store_tol<T>());
}

template <class T>
void check_all(report& rep, context& ctx, test_rng& rng) {
  check_rmsnorm<T>(rep, ctx, rng, 37, 4096);
  check_rmsnorm<T>(rep, ctx, rng, 5, 100);  // n not a multiple of the block
  check_rope<T>(rep, ctx, rng, 29, 8, 128);
  check_rope<T>(rep, ctx, rng, 3, 3, 64);
  check_swiglu<T>(rep, ctx, rng, 11008 * 7 + 5);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("layers");
    test_rng rng(7);
    check_all<float>(rep, ctx, rng);
    check_all<__half>(rep, ctx, rng);
    check_all<__nv_bfloat16>(rep, ctx, rng);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
