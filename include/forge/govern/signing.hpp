#pragma once
// Ed25519 signing keys and detached signatures (libsodium crypto_sign_*, RFC 8032).
//
// Key files are small text files:
//   secret key:  "forge-ed25519-secret-key-v1\n<64 hex chars of the 32-byte seed>\n"  mode 0600
//   public key:  "forge-ed25519-public-key-v1\n<64 hex chars>\n"
// The secret key file is written atomically with mode 0600, and load_signing_key refuses a
// file that group or others can read or write: a leaked signing key forges every release.
// Only the seed is stored; the key pair is re-derived from it (crypto_sign_seed_keypair).

#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"

namespace forge::govern {

/// An Ed25519 public key (32 bytes).
struct public_key {
  std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> bytes{};
  /// 64 lowercase hex characters.
  std::string hex() const { return detail::hex(bytes.data(), bytes.size()); }
  friend bool operator==(const public_key&, const public_key&) = default;
};

/// An Ed25519 detached signature (64 bytes).
struct signature {
  std::array<unsigned char, crypto_sign_BYTES> bytes{};
  /// 128 lowercase hex characters.
  std::string hex() const { return detail::hex(bytes.data(), bytes.size()); }
  friend bool operator==(const signature&, const signature&) = default;
};

/// An Ed25519 key pair. The secret half is wiped when the object is destroyed.
class signing_key {
 public:
  /// Derives the key pair from a 32-byte seed.
  explicit signing_key(std::span<const unsigned char, crypto_sign_SEEDBYTES> seed) {
    detail::sodium_ready();
    std::copy(seed.begin(), seed.end(), seed_.begin());
    crypto_sign_seed_keypair(public_.bytes.data(), secret_.data(), seed_.data());
  }
  signing_key(const signing_key&) = default;
  signing_key& operator=(const signing_key&) = default;
  ~signing_key() {
    sodium_memzero(seed_.data(), seed_.size());
    sodium_memzero(secret_.data(), secret_.size());
  }

  /// A fresh key pair from the operating system's random source.
  static signing_key generate() {
    detail::sodium_ready();
    std::array<unsigned char, crypto_sign_SEEDBYTES> seed{};
    randombytes_buf(seed.data(), seed.size());
    signing_key k(seed);
    sodium_memzero(seed.data(), seed.size());
    return k;
  }

  /// The public half.
  const public_key& public_part() const { return public_; }
  /// The 32-byte seed (secret: only for saving the key).
  std::span<const unsigned char, crypto_sign_SEEDBYTES> seed() const { return seed_; }

  /// A detached signature over `message`.
  signature sign(std::span<const std::byte> message) const {
    signature s;
    crypto_sign_detached(s.bytes.data(), nullptr,
                         reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                         secret_.data());
    return s;
  }
  /// A detached signature over a string's bytes.
  signature sign(std::string_view message) const {
    return sign(std::as_bytes(std::span(message.data(), message.size())));
  }

 private:
  std::array<unsigned char, crypto_sign_SEEDBYTES> seed_{};
  std::array<unsigned char, crypto_sign_SECRETKEYBYTES> secret_{};
  public_key public_{};
};

/// Whether `sig` is a valid signature of `message` under `key`.
inline bool verify_signature(const public_key& key, std::span<const std::byte> message,
                             const signature& sig) {
  detail::sodium_ready();
  return crypto_sign_verify_detached(sig.bytes.data(),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), key.bytes.data()) == 0;
}
/// Whether `sig` is a valid signature of a string's bytes under `key`.
inline bool verify_signature(const public_key& key, std::string_view message,
                             const signature& sig) {
  return verify_signature(key, std::as_bytes(std::span(message.data(), message.size())), sig);
}

namespace detail {
inline constexpr std::string_view secret_key_header = "forge-ed25519-secret-key-v1";
inline constexpr std::string_view public_key_header = "forge-ed25519-public-key-v1";

/// Decodes exactly `out.size()` bytes of hex; false on any other input.
inline bool unhex(std::string_view s, std::span<unsigned char> out) {
  if (s.size() != 2 * out.size()) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

/// Splits "<header>\n<hex>\n" and decodes the hex into `out`; forge::error naming `path`.
inline void read_key_text(const std::string& text, std::string_view header,
                          std::span<unsigned char> out, const std::string& path) {
  const auto nl = text.find('\n');
  if (nl == std::string::npos || std::string_view(text).substr(0, nl) != header)
    throw error({.what = "not a forge key file",
                 .file = path,
                 .place = "line 1",
                 .expected = std::string(header)});
  std::string_view body = std::string_view(text).substr(nl + 1);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
  if (!unhex(body, out))
    throw error({.what = "malformed key",
                 .file = path,
                 .place = "line 2",
                 .expected = std::to_string(2 * out.size()) + " hex characters",
                 .found = std::to_string(body.size()) + " characters"});
}
}  // namespace detail

/// Writes the secret key (its seed) to `path` atomically with mode 0600.
inline void save_signing_key(const std::filesystem::path& path, const signing_key& key) {
  std::string text(detail::secret_key_header);
  text += '\n';
  text += detail::hex(key.seed().data(), key.seed().size());
  text += '\n';
  io::write_atomic(path, text, 0600);
  sodium_memzero(text.data(), text.size());
}

/// Loads a secret key; refuses a file readable or writable by group or others, or one that
/// is not a regular file, with a forge::error saying how to fix the permissions.
inline signing_key load_signing_key(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw error({.what = "cannot read signing key", .file = path.string()});
  if (!S_ISREG(st.st_mode))
    throw error({.what = "signing key is not a regular file", .file = path.string()});
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw error({.what = "signing key file is accessible to group or others; run chmod 600",
                 .file = path.string(),
                 .expected = "mode 0600 or stricter",
                 .found = std::string("mode ") + mode});
  }
  std::string text = io::read_file(path);
  std::array<unsigned char, crypto_sign_SEEDBYTES> seed{};
  try {
    detail::read_key_text(text, detail::secret_key_header, seed, path.string());
  } catch (...) {
    sodium_memzero(text.data(), text.size());
    throw;
  }
  sodium_memzero(text.data(), text.size());
  signing_key k(seed);
  sodium_memzero(seed.data(), seed.size());
  return k;
}

/// The text of a public key file.
inline std::string public_key_text(const public_key& key) {
  std::string text(detail::public_key_header);
  text += '\n';
  text += key.hex();
  text += '\n';
  return text;
}

/// Writes a public key file atomically (mode 0644).
inline void save_public_key(const std::filesystem::path& path, const public_key& key) {
  io::write_atomic(path, public_key_text(key));
}

/// Parses the text of a public key file; `source` names it in errors.
inline public_key parse_public_key(const std::string& text, const std::string& source) {
  public_key k;
  detail::read_key_text(text, detail::public_key_header, k.bytes, source);
  return k;
}

/// Loads a public key file.
inline public_key load_public_key(const std::filesystem::path& path) {
  return parse_public_key(io::read_file(path), path.string());
}

/// Parses a signature file: exactly 128 lowercase hex characters and a newline, the form
/// forge writes. Any other byte sequence (upper case, extra whitespace) is refused, so that
/// no change to the signature file, which the manifest cannot list, goes unnoticed.
inline signature parse_signature(std::string_view text, const std::string& source) {
  signature s;
  const bool canonical = text.size() == 129 && text.back() == '\n' &&
                         std::all_of(text.begin(), text.end() - 1, [](char c) {
                           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                         });
  if (!canonical || !detail::unhex(text.substr(0, 128), s.bytes))
    throw error({.what = "malformed signature",
                 .file = source,
                 .expected = "128 lowercase hex characters and a newline",
                 .found = std::to_string(text.size()) + " bytes"});
  return s;
}

}  // namespace forge::govern
