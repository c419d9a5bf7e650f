// Seeded mutation fuzzing of load_gptq_checkpoint: bytes of model.safetensors (mostly its
// JSON header, where the structure lives) and of config.json are flipped, inserted or
// removed; loading must either succeed or throw forge::error — never crash, never another
// exception. Each iteration writes two files and builds a model, so the loop runs 4000
// iterations (not 100k) to stay well under a minute under ASan/UBSan.

#include <catch2/catch.hpp>

#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/gptq_model.hpp"
#include "forge/quant/model_quantize.hpp"

using namespace forge;
using Bk = backend::scalar;

namespace {
void write(const std::filesystem::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(s.data(), std::streamsize(s.size()));
}
}  // namespace

TEST_CASE("load_gptq_checkpoint: mutated files give forge::error or a model, nothing else") {
  model::model_config c;
  c.vocab_size = 16, c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = 1;
  c.num_attention_heads = 2, c.num_key_value_heads = 2, c.head_dim = 16;
  c.max_position_embeddings = 16, c.sliding_window.assign(1, 0);
  auto m = model::random_model<float>(c, {.seed = 3});
  quant::quantize_model_rtn<quant::int4_g32>(Bk{}, m);
  const auto good = test::scratch("compress_fuzz_good");
  quant::save_gptq_checkpoint<Bk, 32, true>(m, good);
  REQUIRE_NOTHROW(quant::load_gptq_checkpoint<Bk>(good));
  const auto st = io::read_file(good / "model.safetensors");
  const auto cfg = io::read_file(good / "config.json");
  const auto gen = io::read_file(good / "generation_config.json");
  std::uint64_t header = 8;
  for (int i = 0; i < 8; ++i) header += std::uint64_t(std::uint8_t(st[std::size_t(i)])) << (8 * i);
  const auto dir = test::scratch("compress_fuzz");
  io::write_atomic(dir / "generation_config.json", gen);
  philox g(2024);
  int loaded = 0, rejected = 0;
  for (int it = 0; it < 4000; ++it) {
    std::string a = st, b = cfg;
    const bool mutate_config = g.below(4) == 0;
    std::string& t = mutate_config ? b : a;
    const std::size_t span = mutate_config ? t.size() : std::size_t(header);
    const int edits = 1 + int(g.below(4));
    for (int e = 0; e < edits && !t.empty(); ++e) {
      const std::size_t at = g.below(std::uint32_t(std::min(span, t.size())));
      switch (g.below(4)) {
        case 0:
          t[at] = char(g.below(256));
          break;
        case 1:
          t[at] = "0123456789{}[]\",:-.e "[g.below(21)];
          break;
        case 2:
          t.insert(at, 1, char(g.below(256)));
          break;
        default:
          t.erase(at, 1);
      }
    }
    // Plain writes (no fsync): the loop is I/O bound otherwise.
    write(dir / "model.safetensors", a);
    write(dir / "config.json", b);
    try {
      const auto r = quant::load_gptq_checkpoint<Bk>(dir);
      loaded += r.layers.size() == 1;
    } catch (const error&) {
      ++rejected;
    }
  }
  INFO("loaded " << loaded << " rejected " << rejected);
  CHECK(rejected > 1000);  // the mutations reach the validation, not only harmless bytes
}
