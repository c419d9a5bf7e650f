// Q8_0 / Q4_0 against the reference tool: the pip `gguf` package (gguf-py, gguf/quants.py,
// whose numpy quantizers are written to be bit-exact with ggml's C reference) must produce the
// same block bytes from the same f32 input, and dequantize our blocks to our values.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "../support/fixtures.hpp"
#include "common.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/quant/gguf_blocks.hpp"

using namespace forge;
using namespace forge::quant;

namespace {
void write_raw(const std::filesystem::path& p, const void* d, std::size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(static_cast<const char*>(d), static_cast<std::streamsize>(n));
}
std::vector<std::uint8_t> read_raw(const std::filesystem::path& p) {
  auto b = io::read_file(p);
  std::vector<std::uint8_t> v(b.size());
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}
}  // namespace

TEST_CASE("q8_0 and q4_0 blocks are byte-identical to gguf-py's quantizers") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto dir = test::scratch("quant_gguf_interop");
  const std::int64_t rows = 48, cols = 256;
  auto w = test::randn(rows * cols, 11);
  // Awkward blocks: all zeros; a +/- tie of the largest magnitude; exact .5 products
  // (amax 127 -> d = 1); tiny values whose f16 scale is subnormal; huge values.
  for (int j = 0; j < 32; ++j) w[j] = 0.0f;
  for (int j = 32; j < 64; ++j) w[j] = (j % 7) * 0.25f;
  w[40] = 3.0f;
  w[41] = -3.0f;
  for (int j = 64; j < 96; ++j) w[j] = (j - 80) + 0.5f;
  w[64] = 127.0f;
  for (int j = 96; j < 128; ++j) w[j] *= 1e-6f;
  for (int j = 128; j < 160; ++j) w[j] *= 1e4f;
  for (int j = 160; j < 192; ++j) w[j] = (j % 16) - 8.0f;  // q4_0: d = -1 or 1 grid points
  write_raw(dir / "w.f32", w.data(), w.size() * 4);

  auto t8 = q8_0::quantize(w, rows, cols);
  auto t4 = q4_0::quantize(w, rows, cols);
  write_raw(dir / "ours_q8_0.bin", t8.codes.data(), t8.codes.size());
  write_raw(dir / "ours_q4_0.bin", t4.codes.data(), t4.codes.size());
  std::ofstream(dir / "ref.py") << R"PY(
import sys, numpy as np
from gguf import quants, GGMLQuantizationType as T
d, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
w = np.fromfile(d + "/w.f32", dtype=np.float32).reshape(rows, cols)
for name, t in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
    q = quants.quantize(w, t)
    q.tofile(d + "/ref_" + name + ".bin")
    ours = np.fromfile(d + "/ours_" + name + ".bin", dtype=np.uint8).reshape(q.shape)
    quants.dequantize(ours, t).astype(np.float32).tofile(d + "/deq_" + name + ".f32")
print("ok")
)PY";
  const std::string cmd = py + " " + (dir / "ref.py").string() + " " + dir.string() + " " +
                          std::to_string(rows) + " " + std::to_string(cols);
  REQUIRE(std::system(cmd.c_str()) == 0);

  // Bit-exact: every byte of every block (f16 scale and codes).
  CHECK(read_raw(dir / "ref_q8_0.bin") == t8.codes);
  CHECK(read_raw(dir / "ref_q4_0.bin") == t4.codes);
  // gguf-py's dequantization of our blocks equals ours exactly (both are d * q in f32).
  for (const char* name : {"q8_0", "q4_0"}) {
    auto deq = read_raw(dir / (std::string("deq_") + name + ".f32"));
    std::vector<float> ref(deq.size() / 4);
    std::memcpy(ref.data(), deq.data(), deq.size());
    REQUIRE(ref.size() == w.size());
    std::vector<float> ours(w.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      auto out = std::span<float>(ours).subspan(static_cast<std::size_t>(r * cols));
      if (std::string(name) == "q8_0")
        q8_0::dequantize_row(t8, r, out);
      else
        q4_0::dequantize_row(t4, r, out);
    }
    CHECK(std::memcmp(ref.data(), ours.data(), ref.size() * 4) == 0);
  }
}
