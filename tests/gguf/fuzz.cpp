// Fuzzing the GGUF reader (built with ASan+UBSan): 120k seeded mutations of small valid
// files (all value types, arrays, F32/F16/Q8_0/Q4_0 tensors). Every input must either parse,
// after which every tensor's bytes are read in full and converted where the type allows, or
// fail with forge::error. Any other exception, crash or sanitizer report fails the test.

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "../support/fixtures.hpp"
#include "forge/io/gguf.hpp"
#include "test_quantizers.hpp"

using namespace forge;
using namespace forge::io;

namespace {
std::vector<std::byte> load(const std::filesystem::path& p) {
  auto s = read_file(p);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

std::vector<std::vector<std::byte>> make_seeds(const std::filesystem::path& dir) {
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 3.0f;
  auto q8 = test::test_quantize_q8_0(x);
  auto q4 = test::test_quantize_q4_0(x);
  std::vector<float> x256(256);
  for (std::size_t i = 0; i < x256.size(); ++i) x256[i] = std::cos(float(i) * 0.3f);
  const auto q4k = forge::quant::q4_k::quantize(x256, 1, 256).codes;  // one Q4_K block
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = to_f16(x[i]).bits;

  gguf_metadata a;
  add_llama_metadata(a, {.name = "fuzz",
                         .context_length = 64,
                         .embedding_length = 64,
                         .block_count = 1,
                         .feed_forward_length = 64,
                         .head_count = 2,
                         .head_count_kv = 1,
                         .vocab_size = 4});
  add_tokenizer_metadata(a, {.model = "gpt2",
                             .pre = "default",
                             .tokens = {"a", "b", "c", "ab"},
                             .token_types = {1, 1, 1, 3},
                             .scores = {},
                             .merges = {"a b"},
                             .bos_id = 3u,
                             .eos_id = 3u,
                             .pad_id = {},
                             .unk_id = {},
                             .add_bos = false,
                             .add_eos = {},
                             .chat_template = "{{x}}"});
  a.set("x.i8", std::int8_t{-3});
  a.set("x.f64", 2.5);
  a.set("x.i64", std::int64_t{-7});
  a.set("x.u16", std::uint16_t{9});
  const bool bools[] = {true, false};
  a.set("x.bools", gguf_array::of(std::span<const bool>(bools)));
  std::vector<gguf_tensor_view> ta = {
      {"token_embd.weight", ggml_type::q8_0, {1, 64}, q8},
      {"blk.0.attn_q.weight", ggml_type::q4_0, {2, 32}, q4},
      {"blk.0.ffn_up.weight", ggml_type::q4_k, {1, 256}, std::as_bytes(std::span(q4k))},
      {"output_norm.weight", ggml_type::f16, {64}, std::as_bytes(std::span(h))},
      {"output.weight", ggml_type::f32, {4, 16}, std::as_bytes(std::span(x))}};
  write_gguf(dir / "a.gguf", a, ta);

  gguf_metadata b;
  b.set("general.alignment", std::uint32_t{8});
  add_lora_adapter_metadata(b, 16.0f);
  std::vector<gguf_tensor_view> tb = {
      {"blk.0.attn_q.weight.lora_a", ggml_type::f32, {2, 8}, std::as_bytes(std::span(x)).first(64)},
      {"blk.0.attn_q.weight.lora_b",
       ggml_type::f32,
       {3, 2},
       std::as_bytes(std::span(x)).first(24)}};
  write_gguf(dir / "b.gguf", b, tb);
  return {load(dir / "a.gguf"), load(dir / "b.gguf")};
}

// Values that push length, count, type and offset fields over their edges.
constexpr std::uint64_t kInteresting[] = {0,
                                          1,
                                          2,
                                          7,
                                          8,
                                          12,
                                          13,
                                          31,
                                          32,
                                          63,
                                          64,
                                          255,
                                          0x7fffffff,
                                          0xffffffff,
                                          1ull << 32,
                                          1ull << 62,
                                          INT64_MAX,
                                          UINT64_MAX,
                                          UINT64_MAX - 31};

std::vector<std::byte> mutate(const std::vector<std::byte>& seed, std::mt19937_64& rng) {
  auto b = seed;
  auto pick = [&](std::size_t hi) {
    return static_cast<std::size_t>(rng() % std::max<std::size_t>(1, hi));
  };
  // Most structure is in the first few hundred bytes; bias edits towards it.
  auto where = [&]() {
    return (rng() % 4) ? pick(std::min<std::size_t>(b.size(), 700)) : pick(b.size());
  };
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !b.empty(); ++e) {
    switch (rng() % 8) {
      case 0:
        b[where()] ^= std::byte(1u << (rng() % 8));
        break;
      case 1:
        b[where()] = std::byte(rng() & 0xff);
        break;
      case 2: {  // an interesting 8-byte value at any position
        const auto v = kInteresting[rng() % std::size(kInteresting)];
        const auto at = where();
        for (std::size_t i = 0; i < 8 && at + i < b.size(); ++i)
          b[at + i] = std::byte((v >> (8 * i)) & 0xff);
        break;
      }
      case 3: {  // an interesting 4-byte value (types, n_dims)
        const auto v = kInteresting[rng() % std::size(kInteresting)] + (rng() % 3);
        const auto at = where();
        for (std::size_t i = 0; i < 4 && at + i < b.size(); ++i)
          b[at + i] = std::byte((v >> (8 * i)) & 0xff);
        break;
      }
      case 4:
        b.resize(pick(b.size() + 1));
        break;
      case 5: {
        const auto at = where();
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), std::byte(rng() & 0xff));
        break;
      }
      case 6: {
        const auto at = where();
        if (at < b.size()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(at));
        break;
      }
      default: {  // small integer at a position (lengths that land inside the file)
        const auto at = where();
        if (at < b.size()) b[at] = std::byte(rng() % 40);
      }
    }
  }
  return b;
}
}  // namespace

TEST_CASE("the GGUF reader survives 120k mutated files with only forge::error") {
  auto dir = test::scratch("gguf_fuzz");
  const auto seeds = make_seeds(dir);
  for (const auto& s : seeds) REQUIRE_NOTHROW(gguf_file::parse(s, "seed"));
  std::mt19937_64 rng(20260511);
  std::size_t parsed = 0, rejected = 0;
  std::uint64_t checksum = 0;
  constexpr int iterations = 120000;
  for (int it = 0; it < iterations; ++it) {
    const auto input = mutate(seeds[it % seeds.size()], rng);
    try {
      auto f = gguf_file::parse(input, "fuzz.gguf");
      for (const auto& t : f.tensors()) {
        for (auto byte : f.bytes(t)) checksum += std::to_integer<unsigned>(byte);
        if (t.type == ggml_type::f32 || t.type == ggml_type::f16 || t.type == ggml_type::q8_0 ||
            t.type == ggml_type::q4_0 || t.type == ggml_type::q4_k || t.type == ggml_type::bf16 ||
            t.type == ggml_type::f64)
          checksum += f.to_f32(t.name).size();
      }
      for (const auto& [k, v] : f.metadata().items()) checksum += k.size() + v.index();
      ++parsed;
    } catch (const forge::error& e) {
      // Every rejection says where: a byte offset or a tensor.
      const bool placed = e.place().rfind("byte ", 0) == 0 || e.place().rfind("tensor ", 0) == 0 ||
                          e.place().rfind("key ", 0) == 0;
      if (!placed) FAIL("error without a place: " << e.what());
      if (e.file() != "fuzz.gguf") FAIL("error without the file: " << e.what());
      ++rejected;
    }
  }
  INFO("parsed " << parsed << ", rejected " << rejected << ", checksum " << checksum);
  CHECK(parsed + rejected == iterations);
  // Both outcomes must be well represented, or the mutations are not exploring.
  CHECK(parsed > 1000);
  CHECK(rejected > 10000);
}
