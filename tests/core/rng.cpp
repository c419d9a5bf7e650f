// Philox4x32-10: the Random123 known-answer vectors (tests/kat_vectors, "philox4x32 10"
// lines), reproducibility, stream independence and resumable state.

#include "forge/core/rng.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <set>
#include <vector>

using namespace forge;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  using w4 = std::array<std::uint32_t, 4>;
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == w4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        w4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        w4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  static_assert(philox4x32_10({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5, "usable at compile time");
}

TEST_CASE("a stream is the Philox blocks of its counter in order") {
  philox g(0, 0);  // key 0, stream 0: block 0 is the all-zero KAT
  CHECK(g.next_u32() == 0x6627e8d5);
  CHECK(g.next_u32() == 0xe169c58d);
  CHECK(g.next_u32() == 0xbc57ac4c);
  CHECK(g.next_u32() == 0x9b00dbd8);
  CHECK(g.next_u32() == philox4x32_10({1, 0, 0, 0}, {0, 0})[0]);
}

TEST_CASE("same seed, same draws; different seeds or streams, different draws") {
  philox a(42), b(42), c(43), d(42, 1);
  std::vector<std::uint32_t> va, vb, vc, vd;
  for (int i = 0; i < 64; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
    vc.push_back(c.next_u32());
    vd.push_back(d.next_u32());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  CHECK(va != vd);
}

TEST_CASE("forked streams are distinct and deterministic") {
  philox root(7);
  std::set<std::uint64_t> firsts;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    auto child = root.fork(i);
    firsts.insert(child.next_u64());
    CHECK(root.fork(i).next_u64() == root.fork(i).next_u64());
  }
  CHECK(firsts.size() == 1000);
}

TEST_CASE("a saved state resumes the stream exactly, mid-block included") {
  philox g(99, 5);
  for (int skip : {0, 1, 3, 4, 7}) {
    philox h(99, 5);
    for (int i = 0; i < skip; ++i) h.next_u32();
    philox resumed(h.state());
    for (int i = 0; i < 20; ++i) REQUIRE(resumed.next_u32() == h.next_u32());
  }
  (void)g;
}

TEST_CASE("uniform and normal draws have the right moments") {
  // 200k draws: the standard error of the mean is ~0.0007 (uniform) and ~0.0022 (normal), so
  // 5-sigma bounds are 0.004 and 0.011; the variance bounds are similarly ~5 sigma.
  philox g(2024);
  const int n = 200'000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    const float u = g.uniform();
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    su += u;
    su2 += double(u) * u;
    const float z = g.normal();
    sn += z;
    sn2 += double(z) * z;
  }
  CHECK(umin >= 0.0f);
  CHECK(umax < 1.0f);
  CHECK(std::abs(su / n - 0.5) < 0.004);
  CHECK(std::abs(su2 / n - su * su / n / n - 1.0 / 12) < 0.002);
  CHECK(std::abs(sn / n) < 0.011);
  CHECK(std::abs(sn2 / n - 1.0) < 0.02);
}

TEST_CASE("below(n) is unbiased over small ranges") {
  philox g(1);
  std::array<int, 6> counts{};
  for (int i = 0; i < 60'000; ++i) ++counts[g.below(6)];
  for (int c : counts) CHECK(std::abs(c - 10'000) < 500);  // ~5 standard deviations (sd ~91)
}
