// Atomic writes: the destination holds the old content or the complete new one, never a
// partial file, and a failed producer leaves nothing behind.

#include "forge/io/atomic_file.hpp"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "../support/fixtures.hpp"

using namespace forge;
namespace fs = std::filesystem;

TEST_CASE("write_atomic replaces content and creates parent directories") {
  auto dir = test::scratch("atomic_basic");
  auto p = dir / "a" / "b" / "file.txt";
  io::write_atomic(p, std::string_view("first"));
  CHECK(io::read_file(p) == "first");
  io::write_atomic(p, std::string_view("second, longer"));
  CHECK(io::read_file(p) == "second, longer");
  CHECK(std::distance(fs::directory_iterator(p.parent_path()), fs::directory_iterator{}) == 1);
}

TEST_CASE("a producer that throws leaves the old file and no temporary") {
  auto dir = test::scratch("atomic_throw");
  auto p = dir / "file.txt";
  io::write_atomic(p, std::string_view("kept"));
  CHECK_THROWS_AS(io::write_atomic(p,
                                   [](io::atomic_sink& s) {
                                     s.write(std::string_view("partial"));
                                     throw forge::error("producer failed");
                                   }),
                  forge::error);
  CHECK(io::read_file(p) == "kept");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}) == 1);
}

TEST_CASE("secrets are written with the requested permissions") {
  auto dir = test::scratch("atomic_mode");
  io::write_atomic(dir / "key", std::string_view("secret"), 0600);
  struct stat st {};
  REQUIRE(::stat((dir / "key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("reading a missing file names it") {
  CHECK_THROWS_WITH(io::read_file("/nonexistent/forge/file"),
                    Catch::Contains("/nonexistent/forge/file") && Catch::Contains("cannot open"));
}
