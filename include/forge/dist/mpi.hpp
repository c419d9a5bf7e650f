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
#include <climits>
#include <cstddef>
#include <deque>
#include <memory>
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
    for (MPI_Comm* c : {&comm_, &gather_comm_, &bcast_comm_}) {
      detail::mpi_check(MPI_Comm_dup(base, c), "comm_dup", -1);
      MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
    }
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    require(o_.bucket_elements > 0,
            {.what = "bucket size must be positive", .place = "mpi_options"});
  }
  mpi_communicator(const mpi_communicator&) = delete;
  mpi_communicator& operator=(const mpi_communicator&) = delete;
  ~mpi_communicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      for (MPI_Comm* c : {&comm_, &gather_comm_, &bcast_comm_}) MPI_Comm_free(c);
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
  /// Starts the rank-ordered sum with non-blocking MPI collectives, bucket by bucket: a
  /// gather to rank 0, the ordered add there, a broadcast back. MPI moves them on inside
  /// MPI calls only, so a caller overlapping them with work calls progress() now and then.
  std::unique_ptr<pending> start_all_reduce_sum(std::span<float> v) override { return start(v); }
  std::unique_ptr<pending> start_all_reduce_sum(std::span<double> v) override { return start(v); }
  void progress() override { advance(); }
  /// MPI_Allgatherv in place (blocks over 2³¹ bytes go through the broadcasts of the base).
  void all_gather(std::span<std::byte> bytes, std::span<const std::size_t> offsets) override {
    bool fits = offsets.size() == std::size_t(size_) + 1 && offsets.back() <= bytes.size() &&
                offsets.back() <= std::size_t(INT_MAX);
    std::vector<int> counts, displs;
    for (int r = 0; fits && r < size_; ++r) {
      fits = offsets[std::size_t(r)] <= offsets[std::size_t(r) + 1];
      counts.push_back(int(offsets[std::size_t(r) + 1] - offsets[std::size_t(r)]));
      displs.push_back(int(offsets[std::size_t(r)]));
    }
    if (!fits) return communicator::all_gather(bytes, offsets);  // checks and says why
    MPI_Request r;
    detail::mpi_check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bytes.data(),
                                      counts.data(), displs.data(), MPI_BYTE, comm_, &r),
                      "all_gather", rank_);
    wait(r, "all-gather");
  }
  /// Ends every process of the group (after an error on one rank, so none waits).
  [[noreturn]] void abort(int code) const {
    MPI_Abort(comm_, code);
    std::abort();
  }

 private:
  static constexpr std::size_t chunk_bytes = std::size_t(1) << 28;

  void wait(MPI_Request& r, const char* what) const {
    const auto end = deadline();
    for (int spins = 0;; ++spins) {
      int done = 0;
      detail::mpi_check(MPI_Test(&r, &done, MPI_STATUS_IGNORE), what, rank_);
      if (done) return;
      if (std::chrono::steady_clock::now() > end) {
        MPI_Cancel(&r);
        timed_out(what);
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // One bucket of a started sum. Gathers run on gather_comm_ and broadcasts on bcast_comm_:
  // rank 0 may start the next bucket's gather before it can broadcast this one's sum, and
  // MPI wants the collectives of one communicator started in the same order on every rank.
  struct chunk {
    void* x = nullptr;
    std::size_t n = 0;
    MPI_Datatype type{};
    std::vector<std::byte> gathered{};  // rank 0: every rank's n values
    void (*add)(chunk&, int) = nullptr;
    MPI_Request req = MPI_REQUEST_NULL;
    enum { gathering, gathered_all, broadcasting, done } stage = gathering;
  };

  template <class T>
  static void add_in_rank_order(chunk& c, int ranks) {
    T* x = static_cast<T*>(c.x);
    const T* g = reinterpret_cast<const T*>(c.gathered.data());
    for (std::size_t i = 0; i < c.n; ++i) {
      T s = g[i];
      for (int k = 1; k < ranks; ++k) s += g[std::size_t(k) * c.n + i];
      x[i] = s;
    }
  }

  class mpi_pending final : public pending {
   public:
    explicit mpi_pending(mpi_communicator& c) : c_(c) {}
    bool test() override {
      c_.advance();
      return std::all_of(chunks_.begin(), chunks_.end(),
                         [](const auto& k) { return k->stage == chunk::done; });
    }
    void wait() override {
      const auto deadline = c_.deadline();
      for (int spins = 0; !test(); ++spins) {
        if (std::chrono::steady_clock::now() > deadline) c_.timed_out("gradient reduction");
        if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    std::vector<std::shared_ptr<chunk>> chunks_;

   private:
    mpi_communicator& c_;
  };

  template <class T>
  std::unique_ptr<pending> start(std::span<T> v) {
    if (size_ == 1) return std::make_unique<finished>();
    auto p = std::make_unique<mpi_pending>(*this);
    for (std::size_t at = 0; at < v.size(); at += o_.bucket_elements) {
      auto c = std::make_shared<chunk>();
      c->x = v.data() + at;
      c->n = std::min(o_.bucket_elements, v.size() - at);
      c->type = detail::mpi_type<T>();
      c->add = &add_in_rank_order<T>;
      if (rank_ == 0) c->gathered.resize(c->n * std::size_t(size_) * sizeof(T));
      detail::mpi_check(
          MPI_Igather(c->x, int(c->n), c->type, rank_ == 0 ? c->gathered.data() : nullptr,
                      int(c->n), c->type, 0, gather_comm_, &c->req),
          "gather", rank_);
      inflight_.push_back(c);
      p->chunks_.push_back(std::move(c));
    }
    advance();
    return p;
  }

  // Moves every started bucket on; broadcasts start strictly in the order of the gathers.
  void advance() {
    bool in_order = true;
    for (auto& c : inflight_) {
      int flag = 0;
      if (c->stage == chunk::gathering) {
        detail::mpi_check(MPI_Test(&c->req, &flag, MPI_STATUS_IGNORE), "gather", rank_);
        if (flag) c->stage = chunk::gathered_all;
      }
      if (c->stage == chunk::gathered_all && in_order) {
        if (rank_ == 0) c->add(*c, size_);
        detail::mpi_check(MPI_Ibcast(c->x, int(c->n), c->type, 0, bcast_comm_, &c->req),
                          "broadcast", rank_);
        c->stage = chunk::broadcasting;
      }
      if (c->stage == chunk::broadcasting) {
        detail::mpi_check(MPI_Test(&c->req, &flag, MPI_STATUS_IGNORE), "broadcast", rank_);
        if (flag) c->stage = chunk::done;
      }
      if (c->stage < chunk::broadcasting) in_order = false;
    }
    while (!inflight_.empty() && inflight_.front()->stage == chunk::done) inflight_.pop_front();
  }

  std::chrono::steady_clock::time_point deadline() const {
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
               std::chrono::duration<double>(o_.timeout_s));
  }
  [[noreturn]] void timed_out(const char* what) const {
    throw error({.what = std::string("a rank did not take part in the ") + what + " in time",
                 .place = "rank " + std::to_string(rank_) + " of " + std::to_string(size_),
                 .expected = "every rank within " + std::to_string(o_.timeout_s) + " s",
                 .found = "no answer (a rank died or is stuck)"});
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
  MPI_Comm comm_{}, gather_comm_{}, bcast_comm_{};
  std::deque<std::shared_ptr<chunk>> inflight_;
  int rank_ = 0, size_ = 1;
  std::vector<std::byte> gathered_;
};

}  // namespace forge::dist
