// The manifest: recursive hashing of a directory (FIPS 180-2 SHA-256 vectors), canonical
// JSON that round-trips byte for byte, and rejection of unsafe or inconsistent manifests.

#include <catch2/catch.hpp>

#include "../support/fixtures.hpp"
#include "forge/govern/manifest.hpp"

using namespace forge;
using namespace forge::govern;

TEST_CASE("scan_tree hashes every file, nested ones included, sorted by path") {
  auto dir = test::scratch("manifest_scan");
  io::write_atomic(dir / "b.txt", std::string("abc"));
  io::write_atomic(dir / "a" / "deep" / "x.bin", std::string(""));
  io::write_atomic(dir / "a" / "y",
                   std::string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"));
  std::filesystem::create_symlink("b.txt", dir / "link");
  const auto s = scan_tree(dir, {"skip.me"});
  REQUIRE(s.files.size() == 3);
  CHECK(s.files[0].path == "a/deep/x.bin");
  CHECK(s.files[1].path == "a/y");
  CHECK(s.files[2].path == "b.txt");
  // FIPS 180-2 appendix B vectors.
  CHECK(s.files[0].sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.files[1].sha256 == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(s.files[2].sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(s.files[2].size == 3);
  CHECK(s.irregular == std::vector<std::string>{"link"});
}

TEST_CASE("the canonical manifest JSON round-trips byte for byte") {
  manifest m;
  m.release_name = "tiny";
  m.release_version = "1.0.0";
  m.base_model_sha256 = std::string(64, 'a');
  m.datasets = {{"sft", std::string(64, 'b')}, {"pref", std::string(64, 'c')}};
  m.files = {{"a/b", std::string(64, '1'), 10}, {"c", std::string(64, '2'), 0}};
  const auto text = m.to_json();
  CHECK(text.back() == '\n');
  CHECK(text.find(' ') == std::string::npos);  // compact
  const auto p = manifest::parse(text, "MANIFEST.json");
  CHECK(p.to_json() == text);
  CHECK(p.files == m.files);
  CHECK(p.datasets == m.datasets);
  // Keys come out sorted, so the bytes do not depend on insertion order.
  CHECK(text.find("\"bindings\"") < text.find("\"files\""));
  CHECK(text.find("\"files\"") < text.find("\"format\""));
}

TEST_CASE("manifests with unsafe paths, bad hashes or unsorted files are rejected") {
  auto make = [](const std::string& path, const std::string& hash, const std::string& path2) {
    manifest m;
    m.base_model_sha256 = std::string(64, 'a');
    m.files = {{path, hash, 1}, {path2, std::string(64, 'f'), 1}};
    return m.to_json();
  };
  const std::string h(64, 'e');
  for (const char* p : {"../etc/passwd", "/abs", "a//b", "a/./b", "a/", "a\\b", ""})
    CHECK_THROWS_WITH(manifest::parse(make(p, h, "zz"), "M"), Catch::Contains("unsafe"));
  CHECK_THROWS_WITH(manifest::parse(make("a", std::string(64, 'E'), "b"), "M"),
                    Catch::Contains("malformed hash"));
  CHECK_THROWS_WITH(manifest::parse(make("b", h, "a"), "M"), Catch::Contains("sorted"));
  CHECK_THROWS_WITH(manifest::parse(make("a", h, "a"), "M"), Catch::Contains("sorted"));
  CHECK_THROWS_WITH(manifest::parse("{\"format\":\"other\"}", "M"), Catch::Contains("format"));
  CHECK_THROWS_WITH(manifest::parse("{", "M"), Catch::Contains("M: line 1"));
}
