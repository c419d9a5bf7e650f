#pragma once
// forge::dist::communicator over MPI (Open MPI from Debian: libopenmpi-dev), for CPU
// processes on one host or several; launch with `mpirun -np N program`. Link the program
// with MPI::MPI_CXX (CMake: find_package(MPI)). The library itself never needs MPI: only a
// program that includes this header does.
//
// Sums are taken in rank order (gather to rank 0, add v₀ + v₁ + … there, broadcast the
// result), never by the transport's own reduction tree, whose order depends on the world size
// and the network: so every rank holds the same bits, and N-rank training reproduces one-
// process training exactly where the two add the same terms in the same order.
//
// A rank that dies must not leave the others waiting forever: every collective is
// non-blocking underneath and waits at most `timeout` seconds, then throws forge::error
// naming the operation and this rank. (mpirun also ends the whole job when one process exits
// with an error; the timeout covers transports and launchers that do not.)

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "forge/core/error.hpp"
#include "forge/dist/communicator.hpp"

namespace forge::dist {

namespace detail {

inline std::string mpi_error_text(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(code, buf, &n);
  return std::string(buf, std::size_t(n));
}

inline void mpi_check(int code, const char* what, int rank) {
  if (code != MPI_SUCCESS)
    throw error({.what = std::string("MPI ") + what + " failed",
                 .place = "rank " + std::to_string(rank),
                 .found = mpi_error_text(code)});
}

template <class T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
inline MPI_Datatype mpi_type<double>() {
  return MPI_DOUBLE;
}

}  // namespace detail

/// Initialises MPI for the lifetime of the object (MPI_THREAD_FUNNELED: only the main thread
/// calls MPI; OpenMP threads inside kernels are fine) and finalizes it at the end, unless MPI
/// was already initialised by someone else.
class mpi_environment {
 public:
  mpi_environment(int* argc, char*** argv) {
    int done = 0;
    MPI_Initialized(&done);
    if (done) return;
    int provided = 0;
    detail::mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init", -1);
    owner_ = true;
  }
  mpi_environment(const mpi_environment&) = delete;
  mpi_environment& operator=(const mpi_environment&) = delete;
  ~mpi_environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }

 private:
  bool owner_ = false;
};

/// Options of an MPI communicator.
struct mpi_options {
  double timeout_s = 300;                 ///< longest wait in one collective, seconds
  std::size_t bucket_elements = 1 << 20;  ///< reduction granularity (elements per message)
};

/// A communicator over a duplicate of MPI_COMM_WORLD (or of `base`).
class mpi_communicator final : public communicator {
 public:
  explicit mpi_communicator(mpi_options o = {}, MPI_Comm base = MPI_COMM_WORLD) : o_(o) {
    detail::mpi_check(MPI_Comm_dup(base, &comm_), "comm_dup", -1);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    require(o_.bucket_elements > 0, {.what = "bucket size must be positive", .place = "mpi_options"});
  }
  mpi_communicator(const mpi_communicator&) = delete;
  mpi_communicator& operator=(const mpi_communicator&) = delete;
  ~mpi_communicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(std::span<float> v) override { reduce(v); }
  void all_reduce_sum(std::span<double> v) override { reduce(v); }
  void broadcast(std::span<std::byte> bytes, int root) override {
    for (std::size_t at = 0; at < bytes.size(); at += chunk_bytes) {
      const std::size_t n = std::min(chunk_bytes, bytes.size() - at);
      MPI_Request r;
      detail::mpi_check(MPI_Ibcast(bytes.data() + at, int(n), MPI_BYTE, root, comm_, &r),
                        "broadcast", rank_);
      wait(r, "broadcast");
    }
  }
  void barrier() override {
    MPI_Request r;
    detail::mpi_check(MPI_Ibarrier(comm_, &r), "barrier", rank_);
    wait(r, "barrier");
  }
  std::string name() const override { return "mpi"; }
  /// Ends every process of the group (after an error on one rank, so none waits).
  [[noreturn]] void abort(int code) const {
    MPI_Abort(comm_, code);
    std::abort();
  }

 private:
  static constexpr std::size_t chunk_bytes = std::size_t(1) << 28;

  void wait(MPI_Request& r, const char* what) const {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(o_.timeout_s));
    for (int spins = 0;; ++spins) {
      int done = 0;
      detail::mpi_check(MPI_Test(&r, &done, MPI_STATUS_IGNORE), what, rank_);
      if (done) return;
      if (std::chrono::steady_clock::now() > deadline) {
        MPI_Cancel(&r);
        throw error({.what = std::string("a rank did not take part in the ") + what + " in time",
                     .place = "rank " + std::to_string(rank_) + " of " + std::to_string(size_),
                     .expected = "every rank within " + std::to_string(o_.timeout_s) + " s",
                     .found = "no answer (a rank died or is stuck)"});
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  template <class T>
  void reduce(std::span<T> v) {
    if (size_ == 1) return;
    const auto type = detail::mpi_type<T>();
    for (std::size_t at = 0; at < v.size(); at += o_.bucket_elements) {
      const std::size_t n = std::min(o_.bucket_elements, v.size() - at);
      T* x = v.data() + at;
      if (rank_ == 0) gathered_.resize(n * std::size_t(size_) * sizeof(T));
      T* g = reinterpret_cast<T*>(gathered_.data());
      MPI_Request r;
      detail::mpi_check(
          MPI_Igather(x, int(n), type, rank_ == 0 ? g : nullptr, int(n), type, 0, comm_, &r),
          "gather", rank_);
      wait(r, "gradient reduction");
      if (rank_ == 0)
        for (std::size_t i = 0; i < n; ++i) {
          T s = g[i];
          for (int k = 1; k < size_; ++k) s += g[std::size_t(k) * n + i];
          x[i] = s;
        }
      detail::mpi_check(MPI_Ibcast(x, int(n), type, 0, comm_, &r), "broadcast", rank_);
      wait(r, "gradient reduction");
    }
  }

  mpi_options o_;
  MPI_Comm comm_{};
  int rank_ = 0, size_ = 1;
  std::vector<std::byte> gathered_;
};

}  // namespace forge::dist
