// Fuzzing the config parser under ASan/UBSan: seeded mutations of valid config.json texts
// (byte flips, insertions, deletions, splices, and JSON-aware value swaps). Only forge::error
// may escape; every accepted config must satisfy the invariants the model relies on.

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "../support/fixtures.hpp"
#include "forge/model/config.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;

TEST_CASE("config parser survives 100k mutated inputs with forge::error only") {
  std::vector<std::string> seeds;
  for (auto name : {"config.json", "config.v4.json"}) {
    std::ifstream f(test::llama_a() / "model" / name);
    std::stringstream ss;
    ss << f.rdbuf();
    seeds.push_back(ss.str());
  }
  seeds.push_back(R"({"architectures":["Qwen2ForCausalLM"],"vocab_size":10,"hidden_size":8,
    "intermediate_size":8,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
    "use_sliding_window":true,"sliding_window":4,"max_window_layers":1,"layer_types":
    ["full_attention","sliding_attention"],"eos_token_id":[1,2],
    "rope_scaling":{"type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,
    "original_max_position_embeddings":16}})");
  // Values spliced in at random JSON value positions.
  const std::vector<std::string> values = {"null",
                                           "-1",
                                           "0",
                                           "1e308",
                                           "true",
                                           "\"x\"",
                                           "[]",
                                           "{}",
                                           "[1,\"a\"]",
                                           "1.5",
                                           "9223372036854775807",
                                           "18446744073709551615",
                                           "-0",
                                           "{\"type\":\"dynamic\"}"};
  philox r(2024, 0);
  std::size_t accepted = 0, rejected = 0;
  for (int it = 0; it < 100000; ++it) {
    std::string s = seeds[r.next_u64() % seeds.size()];
    const int edits = 1 + int(r.next_u64() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const std::size_t pos = r.next_u64() % s.size();
      switch (r.next_u64() % 5) {
        case 0:
          s[pos] = char(r.next_u64());
          break;
        case 1:
          s.insert(pos, 1, char(r.next_u64()));
          break;
        case 2:
          s.erase(pos, 1 + r.next_u64() % 8);
          break;
        case 3: {  // replace the value after a ':' with another value
          const auto colon = s.find(':', pos);
          if (colon == std::string::npos) break;
          const auto end = s.find_first_of(",}", colon);
          s.replace(colon + 1, (end == std::string::npos ? s.size() : end) - colon - 1,
                    values[r.next_u64() % values.size()]);
          break;
        }
        default: {  // duplicate a slice
          const std::size_t len = r.next_u64() % 32;
          s.insert(pos, s.substr(r.next_u64() % s.size(), len));
        }
      }
    }
    try {
      const auto c = parse_config_text(s, "fuzz.json");
      ++accepted;
      REQUIRE(c.num_attention_heads % c.num_key_value_heads == 0);
      REQUIRE(c.head_dim % 2 == 0);
      REQUIRE(c.sliding_window.size() == std::size_t(c.num_hidden_layers));
      REQUIRE(c.rope.theta > 0);
    } catch (const forge::error&) {
      ++rejected;
    }
  }
  // Both outcomes must occur, or the mutations are not exercising the parser.
  CHECK(accepted > 100);
  CHECK(rejected > 100);
}
