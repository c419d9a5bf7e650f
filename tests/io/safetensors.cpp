// safetensors: the fixtures made by the reference writer are read, validated and re-written
// byte for byte; every class of malformed header is a forge::error naming the place.

#include "forge/io/safetensors.hpp"

#include <catch2/catch.hpp>
#include <cstring>

#include "../support/fixtures.hpp"

using namespace forge;
namespace fs = std::filesystem;

namespace {
std::vector<std::byte> bytes_of(const fs::path& p) {
  auto s = io::read_file(p);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// A file from a header string and a zeroed data section, for malformed-input cases.
std::vector<std::byte> make_file(const std::string& header, std::size_t data_bytes,
                                 std::uint64_t claimed_len = UINT64_MAX) {
  const std::uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::vector<std::byte> b(8 + header.size() + data_bytes, std::byte{0});
  for (int i = 0; i < 8; ++i) b[i] = std::byte((n >> (8 * i)) & 0xff);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

std::string error_of(const std::vector<std::byte>& b) {
  try {
    io::safetensors_file::parse(b, "case.safetensors");
  } catch (const forge::error& e) {
    return e.what();
  }
  return "";
}

// Re-writes every tensor of `f` (and its metadata) to `out`.
void rewrite(const io::safetensors_file& f, const fs::path& out) {
  std::vector<io::tensor_view> views;
  for (auto& t : f.tensors()) views.push_back({t.name, t.type, t.shape, f.bytes(t)});
  io::write_safetensors(out, views, f.metadata());
}
}  // namespace

TEST_CASE("the fixture checkpoint's header is read with names, dtypes, shapes and metadata") {
  auto f = io::safetensors_file::open(test::llama_a() / "model" / "model.safetensors");
  CHECK(f.tensors().size() == 21);  // embed, norm, lm_head + 2 layers x 9
  CHECK(f.metadata().at("format") == "pt");
  const auto& q = f.at("model.layers.1.self_attn.q_proj.weight");
  CHECK(q.type == dtype::f32);
  CHECK(q.shape == std::vector<std::int64_t>{64, 64});
  const auto& k = f.at("model.layers.0.self_attn.k_proj.weight");
  CHECK(k.shape == std::vector<std::int64_t>{32, 64});  // 2 kv heads x head_dim 16
  auto w = f.to_f32("model.norm.weight");
  REQUIRE(w.size() == 64);
  float raw0;
  std::memcpy(&raw0, f.bytes(f.at("model.norm.weight")).data(), 4);
  CHECK(w[0] == raw0);
  CHECK(f.find("model.layers.2.mlp.up_proj.weight") == nullptr);
  CHECK_THROWS_WITH(f.at("missing.weight"), Catch::Contains("tensor missing.weight") &&
                                                Catch::Contains("model.safetensors"));
}

TEST_CASE("integer tensors are read exactly and dtype mismatches are refused") {
  auto f = io::safetensors_file::open(test::llama_a() / "expect.safetensors");
  auto ids = f.copy_as<std::int64_t>("input_ids", dtype::i64);
  CHECK(f.at("input_ids").shape == std::vector<std::int64_t>{2, 18});
  REQUIRE(ids.size() == 36);
  for (auto id : ids) CHECK((id >= 0 && id < 512));  // the fixture vocabulary has 512 tokens
  CHECK_THROWS_WITH(f.copy_as<std::int32_t>("input_ids", dtype::i32),
                    Catch::Contains("expected I32") && Catch::Contains("found I64"));
  CHECK_THROWS_WITH(f.to_f32("input_ids"), Catch::Contains("not floating point"));
}

TEST_CASE("re-writing reference files reproduces them byte for byte") {
  // The fixtures were written by the reference implementation; our writer must lay out
  // header order, padding and data order exactly as it does.
  auto dir = test::scratch("safetensors_rewrite");
  for (auto rel : {"model/model.safetensors", "expect.safetensors",
                   "adapter/adapter_model.safetensors", "merged/model.safetensors"}) {
    INFO(rel);
    auto src = test::llama_a() / rel;
    auto f = io::safetensors_file::open(src);
    auto out = dir / "out.safetensors";
    rewrite(f, out);
    CHECK(bytes_of(out) == bytes_of(src));
    auto g = io::safetensors_file::open(out);
    REQUIRE(g.tensors().size() == f.tensors().size());
    for (auto& t : f.tensors()) {
      auto a = f.bytes(t);
      auto b = g.bytes(g.at(t.name));
      CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
  }
}

TEST_CASE("bf16, f16, bool and empty tensors round-trip through the writer") {
  auto dir = test::scratch("safetensors_dtypes");
  std::vector<std::uint16_t> h = {0x3f80, 0xc000, 0x7f80, 0x0001};
  std::vector<std::uint8_t> flags = {1, 0, 1};
  std::vector<io::tensor_view> views = {
      {"a.bf16", dtype::bf16, {2, 2}, std::as_bytes(std::span(h))},
      {"b.f16", dtype::f16, {4}, std::as_bytes(std::span(h))},
      {"c.bool", dtype::boolean, {3}, std::as_bytes(std::span(flags))},
      {"d.empty", dtype::f32, {0, 5}, {}},
      {"e.scalar", dtype::bf16, {}, std::as_bytes(std::span(h).first(1))}};
  io::write_safetensors(dir / "t.safetensors", views, {{"note", "ünïcode ok"}});
  auto f = io::safetensors_file::open(dir / "t.safetensors");
  CHECK(f.metadata().at("note") == "ünïcode ok");
  auto a = f.to_f32("a.bf16");
  CHECK(a == std::vector<float>{1.0f, -2.0f, INFINITY, to_f32(bf16{1})});
  CHECK(f.to_f32("b.f16")[0] == to_f32(f16{0x3f80}));
  CHECK(f.at("d.empty").numel() == 0);
  CHECK(f.at("e.scalar").numel() == 1);
  CHECK(f.copy_as<std::uint8_t>("c.bool", dtype::boolean) == flags);
}

TEST_CASE("the writer refuses inconsistent tensors and leaves no file behind") {
  auto dir = test::scratch("safetensors_bad_write");
  std::vector<float> v(5);
  std::vector<io::tensor_view> bad = {io::f32_view("w", {2, 3}, v)};
  CHECK_THROWS_WITH(io::write_safetensors(dir / "x.safetensors", bad),
                    Catch::Contains("tensor w") && Catch::Contains("expected 24 bytes"));
  std::vector<io::tensor_view> dup = {io::f32_view("w", {5}, v), io::f32_view("w", {5}, v)};
  CHECK_THROWS_WITH(io::write_safetensors(dir / "x.safetensors", dup),
                    Catch::Contains("duplicate"));
  CHECK(fs::is_empty(dir));
}

TEST_CASE("malformed headers are errors that name the place") {
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(error_of(make_file(ok, 8)).empty());

  CHECK_THAT(error_of(std::vector<std::byte>(5)),
             Catch::Contains("byte 0") && Catch::Contains("8 bytes"));
  CHECK_THAT(error_of(make_file(ok, 8, 1000)), Catch::Contains("past the end"));
  CHECK_THAT(error_of(make_file(ok, 8, 200'000'000)), Catch::Contains("too large"));
  CHECK_THAT(error_of(make_file(" " + ok, 8)), Catch::Contains("start with '{'"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32",)", 8)), Catch::Contains("not valid JSON"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8)),
             Catch::Contains("tensor w") && Catch::Contains("unknown dtype"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
             Catch::Contains("disagrees with shape"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16)),
             Catch::Contains("gap before tensor"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12)),
             Catch::Contains("no tensor covers"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)),
             Catch::Contains("past the end"));
  CHECK_THAT(error_of(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                8)),
             Catch::Contains("overlaps"));
  CHECK_THAT(error_of(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                8)),
             Catch::Contains("duplicate tensor name"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
             Catch::Contains("non-negative"));
  CHECK_THAT(error_of(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)),
             Catch::Contains("end before begin"));
  CHECK_THAT(
      error_of(make_file(
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8)),
      Catch::Contains("overflows"));
  CHECK_THAT(error_of(make_file(R"({"__metadata__":{"k":1}})", 0)),
             Catch::Contains("__metadata__.k"));
  CHECK_THAT(error_of(make_file("{\"w\xff\":{}}", 0)), Catch::Contains("not valid JSON"));
  CHECK_THAT(
      error_of(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8)),
      Catch::Contains("unknown field"));
}

TEST_CASE("a truncated checkpoint on disk is refused with the file's name") {
  auto dir = test::scratch("safetensors_truncated");
  auto b = bytes_of(test::llama_a() / "model" / "model.safetensors");
  b.resize(b.size() - 100);
  io::write_atomic(dir / "cut.safetensors", std::span<const std::byte>(b));
  CHECK_THROWS_WITH(io::safetensors_file::open(dir / "cut.safetensors"),
                    Catch::Contains("cut.safetensors") && Catch::Contains("past the end"));
  CHECK_THROWS_WITH(io::safetensors_file::open(dir / "absent.safetensors"),
                    Catch::Contains("cannot open"));
}
