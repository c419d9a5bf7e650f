// AdamW on the GPU against a double-precision CPU reference of PyTorch's AdamW update order,
// over several steps on random parameters and gradients (f32 and bf16 gradients).
// Tolerance 1e-5: each step is a handful of f32 operations per element (~1e-7 relative) and
// errors compound over 5 steps; a wrong bias correction or decay order gives ~1e-3 or more.

#include <cmath>

#include "cuda_test.cuh"
#include "forge/backend/cuda/adamw.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class G>
void check_adamw(report& rep, context& ctx, test_rng& rng, std::int64_t n) {
  const adamw_options o{
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f};
  const float grad_scale = 0.5f;
  const auto size = static_cast<std::size_t>(n);
  std::vector<float> hp(size);
  for (auto& x : hp) x = float(rng.normal());
  std::vector<double> p(hp.begin(), hp.end());
  std::vector<double> m(size, 0.0);
  std::vector<double> v(size, 0.0);
  device_buffer<float> dP(hp.data(), hp.size()), dM(p.size()), dV(p.size());
  FORGE_CUDA_CHECK(cudaMemset(dM.data(), 0, dM.bytes()));
  FORGE_CUDA_CHECK(cudaMemset(dV.data(), 0, dV.bytes()));
  for (int t = 1; t <= 5; ++t) {
    std::vector<double> g;
    auto hg = random_vector<G>(
        p.size(), [&] { return rng.normal(); }, g);
    device_buffer<G> dG(hg.data(), hg.size());
    adamw_step<G>(ctx, n, dP.data(), dG.data(), dM.data(), dV.data(), t, o, grad_scale);
    ctx.synchronize();
    const double b1 = 1 - std::pow(double(o.beta1), t), b2 = 1 - std::pow(double(o.beta2), t);
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double gi = grad_scale * g[i];
      p[i] *= 1 - double(o.lr) * double(o.weight_decay);
      m[i] = double(o.beta1) * m[i] + (1 - double(o.beta1)) * gi;
      v[i] = double(o.beta2) * v[i] + (1 - double(o.beta2)) * gi * gi;
      p[i] -= double(o.lr) / b1 * m[i] / (std::sqrt(v[i]) / std::sqrt(b2) + double(o.eps));
    }
  }
  const std::string tag = std::string("grad ") + type_name<G>() + " n " + std::to_string(n);
  rep.check("adamw 5 steps params " + tag, rel_err(p, dP.download()), 1e-5);
  rep.check("adamw 5 steps first moment " + tag, rel_err(m, dM.download()), 1e-5);
  rep.check("adamw 5 steps second moment " + tag, rel_err(v, dV.download()), 1e-5);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("adamw");
    test_rng rng(5);
    check_adamw<float>(rep, ctx, rng, 100003);
    check_adamw<__nv_bfloat16>(rep, ctx, rng, 4099);
    bool threw = false;
    try {
      adamw_step<float>(ctx, 1, nullptr, nullptr, nullptr, nullptr, 0, adamw_options{});
    } catch (const forge::error&) {
      threw = true;
    }
    rep.expect("adamw rejects step 0", threw);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
