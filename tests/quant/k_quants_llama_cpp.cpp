// Q4_K against the reference tools, on the built-in model (every weight width is a multiple of
// the 256-value super-block):
//   * llama.cpp's own quantizer (llama_model_quantize through pip llama-cpp-python, ftype
//     Q4_K_M, no importance matrix) applied to forge's F32 GGUF export: every tensor llama.cpp
//     stored as Q4_K must be byte-identical to forge's q4_k::quantize of the same f32 values;
//   * pip gguf's dequantize of forge's Q4_K blocks equals forge's values bit for bit;
//   * llama.cpp loads forge's Q4_K export and its greedy tokens equal forge's forward on the
//     weights the file decodes to.
// Fails (does not skip) when FORGE_PYTHON or the llama_cpp / gguf modules are missing.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/builtin/model.hpp"
#include "forge/core/rng.hpp"
#include "forge/deploy/export.hpp"
#include "forge/io/gguf.hpp"
#include "forge/model/generate.hpp"
#include "forge/quant/k_quants.hpp"

using namespace forge;
namespace fs = std::filesystem;

namespace {
int run_python(const fs::path& dir, const std::string& script, const std::string& args) {
  std::ofstream(dir / "run.py") << script;
  const std::string cmd = test::python() + " " + (dir / "run.py").string() + " " + args;
  return std::system(cmd.c_str());
}
}  // namespace

TEST_CASE("q4_k blocks are byte-identical to llama.cpp's quantizer on the built-in model") {
  REQUIRE_FALSE(test::python().empty());  // CI always provides the reference-tool venv
  const auto dir = test::scratch("quant_k_quants_llama_cpp");
  const auto m = builtin::load_model();
  const auto tok = exports::gguf_tokenizer_from_hf(builtin::model_dir());
  exports::save_llama_gguf(m, tok, dir / "f32.gguf", exports::gguf_export_type::f32, "builtin");
  REQUIRE(run_python(dir, R"PY(
import sys, ctypes
import llama_cpp
d = sys.argv[1]
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = 1
rc = llama_cpp.llama_model_quantize((d + "/f32.gguf").encode(), (d + "/q4_k_m.gguf").encode(),
                                    ctypes.byref(p))
sys.exit(rc)
)PY",
                     dir.string()) == 0);
  const auto f32 = io::gguf_file::open(dir / "f32.gguf");
  const auto q = io::gguf_file::open(dir / "q4_k_m.gguf");
  int compared = 0;
  for (const auto& t : q.tensors()) {
    if (t.type != io::ggml_type::q4_k) continue;
    INFO(t.name);
    const auto x = f32.to_f32(t.name);
    const auto ours = quant::q4_k::quantize(x, t.shape[0], t.shape[1]);
    const auto ref = q.bytes(t);
    REQUIRE(ref.size() == ours.codes.size());
    std::size_t differ = 0;
    for (std::size_t b = 0; b < ref.size(); b += 144)
      differ += std::memcmp(ref.data() + b, ours.codes.data() + b, 144) != 0;
    CHECK(differ == 0);  // blocks that differ
    // The file's own decoding (forge's reader) equals forge's dequantization.
    CHECK(q.to_f32(t.name) == quant::dequantize(ours));
    ++compared;
  }
  // Q4_K_M stores q/k/o/gate/up and the embedding as Q4_K (attn_v, ffn_down partly and the
  // head as Q6_K): at least the 5 projections of each of the 4 layers.
  CHECK(compared >= 20);
}

TEST_CASE("gguf-py dequantizes forge's q4_k blocks to forge's values exactly") {
  REQUIRE_FALSE(test::python().empty());
  const auto dir = test::scratch("quant_k_quants_gguf_py");
  const std::int64_t rows = 24, cols = 512;
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  philox g(5);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = g.normal() * (i % 512 < 32 ? 10.0f : 0.05f);
  for (int i = 0; i < 32; ++i) w[std::size_t(1024 + i)] = 0.0f;
  const auto t = quant::q4_k::quantize(w, rows, cols);
  std::ofstream(dir / "q.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(t.codes.data()), std::streamsize(t.codes.size()));
  REQUIRE(run_python(dir, R"PY(
import sys, numpy as np
from gguf import quants, GGMLQuantizationType as T
d, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = np.fromfile(d + "/q.bin", dtype=np.uint8).reshape(rows, cols // 256 * 144)
quants.dequantize(q, T.Q4_K).astype(np.float32).tofile(d + "/deq.f32")
)PY",
                     dir.string() + " " + std::to_string(rows) + " " + std::to_string(cols)) == 0);
  const auto raw = io::read_file(dir / "deq.f32");
  std::vector<float> ref(raw.size() / 4);
  std::memcpy(ref.data(), raw.data(), raw.size());
  CHECK(ref == quant::dequantize(t));  // both compute (d·sc)·q − dmin·m with f32 roundings
}

TEST_CASE("llama-cpp-python loads forge's Q4_K export and continues like forge") {
  REQUIRE_FALSE(test::python().empty());
  const auto dir = test::scratch("quant_k_quants_llama_cpp_generate");
  const auto base = builtin::load_model();
  const auto tok = exports::gguf_tokenizer_from_hf(builtin::model_dir());
  exports::save_llama_gguf(base, tok, dir / "q4_k.gguf", exports::gguf_export_type::q4_k,
                           "builtin");
  // forge's side: the model whose 2-D weights are the values the file decodes to.
  auto m = base;
  const auto f = io::gguf_file::open(dir / "q4_k.gguf");
  int q4k_tensors = 0;
  for (const auto& t : f.tensors()) q4k_tensors += t.type == io::ggml_type::q4_k;
  CHECK(q4k_tensors == int(7 * m.layers.size() + 2));  // every projection, embedding and head
  m.for_each_parameter([&](model::parameter<float>& p) {
    if (p.shape.size() != 2) return;
    const auto q = quant::q4_k::quantize(p.value, p.shape[0], p.shape[1]);
    p.value = quant::dequantize(q);
  });
  const std::vector<std::int64_t> prompt = {0, 17, 230, 5, 901, 44, 12, 952};
  model::generation_options o;
  o.max_new_tokens = 16;
  o.eos_token_ids = {-1};  // llama.cpp's loop below does not stop at eos either
  const auto want = model::generate(backend::scalar{}, m, {prompt}, o).tokens.at(0);
  std::string ids = "[";
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    if (i) ids += ",";
    ids += std::to_string(prompt[i]);
  }
  ids += "]";
  REQUIRE(run_python(dir, R"PY(
import sys, json
import numpy as np
import llama_cpp
d, prompt = sys.argv[1], json.loads(sys.argv[2])
llm = llama_cpp.Llama(model_path=d + "/q4_k.gguf", n_ctx=64, n_threads=1, logits_all=True,
                      verbose=False)
llm.reset()
llm.eval(prompt)
toks = []
for _ in range(16):
    t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    toks.append(t)
    llm.eval([t])
json.dump({"tokens": toks}, open(d + "/llama_cpp.json", "w"))
)PY",
                     dir.string() + " '" + ids + "'") == 0);
  // llama.cpp quantizes the activations to Q8_K inside its Q4_K dot products; on the trained
  // model the greedy continuation is still identical.
  CHECK(load_json(dir / "llama_cpp.json")["tokens"].get<std::vector<std::int64_t>>() == want);
}
