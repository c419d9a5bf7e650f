// Fuzzing the quantized-tensor readers (our layout and the GPTQ layout) under ASan/UBSan: a
// seeded mutation loop over valid files (byte flips in the header's metadata and the data,
// truncation, random values in size fields) where the only thing allowed to escape is
// forge::error, and every tensor that loads must dequantize without touching memory it does
// not own.

#include <catch2/catch.hpp>
#include <cstring>

#include "../support/fixtures.hpp"
#include "common.hpp"
#include "forge/quant/gptq_checkpoint.hpp"
#include "forge/quant/rtn.hpp"
#include "forge/quant/serialize.hpp"

using namespace forge;
using namespace forge::quant;

namespace {
std::vector<std::byte> file_bytes(const std::filesystem::path& p) {
  auto b = io::read_file(p);
  std::vector<std::byte> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

template <class Try>
std::size_t fuzz(const std::vector<std::byte>& valid, std::uint64_t seed, int iterations,
                 Try&& attempt) {
  philox g(seed);
  std::size_t loaded = 0;
  for (int it = 0; it < iterations; ++it) {
    auto b = valid;
    const int edits = 1 + static_cast<int>(g.below(4));
    for (int e = 0; e < edits; ++e) {
      const auto kind = g.below(10);
      if (kind < 7) {  // flip a byte anywhere
        b[g.below(b.size())] = static_cast<std::byte>(g.below(256));
      } else if (kind < 9) {  // a digit in the header (metadata sizes, shapes, offsets)
        const std::size_t header = std::min<std::size_t>(
            b.size(), 8 + static_cast<std::size_t>(b[0]) + 256 * static_cast<std::size_t>(b[1]));
        const auto i = 8 + g.below(header > 8 ? header - 8 : 1);
        if (i < b.size()) b[i] = static_cast<std::byte>('0' + g.below(10));
      } else {  // truncate
        b.resize(g.below(b.size()));
      }
    }
    try {
      auto f = io::safetensors_file::parse(b, "<fuzz>");
      attempt(f);
      ++loaded;
    } catch (const forge::error&) {
    }
  }
  return loaded;
}
}  // namespace

TEST_CASE("quantized tensor readers survive mutated files") {
  auto dir = test::scratch("quant_fuzz");
  auto w = test::randn(16 * 64, 70, 0.1f);
  auto t4 = quantize_rtn<int4_group<32, false>>(w, 16, 64);
  t4.perm.resize(64);
  for (int i = 0; i < 64; ++i) t4.perm[i] = (i * 7) % 64;
  auto tn = quantize_rtn<nf4>(w, 16, 64);
  auto tq = quantize_rtn<q4_0>(w, 16, 64);
  std::vector<io::tensor_view> views;
  std::map<std::string, std::string> meta;
  append_views(views, meta, "a", t4);
  append_views(views, meta, "b", tn);
  append_views(views, meta, "c", tq);
  io::write_safetensors(dir / "q.safetensors", views, meta);
  const auto valid = file_bytes(dir / "q.safetensors");
  const auto loaded = fuzz(valid, 1, 30000, [](const io::safetensors_file& f) {
    auto a = read_qtensor<int4_group<32, false>>(f, "a");
    auto b = read_qtensor<nf4>(f, "b");
    auto c = read_qtensor<q4_0>(f, "c");
    float sink = dequantize(a)[0] + dequantize(b)[0] + dequantize(c)[0];
    (void)sink;
  });
  CHECK(loaded > 0);  // some mutations (data bytes) leave a loadable file

  auto g = quantize_rtn<int4_g32>(w, 16, 64);
  auto p = pack_gptq(g);
  std::vector<io::tensor_view> gv;
  append_gptq_views(gv, "layer", p);
  io::write_safetensors(dir / "g.safetensors", gv);
  const auto gvalid = file_bytes(dir / "g.safetensors");
  const auto gloaded = fuzz(gvalid, 2, 30000, [](const io::safetensors_file& f) {
    auto t = unpack_gptq<int4_g32>(read_gptq(f, "layer"));
    float sink = dequantize(t)[0];
    (void)sink;
  });
  CHECK(gloaded > 0);
}
