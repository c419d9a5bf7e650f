#pragma once
// forge::dist::communicator over NCCL, for GPUs: one rank per GPU. Buffers passed to the
// collectives are DEVICE memory (the spans hold device pointers). Compiled by nvcc; link
// NCCL (libnccl) and the CUDA runtime.
//
// As with MPI (dist/mpi.hpp), sums are taken in rank order: an all-gather brings every rank's
// buffer to every rank, and a kernel adds them as ((v₀ + v₁) + v₂) + … — the same bits on
// every rank and for every topology, where NCCL's ring or tree all-reduce would associate the
// terms by its own schedule. It moves (world − 1)·n values more than a reduce-scatter would;
// for adapter gradients that is the price of reproducible weights.
//
// Bootstrap: ranks share an ncclUniqueId. `nccl_unique_id_via_file` exchanges it through a
// file on a shared file system (rank 0 writes it atomically, the others wait for it); an MPI
// program can instead broadcast it with dist::mpi_communicator::broadcast.
//
// No silent hangs: each collective waits at most `timeout_s` for its stream, then aborts the
// NCCL communicator and throws forge::error naming the operation and the rank.

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <thread>

#include "forge/core/error.hpp"
#include "forge/dist/communicator.hpp"

namespace forge::dist {

namespace detail {

inline void nccl_check(ncclResult_t r, const char* what, int rank) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw error({.what = std::string("NCCL ") + what + " failed",
                 .place = "rank " + std::to_string(rank),
                 .found = ncclGetErrorString(r)});
}

inline void cuda_check_dist(cudaError_t e, const char* what, int rank) {
  if (e != cudaSuccess)
    throw error({.what = std::string("CUDA ") + what + " failed",
                 .place = "rank " + std::to_string(rank),
                 .found = cudaGetErrorString(e)});
}

/// out[i] = ((g[0·n+i] + g[1·n+i]) + g[2·n+i]) + … for i < n: the rank-ordered sum of `ranks`
/// gathered buffers of n values.
template <class T>
__global__ void rank_ordered_sum(const T* __restrict__ g, T* __restrict__ out, std::size_t n,
                                 int ranks) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    T s = g[i];
    for (int k = 1; k < ranks; ++k) s += g[std::size_t(k) * n + i];
    out[i] = s;
  }
}

template <class T>
ncclDataType_t nccl_type();
template <>
inline ncclDataType_t nccl_type<float>() {
  return ncclFloat32;
}
template <>
inline ncclDataType_t nccl_type<double>() {
  return ncclFloat64;
}

}  // namespace detail

/// Launches the rank-ordered sum of `ranks` gathered buffers of n values on `stream`.
template <class T>
void rank_ordered_sum(const T* gathered, T* out, std::size_t n, int ranks, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = unsigned(std::min<std::size_t>((n + 255) / 256, 4096));
  detail::rank_ordered_sum<<<blocks, 256, 0, stream>>>(gathered, out, n, ranks);
}

/// Rank 0 creates the unique id and writes it to `file` (atomically: temporary file, then
/// rename); the other ranks wait up to `timeout_s` for the file. forge::error on timeout.
inline ncclUniqueId nccl_unique_id_via_file(const std::filesystem::path& file, int rank,
                                            double timeout_s = 60) {
  ncclUniqueId id{};
  if (rank == 0) {
    detail::nccl_check(ncclGetUniqueId(&id), "get unique id", rank);
    const auto tmp = file.string() + ".tmp";
    {
      std::ofstream o(tmp, std::ios::binary);
      o.write(id.internal, sizeof id.internal);
      require(bool(o), {.what = "cannot write the NCCL unique id", .file = tmp});
    }
    std::filesystem::rename(tmp, file);
    return id;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<
      std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s));
  while (!std::filesystem::exists(file)) {
    require(std::chrono::steady_clock::now() < deadline,
            {.what = "rank 0 did not publish the NCCL unique id in time",
             .file = file.string(),
             .place = "rank " + std::to_string(rank),
             .expected = "the file within " + std::to_string(timeout_s) + " s"});
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(file, std::ios::binary);
  in.read(id.internal, sizeof id.internal);
  require(in.gcount() == std::streamsize(sizeof id.internal),
          {.what = "truncated NCCL unique id",
           .file = file.string(),
           .expected = std::to_string(sizeof id.internal) + " bytes",
           .found = std::to_string(in.gcount()) + " bytes"});
  return id;
}

/// A communicator over NCCL on the current CUDA device. Collectives take device memory.
class nccl_communicator final : public communicator {
 public:
  /// Joins the group `id` as `rank` of `size` on the current device; work goes to `stream`.
  nccl_communicator(int rank, int size, const ncclUniqueId& id, cudaStream_t stream = nullptr,
                    double timeout_s = 300)
      : rank_(rank), size_(size), stream_(stream), timeout_s_(timeout_s) {
    require(size >= 1 && rank >= 0 && rank < size,
            {.what = "invalid NCCL rank",
             .expected = "0 <= rank < size",
             .found = std::to_string(rank) + " of " + std::to_string(size)});
    detail::nccl_check(ncclCommInitRank(&comm_, size, id, rank), "init", rank);
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;
  ~nccl_communicator() override {
    if (scratch_) cudaFree(scratch_);
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(std::span<float> v) override { reduce(v); }
  void all_reduce_sum(std::span<double> v) override { reduce(v); }
  void broadcast(std::span<std::byte> bytes, int root) override {
    detail::nccl_check(ncclBroadcast(bytes.data(), bytes.data(), bytes.size(), ncclUint8, root,
                                     comm_, stream_),
                       "broadcast", rank_);
    wait("broadcast");
  }
  void barrier() override {
    if (!scratch_) grow(sizeof(float));
    detail::nccl_check(ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_),
                       "barrier", rank_);
    wait("barrier");
  }
  std::string name() const override { return "nccl"; }

 private:
  void grow(std::size_t bytes) {
    if (bytes <= scratch_bytes_) return;
    if (scratch_) cudaFree(scratch_);
    scratch_ = nullptr;
    detail::cuda_check_dist(cudaMalloc(&scratch_, bytes), "allocating the gather buffer", rank_);
    scratch_bytes_ = bytes;
  }

  template <class T>
  void reduce(std::span<T> v) {
    if (size_ == 1 || v.empty()) return;
    grow(v.size() * sizeof(T) * std::size_t(size_));
    T* g = static_cast<T*>(scratch_);
    detail::nccl_check(
        ncclAllGather(v.data(), g, v.size(), detail::nccl_type<T>(), comm_, stream_), "all-gather",
        rank_);
    rank_ordered_sum(g, v.data(), v.size(), size_, stream_);
    detail::cuda_check_dist(cudaGetLastError(), "rank-ordered sum", rank_);
    wait("gradient reduction");
  }

  void wait(const char* what) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(timeout_s_));
    for (;;) {
      const auto e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) detail::cuda_check_dist(e, what, rank_);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      detail::nccl_check(async, what, rank_);
      if (std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw error({.what = std::string("a rank did not take part in the ") + what + " in time",
                     .place = "rank " + std::to_string(rank_) + " of " + std::to_string(size_),
                     .expected = "every rank within " + std::to_string(timeout_s_) + " s",
                     .found = "no answer (a rank died or is stuck)"});
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  double timeout_s_ = 300;
  ncclComm_t comm_ = nullptr;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace forge::dist
