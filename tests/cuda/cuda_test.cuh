#pragma once
// Shared test support for the CUDA kernels (tests only): a seeded generator for random inputs,
// the relative norm error ‖out − ref‖ / ‖ref‖ against double-precision references, and a
// PASS/FAIL table whose exit status is nonzero when any check fails or a NaN appears.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace forge::cuda::test {

/// SplitMix64 stream: uniform and normal draws for test inputs (test double of forge::philox,
/// which needs the CPU headers).
struct test_rng {
  std::uint64_t s;
  explicit test_rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    const double u = uniform() + 1e-300, v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

/// ‖got − ref‖₂ / ‖ref‖₂; NaN if any element of got is not finite.
template <class T>
double rel_err(const std::vector<double>& ref, const std::vector<T>& got) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double g = double(got[i]);
    if (!std::isfinite(g)) return NAN;
    num += (g - ref[i]) * (g - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1e-300));
}

inline double to_double(__half h) {
  return double(__half2float(h));
}
inline double to_double(__nv_bfloat16 h) {
  return double(__bfloat162float(h));
}
inline double to_double(float f) {
  return double(f);
}

/// Host values as double.
template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = to_double(v[i]);
  return d;
}

/// Collects checks and prints the PASS/FAIL table.
struct report {
  std::string suite;
  int failed = 0, total = 0;
  explicit report(std::string name) : suite(std::move(name)) {
    std::printf("%-10s %-52s %12s %10s\n", "result", (suite + " check").c_str(), "rel err",
                "tolerance");
  }
  /// Records err ≤ tol (NaN fails).
  void check(const std::string& what, double err, double tol) {
    const bool ok = err <= tol;
    ++total;
    failed += !ok;
    std::printf("%-10s %-52s %12.3e %10.1e\n", ok ? "PASS" : "FAIL", what.c_str(), err, tol);
    std::fflush(stdout);
  }
  /// Records a boolean condition.
  void expect(const std::string& what, bool ok) {
    ++total;
    failed += !ok;
    std::printf("%-10s %-52s %12s %10s\n", ok ? "PASS" : "FAIL", what.c_str(), "-", "-");
    std::fflush(stdout);
  }
  /// Prints the summary; the process exit status.
  int finish() const {
    std::printf("%s: %d of %d checks passed\n", suite.c_str(), total - failed, total);
    return failed ? 1 : 0;
  }
};

}  // namespace forge::cuda::test

namespace forge::cuda::test {

template <class T>
T from_double(double v);
template <>
inline float from_double<float>(double v) {
  return float(v);
}
template <>
inline __half from_double<__half>(double v) {
  return __float2half_rn(float(v));
}
template <>
inline __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(float(v));
}

/// n values drawn by `draw`, rounded to T; `exact` receives the rounded values as double.
template <class T, class F>
std::vector<T> random_vector(std::size_t n, F draw, std::vector<double>& exact) {
  std::vector<T> v(n);
  exact.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = from_double<T>(draw());
    exact[i] = to_double(v[i]);
  }
  return v;
}

/// Name of a storage type for the report.
template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, __half>) return "f16";
  return "bf16";
}

/// Output tolerance for a result stored in T and computed in f32: one rounding to T
/// (2^-9 relative for bf16, 2^-12 for f16) bounds the norm error, with a 4x margin; f32
/// results carry a few ulp of f32 arithmetic (1e-5 allows ~100 ulp).
template <class T>
double store_tol() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  if constexpr (std::is_same_v<T, __half>) return 1e-3;
  return 8e-3;
}

}  // namespace forge::cuda::test
