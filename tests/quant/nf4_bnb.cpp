// NF4 and its double quantization against reference values computed with torch by
// data/make_bnb_nf4.py, following bitsandbytes' torch-op backend step by step (quantize_4bit
// with blocksize 64, compress_statistics=True; create_dynamic_map; dequantize_4bit). Every
// code, constant and dequantized value must match bit for bit.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "../support/fixtures.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/quant/nf4.hpp"

using namespace forge;
using namespace forge::quant;

namespace {
io::safetensors_file reference() {
  return io::safetensors_file::open(test::source_dir() / "tests/quant/data/bnb_nf4.safetensors");
}
std::vector<std::uint8_t> u8(const io::safetensors_file& f, const char* name) {
  return f.copy_as<std::uint8_t>(name, dtype::u8);
}
}  // namespace

TEST_CASE("the dynamic map equals torch's create_dynamic_map values bit for bit") {
  auto f = reference();
  auto ref = f.to_f32("dynamic_map");
  REQUIRE(ref.size() == 256);
  CHECK(std::memcmp(ref.data(), dynamic_map().data(), 256 * 4) == 0);
}

TEST_CASE("nf4 codes, absmax and dequantized values match the bitsandbytes algorithm") {
  auto f = reference();
  auto x = f.to_f32("input");
  REQUIRE(x.size() == 64 * 512);
  auto t = nf4_single::quantize(x, 64, 512);
  CHECK(t.codes == u8(f, "codes"));
  auto absmax = f.to_f32("absmax");
  REQUIRE(absmax.size() == t.scales.size());
  CHECK(std::memcmp(absmax.data(), t.scales.data(), absmax.size() * 4) == 0);
  auto deq = dequantize(t);
  auto ref = f.to_f32("deq_single");
  CHECK(std::memcmp(ref.data(), deq.data(), ref.size() * 4) == 0);
}

TEST_CASE("nf4 double quantization matches the bitsandbytes algorithm") {
  auto f = reference();
  auto x = f.to_f32("input");
  auto t = nf4::quantize(x, 64, 512);
  CHECK(t.codes == u8(f, "codes"));
  // The offset is torch's f32 mean, whose last bit depends on its vectorised reduction
  // order; ours is the correctly rounded mean: allow one ulp.
  const float torch_offset = f.to_f32("offset")[0];
  CHECK(std::fabs(t.offset - torch_offset) <= std::nextafter(torch_offset, 1.0f) - torch_offset);
  // Given the same offset every code, constant and dequantized value is identical.
  nf4::double_quantize(nf4_single::quantize(x, 64, 512).scales, torch_offset, t);
  CHECK(t.zeros == u8(f, "absmax_codes"));
  auto a2 = f.to_f32("absmax2");
  REQUIRE(a2.size() == t.scales2.size());
  CHECK(std::memcmp(a2.data(), t.scales2.data(), a2.size() * 4) == 0);
  auto deq = dequantize(t);
  auto ref = f.to_f32("deq_double");
  std::size_t differ = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) differ += ref[i] != deq[i];
  CHECK(differ == 0);
}
