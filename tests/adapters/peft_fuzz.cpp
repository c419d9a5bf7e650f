// Seeded mutation fuzzing of PEFT adapter directories under ASan/UBSan: mutated
// adapter_config.json texts (100,000) and mutated safetensors headers of the adapter weights
// (1,000, each loaded onto the fixture model). Only forge::error may escape; nothing crashes.

#include <catch2/catch.hpp>

#include <filesystem>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"

using namespace forge;

namespace {
std::string mutate(std::string s, philox& g, std::size_t limit) {
  static const char pieces[] = "{}[]\",:0123456789-.eE \\ntrufalsn";
  const int edits = 1 + int(g.below(4));
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const std::size_t at = g.below(std::uint32_t(std::min(s.size(), limit)));
    switch (g.below(4)) {
      case 0:
        s[at] = char(g.below(256));
        break;
      case 1:
        s[at] = pieces[g.below(sizeof pieces - 1)];
        break;
      case 2:
        s.erase(at, 1 + g.below(8));
        break;
      default:
        s.insert(at, 1 + g.below(4), pieces[g.below(sizeof pieces - 1)]);
    }
  }
  return s;
}
}  // namespace

TEST_CASE("mutated adapter configs give forge::error or a valid config, never a crash") {
  const auto src = io::read_file(test::llama_a() / "adapter" / "adapter_config.json");
  philox g(99, 0);
  std::size_t ok = 0, rejected = 0;
  for (int i = 0; i < 100000; ++i) {
    try {
      auto c = io::parse_peft_config(mutate(src, g, src.size()), "adapter_config.json");
      CHECK(c.rank >= 1);
      ++ok;
    } catch (const forge::error&) {
      ++rejected;
    }
  }
  CHECK(ok + rejected == 100000);
  CHECK(rejected > 1000);  // the mutations really break things
}

TEST_CASE("mutated adapter weights give forge::error or load, never a crash") {
  const auto base = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const auto src = io::read_file(test::llama_a() / "adapter" / "adapter_model.safetensors");
  const auto dir = test::scratch("adapters_peft_fuzz_weights");
  std::filesystem::copy_file(test::llama_a() / "adapter" / "adapter_config.json",
                             dir / "adapter_config.json");
  philox g(7, 0);
  std::size_t header = 8;
  for (int i = 0; i < 8; ++i) header += std::size_t(std::uint8_t(src[i])) << (8 * i);
  std::size_t rejected = 0;
  for (int i = 0; i < 1000; ++i) {
    io::write_atomic(dir / "adapter_model.safetensors", mutate(src, g, header));
    auto m = base;
    try {
      auto set = io::load_peft_adapter(backend::scalar{}, m, dir);
      CHECK(set.modules.size() == 14);
    } catch (const forge::error&) {
      ++rejected;
    }
  }
  CHECK(rejected > 100);
}
