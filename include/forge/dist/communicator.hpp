#pragma once
// A group of processes that train one model together (data parallelism): rank, world size,
// all-reduce, broadcast and barrier. forge's trainers take a `communicator*`; this header has
// the interface and the one-process group, dist/mpi.hpp the MPI implementation for CPU
// processes (one host or several, launched with mpirun).
//
// Reductions are defined to sum in rank order — ((v₀ + v₁) + v₂) + … — on every rank, so the
// result has the same bits everywhere and does not depend on the transport's reduction tree:
// the property that makes N-rank training reproduce one-process training exactly.
//
// Two operations have portable defaults that a transport may override: a started sum
// (`start_all_reduce_sum`, which lets a trainer reduce the gradients of finished layers while
// backward goes on; the default sums at once) and `all_gather` (the default broadcasts each
// rank's block in turn).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::dist {

/// A collective that was started and has not necessarily finished. Its buffer must stay
/// alive and untouched until wait() has returned (or test() has returned true).
class pending {
 public:
  virtual ~pending() = default;
  /// Moves the operation on without blocking; true once it has finished.
  virtual bool test() = 0;
  /// Blocks until the operation has finished; forge::error on a transport timeout.
  virtual void wait() = 0;
};

/// A pending operation that had already finished when it was returned.
class finished final : public pending {
 public:
  bool test() override { return true; }
  void wait() override {}
};

/// A fixed group of processes; every member calls each collective in the same order.
class communicator {
 public:
  virtual ~communicator() = default;
  /// This process's index, 0 ≤ rank < size.
  virtual int rank() const = 0;
  /// Number of processes in the group.
  virtual int size() const = 0;
  /// Replaces `v` on every rank with the element-wise sum over ranks, added in rank order.
  virtual void all_reduce_sum(std::span<float> v) = 0;
  /// Replaces `v` on every rank with the element-wise sum over ranks, added in rank order.
  virtual void all_reduce_sum(std::span<double> v) = 0;
  /// Copies `bytes` of rank `root` into `bytes` of every other rank.
  virtual void broadcast(std::span<std::byte> bytes, int root) = 0;
  /// Returns when every rank has called it.
  virtual void barrier() = 0;
  /// For reports: "single process", "mpi", ...
  virtual std::string name() const = 0;
  /// Starts the rank-ordered sum of `v` (as all_reduce_sum) and returns without waiting
  /// where the transport allows; every rank starts the same sums in the same order. The
  /// default sums now and returns a finished operation.
  virtual std::unique_ptr<pending> start_all_reduce_sum(std::span<float> v) {
    all_reduce_sum(v);
    return std::make_unique<finished>();
  }
  /// As above, for doubles.
  virtual std::unique_ptr<pending> start_all_reduce_sum(std::span<double> v) {
    all_reduce_sum(v);
    return std::make_unique<finished>();
  }
  /// Moves started operations on (a transport that only progresses inside its calls needs
  /// them; a trainer calls this between layers of the backward pass). Default: nothing.
  virtual void progress() {}
  /// Every rank's block of `bytes` to every rank: rank r's block is bytes[offsets[r],
  /// offsets[r + 1]); `offsets` has size() + 1 ascending entries, the same on every rank.
  /// The default broadcasts the blocks one after the other.
  virtual void all_gather(std::span<std::byte> bytes, std::span<const std::size_t> offsets) {
    require(offsets.size() == std::size_t(size()) + 1 && offsets.back() <= bytes.size(),
            {.what = "all_gather offsets do not fit the buffer",
             .place = "rank " + std::to_string(rank()),
             .expected = std::to_string(size() + 1) + " ascending offsets within " +
                         std::to_string(bytes.size()) + " bytes",
             .found = std::to_string(offsets.size()) + " offsets"});
    for (int r = 0; r < size(); ++r) {
      require(offsets[std::size_t(r)] <= offsets[std::size_t(r) + 1],
              {.what = "all_gather offsets must ascend", .place = "rank " + std::to_string(r)});
      broadcast(bytes.subspan(offsets[std::size_t(r)],
                              offsets[std::size_t(r) + 1] - offsets[std::size_t(r)]),
                r);
    }
  }
  /// True on the rank that writes checkpoints, reports and artifacts (rank 0).
  bool writes() const { return rank() == 0; }
};

/// Copies rank `root`'s `text` into `text` on every rank (its length first, then the bytes).
inline void broadcast_text(communicator& c, std::string& text, int root) {
  std::uint64_t n = text.size();
  c.broadcast(std::as_writable_bytes(std::span(&n, 1)), root);
  text.resize(std::size_t(n));
  c.broadcast(std::as_writable_bytes(std::span(text.data(), text.size())), root);
}

/// The group of one process: every collective is the identity.
class single_process final : public communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(std::span<float>) override {}
  void all_reduce_sum(std::span<double>) override {}
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}
  std::string name() const override { return "single process"; }
};

}  // namespace forge::dist
