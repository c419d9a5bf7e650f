// Interop with the reference implementation (pip gguf, llama.cpp's gguf-py): its GGUFReader
// must read every metadata value and every tensor of files we write (a model and a LoRA
// adapter) exactly as we meant them, its dequantizer must agree bit for bit with ours on our
// Q8_0/Q4_0 blocks, our q/k rope permutation must equal convert_hf_to_gguf.py's formula, and
// we must read a file written by its GGUFWriter (with its own quantizer) exactly.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/core/json.hpp"
#include "forge/io/gguf.hpp"
#include "test_quantizers.hpp"

using namespace forge;
using namespace forge::io;

namespace {
std::string hex_of(std::span<const std::byte> b) {
  static constexpr char d[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * b.size());
  for (auto x : b) {
    const auto v = std::to_integer<unsigned>(x);
    s += d[v >> 4];
    s += d[v & 15];
  }
  return s;
}

json value_json(const gguf_value& v) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, gguf_array>) {
          json a = json::array();
          switch (x.elem) {
            case gguf_type::string:
              return x.strings;
            case gguf_type::i32:
              return x.template as<std::int32_t>();
            case gguf_type::u32:
              return x.template as<std::uint32_t>();
            case gguf_type::f32:
              return x.template as<float>();
            case gguf_type::u64:
              return x.template as<std::uint64_t>();
            case gguf_type::boolean:
              return x.template as<bool>();
            default:
              throw forge::error("array type not used in this test");
          }
        } else if constexpr (std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::int16_t>) {
          return static_cast<int>(x);
        } else if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::uint16_t>) {
          return static_cast<unsigned>(x);
        } else {
          return x;
        }
      },
      v);
}

/// The sidecar the Python checker compares against: every KV and every tensor of `f`.
json describe(const gguf_file& f) {
  json j;
  for (const auto& [k, v] : f.metadata().items()) {
    json e = {{"type", std::string(name(type_of(v)))}, {"value", value_json(v)}};
    if (auto* a = std::get_if<gguf_array>(&v)) e["elem"] = std::string(name(a->elem));
    j["kv"][k] = e;
  }
  for (const auto& t : f.tensors()) {
    json e = {{"type", std::string(name(t.type))}, {"ne", t.ne}, {"hex", hex_of(f.bytes(t))}};
    if (t.type == ggml_type::f32 || t.type == ggml_type::f16 || t.type == ggml_type::q8_0 ||
        t.type == ggml_type::q4_0)
      e["f32"] = f.to_f32(t.name);
    j["tensors"][t.name] = e;
  }
  return j;
}

std::vector<float> randn(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}
}  // namespace

TEST_CASE("pip gguf reads our model and adapter files; we read its files") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto dir = test::scratch("gguf_interop");

  // ---- a small Llama model: metadata, tokenizer, F32/F16/Q8_0/Q4_0 tensors ----
  const std::uint32_t n_head = 4, n_kv = 2, hd = 8, emb = n_head * hd, ff = 64, vocab = 6;
  gguf_metadata m;
  add_llama_metadata(m, {.name = "forge-interop",
                         .context_length = 256,
                         .embedding_length = emb,
                         .block_count = 1,
                         .feed_forward_length = ff,
                         .head_count = n_head,
                         .head_count_kv = n_kv,
                         .vocab_size = vocab,
                         .rope_freq_base = 10000.0f,
                         .rope_scaling_type = "linear",
                         .rope_scaling_factor = 4.0f,
                         .rope_scaling_original_context_length = 64,
                         .rms_norm_eps = 1e-5f,
                         .file_type = llama_file_type::mostly_q8_0});
  add_tokenizer_metadata(
      m, {.model = "gpt2",
          .pre = "llama-bpe",
          .tokens = {"<s>", "</s>", "a", "b", "ab", "Ġc"},
          .token_types = {3, 3, 1, 1, 1, 1},
          .scores = {},
          .merges = {"a b"},
          .bos_id = 0u,
          .eos_id = 1u,
          .pad_id = 1u,
          .unk_id = {},
          .add_bos = true,
          .add_eos = false,
          .chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"});
  m.set("forge.test.i8", std::int8_t{-5});
  m.set("forge.test.u16", std::uint16_t{65535});
  m.set("forge.test.i64", std::int64_t{-(std::int64_t{1} << 40)});
  m.set("forge.test.f64", 0.125);
  m.set("forge.test.u64s", gguf_array::of(std::vector<std::uint64_t>{1, std::uint64_t{1} << 63}));

  auto embd = randn(vocab * emb, 1);
  auto wq = randn(emb * emb, 2);
  auto wk = randn(n_kv * hd * emb, 3);
  auto norm = randn(emb, 4);
  std::vector<std::uint16_t> norm16(emb);
  for (std::size_t i = 0; i < norm.size(); ++i) norm16[i] = to_f16(norm[i]).bits;
  auto q8 = test::test_quantize_q8_0(embd);
  auto wq_p = permute_rope_rows(std::as_bytes(std::span(wq)), emb, n_head);
  auto wk_p = permute_rope_rows(std::as_bytes(std::span(wk)), n_kv * hd, n_kv);
  std::vector<float> wk_pf(wk.size());
  std::memcpy(wk_pf.data(), wk_p.data(), wk_p.size());
  auto q4 = test::test_quantize_q4_0(wk_pf);
  std::vector<gguf_tensor_view> tensors = {
      {"token_embd.weight", ggml_type::q8_0, {vocab, emb}, q8},
      {"blk.0.attn_q.weight", ggml_type::f32, {emb, emb}, wq_p},
      {"blk.0.attn_k.weight", ggml_type::q4_0, {n_kv * hd, emb}, q4},
      {"output_norm.weight", ggml_type::f16, {emb}, std::as_bytes(std::span(norm16))}};
  write_gguf(dir / "model.gguf", m, tensors);

  // ---- a LoRA adapter for attn_q (rank 2): lora_a [r, in], lora_b [out, r] ----
  gguf_metadata am;
  add_lora_adapter_metadata(am, 16.0f);
  auto la = randn(2 * emb, 5), lb = randn(emb * 2, 6);
  auto lb_p = permute_rope_rows(std::as_bytes(std::span(lb)), emb, n_head);
  auto [na, nb] = gguf_lora_names("model.layers.0.self_attn.q_proj.weight");
  std::vector<gguf_tensor_view> at = {{na, ggml_type::f32, {2, emb}, std::as_bytes(std::span(la))},
                                      {nb, ggml_type::f32, {emb, 2}, lb_p}};
  write_gguf(dir / "adapter.gguf", am, at);

  save_json(dir / "model.json", describe(gguf_file::open(dir / "model.gguf")));
  save_json(dir / "adapter.json", describe(gguf_file::open(dir / "adapter.gguf")));
  save_json(dir / "permute.json", json{{"wq", wq}, {"n_head", n_head}, {"emb", emb}});

  std::ofstream(dir / "check.py") << R"PY(
import sys, json
import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as Q, GGUFValueType as V
from gguf.quants import quantize, dequantize
d = sys.argv[1]

def check(path, expect):
    r = GGUFReader(path)
    kv = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert sorted(kv) == sorted(expect["kv"]), (sorted(kv), sorted(expect["kv"]))
    for k, e in expect["kv"].items():
        f = kv[k]
        assert f.types[0].name == e["type"], (k, f.types, e["type"])
        if e["type"] == "ARRAY":
            assert f.types[-1].name == e["elem"], (k, f.types)
        got = f.contents()
        want = e["value"]
        if e["type"] == "FLOAT32" or e.get("elem") == "FLOAT32":
            assert np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)), k
        else:
            assert got == want, (k, got, want)
    assert sorted(t.name for t in r.tensors) == sorted(expect["tensors"])
    for t in r.tensors:
        e = expect["tensors"][t.name]
        assert t.tensor_type.name == e["type"], (t.name, t.tensor_type)
        assert t.shape.tolist() == e["ne"], (t.name, t.shape, e["ne"])
        assert t.data.tobytes().hex() == e["hex"], t.name
        if "f32" in e:
            deq = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
            assert np.array_equal(deq, np.asarray(e["f32"], np.float32)), t.name
    return r

check(d + "/model.gguf", json.load(open(d + "/model.json")))
a = check(d + "/adapter.gguf", json.load(open(d + "/adapter.json")))
assert a.fields["general.type"].contents() == "adapter"
assert a.fields["adapter.type"].contents() == "lora"

# q rows: convert_hf_to_gguf.py LlamaModel.permute(w, n_head, n_head)
p = json.load(open(d + "/permute.json"))
w = np.asarray(p["wq"], np.float32).reshape(p["emb"], p["emb"])
h = p["n_head"]
ref = w.reshape(h, 2, w.shape[0] // h // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
m = GGUFReader(d + "/model.gguf")
q = [t for t in m.tensors if t.name == "blk.0.attn_q.weight"][0]
assert np.array_equal(np.asarray(q.data).reshape(w.shape), ref)

# Their file for us to read.
rng = np.random.default_rng(11)
wr = GGUFWriter(d + "/theirs.gguf", "llama")
wr.add_uint32("llama.block_count", 3)
wr.add_float32("llama.rope.freq_base", 500000.0)
wr.add_bool("tokenizer.ggml.add_bos_token", True)
wr.add_string("general.name", "theirs")
wr.add_array("tokenizer.ggml.tokens", ["x", "y", "zz"])
wr.add_array("tokenizer.ggml.token_type", [1, 1, 3])
wr.add_int64("forge.i64", -9)
x = rng.standard_normal((4, 64)).astype(np.float32)
wr.add_tensor("a.f32", x)
wr.add_tensor("a.f16", x.astype(np.float16))
wr.add_tensor("a.q8_0", quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
wr.add_tensor("a.q4_0", quantize(x, Q.Q4_0), raw_dtype=Q.Q4_0)
wr.add_tensor("a.1d", x[0].copy())
wr.write_header_to_file()
wr.write_kv_data_to_file()
wr.write_tensors_to_file()
wr.close()
r = GGUFReader(d + "/theirs.gguf")
out = {"tensors": {}}
for t in r.tensors:
    out["tensors"][t.name] = {"type": t.tensor_type.name, "ne": t.shape.tolist(),
        "hex": t.data.tobytes().hex(),
        "f32": dequantize(t.data, t.tensor_type).astype(np.float32).ravel().tolist()}
json.dump(out, open(d + "/theirs.json", "w"))
print("ok")
)PY";
  const std::string cmd = py + " " + (dir / "check.py").string() + " " + dir.string();
  REQUIRE(std::system(cmd.c_str()) == 0);

  auto f = gguf_file::open(dir / "theirs.gguf");
  const auto& md = f.metadata();
  CHECK(md.get<std::string>("general.architecture") == "llama");
  CHECK(md.get<std::string>("general.name") == "theirs");
  CHECK(md.get<std::uint32_t>("llama.block_count") == 3);
  CHECK(md.get<float>("llama.rope.freq_base") == 500000.0f);
  CHECK(md.get<bool>("tokenizer.ggml.add_bos_token"));
  CHECK(md.get<std::int64_t>("forge.i64") == -9);
  CHECK(md.get<gguf_array>("tokenizer.ggml.tokens").strings ==
        std::vector<std::string>{"x", "y", "zz"});
  // gguf-py writes Python ints in arrays as INT32.
  CHECK(md.get<gguf_array>("tokenizer.ggml.token_type").as<std::int32_t>() ==
        std::vector<std::int32_t>{1, 1, 3});
  auto theirs = load_json(dir / "theirs.json");
  REQUIRE(f.tensors().size() == theirs["tensors"].size());
  for (const auto& t : f.tensors()) {
    INFO("tensor " << t.name);
    const auto& e = theirs["tensors"][t.name];
    CHECK(std::string(name(t.type)) == e["type"].get<std::string>());
    CHECK(t.ne == e["ne"].get<std::vector<std::uint64_t>>());
    CHECK(hex_of(f.bytes(t)) == e["hex"].get<std::string>());
    // Dequantization is d * q in f32 on both sides: equal to the bit.
    CHECK(f.to_f32(t.name) == e["f32"].get<std::vector<float>>());
  }
}
