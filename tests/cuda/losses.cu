// Cross-entropy with ignore index on the GPU against a double-precision CPU reference of
// backend/cross_entropy.hpp's definition, on random logits with a quarter of the rows ignored;
// plus the all-ignored batch (loss 0, zero gradient) and the out-of-range target error; and
// the preference-training reductions (sequence log-likelihoods and their gradient; DPO with
// label smoothing, IPO and hinge losses with their gradients) against double-precision
// references of the formulas in backend/cuda/preference.cuh.

#include <cmath>

#include "cuda_test.cuh"
#include "forge/backend/cuda/cross_entropy.cuh"
#include "forge/backend/cuda/preference.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

template <class T>
void check_ce(report& rep, context& ctx, test_rng& rng, std::int64_t rows, std::int64_t vocab,
              double ignored_fraction) {
  std::vector<double> z;
  auto hz = random_vector<T>(
      std::size_t(rows * vocab), [&] { return 3.0 * rng.normal(); }, z);
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
  const double got =
      cross_entropy<T>(ctx, rows, vocab, dZ.data(), dY.data(), dDZ.data(), grad_scale);
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

template <class T>
void check_sequence_logprobs(report& rep, context& ctx, test_rng& rng, std::int64_t batch,
                             std::int64_t len, std::int64_t vocab) {
  const std::int64_t rows = batch * len;
  std::vector<double> z;
  auto hz = random_vector<T>(
      std::size_t(rows * vocab), [&] { return 2.0 * rng.normal(); }, z);
  std::vector<std::int64_t> y(static_cast<std::size_t>(rows));
  for (auto& t : y)
    t = rng.uniform() < 0.3 ? -100 : std::int64_t(rng.next() % std::uint64_t(vocab));
  std::vector<float> g(static_cast<std::size_t>(batch));
  for (auto& v : g) v = float(rng.normal());
  std::vector<double> lp(std::size_t(batch), 0.0), dz(z.size(), 0.0);
  for (std::int64_t t = 0; t < rows; ++t) {
    const auto yt = y[std::size_t(t)];
    if (yt == -100) continue;
    const double* zt = z.data() + t * vocab;
    double mx = zt[0];
    for (std::int64_t i = 1; i < vocab; ++i) mx = std::max(mx, zt[i]);
    double sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(zt[i] - mx);
    const double lse = mx + std::log(sum);
    lp[std::size_t(t / len)] += zt[yt] - lse;
    for (std::int64_t i = 0; i < vocab; ++i)
      dz[std::size_t(t * vocab + i)] =
          double(g[std::size_t(t / len)]) * ((i == yt ? 1.0 : 0.0) - std::exp(zt[i] - lse));
  }
  device_buffer<T> dZ(hz.data(), hz.size()), dDZ(hz.size());
  device_buffer<std::int64_t> dY(y.data(), y.size());
  device_buffer<float> tok(static_cast<std::size_t>(rows)), seq(static_cast<std::size_t>(batch)),
      dG(g.data(), g.size());
  FORGE_CUDA_CHECK(cudaMemset(dDZ.data(), 0xff, dDZ.bytes()));
  sequence_logprobs<T>(ctx, batch, len, vocab, dZ.data(), dY.data(), tok.data(), seq.data());
  sequence_logprobs_backward<T>(ctx, batch, len, vocab, dZ.data(), dY.data(), dG.data(),
                                dDZ.data());
  ctx.synchronize();
  const std::string tag = std::string(type_name<T>()) + " batch " + std::to_string(batch) +
                          " len " + std::to_string(len) + " vocab " + std::to_string(vocab);
  // f32 logsumexp per token (~1e-7 relative of values ~10), summed in double: 1e-5.
  rep.check("sequence logprobs " + tag, rel_err(lp, seq.download()), 1e-5);
  rep.check("sequence logprobs backward " + tag, rel_err(dz, dDZ.download()), store_tol<T>());
}

void check_preference(report& rep, context& ctx, test_rng& rng, preference_options o,
                      const std::string& name) {
  const std::int64_t batch = 300;
  std::vector<float> pc(static_cast<std::size_t>(batch)), pr(pc.size()), rc(pc.size()),
      rr(pc.size());
  for (std::size_t i = 0; i < pc.size(); ++i) {
    rc[i] = float(-50 + 10 * rng.normal());
    rr[i] = float(-50 + 10 * rng.normal());
    pc[i] = float(rc[i] + 5 * rng.normal());
    pr[i] = float(rr[i] + 5 * rng.normal());
  }
  double loss = 0;
  std::vector<double> dc(pc.size()), dr(pc.size());
  const double beta = o.beta, eps = o.label_smoothing, B = double(batch);
  for (std::size_t i = 0; i < pc.size(); ++i) {
    const double u = (double(pc[i]) - rc[i]) - (double(pr[i]) - rr[i]), h = beta * u;
    const double sig = 1.0 / (1.0 + std::exp(-h));
    double l = 0, du = 0;
    if (o.kind == preference_kind::dpo) {
      l = -(1 - eps) * std::log(sig) - eps * std::log(1 - sig);
      du = beta * (-(1 - eps) * (1 - sig) + eps * sig);
    } else if (o.kind == preference_kind::ipo) {
      l = (u - 1 / (2 * beta)) * (u - 1 / (2 * beta));
      du = 2 * (u - 1 / (2 * beta));
    } else {
      l = std::max(0.0, 1 - h);
      du = h < 1 ? -beta : 0.0;
    }
    loss += l / B;
    dc[i] = du / B;
    dr[i] = -du / B;
  }
  device_buffer<float> dPC(pc.data(), pc.size()), dPR(pr.data(), pr.size()),
      dRC(rc.data(), rc.size()), dRR(rr.data(), rr.size()), dL(1), gC(pc.size()), gR(pc.size());
  preference_loss(ctx, batch, o, dPC.data(), dPR.data(), dRC.data(), dRR.data(), dL.data(),
                  gC.data(), gR.data());
  ctx.synchronize();
  // Inputs are f32 values used exactly; the loss is formed in double and stored as f32.
  rep.check(name + " loss", std::abs(double(dL.download()[0]) - loss) / std::abs(loss), 1e-6);
  rep.check(name + " d policy chosen", rel_err(dc, gC.download()), 1e-6);
  rep.check(name + " d policy rejected", rel_err(dr, gR.download()), 1e-6);
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
      rep.expect(
          "cross_entropy names the row of an out-of-range target",
          msg.find("row 1") != std::string::npos && msg.find("found 10") != std::string::npos);
    }
    check_sequence_logprobs<float>(rep, ctx, rng, 3, 17, 1000);
    check_sequence_logprobs<__nv_bfloat16>(rep, ctx, rng, 4, 9, 32000);
    check_preference(rep, ctx, rng, {.kind = preference_kind::dpo, .beta = 0.1f}, "dpo beta 0.1");
    check_preference(rep, ctx, rng,
                     {.kind = preference_kind::dpo, .beta = 0.5f, .label_smoothing = 0.1f},
                     "cdpo beta 0.5 smoothing 0.1");
    check_preference(rep, ctx, rng, {.kind = preference_kind::ipo, .beta = 0.1f}, "ipo beta 0.1");
    check_preference(rep, ctx, rng, {.kind = preference_kind::hinge, .beta = 0.1f},
                     "hinge beta 0.1");
    return rep.finish();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
