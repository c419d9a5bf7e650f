// Dense products through cuBLAS (bf16 / f16 inputs, f32 accumulation; f32 inputs) against a
// double-precision CPU product of the same rounded inputs, for every transpose combination and
// shapes that are not multiples of any tile. Tolerance: the output's one rounding (store_tol)
// plus f32 accumulation over k terms (~1e-6 relative); for f32 inputs cuBLAS may not use TF32
// here (CUBLAS_COMPUTE_32F is exact f32), so 1e-5.

#include "cuda_test.cuh"
#include "forge/backend/cuda/gemm.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class TA, class TC>
void check_gemm(report& rep, context& ctx, test_rng& rng, bool ta, bool tb, std::int64_t m,
                std::int64_t n, std::int64_t k) {
  std::vector<double> a, b, c0;
  auto ha = random_vector<TA>(
      std::size_t(m * k), [&] { return rng.normal(); }, a);
  auto hb = random_vector<TA>(
      std::size_t(k * n), [&] { return rng.normal(); }, b);
  auto hc = random_vector<TC>(
      std::size_t(m * n), [&] { return rng.normal(); }, c0);
  const std::int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
  const double alpha = 0.75, beta = 0.5;
  std::vector<double> ref(c0.size());
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t l = 0; l < k; ++l)
        s += a[std::size_t(ta ? l * lda + i : i * lda + l)] *
             b[std::size_t(tb ? j * ldb + l : l * ldb + j)];
      ref[std::size_t(i * n + j)] = alpha * s + beta * c0[std::size_t(i * n + j)];
    }
  device_buffer<TA> dA(ha.data(), ha.size()), dB(hb.data(), hb.size());
  device_buffer<TC> dC(hc.data(), hc.size());
  gemm<TA, TC>(ctx, ta, tb, m, n, k, float(alpha), dA.data(), lda, dB.data(), ldb, float(beta),
               dC.data(), ldc);
  ctx.synchronize();
  rep.check(std::string("gemm ") + type_name<TA>() + "->" + type_name<TC>() + (ta ? " At" : " A") +
                (tb ? "Bt " : "B ") + std::to_string(m) + "x" + std::to_string(n) + "x" +
                std::to_string(k),
            rel_err(ref, dC.download()), store_tol<TC>() + 1e-5);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("gemm");
    test_rng rng(3);
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check_gemm<__nv_bfloat16, __nv_bfloat16>(rep, ctx, rng, ta, tb, 37, 129, 200);
        check_gemm<__half, __half>(rep, ctx, rng, ta, tb, 64, 96, 4096);
        check_gemm<__nv_bfloat16, float>(rep, ctx, rng, ta, tb, 130, 17, 333);
      }
    check_gemm<float, float>(rep, ctx, rng, false, true, 65, 33, 257);
    check_gemm<__nv_bfloat16, __nv_bfloat16>(rep, ctx, rng, false, true, 512, 1024, 1024);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
