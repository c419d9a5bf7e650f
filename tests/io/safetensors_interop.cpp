// Interop with the reference implementation (pip safetensors + numpy): it must load the
// files we write, and we must load the files it writes, with identical values.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/io/safetensors.hpp"

using namespace forge;

TEST_CASE("pip safetensors reads our files and we read its files, bit for bit") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto dir = test::scratch("safetensors_interop");

  // Ours: a few dtypes with awkward values and metadata.
  std::vector<float> f32 = {0.0f, -0.0f, 1.5f, -3.25e-38f, 65504.0f, 1e-45f};
  std::vector<std::uint16_t> b16 = {0x3f80, 0x8001, 0x7fc0, 0xff80};
  std::vector<std::int64_t> i64 = {-1, 0, 1, 1ll << 62};
  std::vector<io::tensor_view> views = {
      io::f32_view("w.f32", {2, 3}, f32),
      {"w.bf16", dtype::bf16, {4}, std::as_bytes(std::span(b16))},
      {"w.f16", dtype::f16, {2, 2}, std::as_bytes(std::span(b16))},
      {"ids", dtype::i64, {4}, std::as_bytes(std::span(i64))}};
  io::write_safetensors(dir / "ours.safetensors", views, {{"format", "pt"}, {"who", "forge"}});

  // The script checks our values and writes its own file for us to read.
  std::ofstream(dir / "check.py") << R"PY(
import sys, numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open
d = sys.argv[1]
import json, struct
with safe_open(d + "/ours.safetensors", "np") as f:
    t = {k: f.get_tensor(k) for k in f.keys() if k != "w.bf16"}  # numpy has no bfloat16
    assert f.metadata() == {"format": "pt", "who": "forge"}
    assert sorted(f.keys()) == ["ids", "w.bf16", "w.f16", "w.f32"]
assert t["w.f32"].dtype == np.float32 and t["w.f32"].shape == (2, 3)
assert t["w.f32"].view(np.uint32).tolist() == np.array([0.0, -0.0, 1.5, -3.25e-38, 65504.0, 1e-45], dtype=np.float32).reshape(2, 3).view(np.uint32).tolist()
assert t["ids"].tolist() == [-1, 0, 1, 1 << 62]
assert t["w.f16"].view(np.uint16).ravel().tolist() == [0x3f80, 0x8001, 0x7fc0, 0xff80]
raw = open(d + "/ours.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
e = json.loads(raw[8:8 + n])["w.bf16"]
assert e["dtype"] == "BF16" and e["shape"] == [4]
b, _ = e["data_offsets"]
assert list(struct.unpack("<4H", raw[8 + n + b:8 + n + b + 8])) == [0x3f80, 0x8001, 0x7fc0, 0xff80]
rng = np.random.default_rng(7)
save_file({"a": rng.standard_normal((3, 5)).astype(np.float32),
           "b": np.arange(-4, 4, dtype=np.int32),
           "c": rng.standard_normal(7).astype(np.float16),
           "z": np.zeros((0, 2), dtype=np.float32)}, d + "/theirs.safetensors", metadata={"k": "v"})
np.save(d + "/a.npy", load_file(d + "/theirs.safetensors")["a"])
print("ok")
)PY";
  const std::string cmd = py + " " + (dir / "check.py").string() + " " + dir.string();
  REQUIRE(std::system(cmd.c_str()) == 0);

  auto f = io::safetensors_file::open(dir / "theirs.safetensors");
  CHECK(f.metadata().at("k") == "v");
  CHECK(f.copy_as<std::int32_t>("b", dtype::i32) ==
        std::vector<std::int32_t>{-4, -3, -2, -1, 0, 1, 2, 3});
  CHECK(f.at("c").type == dtype::f16);
  CHECK(f.at("z").numel() == 0);
  // The f32 values equal numpy's .npy copy (its data follows a header; compare the tail).
  auto npy = io::read_file(dir / "a.npy");
  auto a = f.to_f32("a");
  REQUIRE(a.size() == 15);
  CHECK(std::memcmp(npy.data() + npy.size() - 60, a.data(), 60) == 0);
}
