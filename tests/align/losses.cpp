// Preference losses against hand-written double-precision reference formulas (values,
// rewards, and gradients by central differences of the reference formula), sequence
// log-probs against per-row unpadded evaluation, and the whole chain loss(logps(θ))
// against finite differences through a tiny f64 model.

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/model/init.hpp"
#include "forge/objectives/preference.hpp"

using namespace forge;
using namespace forge::objectives;

namespace {

// ---- reference formulas, written directly from the papers / TRL's definitions ----
double ls(double x) {
  return std::log(1.0 / (1.0 + std::exp(-x)));
}  // log σ(x), |x| small here

struct pair_in {
  double pc, pr, rc, rr;
  std::int64_t nc, nr;
};

// Mean loss over pairs (and the NLL term where the method has one).
double reference_loss(const pair_loss_options& o, const std::vector<pair_in>& ps) {
  const double b = o.beta, e = o.label_smoothing;
  double tot = 0, sum_pc = 0, n_c = 0;
  for (const auto& p : ps) {
    const double logits = (p.pc - p.pr) - (p.rc - p.rr);  // π_c − π_r − (ρ_c − ρ_r)
    switch (o.kind) {
      case pair_loss::sigmoid:
        tot += -ls(b * logits) * (1 - e) - ls(-b * logits) * e;
        break;
      case pair_loss::robust:
        tot += (-ls(b * logits) * (1 - e) + ls(-b * logits) * e) / (1 - 2 * e);
        break;
      case pair_loss::hinge:
        tot += std::max(0.0, 1 - b * logits);
        break;
      case pair_loss::ipo: {
        const double d = (p.pc - p.rc) / double(p.nc) - (p.pr - p.rr) / double(p.nr);
        tot += (d - 1 / (2 * b)) * (d - 1 / (2 * b));
        break;
      }
      case pair_loss::simpo: {
        const double l = p.pc / double(p.nc) - p.pr / double(p.nr) - o.simpo_gamma / b;
        tot += -ls(b * l) * (1 - e) - ls(-b * l) * e;
        break;
      }
      case pair_loss::orpo: {
        const double ac = p.pc / double(p.nc), ar = p.pr / double(p.nr);
        const double lo = (ac - ar) - (std::log(1 - std::exp(ac)) - std::log(1 - std::exp(ar)));
        tot += -b * ls(lo);
        break;
      }
    }
    sum_pc += p.pc, n_c += double(p.nc);
  }
  double l = tot / double(ps.size());
  if (o.kind == pair_loss::orpo) l += -sum_pc / n_c;
  // α·NLL(chosen) per chosen token: SimPO's cpo_alpha, the reference losses' rpo_alpha.
  if (o.kind != pair_loss::orpo) l += o.sft_weight * (-sum_pc / n_c);
  return l;
}

pair_loss_result run(const pair_loss_options& o, const std::vector<pair_in>& ps) {
  std::vector<double> pc, pr, rc, rr;
  std::vector<std::int64_t> nc, nr;
  for (auto& p : ps)
    pc.push_back(p.pc), pr.push_back(p.pr), rc.push_back(p.rc), rr.push_back(p.rr),
        nc.push_back(p.nc), nr.push_back(p.nr);
  return preference_loss(o, {pc, pr, rc, rr, nc, nr});
}

std::vector<pair_in> random_pairs(std::uint64_t seed, std::size_t n) {
  philox g(seed, 0);
  std::vector<pair_in> ps;
  for (std::size_t i = 0; i < n; ++i) {
    pair_in p;
    p.nc = 1 + std::int64_t(g.below(7)), p.nr = 1 + std::int64_t(g.below(7));
    // log-probs ≈ −0.3..−3 nats per token, reference within ±1 nat of the policy
    p.pc = -double(p.nc) * (0.3 + 2.7 * g.uniform_double());
    p.pr = -double(p.nr) * (0.3 + 2.7 * g.uniform_double());
    p.rc = p.pc + (2 * g.uniform_double() - 1);
    p.rr = p.pr + (2 * g.uniform_double() - 1);
    ps.push_back(p);
  }
  return ps;
}

}  // namespace

TEST_CASE("pairwise losses, rewards and gradients equal the reference formulas") {
  const std::vector<pair_loss_options> cases = {
      {.kind = pair_loss::sigmoid, .beta = 0.1},
      {.kind = pair_loss::sigmoid, .beta = 0.5, .label_smoothing = 0.1},  // cDPO
      {.kind = pair_loss::robust, .beta = 0.3, .label_smoothing = 0.2},
      {.kind = pair_loss::hinge, .beta = 0.7},
      {.kind = pair_loss::ipo, .beta = 0.2},
      {.kind = pair_loss::simpo, .beta = 2.0, .simpo_gamma = 0.5},
      {.kind = pair_loss::simpo,
       .beta = 2.5,
       .label_smoothing = 0.05,
       .simpo_gamma = 1.0,
       .sft_weight = 0.5},
      {.kind = pair_loss::orpo, .beta = 0.1},
      {.kind = pair_loss::sigmoid, .beta = 0.1, .sft_weight = 1.0},  // DPO + NLL (TRL's RPO)
      {.kind = pair_loss::ipo, .beta = 0.2, .sft_weight = 0.25},
  };
  for (const auto& o : cases) {
    INFO("loss " << name_of(o.kind) << " beta " << o.beta << " eps " << o.label_smoothing);
    const auto ps = random_pairs(7 + std::uint64_t(o.beta * 10), 9);
    const auto r = run(o, ps);
    // Same formula evaluated two ways in double: agreement to ~1e-12 relative.
    CHECK(r.loss == Approx(reference_loss(o, ps)).epsilon(1e-12));
    // Gradient: central differences of the reference formula, h = 1e-5 — truncation
    // O(h²·L''') ≈ 1e-10 and rounding O(1e-16/h) ≈ 1e-11, so 1e-7 absolute is ample and
    // still far below the gradients' size (1e-3..1e-1). The hinge is piecewise linear and
    // no sample lies within h of its kink.
    for (std::size_t i = 0; i < ps.size(); ++i) {
      for (int which = 0; which < 2; ++which) {
        auto up = ps, dn = ps;
        const double h = 1e-5;
        (which ? up[i].pr : up[i].pc) += h;
        (which ? dn[i].pr : dn[i].pc) -= h;
        const double fd = (reference_loss(o, up) - reference_loss(o, dn)) / (2 * h);
        CHECK(std::abs((which ? r.d_rejected[i] : r.d_chosen[i]) - fd) < 1e-7);
      }
      const bool avg = o.kind == pair_loss::simpo || o.kind == pair_loss::orpo;
      const double want_c =
          avg ? o.beta * ps[i].pc / double(ps[i].nc) : o.beta * (ps[i].pc - ps[i].rc);
      const double want_r =
          avg ? o.beta * ps[i].pr / double(ps[i].nr) : o.beta * (ps[i].pr - ps[i].rr);
      CHECK(r.chosen_rewards[i] == Approx(want_c).epsilon(1e-14));
      CHECK(r.rejected_rewards[i] == Approx(want_r).epsilon(1e-14));
    }
  }
}

TEST_CASE("DPO at zero margin is log 2 with gradient ∓β/2 per pair (closed form)") {
  // u = 0 → σ(0) = 1/2: L = log 2, dL/dπ_c = −β/2 / B.
  std::vector<pair_in> ps{{-3, -4, -3, -4, 2, 2}, {-1, -2, -1, -2, 1, 1}};
  const auto r = run({.kind = pair_loss::sigmoid, .beta = 0.2}, ps);
  CHECK(r.loss == Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(r.d_chosen[0] == Approx(-0.2 / 2 / 2).epsilon(1e-15));
  CHECK(r.d_rejected[1] == Approx(0.2 / 2 / 2).epsilon(1e-15));
  CHECK(r.accuracy() == 0.0);  // rewards tie: not counted as correct
}

TEST_CASE("KTO loss, KL estimate and gradients equal the reference formula") {
  philox g(3, 1);
  const std::size_t n = 8;
  std::vector<double> pi(n), ref(n), pkl(n), rkl(n);
  std::vector<unsigned char> lab(n);
  for (std::size_t i = 0; i < n; ++i) {
    pi[i] = -5 * g.uniform_double() - 0.5, ref[i] = pi[i] + (2 * g.uniform_double() - 1);
    pkl[i] = -6 * g.uniform_double() - 1, rkl[i] = pkl[i] - 0.5 * g.uniform_double();
    lab[i] = i % 3 != 0;
  }
  const kto_options o{.beta = 0.3, .desirable_weight = 1.0, .undesirable_weight = 1.33};
  auto reference = [&](const std::vector<double>& p) {
    double kl = 0;
    for (std::size_t k = 0; k < n; ++k) kl += pkl[k] - rkl[k];
    kl = std::max(0.0, kl / double(n));
    double t = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = p[i] - ref[i];
      t += lab[i] ? o.desirable_weight * (1 - 1 / (1 + std::exp(-o.beta * (x - kl))))
                  : o.undesirable_weight * (1 - 1 / (1 + std::exp(-o.beta * (kl - x))));
    }
    return t / double(n);
  };
  const auto r = kto_loss(o, {pi, ref, lab, pkl, rkl});
  CHECK(r.kl > 0);
  CHECK(r.loss == Approx(reference(pi)).epsilon(1e-12));
  for (std::size_t i = 0; i < n; ++i) {
    auto up = pi, dn = pi;
    up[i] += 1e-5, dn[i] -= 1e-5;
    CHECK(std::abs(r.d_policy[i] - (reference(up) - reference(dn)) / 2e-5) < 1e-8);  // as above
    CHECK(r.rewards[i] == Approx(o.beta * (pi[i] - ref[i])).epsilon(1e-14));
  }
  // A negative KL estimate is clamped to 0 (TRL's clamp(min=0)).
  std::vector<double> neg(rkl);
  for (auto& v : neg) v += 10;
  CHECK(kto_loss(o, {pi, ref, lab, pkl, neg}).kl == 0.0);
  CHECK(kto_kl_partner(0, 5) == 4);
  CHECK(kto_kl_partner(3, 5) == 2);
}

TEST_CASE("bad loss inputs are errors naming the pair") {
  std::vector<pair_in> ps{{-3, -4, -3, -4, 2, 2}, {-1, NAN, -1, -2, 1, 1}};
  REQUIRE_THROWS_WITH(run({}, ps), Catch::Contains("pair 1") && Catch::Contains("not finite"));
  ps[1].pr = -2, ps[1].nr = 0;
  REQUIRE_THROWS_WITH(run({}, ps), Catch::Contains("empty completion"));
  ps[1].nr = 1;
  REQUIRE_THROWS_WITH(run({.label_smoothing = 0.5}, ps), Catch::Contains("label_smoothing"));
  std::vector<double> one{-1.0};
  std::vector<std::int64_t> n1{1};
  REQUIRE_THROWS_WITH(preference_loss({}, {one, one, {}, {}, n1, n1}),
                      Catch::Contains("differ in size"));
  // simpo and orpo need no reference
  CHECK_NOTHROW(preference_loss({.kind = pair_loss::simpo}, {one, one, {}, {}, n1, n1}));
}

namespace {

model::model_config tiny_f64_config() {
  model::model_config c;
  c.vocab_size = 11, c.hidden_size = 8, c.intermediate_size = 12, c.num_hidden_layers = 2;
  c.num_attention_heads = 2, c.num_key_value_heads = 1, c.head_dim = 4;
  c.max_position_embeddings = 32, c.rms_norm_eps = 1e-6;
  c.sliding_window.assign(2, 0);
  return c;
}

using seq = std::vector<std::int32_t>;

}  // namespace

TEST_CASE("sequence log-probs sum the completion tokens only, padding-independent") {
  auto m = model::random_model<double>(tiny_f64_config(), {.seed = 4, .initializer_range = 0.5});
  const seq p0{1, 2, 3}, c0{4, 5}, p1{6}, c1{7, 8, 9, 10};
  std::vector<completion_sequence> rows{{p0, c0}, {p1, c1}};
  const auto b = make_sequence_batch(rows, 0);
  model::workspace<double> ws;
  const auto got = sequence_logprobs(backend::scalar{}, m, ws, b);
  // Reference: each row alone, unpadded, log softmax summed over the completion positions.
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::int64_t> ids(rows[r].prompt.begin(), rows[r].prompt.end());
    ids.insert(ids.end(), rows[r].completion.begin(), rows[r].completion.end());
    model::workspace<double> w1;
    const auto z = model::forward(backend::scalar{}, m, w1,
                                  {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids});
    double want = 0;
    const std::size_t P = rows[r].prompt.size(), V = 11;
    for (std::size_t t = P; t < ids.size(); ++t) {
      double s = 0;
      for (std::size_t v = 0; v < V; ++v) s += std::exp(z[(t - 1) * V + v]);
      want += z[(t - 1) * V + std::size_t(ids[t])] - std::log(s);
    }
    CHECK(got[r] == Approx(want).epsilon(1e-12));
  }
  CHECK(b.completion_tokens == std::vector<std::int64_t>{2, 4});
  std::vector<completion_sequence> bad{{p0, {}}};
  REQUIRE_THROWS_WITH(make_sequence_batch(bad, 0), Catch::Contains("empty prompt or completion"));
}

TEST_CASE("loss(logps(θ)) gradients through the model match finite differences (f64)") {
  const seq p0{1, 2, 3}, c0{4, 5}, r0{6, 7, 8}, p1{9, 1}, c1{2}, r1{3, 4};
  // Rows: [chosen_0, chosen_1, rejected_0, rejected_1] in one batch, as the trainer does.
  std::vector<completion_sequence> rows{{p0, c0}, {p1, c1}, {p0, r0}, {p1, r1}};
  const auto b = make_sequence_batch(rows, 0);
  const std::vector<double> ref_c{-4.0, -2.5}, ref_r{-7.0, -4.0};
  const std::vector<std::int64_t> nc{2, 1}, nr{3, 2};
  auto loss_from = [&](const std::vector<double>& lp, const pair_loss_options& o) {
    const std::vector<double> pc{lp[0], lp[1]}, pr{lp[2], lp[3]};
    return preference_loss(o, {pc, pr, ref_c, ref_r, nc, nr});
  };
  for (const pair_loss_options& o :
       {pair_loss_options{.kind = pair_loss::sigmoid, .beta = 0.5},
        pair_loss_options{.kind = pair_loss::ipo, .beta = 0.3},
        pair_loss_options{.kind = pair_loss::simpo, .beta = 2.0, .sft_weight = 0.3},
        pair_loss_options{.kind = pair_loss::orpo, .beta = 0.2}}) {
    INFO("loss " << name_of(o.kind));
    auto m = model::random_model<double>(tiny_f64_config(), {.seed = 9, .initializer_range = 0.5});
    m.enable_grads();
    model::workspace<double> ws;
    const auto lp = sequence_logprobs(backend::scalar{}, m, ws, b, true);
    const auto res = loss_from(lp, o);
    const std::vector<double> g{res.d_chosen[0], res.d_chosen[1], res.d_rejected[0],
                                res.d_rejected[1]};
    sequence_logprobs_backward(ws, b, g);
    model::backward(backend::scalar{}, m, ws);
    auto objective = [&] {
      model::workspace<double> w2;
      return loss_from(sequence_logprobs(backend::scalar{}, m, w2, b), o).loss;
    };
    double worst = 0;
    philox pick(5, 5);
    m.for_each_parameter([&](model::parameter<double>& p) {
      for (int k = 0; k < 3; ++k) {
        const auto i = std::size_t(pick.below(std::uint32_t(p.numel())));
        const double x = p.value[i], h = 1e-5;
        p.value[i] = x + h;
        const double up = objective();
        p.value[i] = x - h;
        const double dn = objective();
        p.value[i] = x;
        const double fd = (up - dn) / (2 * h);
        // relative error with a 1e-4 floor, as the model's own gradient test
        worst = std::max(
            worst, std::abs(p.grad[i] - fd) / std::max({std::abs(p.grad[i]), std::abs(fd), 1e-4}));
      }
    });
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("KTO gradient through the model matches finite differences (f64)") {
  const seq p0{1, 2}, c0{3, 4}, p1{5, 6, 7}, c1{8}, p2{9}, c2{10, 1, 2};
  std::vector<completion_sequence> rows{{p0, c0}, {p1, c1}, {p2, c2}};
  std::vector<completion_sequence> kl_rows;
  for (std::size_t i = 0; i < rows.size(); ++i)
    kl_rows.push_back({rows[i].prompt, rows[kto_kl_partner(i, rows.size())].completion});
  const auto b = make_sequence_batch(rows, 0), bk = make_sequence_batch(kl_rows, 0);
  const std::vector<double> ref{-5.0, -2.0, -7.0}, ref_kl{-40.0, -40.0, -40.0};
  const std::vector<unsigned char> lab{1, 0, 1};
  auto m = model::random_model<double>(tiny_f64_config(), {.seed = 2, .initializer_range = 0.5});
  m.enable_grads();
  // The KL estimate is detached in KTO (TRL computes it under no_grad): the policy's KL
  // log-probs are taken once at θ and held fixed while differencing.
  model::workspace<double> wk;
  const auto pkl = sequence_logprobs(backend::scalar{}, m, wk, bk);
  const kto_options o{.beta = 0.5, .undesirable_weight = 1.5};
  auto objective = [&](bool grad) {
    model::workspace<double> w;
    const auto lp = sequence_logprobs(backend::scalar{}, m, w, b, grad);
    const auto r = kto_loss(o, {lp, ref, lab, pkl, ref_kl});
    if (grad) {
      REQUIRE(r.kl > 0);  // the KL term is active
      sequence_logprobs_backward(w, b, r.d_policy);
      model::backward(backend::scalar{}, m, w);
    }
    return r.loss;
  };
  objective(true);
  double worst = 0;
  philox pick(8, 8);
  m.for_each_parameter([&](model::parameter<double>& p) {
    for (int k = 0; k < 3; ++k) {
      const auto i = std::size_t(pick.below(std::uint32_t(p.numel())));
      const double x = p.value[i], h = 1e-5;
      p.value[i] = x + h;
      const double up = objective(false);
      p.value[i] = x - h;
      const double dn = objective(false);
      p.value[i] = x;
      const double fd = (up - dn) / (2 * h);
      worst = std::max(
          worst, std::abs(p.grad[i] - fd) / std::max({std::abs(p.grad[i]), std::abs(fd), 1e-4}));
    }
  });
  CHECK(worst < 1e-6);  // as the pairwise case
}
