// The prefill paths of the simd attention forward (transposed keys, QB-query blocks, values
// summed in registers) against the scalar reference. Head dimensions are chosen so that
// head_dim = 4 vectors (the block path) and 8 vectors (per-query path with register values)
// for f32 and f64 on the build's architecture, with causal offsets, a sliding window, a key
// mask, GQA and query counts that are not multiples of the block.
// Tolerance: as tests/backend/kernels.cpp, only summation order and FMA (and xsimd's exp, within
// an ulp of std::exp) differ: 1e-5 relative in f32, 1e-12 in f64.

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "forge/backend/attention.hpp"
#include "forge/core/rng.hpp"

using namespace forge;

namespace {
template <class T>
std::vector<T> randv(std::size_t n, std::uint64_t seed) {
  philox r(seed, n);
  std::vector<T> v(n);
  for (auto& x : v) x = T(r.normal());
  return v;
}
template <class T>
double diff(const std::vector<T>& a, const std::vector<T>& b) {
  double m = 1, d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, double(std::abs(a[i])));
    d = std::max(d, double(std::abs(a[i] - b[i])));
  }
  return d / m;
}

template <class T>
void check(std::int64_t vectors, std::int64_t q_len, std::int64_t q_offset, std::int64_t window,
           bool masked) {
  constexpr std::int64_t W = xsimd::batch<T>::size;
  backend::attention_shape a{.batch = 2,
                             .q_len = q_len,
                             .kv_len = q_offset + q_len,
                             .kv_stride = q_offset + q_len + 3,
                             .heads = 4,
                             .kv_heads = 2,
                             .head_dim = vectors * W,
                             .q_offset = q_offset,
                             .window = window,
                             .scale = 1 / std::sqrt(double(vectors * W))};
  const auto D = a.head_dim;
  auto q = randv<T>(a.batch * a.q_len * a.heads * D, 1);
  auto k = randv<T>(a.batch * a.kv_stride * a.kv_heads * D, 2);
  auto v = randv<T>(k.size(), 3);
  std::vector<unsigned char> mask(a.batch * a.kv_stride, 1);
  if (masked) mask[2] = mask[a.kv_stride + 7] = mask[a.kv_stride + q_offset + 1] = 0;
  std::vector<T> o1(q.size()), o2(q.size(), T(-1e30));
  std::vector<T> p1(a.batch * a.heads * a.q_len * a.kv_len), p2(p1.size(), T(-1));
  const unsigned char* km = masked ? mask.data() : nullptr;
  backend::attention_forward(backend::scalar{}, a, q.data(), k.data(), v.data(), km, o1.data(),
                             p1.data());
  backend::attention_forward(backend::simd<>{}, a, q.data(), k.data(), v.data(), km, o2.data(),
                             p2.data());
  INFO("D=" << D << " q_len=" << q_len << " offset=" << q_offset << " window=" << window
            << " masked=" << masked);
  CHECK(diff(o1, o2) < (sizeof(T) == 4 ? 1e-5 : 1e-12));
  CHECK(diff(p1, p2) < (sizeof(T) == 4 ? 1e-5 : 1e-12));
}
}  // namespace

TEMPLATE_TEST_CASE("attention prefill paths: simd agrees with scalar", "", float, double) {
  for (std::int64_t vectors : {4, 8}) {
    check<TestType>(vectors, 13, 0, 0, false);   // 3 blocks of 4 queries + 1
    check<TestType>(vectors, 16, 5, 0, true);    // cache offset, masked keys
    check<TestType>(vectors, 9, 3, 6, true);     // sliding window
    check<TestType>(vectors, 70, 0, 0, false);   // key range beyond one 4-vector group
  }
}
