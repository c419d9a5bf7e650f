// Ed25519 keys and signatures: RFC 8032 known-answer vectors, key files with restricted
// permissions, and tamper detection on messages, signatures and keys.

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cctype>

#include "../support/fixtures.hpp"
#include "forge/govern/signing.hpp"

using namespace forge;
using namespace forge::govern;

namespace {
template <std::size_t N>
std::array<unsigned char, N> from_hex(std::string_view h) {
  std::array<unsigned char, N> a{};
  REQUIRE(detail::unhex(h, a));
  return a;
}
}  // namespace

// RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72).
TEST_CASE("Ed25519 matches the RFC 8032 test vectors") {
  auto seed1 = from_hex<32>("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  signing_key k1(seed1);
  CHECK(k1.public_part().hex() ==
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  auto s1 = k1.sign(std::string_view{});
  CHECK(s1.hex() ==
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  CHECK(verify_signature(k1.public_part(), std::string_view{}, s1));

  auto seed2 = from_hex<32>("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
  signing_key k2(seed2);
  CHECK(k2.public_part().hex() ==
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  auto s2 = k2.sign(std::string_view("\x72", 1));
  CHECK(s2.hex() ==
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  CHECK(verify_signature(k2.public_part(), std::string_view("\x72", 1), s2));
  // Wrong key, changed message, changed signature: all rejected.
  CHECK_FALSE(verify_signature(k1.public_part(), std::string_view("\x72", 1), s2));
  CHECK_FALSE(verify_signature(k2.public_part(), std::string_view("\x73", 1), s2));
  for (std::size_t i = 0; i < 64; ++i) {
    auto bad = s2;
    bad.bytes[i] ^= 1;
    CHECK_FALSE(verify_signature(k2.public_part(), std::string_view("\x72", 1), bad));
  }
}

TEST_CASE("secret key files are written 0600 and refused when others can read them") {
  auto dir = test::scratch("signing_keys");
  const auto k = signing_key::generate();
  save_signing_key(dir / "release.key", k);
  struct stat st {};
  REQUIRE(::stat((dir / "release.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto loaded = load_signing_key(dir / "release.key");
  CHECK(loaded.public_part() == k.public_part());
  CHECK(verify_signature(k.public_part(), "m", loaded.sign("m")));

  for (mode_t mode : {0640, 0604, 0660, 0644}) {
    ::chmod((dir / "release.key").c_str(), mode);
    CHECK_THROWS_WITH(
        load_signing_key(dir / "release.key"),
        Catch::Contains("accessible to group or others") && Catch::Contains("release.key"));
  }
  ::chmod((dir / "release.key").c_str(), 0400);  // stricter is fine
  CHECK(load_signing_key(dir / "release.key").public_part() == k.public_part());

  save_public_key(dir / "release.pub", k.public_part());
  CHECK(load_public_key(dir / "release.pub") == k.public_part());
  // A public key file is not a secret key file, and vice versa.
  ::chmod((dir / "release.pub").c_str(), 0600);
  CHECK_THROWS_WITH(load_signing_key(dir / "release.pub"), Catch::Contains("not a forge key file"));
  CHECK_THROWS_WITH(load_public_key(dir / "release.key"), Catch::Contains("not a forge key file"));
  io::write_atomic(dir / "short.pub", std::string("forge-ed25519-public-key-v1\nabcd\n"));
  CHECK_THROWS_WITH(load_public_key(dir / "short.pub"), Catch::Contains("malformed key"));
  CHECK_THROWS_WITH(parse_signature("zz", "sig"), Catch::Contains("malformed signature"));
  // Only the canonical form is a signature file: the same bytes in upper case, or with other
  // whitespace, are changes to a file the manifest cannot list, and must not go unnoticed.
  const std::string good = k.sign("m").hex() + "\n";
  CHECK(parse_signature(good, "sig") == k.sign("m"));
  std::string upper = good;
  for (auto& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  REQUIRE(upper != good);
  CHECK_THROWS_WITH(parse_signature(upper, "sig"), Catch::Contains("malformed signature"));
  CHECK_THROWS(parse_signature(good + " ", "sig"));
  CHECK_THROWS(parse_signature(good.substr(0, 128), "sig"));
  CHECK_THROWS(parse_signature(good.substr(0, 128) + "\r\n", "sig"));
}

TEST_CASE("two generated keys differ and do not verify each other's signatures") {
  const auto a = signing_key::generate(), b = signing_key::generate();
  CHECK_FALSE(a.public_part() == b.public_part());
  CHECK_FALSE(verify_signature(b.public_part(), "manifest", a.sign("manifest")));
}
