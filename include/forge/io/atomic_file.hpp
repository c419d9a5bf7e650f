#pragma once
// Atomic file writes: content goes to a temporary file in the destination's directory, is
// flushed and fsync'd, then renamed over the destination and the directory is fsync'd.
// A crash at any moment leaves either the old file or the complete new one, never a
// half-written artifact (DESIGN.md principle 5).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "forge/core/error.hpp"

namespace forge::io {

namespace detail {
inline std::string errno_text() {
  return std::strerror(errno);
}

inline void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw error({.what = "write failed: " + errno_text(), .file = path});
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

inline void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace detail

/// A sink handed to the producer callback of write_atomic; append bytes with write().
class atomic_sink {
 public:
  atomic_sink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void write(const void* data, std::size_t n) {
    detail::write_all(fd_, data, n, path_);
    bytes_ += n;
  }
  void write(std::string_view s) { write(s.data(), s.size()); }
  std::uint64_t bytes_written() const { return bytes_; }

 private:
  int fd_;
  std::string path_;
  std::uint64_t bytes_ = 0;
};

/// Writes `path` atomically; `produce(sink)` streams the content. If `produce` throws,
/// the temporary file is removed and `path` is left as it was. `mode` sets permissions
/// (0600 for secrets such as signing keys).
inline void write_atomic(const std::filesystem::path& path,
                         const std::function<void(atomic_sink&)>& produce, mode_t mode = 0644) {
  namespace fs = std::filesystem;
  const fs::path dir = path.parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw error({.what = "cannot create directory: " + ec.message(), .file = dir.string()});
  }
  std::string name = ".";
  name += path.filename().string();
  name += ".tmp.XXXXXX";
  std::string tmpl = (dir / name).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0)
    throw error(
        {.what = "cannot create temporary file: " + detail::errno_text(), .file = path.string()});
  try {
    ::fchmod(fd, mode);
    atomic_sink sink(fd, path.string());
    produce(sink);
    if (::fsync(fd) != 0)
      throw error({.what = "fsync failed: " + detail::errno_text(), .file = path.string()});
    if (::close(fd) != 0) {
      fd = -1;
      throw error({.what = "close failed: " + detail::errno_text(), .file = path.string()});
    }
    fd = -1;
    if (::rename(tmpl.c_str(), path.c_str()) != 0)
      throw error({.what = "rename failed: " + detail::errno_text(), .file = path.string()});
    detail::fsync_dir(dir);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmpl.c_str());
    throw;
  }
}

/// Writes a whole buffer atomically.
inline void write_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes,
                         mode_t mode = 0644) {
  write_atomic(
      path, [&](atomic_sink& s) { s.write(bytes.data(), bytes.size()); }, mode);
}

/// Writes a string atomically.
inline void write_atomic(const std::filesystem::path& path, std::string_view text,
                         mode_t mode = 0644) {
  write_atomic(
      path, [&](atomic_sink& s) { s.write(text); }, mode);
}

/// Reads a whole file into a string; forge::error if it cannot be read.
inline std::string read_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw error({.what = "cannot open: " + detail::errno_text(), .file = path.string()});
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      throw error({.what = "read failed: " + detail::errno_text(), .file = path.string()});
    }
    if (r == 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fd);
  return out;
}

}  // namespace forge::io
