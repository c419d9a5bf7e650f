// DoRA checked in double precision: the forward against PEFT's formula (the merged weight
// m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row applied to x), the gradients against central finite
// differences of the same function with the row norm held constant (PEFT detaches it,
// DoRA §4.3), and merge/unmerge.

#include <catch2/catch.hpp>

#include <cmath>

#include "forge/adapters/lora.hpp"

using namespace forge;
using namespace forge::adapters;

namespace {
struct dora_case {
  std::int64_t in = 6, out = 5, rank = 3, rows = 4;
  model::linear<double> lin;
  std::shared_ptr<lora_linear<double, backend::scalar>> mod;
  std::vector<double> x, c;  // input [rows, in]; loss weights c: L = Σ c ⊙ y
  dora_case() {
    philox g(11, 0);
    lin.in = in, lin.out = out;
    lin.weight.shape = {out, in};
    lin.weight.value.resize(std::size_t(out * in));
    for (auto& v : lin.weight.value) v = g.normal();
    mod = std::make_shared<lora_linear<double, backend::scalar>>(
        "q_proj", lin, lora_config{.rank = 3, .alpha = 6, .use_dora = true});
    for (auto& v : mod->A) v = 0.5 * g.normal();
    for (auto& v : mod->B) v = 0.5 * g.normal();  // non-zero so the direction term matters
    mod->m = mod->weight_norm();
    for (auto& v : mod->m) v *= 1 + 0.3 * g.normal();
    x.resize(std::size_t(rows * in));
    c.resize(std::size_t(rows * out));
    for (auto& v : x) v = g.normal();
    for (auto& v : c) v = g.normal();
  }
  // The adapter's output alone (the base term is added by the linear layer).
  std::vector<double> y_of(const std::vector<double>& xs) {
    std::vector<double> y(std::size_t(rows * out), 0.0);
    backend::gemm_nt(backend::scalar{}, rows, out, in, xs.data(), lin.weight.value.data(), y.data(),
                     false);
    mod->forward(xs.data(), rows, y.data());
    return y;
  }
  // Σ c ⊙ [x·Wᵀ + (g−1)⊙(x·Wᵀ) + g⊙ s·x·Aᵀ·Bᵀ] with g = m / n0 and n0 a constant.
  double detached_loss(const std::vector<double>& n0) const {
    const double s = mod->scale;
    double L = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < out; ++o) {
        double base = 0, lora = 0;
        for (std::int64_t i = 0; i < in; ++i) {
          base += x[r * in + i] * lin.weight.value[o * in + i];
          double ba = 0;
          for (std::int64_t k = 0; k < rank; ++k) ba += mod->B[o * rank + k] * mod->A[k * in + i];
          lora += x[r * in + i] * ba;
        }
        const double gn = mod->m[o] / n0[o];
        L += c[r * out + o] * (gn * base + gn * s * lora);
      }
    return L;
  }
};
}  // namespace

TEST_CASE("DoRA's forward equals PEFT's formula m ⊙ (W + sBA) / ‖W + sBA‖ applied to x") {
  dora_case t;
  const auto y = t.y_of(t.x);
  const double s = 2.0;  // alpha / r
  for (std::int64_t o = 0; o < t.out; ++o) {
    std::vector<double> w(std::size_t(t.in));
    double n = 0;
    for (std::int64_t i = 0; i < t.in; ++i) {
      double ba = 0;
      for (std::int64_t k = 0; k < t.rank; ++k)
        ba += t.mod->B[o * t.rank + k] * t.mod->A[k * t.in + i];
      w[i] = t.lin.weight.value[o * t.in + i] + s * ba;
      n += w[i] * w[i];
    }
    n = std::sqrt(n);
    for (std::int64_t r = 0; r < t.rows; ++r) {
      double want = 0;
      for (std::int64_t i = 0; i < t.in; ++i) want += t.x[r * t.in + i] * t.mod->m[o] / n * w[i];
      CHECK(std::abs(y[r * t.out + o] - want) < 1e-12);  // double rounding only
    }
  }
}

TEST_CASE("DoRA's gradients match finite differences with the norm detached") {
  dora_case t;
  std::vector<double> dx(std::size_t(t.rows * t.in), 0.0);
  t.mod->backward(t.x.data(), t.c.data(), t.rows, dx.data());
  // The base layer's own input gradient c·W, which the linear layer adds.
  backend::gemm_nn(backend::scalar{}, t.rows, t.out, t.in, t.c.data(), t.lin.weight.value.data(),
                   dx.data(), true);
  const auto n0 = t.mod->weight_norm();
  const double h = 1e-6;
  // Central differences in double: truncation O(h²) and rounding ~1e-16/h give ~1e-9.
  auto check = [&](std::vector<double>& p, const std::vector<double>& grad, const char* what) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double up = t.detached_loss(n0);
      p[i] = keep - h;
      const double dn = t.detached_loss(n0);
      p[i] = keep;
      INFO(what << "[" << i << "]");
      CHECK(std::abs((up - dn) / (2 * h) - grad[i]) < 1e-7 * std::max(1.0, std::abs(grad[i])));
    }
  };
  check(t.mod->A, t.mod->dA, "A");
  check(t.mod->B, t.mod->dB, "B");
  check(t.mod->m, t.mod->dm, "m");
  check(t.x, dx, "x");
}

TEST_CASE("DoRA merge gives the adapted outputs from the weight alone; unmerge restores W") {
  dora_case t;
  const auto y = t.y_of(t.x);
  const auto W0 = t.lin.weight.value;
  t.mod->merge(t.lin);
  const auto ym = t.y_of(t.x);  // the merged module adds nothing
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(std::abs(y[i] - ym[i]) < 1e-12);
  t.mod->unmerge(t.lin);
  for (std::size_t i = 0; i < W0.size(); ++i)
    CHECK(std::abs(t.lin.weight.value[i] - W0[i]) < 1e-12);
}

TEST_CASE("LoRA dropout is the same mask in forward and backward, keyed by the step") {
  dora_case t;
  t.mod->dora = false;
  t.mod->dropout = 0.5;
  t.mod->training = true;
  t.mod->dropout_step = 7;
  // With dropout, L(x) is linear in x for a fixed mask: finite differences check dx.
  std::vector<double> dx(std::size_t(t.rows * t.in), 0.0);
  t.mod->backward(t.x.data(), t.c.data(), t.rows, dx.data());
  auto loss = [&] {
    std::vector<double> y(std::size_t(t.rows * t.out), 0.0);
    t.mod->forward(t.x.data(), t.rows, y.data());
    double L = 0;
    for (std::size_t i = 0; i < y.size(); ++i) L += t.c[i] * y[i];
    return L;
  };
  for (std::size_t i = 0; i < t.x.size(); ++i) {
    const double keep = t.x[i];
    t.x[i] = keep + 1e-6;
    const double up = loss();
    t.x[i] = keep - 1e-6;
    const double dn = loss();
    t.x[i] = keep;
    CHECK(std::abs((up - dn) / 2e-6 - dx[i]) < 1e-7);
  }
  const double a = loss();
  t.mod->dropout_step = 8;
  CHECK(loss() != a);  // another step draws another mask
  t.mod->training = false;
  std::vector<double> y(std::size_t(t.rows * t.out), 0.0);
  t.mod->forward(t.x.data(), t.rows, y.data());
  double L = 0;
  for (std::size_t i = 0; i < y.size(); ++i) L += t.c[i] * y[i];
  t.mod->dropout = 0;
  CHECK(loss() == L);  // evaluation: no dropout
}
