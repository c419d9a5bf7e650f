// Saving quantized tensors: our own layout round-trips every format losslessly and rejects
// damaged files with a precise error; the GPTQ checkpoint layout packs and unpacks exactly
// and is read by an independent numpy dequantizer written from the layout's definition.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>

#include "../support/fixtures.hpp"
#include "common.hpp"
#include "forge/quant/gptq.hpp"
#include "forge/quant/gptq_checkpoint.hpp"
#include "forge/quant/rtn.hpp"
#include "forge/quant/serialize.hpp"

using namespace forge;
using namespace forge::quant;

namespace {
template <class F>
void round_trip(const std::filesystem::path& dir, qtensor<F> t) {
  save_qtensor(dir / "t.safetensors", "layer.w", t);
  auto back = load_qtensor<F>(dir / "t.safetensors", "layer.w");
  INFO(F::name);
  CHECK(back == t);
}

qtensor<int4_g32> act_order_tensor() {
  const std::int64_t rows = 16, n = 64;
  auto w = test::randn(rows * n, 31, 0.1f);
  auto x = test::randn(100 * n, 32);
  for (std::int64_t i = 0; i < 100; ++i)
    for (std::int64_t j = 0; j < n; ++j) x[i * n + j] *= 0.1f + static_cast<float>(j % 7);
  hessian_accumulator h(n);
  h.add_batch(x, 100);
  return quantize_gptq<int4_g32>(w, rows, n, h.get(), {.act_order = true});
}
}  // namespace

TEST_CASE("every format round-trips through our safetensors layout bit for bit") {
  auto dir = test::scratch("quant_serialize");
  auto w = test::randn(16 * 128, 30, 0.3f);
  round_trip(dir, quantize_rtn<int8_channel>(w, 16, 128));
  round_trip(dir, quantize_rtn<int4_g128>(w, 16, 128));
  round_trip(dir, quantize_rtn<int4_group<32, false>>(w, 16, 128));
  round_trip(dir, quantize_rtn<nf4>(w, 16, 128));
  round_trip(dir, quantize_rtn<nf4_single>(w, 16, 128));
  round_trip(dir, quantize_rtn<q4_0>(w, 16, 128));
  round_trip(dir, quantize_rtn<q8_0>(w, 16, 128));
  auto a = act_order_tensor();
  REQUIRE_FALSE(a.perm.empty());
  round_trip(dir, a);
}

TEST_CASE("damaged quantized files are rejected with the tensor named") {
  auto dir = test::scratch("quant_serialize_bad");
  auto t = quantize_rtn<int4_g32>(test::randn(8 * 64, 1), 8, 64);
  save_qtensor(dir / "ok.safetensors", "w", t);
  CHECK_THROWS_WITH(load_qtensor<int4_g128>(dir / "ok.safetensors", "w"),
                    Catch::Contains("another format"));
  CHECK_THROWS_WITH(load_qtensor<int4_g32>(dir / "ok.safetensors", "v"),
                    Catch::Contains("no metadata entry"));
  auto cut = t;
  cut.codes.pop_back();
  save_qtensor(dir / "cut.safetensors", "w", cut);
  CHECK_THROWS_WITH(load_qtensor<int4_g32>(dir / "cut.safetensors", "w"),
                    Catch::Contains("sizes disagree") && Catch::Contains("tensor w"));
  auto p = t;
  p.perm.assign(64, 0);
  save_qtensor(dir / "perm.safetensors", "w", p);
  CHECK_THROWS_WITH(load_qtensor<int4_g32>(dir / "perm.safetensors", "w"),
                    Catch::Contains("not a permutation"));
}

TEST_CASE("gptq layout: symmetric zeros are 0x77777777 and codes pack along the input") {
  std::vector<float> w(8 * 32, 0.0f);
  // Row o, input i: a ramp so that the code of (o, i) is distinct and easy to predict.
  for (int o = 0; o < 8; ++o) {
    w[o * 32 + 0] = -8.0f;  // sets the scale: 2*8/15
    for (int i = 1; i < 32; ++i)
      w[o * 32 + i] = static_cast<float>((i + o) % 15 - 7) * 16.0f / 15.0f;
  }
  auto t = quantize_rtn<int4_g32>(w, 8, 32);
  auto p = pack_gptq(t);
  REQUIRE(p.qzeros.size() == 1);
  CHECK(static_cast<std::uint32_t>(p.qzeros[0]) == 0x77777777u);
  for (int o = 0; o < 8; ++o)
    for (int i = 0; i < 32; ++i) {
      const auto word = static_cast<std::uint32_t>(p.qweight[(i / 8) * 8 + o]);
      CHECK(((word >> (4 * (i % 8))) & 0xf) == int4_g32::code(t, o, i));
    }
  CHECK(p.g_idx == std::vector<std::int32_t>(32, 0));
  auto back = unpack_gptq<int4_g32>(p);
  CHECK(back == t);
}

TEST_CASE("gptq layout round trip keeps act-order through g_idx") {
  auto t = act_order_tensor();
  for (auto fmt : {gptq_format::v1, gptq_format::v2}) {
    auto p = pack_gptq(t, fmt);
    // g_idx follows the quantization order: input perm[k] belongs to group k / 32.
    for (int k = 0; k < 64; ++k) CHECK(p.g_idx[t.perm[k]] == k / 32);
    auto back = unpack_gptq<int4_g32>(p, fmt);
    CHECK(dequantize(back) == dequantize(t));
  }
  // Asymmetric with a zero point of 0 cannot be written as v1.
  std::vector<float> pos(8 * 32);
  std::iota(pos.begin(), pos.end(), 1.0f);
  auto a = quantize_rtn<int4_group<32, false>>(pos, 8, 32);
  CHECK_THROWS_WITH(pack_gptq(a), Catch::Contains("zero point 0"));
  CHECK(dequantize(unpack_gptq<int4_group<32, false>>(pack_gptq(a, gptq_format::v2),
                                                      gptq_format::v2)) == dequantize(a));
}

TEST_CASE("a numpy reader of the GPTQ layout dequantizes our file to our values") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto dir = test::scratch("quant_gptq_layout");
  auto t = act_order_tensor();
  auto p = pack_gptq(t);
  auto deq = dequantize(t);
  std::vector<io::tensor_view> views;
  append_gptq_views(views, "model.layers.0.mlp.up_proj", p);
  views.push_back(io::f32_view("expect", {t.rows, t.cols}, deq));
  io::write_safetensors(dir / "model.safetensors", views);
  // Round trip through the file, too.
  auto f = io::safetensors_file::open(dir / "model.safetensors");
  CHECK(dequantize(unpack_gptq<int4_g32>(read_gptq(f, "model.layers.0.mlp.up_proj"))) == deq);
  std::ofstream(dir / "check.py") << R"PY(
import sys, numpy as np
from safetensors.numpy import load_file
t = load_file(sys.argv[1] + "/model.safetensors")
p = "model.layers.0.mlp.up_proj"
qw, qz, sc, gi = t[p + ".qweight"], t[p + ".qzeros"], t[p + ".scales"], t[p + ".g_idx"]
assert qw.dtype == np.int32 and qz.dtype == np.int32 and sc.dtype == np.float16 and gi.dtype == np.int32
K, N = qw.shape[0] * 8, qw.shape[1]
shifts = np.arange(0, 32, 4, dtype=np.uint32)
q = ((qw.view(np.uint32)[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(K, N)
z = ((qz.view(np.uint32)[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(qz.shape[0], N) + 1  # v1: stored minus one
w = sc.astype(np.float32)[gi] * (q.astype(np.float32) - z[gi].astype(np.float32))
exp = t["expect"]
assert np.array_equal(w.T, exp), np.abs(w.T - exp).max()
print("ok")
)PY";
  const std::string cmd = py + " " + (dir / "check.py").string() + " " + dir.string();
  CHECK(std::system(cmd.c_str()) == 0);
}
