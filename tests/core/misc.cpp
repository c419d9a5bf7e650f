// parallel_for covers every index once; progress lines report counts, rate and ETA; tensor
// views alias the memory they view.

#include <catch2/catch.hpp>
#include <cstdio>
#include <vector>

#include "forge/core/parallel.hpp"
#include "forge/core/progress.hpp"
#include "forge/core/tensor.hpp"

using namespace forge;

TEST_CASE("parallel_for visits each index exactly once") {
  std::vector<int> hits(10'007, 0);
  parallel_for(0, static_cast<std::ptrdiff_t>(hits.size()),
               [&](std::ptrdiff_t i) { hits[i] += 1; });
  for (int h : hits) REQUIRE(h == 1);
  std::vector<std::ptrdiff_t> lo(5), hi(5);
  parallel_chunks(103, 5, [&](int p, std::ptrdiff_t a, std::ptrdiff_t b) {
    lo[p] = a;
    hi[p] = b;
  });
  CHECK(lo[0] == 0);
  CHECK(hi[4] == 103);
  for (int p = 1; p < 5; ++p) CHECK(lo[p] == hi[p - 1]);
}

TEST_CASE("progress prints plain lines with counts and fields when not on a terminal") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    progress p("train", 10, f, /*interval=*/1e9);
    p.field("loss", "2.50");
    for (int i = 0; i < 10; ++i) p.advance();
    CHECK(p.done() == 10);
  }
  std::rewind(f);
  char buf[512] = {};
  std::string all;
  while (std::fgets(buf, sizeof buf, f)) all += buf;
  std::fclose(f);
  CHECK_THAT(all, Catch::Contains("train 10/10 (100%)") && Catch::Contains("loss=2.50") &&
                      Catch::Contains(" in "));
  CHECK(all.find('\r') == std::string::npos);  // no terminal control codes in logs
  CHECK(progress::duration(3725) == "1h02m");
  CHECK(progress::duration(185) == "3m05s");
}

TEST_CASE("tensor views alias memory and matrix_span strides rows") {
  std::vector<float> buf(12);
  auto v = view(buf.data(), std::array<std::size_t, 2>{3, 4});
  v(2, 1) = 5.0f;
  CHECK(buf[9] == 5.0f);
  tensor<float, 2> owned = v;  // an owning copy
  owned(0, 0) = 1.0f;
  CHECK(buf[0] == 0.0f);
  matrix_span<float> m(buf.data(), 2, 3, 4);
  m(1, 2) = 7.0f;
  CHECK(buf[6] == 7.0f);
  CHECK(m.row(1).size() == 3);
}
