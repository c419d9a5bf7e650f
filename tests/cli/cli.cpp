// The forge command-line tool, driven end to end as a user would: keygen, a YAML pipeline on
// the Hugging Face fixture (adapt<lora> then deploy<signed_release>), verify, tamper, inspect,
// and the documented exit codes for usage errors (1), bad input (2), failed gates (3) and
// failed verification (4). Outputs are checked against the library's own readers.

#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "../support/fixtures.hpp"
#include "forge/deploy/export.hpp"
#include "forge/io/gguf.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/gptq_checkpoint.hpp"
#include "forge/quant/int4.hpp"
#include "forge/quant/k_quants.hpp"

namespace fs = std::filesystem;

namespace {
struct outcome {
  int rc = -1;
  std::string out;  ///< stdout and stderr together
};

outcome forge_cli(const std::string& args) {
  const std::string cmd = std::string(FORGE_CLI_PATH) + " " + args + " 2>&1";
  outcome o;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string q(const fs::path& p) {
  std::string s = "'";
  s += p.string();
  s += "'";
  return s;
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream(p) << s;
}

std::string pipeline_yaml(const std::string& out, const std::string& deploy_gate) {
  return "model: " + (forge::test::llama_a() / "model").string() + "\nseed: 3\nout: " + out +
         "\nstages:\n"
         "  - kind: adapt\n"
         "    method: lora\n"
         "    params: {rank: 4, alpha: 8, max_steps: 2, batch_size: 2, learning_rate: 0.01}\n"
         "    data: {train: train.jsonl}\n"
         "  - kind: deploy\n"
         "    method: signed_release\n"
         "    params: {name: tiny, gguf: [f16, q8_0], signing_key: release.key,\n"
         "             load_requests: 3, load_new_tokens: 2}\n"
         "    gate: [signature_valid, \"" +
         deploy_gate + "\"]\n";
}
}  // namespace

TEST_CASE("forge: keygen, run, verify, tamper, inspect") {
  const auto dir = forge::test::scratch("cli_forge");
  std::string train;
  for (int i = 0; i < 8; ++i)
    train += "{\"prompt\": \"say " + std::to_string(i) + "\", \"completion\": \" number " +
             std::to_string(i) + "\"}\n";
  write(dir / "train.jsonl", train);
  auto kg = forge_cli("keygen " + q(dir / "release.key"));
  REQUIRE(kg.rc == 0);
  CHECK((fs::status(dir / "release.key").permissions() & fs::perms::group_all) == fs::perms::none);
  CHECK(forge_cli("keygen " + q(dir / "release.key")).rc == 2);  // never overwrites a key

  write(dir / "p.yaml", pipeline_yaml("run1", "load_p95_ms <= 1000000"));
  const auto r = forge_cli("run " + q(dir / "p.yaml"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("[2/2] stage 2 (deploy<signed_release>)") != std::string::npos);
  const fs::path rel = dir / "run1" / "02_deploy" / "release";

  const auto v = forge_cli("verify " + q(rel) + " --key " + q(dir / "release.key.pub"));
  CHECK(v.rc == 0);
  CHECK(v.out.find("release verified") != std::string::npos);

  // inspect agrees with the library's GGUF reader.
  const fs::path gguf = rel / "model" / "gguf" / "tiny-q8_0.gguf";
  const auto f = forge::io::gguf_file::open(gguf);
  const auto in = forge_cli("inspect " + q(gguf));
  CHECK(in.rc == 0);
  CHECK(in.out.find("GGUF v3") != std::string::npos);
  CHECK(in.out.find("tensors: " + std::to_string(f.tensors().size())) != std::string::npos);
  CHECK(in.out.find("blk.0.attn_q.weight  Q8_0  [64, 64]") != std::string::npos);
  const auto pe = forge_cli("inspect " + q(rel / "model" / "adapter"));
  CHECK(pe.rc == 0);
  CHECK(pe.out.find("PEFT adapter") != std::string::npos);
  CHECK(pe.out.find("rank 4, alpha 8") != std::string::npos);
  CHECK(forge_cli("inspect " + q(dir / "nothing.gguf")).rc == 2);

  // Tamper: one flipped byte, and another signer's key, are verification failures (4).
  const fs::path copy = dir / "tampered";
  fs::copy(rel, copy, fs::copy_options::recursive);
  auto bytes = forge::io::read_file(copy / "model" / "gguf" / "tiny-f16.gguf");
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 1);
  forge::io::write_atomic(copy / "model" / "gguf" / "tiny-f16.gguf", bytes);
  const auto t = forge_cli("verify " + q(copy) + " --key " + q(dir / "release.key.pub"));
  CHECK(t.rc == 4);
  CHECK(t.out.find("hash mismatch: model/gguf/tiny-f16.gguf") != std::string::npos);
  REQUIRE(forge_cli("keygen " + q(dir / "other.key")).rc == 0);
  const auto o = forge_cli("verify " + q(rel) + " --key " + q(dir / "other.key.pub"));
  CHECK(o.rc == 4);
  CHECK(o.out.find("bad signature") != std::string::npos);

  // The built-in model (random weights, the fixture's tokenizer) runs the same pipeline.
  write(dir / "builtin.yaml",
        "model: builtin\ntokenizer: " + (forge::test::llama_a() / "model").string() +
            "\nout: run3\nstages:\n  - {kind: adapt, method: lora, params: {max_steps: 1}, "
            "data: {train: train.jsonl}}\n  - {kind: deploy, method: signed_release, params: "
            "{gguf: [f32], signing_key: release.key, load_requests: 2, load_new_tokens: 2}}\n");
  const auto b = forge_cli("run " + q(dir / "builtin.yaml"));
  INFO(b.out);
  CHECK(b.rc == 0);
  CHECK(forge_cli("verify " + q(dir / "run3" / "02_deploy" / "release") + " --key " +
                  q(dir / "release.key.pub"))
            .rc == 0);

  // A gate below the measured load-test latency: exit 3, naming the criterion.
  write(dir / "slo.yaml", pipeline_yaml("run2", "load_p95_ms <= 0.000001"));
  const auto g = forge_cli("run " + q(dir / "slo.yaml"));
  CHECK(g.rc == 3);
  CHECK(g.out.find("gate failed at stage 2 (deploy<signed_release>): load_p95_ms <= ") !=
        std::string::npos);
}

TEST_CASE("forge: usage and input errors are one clear line with the documented exit code") {
  const auto dir = forge::test::scratch("cli_forge_errors");
  for (const char* sub :
       {"", "run ", "verify ", "inspect ", "generate ", "keygen ", "quantize ", "eval ", "chat "}) {
    const auto h = forge_cli(std::string(sub) + "--help");
    INFO(sub);
    CHECK(h.rc == 0);
    CHECK(h.out.find("Usage:") != std::string::npos);
  }
  CHECK(forge_cli("").rc == 1);
  CHECK(forge_cli("verify").rc == 1);
  CHECK(forge_cli("frobnicate").rc == 1);

  auto expect_input_error = [&](const std::string& name, const std::string& yaml,
                                const std::string& message) {
    write(dir / name, yaml);
    const auto r = forge_cli("run " + q(dir / name));
    INFO(name << ": " << r.out);
    CHECK(r.rc == 2);
    CHECK(r.out.rfind("forge: ", 0) == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);  // one line
    CHECK(r.out.find(message) != std::string::npos);
  };
  const std::string model = "model: builtin\n";
  expect_input_error("syntax.yaml", "model: [unclosed\n", "line 2");
  expect_input_error("method.yaml", model + "stages:\n  - {kind: adapt, method: lorra}\n",
                     "adapt methods: dora, full_finetune, lora, qlora");
  expect_input_error("rule2.yaml",
                     model +
                         "stages:\n  - {kind: deploy, method: signed_release}\n"
                         "  - {kind: adapt, method: lora}\n",
                     "forge rule 2");
  expect_input_error("rule3.yaml",
                     model +
                         "stages:\n  - {kind: adapt, method: lora}\n"
                         "  - {kind: adapt, method: full_finetune}\n",
                     "forge rule 3");
  expect_input_error("rule4.yaml",
                     model +
                         "stages:\n  - {kind: adapt, method: lora, gate: "
                         "[\"refusal_accuracy >= 0.9\"]}\n",
                     "forge rule 4");
  expect_input_error("param.yaml",
                     model + "stages:\n  - {kind: adapt, method: lora, params: {rnk: 4}}\n",
                     "params.rnk");
  // Nested parameters merge key by key, so a typo inside one is named with its path.
  expect_input_error("nested_param.yaml",
                     model +
                         "stages:\n  - {kind: compress, method: rtn, params: {measure: "
                         "{embeding_format: q8_0}}}\n",
                     "params.measure.embeding_format");
  expect_input_error("gate.yaml",
                     model +
                         "stages:\n  - {kind: adapt, method: lora, gate: [\"exact_match >= "
                         "high\"]}\n",
                     "threshold is not a number");
}

TEST_CASE("forge quantize, eval and chat on Hugging Face directories") {
  const auto dir = forge::test::scratch("cli_forge_quantize");
  const fs::path fixture = forge::test::llama_a() / "model";

  // GGUF Q8_0 of the fixture: the tensors decode to what the library's quantizer gives.
  const auto g = forge_cli("quantize " + q(fixture) + " --to gguf-q8_0 --out " + q(dir / "m.gguf"));
  INFO(g.out);
  REQUIRE(g.rc == 0);
  const auto f = forge::io::gguf_file::open(dir / "m.gguf");
  CHECK(f.at("blk.0.ffn_gate.weight").type == forge::io::ggml_type::q8_0);

  // The GPTQ layout needs input widths that are multiples of the group: the fixture's
  // down_proj (176 inputs) is refused with an error naming the group and the width.
  const auto bad =
      forge_cli("quantize " + q(fixture) + " --to gptq --group 32 --out " + q(dir / "bad"));
  CHECK(bad.rc == 2);
  CHECK(bad.out.find("cols = 176") != std::string::npos);

  // A model whose widths fit (random weights, the fixture's tokenizer): RTN codes equal the
  // library's int4 quantizer on the same weights; GPTQ with calibration text also writes a
  // readable layout.
  forge::model::model_config c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.sliding_window.assign(1, 0);
  const auto m = forge::model::random_model<float>(c, {.seed = 9, .initializer_range = 0.1});
  forge::io::save_hf_checkpoint(m, dir / "hf");
  forge::exports::copy_tokenizer_files(fixture, dir / "hf");
  const auto r =
      forge_cli("quantize " + q(dir / "hf") + " --to gptq --group 32 --out " + q(dir / "rtn"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  using F = forge::quant::int4_group<32, false>;
  const auto st = forge::io::safetensors_file::open(dir / "rtn" / "model.safetensors");
  const auto key = std::string("model.layers.0.mlp.down_proj");
  const auto back =
      forge::quant::unpack_gptq<F>(forge::quant::read_gptq(st, key), forge::quant::gptq_format::v2);
  const auto& W = m.layers[0].down_proj.weight.value;
  CHECK(back.codes == F::quantize(W, 64, 128).codes);
  std::string calib;
  for (int i = 0; i < 8; ++i)
    calib += "{\"text\": \"calibration line " + std::to_string(i) + "\"}\n";
  write(dir / "calib.jsonl", calib);
  CHECK(forge_cli("quantize " + q(dir / "hf") + " --to gptq --method gptq --group 32 --calib " +
                  q(dir / "calib.jsonl") + " --out " + q(dir / "gptq"))
            .rc == 0);
  CHECK(forge::io::safetensors_file::open(dir / "gptq" / "model.safetensors")
            .find(key + ".qweight") != nullptr);
  CHECK(forge_cli("quantize " + q(dir / "hf") + " --to gptq --method gptq --out " +
                  q(dir / "nocalib"))
            .rc == 2);  // GPTQ without calibration data is an input error

  // GGUF Q4_K: a model whose widths are multiples of the 256-value super-block. The blocks
  // forge's reader gets back are byte-identical to the library's Q4_K quantizer (itself
  // byte-identical to llama.cpp's, tests/quant/k_quants_llama_cpp.cpp), and pip gguf reads the
  // file: its tensor types and its dequantization of a Q4_K tensor agree bit for bit with ours.
  forge::model::model_config ck = c;
  ck.hidden_size = 256;
  ck.intermediate_size = 512;
  ck.head_dim = 64;
  const auto mk = forge::model::random_model<float>(ck, {.seed = 11, .initializer_range = 0.1});
  forge::io::save_hf_checkpoint(mk, dir / "hf_k");
  forge::exports::copy_tokenizer_files(fixture, dir / "hf_k");
  const auto gk =
      forge_cli("quantize " + q(dir / "hf_k") + " --to gguf-q4_k --out " + q(dir / "k.gguf"));
  INFO(gk.out);
  REQUIRE(gk.rc == 0);
  const auto fk = forge::io::gguf_file::open(dir / "k.gguf");
  int q4k = 0;
  for (const auto& t : fk.tensors()) q4k += t.type == forge::io::ggml_type::q4_k;
  CHECK(q4k == 7 + 2);  // the layer's 7 projections, the embedding and the head
  const auto& down = fk.at("blk.0.ffn_down.weight");
  REQUIRE(down.type == forge::io::ggml_type::q4_k);
  const auto& Wd = mk.layers[0].down_proj.weight.value;
  const auto want = forge::quant::q4_k::quantize(Wd, 256, 512);
  const auto got = fk.bytes(down);
  REQUIRE(got.size() == want.codes.size());
  CHECK(std::memcmp(got.data(), want.codes.data(), got.size()) == 0);
  CHECK(fk.to_f32("blk.0.ffn_down.weight") == forge::quant::dequantize(want));
  REQUIRE_FALSE(forge::test::python().empty());  // CI always provides the reference-tool venv
  write(dir / "read.py", R"PY(
import sys, numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T, quants
r = GGUFReader(sys.argv[1])
t = {x.name: x for x in r.tensors}
q4k = sum(1 for x in r.tensors if x.tensor_type == T.Q4_K)
w = t["blk.0.ffn_down.weight"]
assert w.tensor_type == T.Q4_K, w.tensor_type
quants.dequantize(np.asarray(w.data), T.Q4_K).astype(np.float32).tofile(sys.argv[2])
print("q4k", q4k)
)PY");
  {
    const std::string cmd = forge::test::python() + " " + q(dir / "read.py") + " " +
                            q(dir / "k.gguf") + " " + q(dir / "down.f32") + " > " +
                            q(dir / "read.txt") + " 2>&1";
    const int rc = std::system(cmd.c_str());
    INFO(forge::io::read_file(dir / "read.txt"));
    REQUIRE(rc == 0);
    CHECK(forge::io::read_file(dir / "read.txt").find("q4k 9") != std::string::npos);
    const auto raw = forge::io::read_file(dir / "down.f32");
    std::vector<float> ref(raw.size() / 4);
    std::memcpy(ref.data(), raw.data(), raw.size());
    CHECK(ref == forge::quant::dequantize(want));  // both: (d·sc)·q − dmin·m in f32
  }

  // eval prints perplexity and exact match; chat answers one line per turn.
  write(dir / "task.jsonl", "{\"prompt\": \"a\", \"answer\": \" b\"}\n");
  const auto e = forge_cli("eval " + q(fixture) + " --perplexity " + q(dir / "calib.jsonl") +
                           " --task " + q(dir / "task.jsonl"));
  CHECK(e.rc == 0);
  CHECK(e.out.find("perplexity: ") != std::string::npos);
  CHECK(e.out.find("exact_match: ") != std::string::npos);
  const auto ch =
      forge_cli("chat " + q(fixture) + " --max-new-tokens 3 < " + q(dir / "task.jsonl"));
  CHECK(ch.rc == 0);
  CHECK(std::count(ch.out.begin(), ch.out.end(), '\n') == 1);
  CHECK(ch.out.rfind("assistant: ", 0) == 0);
}
