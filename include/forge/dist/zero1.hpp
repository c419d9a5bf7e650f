#pragma once
// AdamW with its state split over the ranks of a data-parallel group: ZeRO stage 1
// (optimizer-state partitioning, P_os in Rajbhandari et al. 2020, "ZeRO: Memory
// Optimizations Toward Training Trillion Parameter Models", §5.1).
//
// Every rank still holds all parameter values and the group's summed gradient (the trainer
// reduces it as before), but the AdamW moments only of its 1/N of the values: the values are
// laid end to end in tensor order and cut into N contiguous ranges, each cut moved down to
// a 256-value block boundary of the tensor it falls in (so the 8-bit state's absmax blocks
// are those of unsharded AdamW). A step updates the rank's own range; then each range is
// broadcast from its owner. AdamW is element-wise, so this is the same arithmetic on the
// same values as unsharded AdamW: the same bits. State memory per rank: about 8·n/N bytes
// (f32 moments) instead of 8·n.
//
// Checkpoints keep the unsharded format (train/checkpoint.hpp): on saving, rank 0 collects
// the moments range by range from their owners (it alone holds the whole state while it
// writes); on loading, every rank reads the file and keeps its range. So a run can resume
// with another world size, sharded or not.

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "forge/dist/communicator.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/checkpoint.hpp"

namespace forge::dist {

/// A range [lo, hi) of tensor `tensor`'s values whose AdamW state rank `owner` keeps.
struct shard_piece {
  std::size_t tensor = 0, lo = 0, hi = 0;
  int owner = 0;
};

/// The ZeRO-1 partition of tensors of `sizes` values over `world` ranks: pieces in tensor
/// order, each rank's pieces contiguous when the tensors are laid end to end; every cut is
/// on a multiple of `block` within its tensor.
inline std::vector<shard_piece> shard_pieces(std::span<const std::size_t> sizes, int world,
                                             std::size_t block = train::adam_state::block) {
  std::size_t total = 0;
  for (auto n : sizes) total += n;
  // Cut c (1 ≤ c < world) at about c·total/world, moved down to a block start.
  std::vector<std::size_t> cut(std::size_t(world) + 1, total);
  cut[0] = 0;
  for (int c = 1; c < world; ++c) {
    const std::size_t want = total * std::size_t(c) / std::size_t(world);
    std::size_t start = 0;
    for (auto n : sizes) {
      if (want < start + n) {
        cut[std::size_t(c)] = start + (want - start) / block * block;
        break;
      }
      start += n;
    }
  }
  std::vector<shard_piece> out;
  std::size_t start = 0;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    for (int r = 0; r < world; ++r) {
      const std::size_t lo = std::max(start, cut[std::size_t(r)]),
                        hi = std::min(start + sizes[t], cut[std::size_t(r) + 1]);
      if (lo < hi) out.push_back({t, lo - start, hi - start, r});
    }
    start += sizes[t];
  }
  return out;
}

/// AdamW over `all` tensors whose state is sharded over `comm` (ZeRO-1); with a null
/// communicator (or a group of one), plain AdamW. step() and save() are collective.
template <class T>
class sharded_adamw {
 public:
  sharded_adamw(std::vector<train::trainable<T>> all, train::adamw_options o,
                communicator* comm = nullptr)
      : all_(std::move(all)),
        opts_(o),
        comm_(comm && comm->size() > 1 ? comm : nullptr),
        opt_(mine(), o) {}

  /// Every trainable tensor (values and gradients of the whole model).
  const std::vector<train::trainable<T>>& params() const { return all_; }
  /// The AdamW of this rank's share (all tensors when not sharded).
  const train::adamw<T>& local() const { return opt_; }
  /// Bytes of optimizer state this rank holds.
  std::size_t state_bytes() const { return opt_.state_bytes(); }
  /// True when the state is split over a group (then step, save and load are collective).
  bool sharded() const { return comm_ != nullptr; }
  /// Steps taken.
  std::int64_t steps() const { return opt_.steps(); }

  /// One AdamW update with learning rate `lr` from the (group-summed) gradients; with a
  /// group, each rank updates its ranges, then every range is broadcast from its owner.
  void step(double lr) {
    opt_.step(lr);
    if (!comm_) return;
    for (const auto& p : pieces_)
      comm_->broadcast(std::as_writable_bytes(all_[p.tensor].value.subspan(p.lo, p.hi - p.lo)),
                       p.owner);
  }

  /// Writes checkpoint `path` (rank 0 writes; with a group every rank must call it).
  void save(const std::filesystem::path& path, const train::trainer_state& st) {
    if (!comm_) return train::save_checkpoint(path, opt_, st);
    const bool writer = comm_->writes();
    std::optional<train::adamw<T>> full;
    if (writer) full.emplace(all_, opts_);
    std::vector<std::byte> scratch;
    std::size_t local = 0;
    for (const auto& p : pieces_) {
      const bool own = p.owner == comm_->rank();
      for (int which = 0; which < 2; ++which) {
        train::adam_state* dst =
            writer ? &(which ? full->second_moments() : full->first_moments())[p.tensor] : nullptr;
        train::adam_state* src =
            own ? &(which ? opt_.second_moments() : opt_.first_moments())[local] : nullptr;
        move_state(dst, src, p, p.owner, scratch);
      }
      local += own;
    }
    if (!writer) return;
    full->set_steps(opt_.steps());
    train::save_checkpoint(path, *full, st);
  }

  /// Restores values and this rank's state from checkpoint `path` (every rank reads it).
  train::trainer_state load(const std::filesystem::path& path) {
    if (!comm_) return train::load_checkpoint(path, opt_);
    train::adamw<T> full(all_, opts_);
    auto st = train::load_checkpoint(path, full);
    std::size_t local = 0;
    for (const auto& p : pieces_) {
      if (p.owner != comm_->rank()) continue;
      for (int which = 0; which < 2; ++which) {
        auto& src = (which ? full.second_moments() : full.first_moments())[p.tensor];
        auto& dst = (which ? opt_.second_moments() : opt_.first_moments())[local];
        const std::size_t n = p.hi - p.lo, b0 = p.lo / train::adam_state::block;
        if (!dst.f32.empty()) {
          std::copy_n(src.f32.begin() + std::ptrdiff_t(p.lo), n, dst.f32.begin());
        } else {
          std::copy_n(src.codes.begin() + std::ptrdiff_t(p.lo), n, dst.codes.begin());
          std::copy_n(src.absmax.begin() + std::ptrdiff_t(b0), dst.absmax.size(),
                      dst.absmax.begin());
        }
      }
      ++local;
    }
    opt_.set_steps(full.steps());
    return st;
  }

 private:
  // This rank's pieces as trainables over sub-ranges (all tensors when not sharded).
  std::vector<train::trainable<T>> mine() {
    if (!comm_) return all_;
    std::vector<std::size_t> sizes;
    for (const auto& p : all_) sizes.push_back(p.value.size());
    pieces_ = shard_pieces(sizes, comm_->size());
    std::vector<train::trainable<T>> out;
    for (const auto& p : pieces_)
      if (p.owner == comm_->rank()) {
        const auto& t = all_[p.tensor];
        out.push_back(
            {t.name, t.value.subspan(p.lo, p.hi - p.lo), t.grad.subspan(p.lo, p.hi - p.lo)});
      }
    return out;
  }

  // Broadcasts one moment of piece `p` from its owner (`src`, the piece's own state) into
  // `dst` (the whole tensor's state, on the writer; elsewhere a scratch buffer).
  void move_state(train::adam_state* dst, train::adam_state* src, const shard_piece& p, int owner,
                  std::vector<std::byte>& scratch) {
    const std::size_t n = p.hi - p.lo, b0 = p.lo / train::adam_state::block;
    auto send = [&](std::byte* into, const void* from, std::size_t bytes) {
      std::byte* buf = into;
      if (!buf) {
        scratch.resize(bytes);
        buf = scratch.data();
      }
      if (from && from != buf) std::memcpy(buf, from, bytes);
      comm_->broadcast(std::span<std::byte>(buf, bytes), owner);
    };
    if (opts_.eight_bit) {
      const std::size_t blocks = (n + train::adam_state::block - 1) / train::adam_state::block;
      send(dst ? reinterpret_cast<std::byte*>(dst->codes.data() + p.lo) : nullptr,
           src ? src->codes.data() : nullptr, n);
      send(dst ? reinterpret_cast<std::byte*>(dst->absmax.data() + b0) : nullptr,
           src ? src->absmax.data() : nullptr, blocks * sizeof(float));
    } else {
      send(dst ? reinterpret_cast<std::byte*>(dst->f32.data() + p.lo) : nullptr,
           src ? src->f32.data() : nullptr, n * sizeof(float));
    }
  }

  std::vector<train::trainable<T>> all_;
  train::adamw_options opts_;
  communicator* comm_;
  std::vector<shard_piece> pieces_;
  train::adamw<T> opt_;
};

}  // namespace forge::dist
