#pragma once
// A group of processes that train one model together (data parallelism): rank, world size,
// all-reduce, broadcast and barrier. forge's trainers take a `communicator*`; this header has
// the interface and the one-process group, dist/mpi.hpp the MPI implementation for CPU
// processes (one host or several, launched with mpirun).
//
// Reductions are defined to sum in rank order — ((v₀ + v₁) + v₂) + … — on every rank, so the
// result has the same bits everywhere and does not depend on the transport's reduction tree:
// the property that makes N-rank training reproduce one-process training exactly.

#include <cstddef>
#include <span>
#include <string>

namespace forge::dist {

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
  /// True on the rank that writes checkpoints, reports and artifacts (rank 0).
  bool writes() const { return rank() == 0; }
};

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
