#pragma once
// SHA-256 (libsodium) of byte buffers, strings and files, as lowercase hex. Every artifact,
// data file and model forge reads or writes is identified by these digests in its reports.

#include <sodium.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"

namespace forge::govern {

namespace detail {
inline void sodium_ready() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw error("libsodium failed to initialise");
}
inline std::string hex(const unsigned char* d, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = digits[d[i] >> 4];
    s[2 * i + 1] = digits[d[i] & 15];
  }
  return s;
}
}  // namespace detail

/// Incremental SHA-256: update() any number of times, then hex_digest().
class sha256 {
 public:
  sha256() {
    detail::sodium_ready();
    crypto_hash_sha256_init(&st_);
  }
  sha256& update(const void* data, std::size_t n) {
    crypto_hash_sha256_update(&st_, static_cast<const unsigned char*>(data), n);
    return *this;
  }
  sha256& update(std::string_view s) { return update(s.data(), s.size()); }
  /// The 32-byte digest; the object must not be updated afterwards.
  std::array<unsigned char, 32> digest() {
    std::array<unsigned char, 32> d{};
    crypto_hash_sha256_final(&st_, d.data());
    return d;
  }
  /// The digest as 64 lowercase hex characters.
  std::string hex_digest() {
    auto d = digest();
    return detail::hex(d.data(), d.size());
  }

 private:
  crypto_hash_sha256_state st_;
};

/// SHA-256 of a byte buffer, hex.
inline std::string sha256_hex(std::span<const std::byte> bytes) {
  return sha256().update(bytes.data(), bytes.size()).hex_digest();
}

/// SHA-256 of a string, hex.
inline std::string sha256_hex(std::string_view s) {
  return sha256().update(s).hex_digest();
}

/// SHA-256 of a file's content, hex, streamed in 1 MiB chunks.
inline std::string sha256_file(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw error({.what = "cannot open file for hashing", .file = path.string()});
  sha256 h;
  std::string buf(1 << 20, '\0');
  for (;;) {
    std::size_t n = std::fread(buf.data(), 1, buf.size(), f);
    if (n > 0) h.update(buf.data(), n);
    if (n < buf.size()) {
      const bool bad = std::ferror(f);
      std::fclose(f);
      if (bad) throw error({.what = "read failed while hashing", .file = path.string()});
      break;
    }
  }
  return h.hex_digest();
}

}  // namespace forge::govern
