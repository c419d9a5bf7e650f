// LoRA forward and backward on the GPU (cuBLAS products) against a double-precision CPU
// reference of the formulas in backend/cuda/lora.cuh, on random inputs, in f32 and bf16.
// Tolerances: f32 1e-5 (f32 products); bf16: the output's rounding plus the rounding of the
// intermediates t = x·Aᵀ and dt = s·dy·B to bf16 before their second product — 3·store_tol.

#include "cuda_test.cuh"
#include "forge/backend/cuda/lora.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

// C[m, n] = Σ_l A[m, l]·B[l, n] with A, B given by accessors.
template <class FA, class FB>
std::vector<double> product(std::int64_t m, std::int64_t n, std::int64_t k, FA a, FB b) {
  std::vector<double> c(std::size_t(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t l = 0; l < k; ++l) s += a(i, l) * b(l, j);
      c[std::size_t(i * n + j)] = s;
    }
  return c;
}

template <class T>
void check_lora(report& rep, context& ctx, test_rng& rng, lora_shape sh) {
  const auto M = sh.m, N = sh.n, K = sh.k, R = sh.rank;
  const double s = sh.scale;
  std::vector<double> x, W, A, B, dy;
  auto hx = random_vector<T>(
      std::size_t(M * K), [&] { return rng.normal(); }, x);
  auto hW = random_vector<T>(
      std::size_t(N * K), [&] { return 0.05 * rng.normal(); }, W);
  auto hA = random_vector<T>(
      std::size_t(R * K), [&] { return 0.05 * rng.normal(); }, A);
  auto hB = random_vector<T>(
      std::size_t(N * R), [&] { return 0.05 * rng.normal(); }, B);
  auto hdy = random_vector<T>(
      std::size_t(M * N), [&] { return rng.normal(); }, dy);
  std::vector<float> dA0(std::size_t(R * K)), dB0(std::size_t(N * R));
  for (auto& z : dA0) z = float(rng.normal());
  for (auto& z : dB0) z = float(rng.normal());
  const auto t = product(
      M, R, K, [&](auto i, auto l) { return x[std::size_t(i * K + l)]; },
      [&](auto l, auto j) { return A[std::size_t(j * K + l)]; });
  auto y = product(
      M, N, K, [&](auto i, auto l) { return x[std::size_t(i * K + l)]; },
      [&](auto l, auto j) { return W[std::size_t(j * K + l)]; });
  const auto ya = product(
      M, N, R, [&](auto i, auto l) { return t[std::size_t(i * R + l)]; },
      [&](auto l, auto j) { return B[std::size_t(j * R + l)]; });
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += s * ya[i];
  auto dB = product(
      N, R, M, [&](auto i, auto l) { return dy[std::size_t(l * N + i)]; },
      [&](auto l, auto j) { return t[std::size_t(l * R + j)]; });
  for (std::size_t i = 0; i < dB.size(); ++i) dB[i] = dB0[i] + s * dB[i];
  auto dt = product(
      M, R, N, [&](auto i, auto l) { return dy[std::size_t(i * N + l)]; },
      [&](auto l, auto j) { return B[std::size_t(l * R + j)]; });
  for (auto& z : dt) z *= s;
  auto dA = product(
      R, K, M, [&](auto i, auto l) { return dt[std::size_t(l * R + i)]; },
      [&](auto l, auto j) { return x[std::size_t(l * K + j)]; });
  for (std::size_t i = 0; i < dA.size(); ++i) dA[i] += dA0[i];
  auto dx = product(
      M, K, N, [&](auto i, auto l) { return dy[std::size_t(i * N + l)]; },
      [&](auto l, auto j) { return W[std::size_t(l * K + j)]; });
  const auto dxa = product(
      M, K, R, [&](auto i, auto l) { return dt[std::size_t(i * R + l)]; },
      [&](auto l, auto j) { return A[std::size_t(l * K + j)]; });
  for (std::size_t i = 0; i < dx.size(); ++i) dx[i] += dxa[i];

  device_buffer<T> dX(hx.data(), hx.size()), dW(hW.data(), hW.size()), dAa(hA.data(), hA.size()),
      dBb(hB.data(), hB.size()), dDY(hdy.data(), hdy.size());
  device_buffer<T> dT(std::size_t(M * R)), dY(std::size_t(M * N)), dDT(std::size_t(M * R)),
      dDX(std::size_t(M * K));
  device_buffer<float> gA(dA0.data(), dA0.size()), gB(dB0.data(), dB0.size());
  FORGE_CUDA_CHECK(cudaMemset(dY.data(), 0xff, dY.bytes()));
  FORGE_CUDA_CHECK(cudaMemset(dDX.data(), 0xff, dDX.bytes()));
  lora_forward<T>(ctx, sh, dX.data(), dW.data(), dAa.data(), dBb.data(), dT.data(), dY.data());
  lora_backward<T>(ctx, sh, dX.data(), dW.data(), dAa.data(), dBb.data(), dT.data(), dDY.data(),
                   dDT.data(), gA.data(), gB.data(), dDX.data());
  ctx.synchronize();
  const double tol = std::is_same_v<T, float> ? 1e-5 : 3 * store_tol<T>();
  const std::string tag = std::string(type_name<T>()) + " " + std::to_string(M) + "x" +
                          std::to_string(N) + "x" + std::to_string(K) + " r" + std::to_string(R);
  rep.check("lora forward y " + tag, rel_err(y, dY.download()), tol);
  rep.check("lora backward dx " + tag, rel_err(dx, dDX.download()), tol);
  rep.check("lora backward dA (accumulated) " + tag, rel_err(dA, gA.download()), tol);
  rep.check("lora backward dB (accumulated) " + tag, rel_err(dB, gB.download()), tol);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("lora");
    test_rng rng(19);
    check_lora<float>(rep, ctx, rng, {.m = 37, .n = 96, .k = 160, .rank = 8, .scale = 2.0f});
    check_lora<__nv_bfloat16>(rep, ctx, rng,
                              {.m = 64, .n = 256, .k = 512, .rank = 16, .scale = 2.0f});
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
