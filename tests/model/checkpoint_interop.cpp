// A saved checkpoint is read by the reference safetensors library (pip safetensors, numpy
// backend): every tensor name, dtype, shape and value must be what forge wrote. Needs
// FORGE_PYTHON; fails without it, as every interop test does.

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/init.hpp"

using namespace forge;
using namespace forge::model;

TEST_CASE("pip safetensors reads forge's checkpoints (f32 and f16)") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());
  for (auto t : {dtype::f32, dtype::f16}) {
    model_config c;
    c.arch = architecture::qwen2;
    c.vocab_size = 40, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = 1, c.head_dim = 4, c.qkv_bias = true;
    c.sliding_window = {0, 0};
    auto m = random_model<float>(c, {.seed = 3});
    const auto dir = test::scratch(std::string("model_interop_") + std::string(name(t)));
    io::save_hf_checkpoint(m, dir, t);
    const auto script = dir / "read.py";
    std::ofstream(script) << "import json, sys\n"
                             "from safetensors.numpy import load_file\n"
                             "d = load_file(sys.argv[1])\n"
                             "print(json.dumps({k: [str(v.dtype), list(v.shape), "
                             "[float(x) for x in v.astype('float64').ravel()]] "
                             "for k, v in d.items()}))\n";
    const std::string cmd = py + " " + script.string() + " " +
                            (dir / "model.safetensors").string() + " > " +
                            (dir / "out.json").string();
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream f(dir / "out.json");
    const auto j = nlohmann::json::parse(f);
    std::size_t seen = 0;
    m.for_each_parameter([&](const parameter<float>& p) {
      INFO(p.name);
      REQUIRE(j.contains(p.name));
      const auto& e = j[p.name];
      CHECK(e[0] == (t == dtype::f32 ? "float32" : "float16"));
      CHECK(e[1].get<std::vector<std::int64_t>>() == p.shape);
      const auto v = e[2].get<std::vector<double>>();
      REQUIRE(v.size() == p.value.size());
      bool same = true;
      for (std::size_t i = 0; i < v.size(); ++i) {
        const float want = t == dtype::f32 ? p.value[i] : to_f32(to_f16(p.value[i]));
        same &= float(v[i]) == want;  // exact: both sides hold the same stored bits
      }
      CHECK(same);
      ++seen;
    });
    CHECK(seen == j.size());
  }
}
