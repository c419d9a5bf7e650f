#pragma once
// A read-only memory map of a whole file, shared by copies (checkpoints are mmap'd, never
// copied: a 7B model is not read into a second buffer just to be parsed).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>

#include "forge/core/error.hpp"

namespace forge::io {

/// Read-only mapping of a file; cheap to copy (the mapping is reference counted).
class mapped_file {
 public:
  mapped_file() = default;

  /// Maps `path`; forge::error if it cannot be opened or mapped. Empty files map to an
  /// empty span.
  explicit mapped_file(const std::filesystem::path& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw error(
          {.what = std::string("cannot open: ") + std::strerror(errno), .file = path.string()});
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw error({.what = "not a regular file", .file = path.string()});
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    void* p = nullptr;
    if (size > 0) {
      p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        throw error(
            {.what = std::string("cannot map: ") + std::strerror(e), .file = path.string()});
      }
    }
    ::close(fd);
    region_ = std::shared_ptr<region>(new region{p, size});
  }

  /// The file's bytes.
  std::span<const std::byte> bytes() const {
    if (!region_) return {};
    return {static_cast<const std::byte*>(region_->data), region_->size};
  }
  std::size_t size() const { return region_ ? region_->size : 0; }

 private:
  struct region {
    void* data;
    std::size_t size;
    region(void* d, std::size_t s) : data(d), size(s) {}
    region(const region&) = delete;
    region& operator=(const region&) = delete;
    ~region() {
      if (data) ::munmap(data, size);
    }
  };
  std::shared_ptr<region> region_;
};

}  // namespace forge::io
