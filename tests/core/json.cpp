// JSON helpers: parse errors carry file, line and column; field access names the path.

#include "forge/core/json.hpp"

#include <catch2/catch.hpp>

#include "../support/fixtures.hpp"

using namespace forge;

TEST_CASE("parse errors name the source, line and column") {
  CHECK_THROWS_WITH(parse_json("{\n  \"a\": 1,\n  \"b\": ]\n}", "cfg.json"),
                    Catch::Contains("cfg.json") && Catch::Contains("line 3, column 8"));
  CHECK_THROWS_WITH(parse_json("", "empty.json"), Catch::Contains("empty.json"));
  CHECK_THROWS_WITH(parse_json("{\"a\": 1e99999}", "big.json"), Catch::Contains("big.json"));
}

TEST_CASE("fields are typed and their absence is reported with the path") {
  auto j = parse_json(R"({"model": {"layers": 4, "name": "x", "eps": null}})", "c.json");
  CHECK(get_field<int>(j["model"], "layers", "c.json", "model") == 4);
  CHECK_THROWS_WITH(get_field<int>(j["model"], "heads", "c.json", "model"),
                    Catch::Contains("c.json") && Catch::Contains("model.heads") &&
                        Catch::Contains("missing field"));
  CHECK_THROWS_WITH(get_field<int>(j["model"], "name", "c.json", "model"),
                    Catch::Contains("wrong type") && Catch::Contains("string \"x\""));
  CHECK(get_field_or<double>(j["model"], "eps", 1e-5, "c.json", "model") == 1e-5);
  CHECK(get_field_or<double>(j["model"], "theta", 1e4, "c.json", "model") == 1e4);
  CHECK_THROWS_AS(get_field<int>(json::array(), "x", "c.json"), forge::error);
}

TEST_CASE("save_json writes atomically and reads back equal") {
  auto dir = test::scratch("json_save");
  json j = {{"a", 1}, {"b", {1, 2, 3}}, {"c", "ünï"}};
  save_json(dir / "x.json", j);
  CHECK(load_json(dir / "x.json") == j);
  CHECK_THROWS_WITH(load_json(dir / "nope.json"), Catch::Contains("nope.json"));
}

TEST_CASE("the fixture configs parse") {
  auto c = load_json(test::llama_a() / "model" / "config.json");
  CHECK(get_field<int>(c, "hidden_size", "config.json") == 64);
  CHECK(get_field<double>(c["rope_parameters"], "rope_theta", "config.json", "rope_parameters") ==
        10000.0);
}
