// llama.cpp interop: pip's llama-cpp-python loads the GGUF files forge exports from the
// Hugging Face fixture and decodes greedily from the same prompt token ids as forge.
//   F32, F16: llama.cpp's tokens must equal forge's greedy tokens on the model whose 2-D
//             weights are the file's values (f16-rounded for F16), and, for F32, the
//             continuation transformers produced (generate.json of the fixture).
//   Q8_0, Q4_0: forge's "own quantized inference" here is forge's forward on the weights
//             the file decodes to (quant::q8_0 / q4_0 dequantization, byte-identical to
//             ggml's). The greedy tokens must be identical. llama.cpp additionally quantizes
//             the activations to Q8_0 inside its dot products, so the logits differ a little:
//             the prompt's last-position logits must agree within 3% of their range
//             (measured: 0.8% for Q8_0, 0.7% for Q4_0; 8-bit activations give a relative
//             error ~1/127 per product, accumulated over 2 layers).
// The test fails (does not skip) when FORGE_PYTHON or the llama_cpp module is missing.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/core/rng.hpp"
#include "forge/deploy/export.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/generate.hpp"

using namespace forge;
namespace fs = std::filesystem;

namespace {
using be_t = backend::scalar;
constexpr std::int64_t n_new = 16;

// A copy of m whose 2-D weights hold the values a GGUF file of `type` decodes to.
model::causal_lm<float> as_file_values(const model::causal_lm<float>& m,
                                       exports::gguf_export_type type) {
  auto d = m;
  d.for_each_parameter([&](model::parameter<float>& p) {
    if (p.shape.size() != 2 || type == exports::gguf_export_type::f32) return;
    const auto rows = p.shape[0], cols = p.shape[1];
    if (type == exports::gguf_export_type::f16 || cols % 32 != 0) {
      for (auto& v : p.value) v = to_f32(to_f16(v));
      return;
    }
    std::vector<float> row(static_cast<std::size_t>(cols));
    if (type == exports::gguf_export_type::q8_0) {
      const auto q = quant::q8_0::quantize(p.value, rows, cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        quant::q8_0::dequantize_row(q, r, row);
        std::copy(row.begin(), row.end(), p.value.begin() + r * cols);
      }
    } else {
      const auto q = quant::q4_0::quantize(p.value, rows, cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        quant::q4_0::dequantize_row(q, r, row);
        std::copy(row.begin(), row.end(), p.value.begin() + r * cols);
      }
    }
  });
  return d;
}

std::vector<std::int64_t> greedy(model::causal_lm<float> m, const std::vector<std::int64_t>& ids) {
  model::generation_options o;
  o.max_new_tokens = n_new;
  o.eos_token_ids = {-1};  // llama.cpp's loop below does not stop at eos either
  return model::generate(be_t{}, m, {ids}, o).tokens.at(0);
}

std::vector<float> last_logits(model::causal_lm<float>& m, const std::vector<std::int64_t>& ids) {
  model::workspace<float> ws;
  model::forward(be_t{}, m, ws, {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids},
                 {.logits = model::logits_for::last});
  auto l = ws.logits();
  return {l.begin(), l.end()};
}
}  // namespace

TEST_CASE("llama-cpp-python loads forge's GGUF exports and continues like forge") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  const auto dir = test::scratch("deploy_llama_cpp");
  const auto fixture = test::llama_a();
  const auto base = io::load_hf_checkpoint<float>(fixture / "model");
  const json gen = load_json(fixture / "generate.json");
  const auto prompt = gen.at("prompt_ids").get<std::vector<std::int64_t>>();
  const auto hf_out = gen.at("output_ids").get<std::vector<std::int64_t>>();
  const auto tok = exports::gguf_tokenizer_from_hf(fixture / "model");

  const std::vector<std::pair<std::string, exports::gguf_export_type>> types = {
      {"f32", exports::gguf_export_type::f32},
      {"f16", exports::gguf_export_type::f16},
      {"q8_0", exports::gguf_export_type::q8_0},
      {"q4_0", exports::gguf_export_type::q4_0}};
  json expect;
  for (const auto& [n, t] : types) {
    exports::save_llama_gguf(base, tok, dir / (n + ".gguf"), t, "llama_a");
    auto m = as_file_values(base, t);
    expect[n] = {{"tokens", greedy(m, prompt)}, {"logits", last_logits(m, prompt)}};
  }

  save_json(dir / "forge.json", expect);  // for a person comparing by hand
  std::ofstream(dir / "run.py") << R"PY(
import sys, json
import numpy as np
import llama_cpp
d, prompt, n_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for name in ["f32", "f16", "q8_0", "q4_0"]:
    llm = llama_cpp.Llama(model_path=f"{d}/{name}.gguf", n_ctx=64, n_threads=1,
                          logits_all=True, verbose=False)
    llm.reset()
    llm.eval(prompt)
    logits = [float(x) for x in llm.scores[llm.n_tokens - 1]]
    toks = []
    for _ in range(n_new):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        toks.append(t)
        llm.eval([t])
    out[name] = {"tokens": toks, "logits": logits}
json.dump(out, open(f"{d}/llama_cpp.json", "w"))
)PY";
  std::string ids = "[";
  for (std::size_t i = 0; i < prompt.size(); ++i) ids += (i ? "," : "") + std::to_string(prompt[i]);
  ids += "]";
  const std::string cmd = py + " " + (dir / "run.py").string() + " " + dir.string() + " '" + ids +
                          "' " + std::to_string(n_new);
  REQUIRE(std::system(cmd.c_str()) == 0);  // fails when llama_cpp is not installed
  const json got = load_json(dir / "llama_cpp.json");

  // F32 and F16: identical greedy tokens; F32 also equals transformers' continuation.
  for (const char* n : {"f32", "f16"}) {
    INFO(n);
    CHECK(got[n]["tokens"] == expect[n]["tokens"]);
  }
  const std::vector<std::int64_t> hf_new(hf_out.begin() + std::ptrdiff_t(prompt.size()),
                                         hf_out.end());
  CHECK(got["f32"]["tokens"].get<std::vector<std::int64_t>>() ==
        std::vector<std::int64_t>(hf_new.begin(), hf_new.begin() + n_new));

  // Q8_0 and Q4_0: identical tokens, and the prompt's logits (tolerance: see the top).
  for (const char* n : {"q8_0", "q4_0"}) {
    INFO(n);
    CHECK(got[n]["tokens"] == expect[n]["tokens"]);
    const auto a = got[n]["logits"].get<std::vector<float>>();
    const auto b = expect[n]["logits"].get<std::vector<float>>();
    REQUIRE(a.size() == b.size());
    const auto [lo, hi] = std::minmax_element(b.begin(), b.end());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, double(std::fabs(a[i] - b[i])));
    CHECK(worst <= 0.03 * double(*hi - *lo));
  }
}

TEST_CASE("llama-cpp-python applies forge's GGUF LoRA adapter like forge does") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  const auto dir = test::scratch("deploy_llama_cpp_lora");
  const auto fixture = test::llama_a();
  auto m = io::load_hf_checkpoint<float>(fixture / "model");
  const json gen = load_json(fixture / "generate.json");
  const auto prompt = gen.at("prompt_ids").get<std::vector<std::int64_t>>();
  const auto base_tokens = greedy(m, prompt);
  // Every projection adapted (q and k exercise the rope row permutation of lora_b), with
  // B drawn large enough that the continuation changes.
  auto set = adapters::attach_lora(be_t{}, m,
                                   {.rank = 4, .alpha = 8, .target_modules = {"all-linear"}}, 5);
  philox g(8, 0);
  for (auto& mod : set.modules)
    for (auto& b : mod->B) b = float(g.normal() * 0.2);
  const auto tok = exports::gguf_tokenizer_from_hf(fixture / "model");
  exports::save_llama_gguf(io::load_hf_checkpoint<float>(fixture / "model"), tok, dir / "base.gguf",
                           exports::gguf_export_type::f32, "llama_a");
  exports::save_lora_gguf(m, dir / "lora.gguf");
  const auto want = greedy(m, prompt);
  REQUIRE(want != base_tokens);  // the adapter matters, so agreement is not by chance

  std::ofstream(dir / "run.py") << R"PY(
import sys, json
import numpy as np
import llama_cpp
d, prompt, n_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=f"{d}/base.gguf", lora_path=f"{d}/lora.gguf", n_ctx=64,
                      n_threads=1, logits_all=True, verbose=False)
llm.reset()
llm.eval(prompt)
toks = []
for _ in range(n_new):
    t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    toks.append(t)
    llm.eval([t])
json.dump({"tokens": toks}, open(f"{d}/llama_cpp.json", "w"))
)PY";
  std::string ids = "[";
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    if (i) ids += ",";
    ids += std::to_string(prompt[i]);
  }
  ids += "]";
  const std::string cmd = py + " " + (dir / "run.py").string() + " " + dir.string() + " '" + ids +
                          "' " + std::to_string(n_new);
  REQUIRE(std::system(cmd.c_str()) == 0);  // fails when llama_cpp is not installed
  CHECK(load_json(dir / "llama_cpp.json")["tokens"].get<std::vector<std::int64_t>>() == want);
}
