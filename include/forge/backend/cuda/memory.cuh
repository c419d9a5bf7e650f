#pragma once
// Device memory for the CUDA backend: a caching pool over cudaMalloc, an owning device_buffer
// that returns its block to the pool, an activation arena (one bump-allocated block reset per
// step) and an owning stream. Plain cudaMalloc only: no managed memory, so a program never
// asks the driver for more than the card has.
//
// Why a pool: cudaMalloc/cudaFree synchronise the device and cost tens of microseconds, far
// more than a decode-step kernel. Blocks are kept in size classes (powers of two from 256 B up
// to 1 GiB, exact sizes above) and handed out again without a driver call.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "forge/backend/cuda/check.cuh"

namespace forge::cuda {

/// A caching allocator of device memory. Thread-safe; blocks go back to it, not to the
/// driver, until trim() or destruction.
class memory_pool {
 public:
  memory_pool() = default;
  memory_pool(const memory_pool&) = delete;
  memory_pool& operator=(const memory_pool&) = delete;
  ~memory_pool() { trim(); }

  /// The size class a request of `bytes` is served from (bytes).
  static std::size_t size_class(std::size_t bytes) {
    constexpr std::size_t min_block = 256, pow2_limit = std::size_t(1) << 30;
    if (bytes <= min_block) return min_block;
    if (bytes > pow2_limit) return (bytes + min_block - 1) / min_block * min_block;
    std::size_t s = min_block;
    while (s < bytes) s <<= 1;
    return s;
  }

  /// A block of at least `bytes` bytes, 256-byte aligned; reuses a cached block if one fits.
  void* allocate(std::size_t bytes) {
    const std::size_t s = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(s);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_bytes_ -= s;
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t st = cudaMalloc(&p, s);
    if (st == cudaErrorMemoryAllocation) {  // give the cache back to the driver and retry once
      (void)cudaGetLastError();
      trim();
      st = cudaMalloc(&p, s);
    }
    if (st != cudaSuccess) {
      (void)cudaGetLastError();
      throw error({.what = "device memory allocation failed",
                   .place = "memory_pool::allocate",
                   .expected = std::to_string(s) + " free bytes on the device",
                   .found = std::string(cudaGetErrorString(st))});
    }
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = s;
    allocated_bytes_ += s;
    return p;
  }

  /// Returns a block obtained from allocate() to the cache. The caller must have ordered all
  /// device work that uses it before any later user (same stream, or a synchronisation).
  void deallocate(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sizes_.find(p);
    if (it == sizes_.end())
      throw error(error_info{.what = "pointer was not allocated by this pool",
                             .place = "memory_pool::deallocate"});
    free_.emplace(it->second, p);
    cached_bytes_ += it->second;
  }

  /// Frees every cached (unused) block back to the driver.
  void trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [s, p] : free_) {
      cudaFree(p);
      sizes_.erase(p);
      allocated_bytes_ -= s;
    }
    free_.clear();
    cached_bytes_ = 0;
  }

  /// Bytes obtained from the driver and not yet freed (in use plus cached).
  std::size_t allocated_bytes() const { return allocated_bytes_; }
  /// Bytes held in the cache, ready for reuse.
  std::size_t cached_bytes() const { return cached_bytes_; }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::map<void*, std::size_t> sizes_;
  std::size_t allocated_bytes_ = 0, cached_bytes_ = 0;
};

/// An owning array of `size()` elements of T in device memory, from a pool (or cudaMalloc
/// directly when no pool is given). Move-only.
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  /// n elements, uninitialised.
  explicit device_buffer(std::size_t n, memory_pool* pool = nullptr) : n_(n), pool_(pool) {
    if (n == 0) return;
    if (pool_) {
      p_ = static_cast<T*>(pool_->allocate(n * sizeof(T)));
    } else {
      FORGE_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
    }
  }
  /// n elements copied from host memory (synchronous upload).
  device_buffer(const T* host, std::size_t n, memory_pool* pool = nullptr)
      : device_buffer(n, pool) {
    upload(host, n);
  }
  device_buffer(device_buffer&& o) noexcept { swap(o); }
  device_buffer& operator=(device_buffer&& o) noexcept {
    device_buffer t(std::move(o));
    swap(t);
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { release(); }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  /// Copies n elements from the host (synchronous).
  void upload(const T* host, std::size_t n) {
    require(n <= n_, {.what = "upload larger than the buffer",
                      .place = "device_buffer::upload",
                      .expected = "<= " + std::to_string(n_) + " elements",
                      .found = std::to_string(n)});
    FORGE_CUDA_CHECK(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice));
    // From pageable memory cudaMemcpy may return before the DMA into p_ has finished, and
    // kernels on non-blocking streams do not wait for the legacy stream: wait here, so
    // "synchronous" holds for every stream.
    FORGE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  /// The whole buffer copied to the host (synchronous).
  std::vector<T> download() const {
    std::vector<T> h(n_);
    if (n_) FORGE_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  void release() {
    if (!p_) return;
    if (pool_)
      pool_->deallocate(p_);
    else
      cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  void swap(device_buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(pool_, o.pool_);
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
  memory_pool* pool_ = nullptr;
};

/// Activation arena: one device block, bump-allocated in 256-byte aligned pieces and reset
/// as a whole (once per forward/backward step). Nothing is freed piecemeal.
class arena {
 public:
  /// An arena of `capacity` bytes taken from `pool`.
  arena(std::size_t capacity, memory_pool* pool) : block_(capacity, pool) {}

  /// n elements of T, valid until reset().
  template <class T>
  T* allocate(std::size_t n) {
    const std::size_t at = (used_ + 255) / 256 * 256;
    const std::size_t need = n * sizeof(T);
    require(at + need <= block_.size(),
            {.what = "activation arena exhausted",
             .place = "arena::allocate",
             .expected = "at most " + std::to_string(block_.size()) + " bytes in one step",
             .found = std::to_string(at + need) + " bytes"});
    used_ = at + need;
    return reinterpret_cast<T*>(block_.data() + at);
  }
  /// Makes the whole arena free again; the caller orders this after the step's device work.
  void reset() { used_ = 0; }
  /// Bytes handed out since the last reset (including alignment padding).
  std::size_t used() const { return used_; }
  /// Total bytes.
  std::size_t capacity() const { return block_.size(); }

 private:
  device_buffer<std::byte> block_;
  std::size_t used_ = 0;
};

/// An owning CUDA stream (non-blocking with respect to the legacy default stream).
class stream {
 public:
  stream() { FORGE_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  ~stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }
  /// Waits for all work queued on the stream; throws if any of it failed.
  void synchronize() const { FORGE_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace forge::cuda
