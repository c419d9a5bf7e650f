// Every simd<Arch> kernel against its scalar reference on random inputs, in f32 and f64.
// Tolerances: the fast kernels change only summation order and use FMA, so results agree
// to a few ulps of the accumulated magnitude: 1e-5 relative in f32, 1e-12 in f64.

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "forge/backend/attention.hpp"
#include "forge/backend/cross_entropy.hpp"
#include "forge/backend/gemm.hpp"
#include "forge/backend/rmsnorm.hpp"
#include "forge/backend/rope.hpp"
#include "forge/backend/swiglu.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using forge::philox;

namespace {
template <class T>
std::vector<T> randv(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  philox r(seed, n);
  std::vector<T> v(n);
  for (auto& x : v) x = T(r.normal() * scale);
  return v;
}
template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}
// max |a − b| / max(1, max |a|): relative to the magnitude of the result.
template <class T>
double diff(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  double m = 1, d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, double(std::abs(a[i])));
    d = std::max(d, double(std::abs(a[i] - b[i])));
  }
  return d / m;
}
using simd = backend::simd<>;
using scalar = backend::scalar;
}  // namespace

TEMPLATE_TEST_CASE("gemm: Eigen agrees with the triple loop", "", float, double) {
  using T = TestType;
  for (auto [M, N, K] : {std::array<std::int64_t, 3>{1, 33, 17},
                         {7, 5, 64},
                         {65, 31, 40},
                         {2, 1100, 24},
                         {130, 97, 100}}) {
    auto A = randv<T>(M * K, 1), B = randv<T>(N * K, 2), dY = randv<T>(M * N, 3);
    for (bool acc : {false, true}) {
      auto c1 = randv<T>(M * N, 4), c2 = c1;
      backend::gemm_nt(scalar{}, M, N, K, A.data(), B.data(), c1.data(), acc);
      backend::gemm_nt(simd{}, M, N, K, A.data(), B.data(), c2.data(), acc);
      CHECK(diff(c1, c2) < tol<T>());
      auto d1 = randv<T>(M * K, 5), d2 = d1;
      backend::gemm_nn(scalar{}, M, N, K, dY.data(), B.data(), d1.data(), acc);
      backend::gemm_nn(simd{}, M, N, K, dY.data(), B.data(), d2.data(), acc);
      CHECK(diff(d1, d2) < tol<T>());
      auto w1 = randv<T>(N * K, 6), w2 = w1;
      backend::gemm_tn(scalar{}, M, N, K, dY.data(), A.data(), w1.data(), acc);
      backend::gemm_tn(simd{}, M, N, K, dY.data(), A.data(), w2.data(), acc);
      CHECK(diff(w1, w2) < tol<T>());
    }
  }
}

TEMPLATE_TEST_CASE("rmsnorm forward and backward: simd agrees with scalar", "", float, double) {
  using T = TestType;
  const std::int64_t rows = 9, n = 37;  // n not a multiple of the vector width: tails run
  auto x = randv<T>(rows * n, 1), w = randv<T>(n, 2), dy = randv<T>(rows * n, 3);
  std::vector<T> y1(rows * n), y2(rows * n), r1(rows), r2(rows);
  backend::rmsnorm_forward(scalar{}, rows, n, x.data(), w.data(), T(1e-5), y1.data(), r1.data());
  backend::rmsnorm_forward(simd{}, rows, n, x.data(), w.data(), T(1e-5), y2.data(), r2.data());
  CHECK(diff(y1, y2) < tol<T>());
  CHECK(diff(r1, r2) < tol<T>());
  auto dx1 = randv<T>(rows * n, 4), dx2 = dx1;
  std::vector<T> dw1(n, T(0.5)), dw2 = dw1;
  backend::rmsnorm_backward(scalar{}, rows, n, x.data(), w.data(), r1.data(), dy.data(), dx1.data(),
                            dw1.data(), true);
  backend::rmsnorm_backward(simd{}, rows, n, x.data(), w.data(), r1.data(), dy.data(), dx2.data(),
                            dw2.data(), true);
  CHECK(diff(dx1, dx2) < tol<T>());
  CHECK(diff(dw1, dw2) < tol<T>());
}

TEMPLATE_TEST_CASE("rope: simd agrees with scalar, and backward inverts forward", "", float,
                   double) {
  using T = TestType;
  const std::int64_t rows = 6, heads = 3, D = 10;
  auto x = randv<T>(rows * heads * D, 1), ang = randv<T>(rows * D / 2, 2, 3.0);
  std::vector<T> c(ang.size()), s(ang.size());
  for (std::size_t i = 0; i < ang.size(); ++i) c[i] = std::cos(ang[i]), s[i] = std::sin(ang[i]);
  auto a = x, b = x;
  backend::rope_forward(scalar{}, rows, heads, D, a.data(), c.data(), s.data());
  backend::rope_forward(simd{}, rows, heads, D, b.data(), c.data(), s.data());
  CHECK(diff(a, b) < tol<T>());
  // The rotation is orthogonal: its backward (transpose) is its inverse.
  backend::rope_backward(scalar{}, rows, heads, D, a.data(), c.data(), s.data());
  backend::rope_backward(simd{}, rows, heads, D, b.data(), c.data(), s.data());
  CHECK(diff(a, x) < tol<T>());
  CHECK(diff(b, x) < tol<T>());
}

TEMPLATE_TEST_CASE("swiglu forward and backward: simd agrees with scalar", "", float, double) {
  using T = TestType;
  const std::int64_t n = 203;
  auto g = randv<T>(n, 1, 4.0), u = randv<T>(n, 2), dh = randv<T>(n, 3);
  std::vector<T> h1(n), h2(n), dg1(n), dg2(n), du1(n), du2(n);
  backend::swiglu_forward(scalar{}, n, g.data(), u.data(), h1.data());
  backend::swiglu_forward(simd{}, n, g.data(), u.data(), h2.data());
  CHECK(diff(h1, h2) < tol<T>());
  backend::swiglu_backward(scalar{}, n, g.data(), u.data(), dh.data(), dg1.data(), du1.data());
  backend::swiglu_backward(simd{}, n, g.data(), u.data(), dh.data(), dg2.data(), du2.data());
  CHECK(diff(dg1, dg2) < tol<T>());
  CHECK(diff(du1, du2) < tol<T>());
}

TEMPLATE_TEST_CASE("attention forward and backward: simd agrees with scalar", "", float, double) {
  using T = TestType;
  // GQA 3:1, a key mask, a window and a cache offset with spare capacity.
  backend::attention_shape a{.batch = 2,
                             .q_len = 5,
                             .kv_len = 9,
                             .kv_stride = 11,
                             .heads = 6,
                             .kv_heads = 2,
                             .head_dim = 20,
                             .q_offset = 4,
                             .window = 6,
                             .scale = 1 / std::sqrt(20.0)};
  auto q = randv<T>(a.batch * a.q_len * a.heads * a.head_dim, 1);
  auto k = randv<T>(a.batch * a.kv_stride * a.kv_heads * a.head_dim, 2);
  auto v = randv<T>(k.size(), 3);
  auto dout = randv<T>(q.size(), 4);
  std::vector<unsigned char> mask(a.batch * a.kv_stride, 1);
  mask[1] = mask[a.kv_stride + 5] = 0;
  std::vector<T> o1(q.size()), o2(q.size());
  std::vector<T> p1(a.batch * a.heads * a.q_len * a.kv_len), p2(p1.size());
  backend::attention_forward(scalar{}, a, q.data(), k.data(), v.data(), mask.data(), o1.data(),
                             p1.data());
  backend::attention_forward(simd{}, a, q.data(), k.data(), v.data(), mask.data(), o2.data(),
                             p2.data());
  CHECK(diff(o1, o2) < tol<T>());
  CHECK(diff(p1, p2) < tol<T>());
  // Probability rows sum to 1 and respect the window, the mask and causality.
  for (std::int64_t i = 0; i < a.q_len; ++i) {
    T sum = 0;
    for (std::int64_t j = 0; j < a.kv_len; ++j) {
      const T p = p1[i * a.kv_len + j];
      sum += p;
      if (!a.allowed(mask.data(), 0, i, j)) CHECK(p == 0);
    }
    CHECK(std::abs(sum - 1) < tol<T>());
  }
  std::vector<T> dq1(q.size()), dq2(q.size()), dk1(k.size()), dk2(k.size()), dv1(k.size()),
      dv2(k.size());
  backend::attention_backward(scalar{}, a, q.data(), k.data(), v.data(), p1.data(), dout.data(),
                              dq1.data(), dk1.data(), dv1.data());
  backend::attention_backward(simd{}, a, q.data(), k.data(), v.data(), p1.data(), dout.data(),
                              dq2.data(), dk2.data(), dv2.data());
  CHECK(diff(dq1, dq2) < tol<T>());
  CHECK(diff(dk1, dk2) < tol<T>());
  CHECK(diff(dv1, dv2) < tol<T>());
}

TEMPLATE_TEST_CASE("cross-entropy: backends agree, and ignore_index rows drop out", "", float,
                   double) {
  using T = TestType;
  const std::int64_t rows = 5, V = 300;
  auto z = randv<T>(rows * V, 1, 3.0);
  std::vector<std::int64_t> y = {3, backend::ignore_index, 299, 0, backend::ignore_index};
  std::vector<T> d1(z.size()), d2(z.size());
  const double l1 = backend::cross_entropy(scalar{}, rows, V, z.data(), y.data(), d1.data());
  const double l2 = backend::cross_entropy(simd{}, rows, V, z.data(), y.data(), d2.data());
  CHECK(std::abs(l1 - l2) < tol<T>());
  CHECK(diff(d1, d2) < tol<T>());
  // Reference in long double: mean over the three kept rows.
  long double ref = 0;
  for (std::int64_t t : {0, 2, 3}) {
    long double m = -1e300L, s = 0;
    for (std::int64_t i = 0; i < V; ++i) m = std::max<long double>(m, z[t * V + i]);
    for (std::int64_t i = 0; i < V; ++i) s += std::exp((long double)z[t * V + i] - m);
    ref += m + std::log(s) - z[t * V + y[t]];
  }
  CHECK(std::abs(l1 - double(ref / 3)) < (sizeof(T) == 4 ? 1e-5 : 1e-13));
  for (std::int64_t i = 0; i < V; ++i) CHECK(d1[V + i] == 0);
  std::vector<std::int64_t> bad = {3, 300, 0, 0, 0};
  CHECK_THROWS_AS(backend::cross_entropy(scalar{}, rows, V, z.data(), bad.data(), d1.data()),
                  forge::error);
}
