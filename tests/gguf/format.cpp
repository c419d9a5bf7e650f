// GGUF reader/writer: layout facts from ggml's docs/gguf.md checked byte by byte, a round
// trip of every value type and tensor type, the validation errors, and the Llama mapping
// (names, rope row permutation, LoRA adapter keys).

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/io/gguf.hpp"
#include "test_quantizers.hpp"

using namespace forge;
using namespace forge::io;

namespace {
std::vector<std::byte> file_bytes(const std::filesystem::path& p) {
  auto s = read_file(p);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}
template <class T>
T le_at(const std::vector<std::byte>& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
std::vector<float> random_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}
std::span<const std::byte> as_bytes_of(const std::vector<float>& v) {
  return std::as_bytes(std::span(v));
}
}  // namespace

TEST_CASE("the header and first KV are laid out as gguf.md specifies") {
  auto dir = test::scratch("gguf_layout");
  gguf_metadata m;
  m.set("general.architecture", std::string("llama"));
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  std::vector<gguf_tensor_view> t = {{"w", ggml_type::f32, {2, 3}, as_bytes_of(w)}};
  write_gguf(dir / "a.gguf", m, t);
  auto b = file_bytes(dir / "a.gguf");
  CHECK(std::memcmp(b.data(), "GGUF", 4) == 0);
  CHECK(le_at<std::uint32_t>(b, 4) == 3);
  CHECK(le_at<std::uint64_t>(b, 8) == 1);    // tensor count
  CHECK(le_at<std::uint64_t>(b, 16) == 1);   // kv count
  CHECK(le_at<std::uint64_t>(b, 24) == 20);  // key length
  CHECK(std::string(reinterpret_cast<const char*>(b.data()) + 32, 20) == "general.architecture");
  CHECK(le_at<std::uint32_t>(b, 52) == 8);  // STRING
  CHECK(le_at<std::uint64_t>(b, 56) == 5);
  // tensor info: name "w", n_dims 2, ne = [3, 2] (innermost first), type 0, offset 0
  std::size_t ti = 56 + 8 + 5;
  CHECK(le_at<std::uint64_t>(b, ti) == 1);
  CHECK(le_at<std::uint32_t>(b, ti + 9) == 2);
  CHECK(le_at<std::uint64_t>(b, ti + 13) == 3);
  CHECK(le_at<std::uint64_t>(b, ti + 21) == 2);
  CHECK(le_at<std::uint32_t>(b, ti + 29) == 0);
  CHECK(le_at<std::uint64_t>(b, ti + 33) == 0);
  const std::size_t data = (ti + 41 + 31) / 32 * 32;  // padded to the default alignment
  CHECK(b.size() == data + 32);                       // 24 bytes of data padded to 32
  CHECK(le_at<float>(b, data + 20) == 6.0f);
  for (std::size_t i = ti + 41; i < data; ++i) CHECK(b[i] == std::byte{0});
}

TEST_CASE("every metadata type and tensor type round-trips") {
  auto dir = test::scratch("gguf_roundtrip");
  gguf_metadata m;
  m.set("u8", std::uint8_t{200});
  m.set("i8", std::int8_t{-100});
  m.set("u16", std::uint16_t{60000});
  m.set("i16", std::int16_t{-30000});
  m.set("u32", std::uint32_t{4000000000u});
  m.set("i32", std::int32_t{-2000000000});
  m.set("f32", 1.5f);
  m.set("bool", true);
  m.set("str", std::string("héllo\0x", 8));
  m.set("u64", std::uint64_t{1} << 60);
  m.set("i64", std::int64_t{-(std::int64_t{1} << 60)});
  m.set("f64", -2.25);
  m.set("arr.str", gguf_array::of(std::vector<std::string>{"a", "", "ccc"}));
  m.set("arr.i32", gguf_array::of(std::vector<std::int32_t>{-1, 0, 7}));
  m.set("arr.f32", gguf_array::of(std::vector<float>{0.5f, -0.0f}));
  const bool bools[] = {true, false, true};
  m.set("arr.bool", gguf_array::of(std::span<const bool>(bools)));
  m.set("arr.empty", gguf_array::of(std::vector<std::uint64_t>{}));
  m.set("general.alignment", std::uint32_t{64});

  auto x = random_values(2 * 64, 1);
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = to_f16(x[i]).bits;
  auto q8 = test::test_quantize_q8_0(x);
  auto q4 = test::test_quantize_q4_0(x);
  std::vector<float> scalar = {42.0f};
  std::vector<gguf_tensor_view> t = {
      {"t.f32", ggml_type::f32, {2, 64}, as_bytes_of(x)},
      {"t.f16", ggml_type::f16, {2, 64}, std::as_bytes(std::span(h))},
      {"t.q8_0", ggml_type::q8_0, {2, 64}, q8},
      {"t.q4_0", ggml_type::q4_0, {2, 64}, q4},
      {"t.3d", ggml_type::f32, {2, 1, 64}, as_bytes_of(x)},
      {"t.scalar", ggml_type::f32, {}, as_bytes_of(scalar)}};
  write_gguf(dir / "r.gguf", m, t);
  auto f = gguf_file::open(dir / "r.gguf");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.metadata() == m);  // order, types and values
  REQUIRE(f.tensors().size() == t.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    const auto& r = f.tensors()[i];
    CHECK(r.name == t[i].name);
    CHECK(r.type == t[i].type);
    CHECK(r.shape == t[i].shape);
    CHECK(r.offset % 64 == 0);
    CHECK((f.data_offset() % 64) == 0);
    auto bytes = f.bytes(r);
    REQUIRE(bytes.size() == t[i].bytes.size());
    CHECK(std::memcmp(bytes.data(), t[i].bytes.data(), bytes.size()) == 0);
  }
  CHECK(f.at("t.q8_0").ne == std::vector<std::uint64_t>{64, 2});
  CHECK(f.at("t.q8_0").nbytes == 4 * 34);
  CHECK(f.at("t.q4_0").nbytes == 4 * 18);
  CHECK(f.metadata().get<gguf_array>("arr.i32").as<std::int32_t>() ==
        std::vector<std::int32_t>{-1, 0, 7});
  // f16 is exact after conversion; dequantized blocks stay within half a step of x
  // (Q8_0 step amax/127, Q4_0 step amax/8 with d rounded to f16: allow 1 step).
  auto f16v = f.to_f32("t.f16");
  auto d8 = f.to_f32("t.q8_0");
  auto d4 = f.to_f32("t.q4_0");
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
    for (int i = 0; i < 32; ++i) {
      const auto k = 32 * b + i;
      CHECK(f16v[k] == to_f32(f16{h[k]}));
      CHECK(std::fabs(d8[k] - x[k]) <= amax / 127.0f);
      CHECK(std::fabs(d4[k] - x[k]) <= amax / 8.0f + 1e-6f);
    }
  }
}

TEST_CASE("the writer refuses tensors llama.cpp could not load") {
  auto dir = test::scratch("gguf_writer_errors");
  gguf_metadata m;
  std::vector<float> x(64);
  auto q8 = test::test_quantize_q8_0(x);
  auto try_write = [&](gguf_tensor_view v) {
    std::vector<gguf_tensor_view> t = {v};
    write_gguf(dir / "e.gguf", m, t);
  };
  CHECK_THROWS_WITH(try_write({std::string(64, 'n'), ggml_type::f32, {64}, as_bytes_of(x)}),
                    Catch::Contains("too long"));
  CHECK_THROWS_WITH(try_write({"a", ggml_type::f32, {63}, as_bytes_of(x)}),
                    Catch::Contains("disagrees"));
  CHECK_THROWS_WITH(try_write({"a", ggml_type::q8_0, {2, 16}, q8}),
                    Catch::Contains("whole number of blocks"));
  CHECK_THROWS_WITH(try_write({"a", ggml_type::f32, {1, 1, 1, 1, 64}, as_bytes_of(x)}),
                    Catch::Contains("too many dimensions"));
  std::vector<gguf_tensor_view> dup = {{"a", ggml_type::f32, {64}, as_bytes_of(x)},
                                       {"a", ggml_type::f32, {64}, as_bytes_of(x)}};
  CHECK_THROWS_WITH(write_gguf(dir / "e.gguf", m, dup), Catch::Contains("duplicate"));
  gguf_metadata empty_key;
  empty_key.set("", std::uint32_t{1});
  CHECK_THROWS_WITH(write_gguf(dir / "e.gguf", empty_key, {}), Catch::Contains("key length"));
  m.set("general.alignment", std::uint32_t{48});
  CHECK_THROWS_WITH(try_write({"a", ggml_type::f32, {64}, as_bytes_of(x)}),
                    Catch::Contains("power of two"));
  CHECK_FALSE(std::filesystem::exists(dir / "e.gguf"));
}

TEST_CASE("the reader names file, byte offset and expectation for bad input") {
  auto dir = test::scratch("gguf_reader_errors");
  gguf_metadata m;
  m.set("k", std::uint32_t{1});
  std::vector<float> x(32, 1.0f);
  std::vector<gguf_tensor_view> t = {{"w", ggml_type::f32, {32}, as_bytes_of(x)}};
  write_gguf(dir / "ok.gguf", m, t);
  const auto good = file_bytes(dir / "ok.gguf");
  auto parse = [](std::vector<std::byte> b) { return gguf_file::parse(b, "mem.gguf"); };
  auto expect_error = [&](std::vector<std::byte> b, const std::string& what,
                          const std::string& place) {
    try {
      parse(std::move(b));
      FAIL("no error for " << what);
    } catch (const forge::error& e) {
      CHECK(e.file() == "mem.gguf");
      CHECK_THAT(e.problem(), Catch::Contains(what));
      CHECK(e.place() == place);
    }
  };
  auto b = good;
  b[0] = std::byte{'X'};
  expect_error(b, "not a GGUF file", "byte 0");
  b = good;
  b[4] = std::byte{4};
  expect_error(b, "unsupported GGUF version", "byte 4");
  b = good;
  b[15] = std::byte{0x10};  // huge tensor count
  expect_error(b, "tensor count exceeds", "byte 8");
  b = good;
  b[24 + 7] = std::byte{0x7f};  // key length runs past the end
  expect_error(b, "length runs past the end", "byte 24");
  b = good;
  b[24 + 8 + 1] = std::byte{13};  // value type 13 does not exist
  expect_error(b, "unknown metadata value type", "byte 33");
  // tensor info of "w" starts after the KV (24 + 8 + 1 + 4 + 4 = 41)
  b = good;
  b[41 + 9 + 4 + 8] = std::byte{99};  // ggml type 99
  expect_error(b, "unknown ggml type", "byte 62");
  b = good;
  b[41 + 9 + 4 + 8 + 4] = std::byte{8};  // offset 8: unaligned
  expect_error(b, "not aligned", "byte 66");
  b = good;
  b.resize(b.size() - 40);  // data cut short
  expect_error(b, "runs past the end of the file", "tensor w");
  b = good;
  b.resize(20);
  expect_error(b, "file ends inside", "byte 16");
}

TEST_CASE("Hugging Face Llama names map to llama.cpp names") {
  CHECK(gguf_tensor_name("model.embed_tokens.weight") == "token_embd.weight");
  CHECK(gguf_tensor_name("model.layers.0.self_attn.q_proj.weight") == "blk.0.attn_q.weight");
  CHECK(gguf_tensor_name("model.layers.12.self_attn.k_proj.weight") == "blk.12.attn_k.weight");
  CHECK(gguf_tensor_name("model.layers.1.self_attn.v_proj.weight") == "blk.1.attn_v.weight");
  CHECK(gguf_tensor_name("model.layers.1.self_attn.o_proj.weight") == "blk.1.attn_output.weight");
  CHECK(gguf_tensor_name("model.layers.1.self_attn.q_proj.bias") == "blk.1.attn_q.bias");
  CHECK(gguf_tensor_name("model.layers.3.mlp.gate_proj.weight") == "blk.3.ffn_gate.weight");
  CHECK(gguf_tensor_name("model.layers.3.mlp.up_proj.weight") == "blk.3.ffn_up.weight");
  CHECK(gguf_tensor_name("model.layers.3.mlp.down_proj.weight") == "blk.3.ffn_down.weight");
  CHECK(gguf_tensor_name("model.layers.3.input_layernorm.weight") == "blk.3.attn_norm.weight");
  CHECK(gguf_tensor_name("model.layers.3.post_attention_layernorm.weight") ==
        "blk.3.ffn_norm.weight");
  CHECK(gguf_tensor_name("model.norm.weight") == "output_norm.weight");
  CHECK(gguf_tensor_name("lm_head.weight") == "output.weight");
  CHECK_THROWS_WITH(gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
                    Catch::Contains("no llama.cpp name"));
  CHECK(gguf_lora_names("model.layers.0.self_attn.q_proj.weight").first ==
        "blk.0.attn_q.weight.lora_a");
  CHECK(needs_rope_permute("blk.0.attn_k.weight"));
  CHECK_FALSE(needs_rope_permute("blk.0.attn_v.weight"));
}

// The reason for the permutation: HF's rope rotates pairs (i, i + d/2) of each head
// (rotate_half), llama.cpp's LLAMA rope rotates adjacent pairs (2i, 2i + 1). With the rows of
// W permuted, llama.cpp's rope applied to P·W·x must equal the permutation of HF's rope of
// W·x. Checked in double precision; the only error is rounding (1e-12 relative).
TEST_CASE("permuted q rows make llama.cpp's interleaved rope equal HF's rotate-half rope") {
  const std::size_t n_head = 3, d = 8, in = 5, rows = n_head * d;
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  std::vector<double> w(rows * in), x(in);
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  auto pw_bytes = permute_rope_rows(std::as_bytes(std::span(w)), rows, n_head);
  std::vector<double> pw(rows * in);
  std::memcpy(pw.data(), pw_bytes.data(), pw_bytes.size());
  auto matvec = [&](const std::vector<double>& m) {
    std::vector<double> y(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < in; ++c) y[r] += m[r * in + c] * x[c];
    return y;
  };
  const double pos = 7, base = 10000;
  auto theta = [&](std::size_t i) { return pos * std::pow(base, -2.0 * double(i) / double(d)); };
  auto q = matvec(w), pq = matvec(pw);
  std::vector<double> hf(rows), cpp(rows);
  for (std::size_t h = 0; h < n_head; ++h)
    for (std::size_t i = 0; i < d / 2; ++i) {
      const double c = std::cos(theta(i)), s = std::sin(theta(i));
      const std::size_t a = h * d + i, b = h * d + i + d / 2;  // rotate_half pair
      hf[a] = q[a] * c - q[b] * s;
      hf[b] = q[b] * c + q[a] * s;
      const std::size_t e = h * d + 2 * i, o = e + 1;  // interleaved pair
      cpp[e] = pq[e] * c - pq[o] * s;
      cpp[o] = pq[o] * c + pq[e] * s;
    }
  for (std::size_t h = 0; h < n_head; ++h)
    for (std::size_t i = 0; i < d / 2; ++i) {
      CHECK(cpp[h * d + 2 * i] == Approx(hf[h * d + i]).epsilon(1e-12));
      CHECK(cpp[h * d + 2 * i + 1] == Approx(hf[h * d + i + d / 2]).epsilon(1e-12));
    }
  CHECK_THROWS(permute_rope_rows(std::as_bytes(std::span(w)), rows, 5));
}

TEST_CASE("llama and tokenizer metadata use llama.cpp's keys and types") {
  gguf_metadata m;
  add_llama_metadata(m, {.name = "tiny",
                         .context_length = 128,
                         .embedding_length = 64,
                         .block_count = 2,
                         .feed_forward_length = 176,
                         .head_count = 4,
                         .head_count_kv = 2,
                         .vocab_size = 3,
                         .rope_freq_base = 500000.0f,
                         .rope_scaling_type = "linear",
                         .rope_scaling_factor = 2.0f,
                         .rms_norm_eps = 1e-6f,
                         .file_type = llama_file_type::mostly_q8_0});
  add_tokenizer_metadata(m, {.model = "gpt2",
                             .pre = "llama-bpe",
                             .tokens = {"a", "b", "ab"},
                             .token_types = {1, 1, 3},
                             .scores = {},
                             .merges = {"a b"},
                             .bos_id = 2u,
                             .eos_id = 2u,
                             .pad_id = 0u,
                             .unk_id = {},
                             .add_bos = true,
                             .add_eos = {},
                             .chat_template = "{{ messages }}"});
  CHECK(m.get<std::string>("general.architecture") == "llama");
  CHECK(m.get<std::uint32_t>("llama.context_length") == 128);
  CHECK(m.get<std::uint32_t>("llama.rope.dimension_count") == 16);
  CHECK(m.get<std::uint32_t>("llama.attention.head_count_kv") == 2);
  CHECK(m.get<float>("llama.rope.freq_base") == 500000.0f);
  CHECK(m.get<float>("llama.rope.scaling.factor") == 2.0f);
  CHECK(m.get<float>("llama.attention.layer_norm_rms_epsilon") == 1e-6f);
  CHECK(m.get<std::uint32_t>("general.file_type") == 7);
  CHECK(m.get<gguf_array>("tokenizer.ggml.tokens").strings.size() == 3);
  CHECK(m.get<gguf_array>("tokenizer.ggml.token_type").elem == gguf_type::i32);
  CHECK(m.get<std::uint32_t>("tokenizer.ggml.padding_token_id") == 0);
  CHECK(m.get<bool>("tokenizer.ggml.add_bos_token"));
  CHECK_THROWS_WITH(m.get<std::int32_t>("llama.context_length"), Catch::Contains("another type"));
  gguf_tokenizer bad;
  bad.tokens = {"a"};
  bad.eos_id = 1u;
  CHECK_THROWS_WITH(add_tokenizer_metadata(m, bad), Catch::Contains("out of range"));
}
