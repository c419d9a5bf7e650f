// Tiled (online-softmax) attention forward and backward on the GPU against a double-precision
// CPU reference of backend/attention.hpp's definition (explicit softmax over the full score
// row, then the backward formulas with the saved probabilities), on random inputs: grouped
// heads, a sliding window with a key padding mask, and a decode-style call with a cache offset.
// Tolerances: f32 storage 1e-4 (f32 sums over up to 100 keys and the fast exponential, a few
// 1e-6 relative, with margin); f16/bf16 storage: the output's one rounding (store_tol) plus
// the inputs of the backward sums read back from rounded o — 2·store_tol.

#include <cmath>

#include "cuda_test.cuh"
#include "forge/backend/cuda/attention.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class T>
void check_attention(report& rep, context& ctx, test_rng& rng, attention_dims a, bool use_mask) {
  const std::int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  const std::size_t nq = std::size_t(a.batch * a.q_len * a.heads * D);
  const std::size_t nk = std::size_t(a.batch * a.kv_stride * a.kv_heads * D);
  std::vector<double> q, k, v, dO;
  auto hq = random_vector<T>(
      nq, [&] { return rng.normal(); }, q);
  auto hk = random_vector<T>(
      nk, [&] { return rng.normal(); }, k);
  auto hv = random_vector<T>(
      nk, [&] { return rng.normal(); }, v);
  auto hdo = random_vector<T>(
      nq, [&] { return rng.normal(); }, dO);
  std::vector<unsigned char> mask(std::size_t(a.batch * a.kv_stride), 1);
  if (use_mask)
    for (auto& m : mask) m = rng.uniform() < 0.8;
  auto allowed = [&](std::int64_t b, std::int64_t i, std::int64_t j) {
    const std::int64_t qi = a.q_offset + i;
    return j <= qi && (!use_mask || mask[std::size_t(b * a.kv_stride + j)]) &&
           (a.window <= 0 || qi - j < a.window);
  };
  std::vector<double> o(nq, 0.0), dq(nq, 0.0), dk(nk, 0.0), dv(nk, 0.0);
  std::vector<double> p(static_cast<std::size_t>(a.kv_len)), dp(p.size());
  for (std::int64_t b = 0; b < a.batch; ++b)
    for (std::int64_t h = 0; h < a.heads; ++h)
      for (std::int64_t i = 0; i < a.q_len; ++i) {
        const std::size_t qo = std::size_t(((b * a.q_len + i) * a.heads + h) * D);
        double mx = -INFINITY;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const std::size_t ko = std::size_t(((b * a.kv_stride + j) * a.kv_heads + h / G) * D);
          double s = 0;
          for (std::int64_t e = 0; e < D; ++e) s += q[qo + std::size_t(e)] * k[ko + std::size_t(e)];
          p[std::size_t(j)] = s * a.scale;
          if (allowed(b, i, j)) mx = std::max(mx, p[std::size_t(j)]);
        }
        if (mx == -INFINITY) continue;  // no allowed key: o = 0 and no gradient
        double sum = 0;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          p[std::size_t(j)] = allowed(b, i, j) ? std::exp(p[std::size_t(j)] - mx) : 0.0;
          sum += p[std::size_t(j)];
        }
        double dsum = 0;
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          p[std::size_t(j)] /= sum;
          const std::size_t ko = std::size_t(((b * a.kv_stride + j) * a.kv_heads + h / G) * D);
          double d = 0;
          for (std::int64_t e = 0; e < D; ++e) {
            o[qo + std::size_t(e)] += p[std::size_t(j)] * v[ko + std::size_t(e)];
            d += dO[qo + std::size_t(e)] * v[ko + std::size_t(e)];
          }
          dp[std::size_t(j)] = d;
          dsum += p[std::size_t(j)] * d;
        }
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          const std::size_t ko = std::size_t(((b * a.kv_stride + j) * a.kv_heads + h / G) * D);
          const double ds = p[std::size_t(j)] * (dp[std::size_t(j)] - dsum) * a.scale;
          for (std::int64_t e = 0; e < D; ++e) {
            dq[qo + std::size_t(e)] += ds * k[ko + std::size_t(e)];
            dk[ko + std::size_t(e)] += ds * q[qo + std::size_t(e)];
            dv[ko + std::size_t(e)] += p[std::size_t(j)] * dO[qo + std::size_t(e)];
          }
        }
      }
  device_buffer<T> dQ(hq.data(), nq), dK(hk.data(), nk), dV(hv.data(), nk), dDO(hdo.data(), nq);
  device_buffer<T> dOut(nq), dDQ(nq), dDK(nk), dDV(nk);
  device_buffer<unsigned char> dM(mask.data(), mask.size());
  device_buffer<float> dL(std::size_t(a.batch * a.heads * a.q_len)), dDelta(dL.size());
  for (auto* bf : {&dOut, &dDQ, &dDK, &dDV})
    FORGE_CUDA_CHECK(cudaMemset(bf->data(), 0xff, bf->bytes()));
  const unsigned char* mp = use_mask ? dM.data() : nullptr;
  attention_forward<T>(ctx, a, dQ.data(), dK.data(), dV.data(), mp, dOut.data(), dL.data());
  attention_backward<T>(ctx, a, dQ.data(), dK.data(), dV.data(), mp, dOut.data(), dL.data(),
                        dDO.data(), dDQ.data(), dDK.data(), dDV.data(), dDelta.data());
  ctx.synchronize();
  // Only slots [0, kv_len) of dk, dv are results.
  auto used = [&](const auto& full) {
    std::vector<std::decay_t<decltype(full[0])>> u;
    for (std::int64_t b = 0; b < a.batch; ++b)
      for (std::int64_t j = 0; j < a.kv_len; ++j)
        for (std::int64_t e = 0; e < a.kv_heads * D; ++e)
          u.push_back(full[std::size_t((b * a.kv_stride + j) * a.kv_heads * D + e)]);
    return u;
  };
  const double tol = std::is_same_v<T, float> ? 1e-4 : 2 * store_tol<T>();
  const std::string tag = std::string(type_name<T>()) + " b" + std::to_string(a.batch) + " q" +
                          std::to_string(a.q_len) + " kv" + std::to_string(a.kv_len) + " h" +
                          std::to_string(a.heads) + "/" + std::to_string(a.kv_heads) + " d" +
                          std::to_string(D) + (a.window ? " window" : "") +
                          (use_mask ? " mask" : "") + (a.q_offset ? " offset" : "");
  rep.check("attention forward o " + tag, rel_err(o, dOut.download()), tol);
  rep.check("attention backward dq " + tag, rel_err(dq, dDQ.download()), tol);
  rep.check("attention backward dk " + tag, rel_err(used(dk), used(dDK.download())), tol);
  rep.check("attention backward dv " + tag, rel_err(used(dv), used(dDV.download())), tol);
}

}  // namespace

int main() {
  try {
    context ctx;
    report rep("attention");
    test_rng rng(17);
    attention_dims a;
    a = {.batch = 2,
         .q_len = 77,
         .kv_len = 77,
         .kv_stride = 77,
         .heads = 4,
         .kv_heads = 2,
         .head_dim = 64,
         .q_offset = 0,
         .window = 0,
         .scale = 0.125f};
    check_attention<float>(rep, ctx, rng, a, false);
    check_attention<__nv_bfloat16>(rep, ctx, rng, a, false);
    a = {.batch = 1,
         .q_len = 100,
         .kv_len = 100,
         .kv_stride = 100,
         .heads = 2,
         .kv_heads = 1,
         .head_dim = 128,
         .q_offset = 0,
         .window = 33,
         .scale = 0.0883883f};
    check_attention<float>(rep, ctx, rng, a, true);
    check_attention<__half>(rep, ctx, rng, a, true);
    a = {.batch = 2,
         .q_len = 3,
         .kv_len = 70,
         .kv_stride = 80,
         .heads = 4,
         .kv_heads = 4,
         .head_dim = 128,
         .q_offset = 67,
         .window = 0,
         .scale = 0.0883883f};
    check_attention<float>(rep, ctx, rng, a, true);
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
