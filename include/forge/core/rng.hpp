#pragma once
// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as
// easy as 1, 2, 3", SC'11; the Random123 library's known-answer vectors are our tests).
//
// A Philox generator is a pure function of (key, counter): the key is the seed, the counter
// is (block index, stream id). Every draw is therefore reproducible from four integers, a
// stream can jump anywhere in O(1), and independent streams (per thread, per layer, per
// example) are derived with fork() instead of being shared. Checkpoints store philox_state.

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace forge {

/// The Philox4x32-10 bijection: 10 rounds over a 128-bit counter under a 64-bit key.
constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> ctr,
                                                     std::array<std::uint32_t, 2> key) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // multipliers
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += w0;
      key[1] += w1;
    }
    const std::uint64_t p0 = std::uint64_t(m0) * ctr[0];
    const std::uint64_t p1 = std::uint64_t(m1) * ctr[2];
    ctr = {std::uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], std::uint32_t(p1),
           std::uint32_t(p0 >> 32) ^ ctr[3] ^ key[1], std::uint32_t(p0)};
  }
  return ctr;
}

/// SplitMix64 finaliser: a bijective 64-bit mix used to derive stream ids.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Everything needed to resume a generator exactly where it was.
struct philox_state {
  std::uint64_t seed = 0;    ///< the key
  std::uint64_t stream = 0;  ///< counter words 2-3
  std::uint64_t block = 0;   ///< counter words 0-1: the next block to compute
  std::uint32_t lane = 4;    ///< next unused word of the current block (4 = none left)
  friend constexpr bool operator==(const philox_state&, const philox_state&) = default;
};

/// A seeded random stream over Philox4x32-10. Not thread-safe: give each thread its own
/// stream with fork().
class philox {
 public:
  /// Stream `stream` of generator `seed`.
  constexpr explicit philox(std::uint64_t seed = 0, std::uint64_t stream = 0)
      : st_{seed, stream, 0, 4} {}
  /// Restores a saved state.
  constexpr explicit philox(const philox_state& s) : st_(s) {
    if (st_.lane < 4) buf_ = compute(st_.block - 1);
  }

  /// A statistically independent child stream, determined by this stream and `id`.
  constexpr philox fork(std::uint64_t id) const {
    return philox(st_.seed, mix64(st_.stream ^ mix64(id + 0x632BE59BD9B4E019ull)));
  }

  /// The state to store in a checkpoint.
  constexpr philox_state state() const { return st_; }

  /// Next 32 uniformly distributed bits.
  constexpr std::uint32_t next_u32() {
    if (st_.lane >= 4) {
      buf_ = compute(st_.block++);
      st_.lane = 0;
    }
    return buf_[st_.lane++];
  }
  /// Next 64 uniformly distributed bits.
  constexpr std::uint64_t next_u64() {
    const std::uint64_t lo = next_u32();
    return (std::uint64_t(next_u32()) << 32) | lo;
  }
  /// Uniform float in [0, 1) with 24 random bits.
  constexpr float uniform() { return float(next_u32() >> 8) * 0x1.0p-24f; }
  /// Uniform double in [0, 1) with 53 random bits.
  constexpr double uniform_double() { return double(next_u64() >> 11) * 0x1.0p-53; }
  /// Uniform float in [lo, hi).
  constexpr float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, n) without modulo bias (Lemire's method); n > 0.
  constexpr std::uint32_t below(std::uint32_t n) {
    std::uint64_t m = std::uint64_t(next_u32()) * n;
    if (std::uint32_t(m) < n) {
      const std::uint32_t t = std::uint32_t(-n) % n;
      while (std::uint32_t(m) < t) m = std::uint64_t(next_u32()) * n;
    }
    return std::uint32_t(m >> 32);
  }
  /// Standard normal (Box-Muller on two uniforms; one value per call, deterministic).
  float normal() {
    const double u1 = (double(next_u32()) + 1.0) * 0x1.0p-32;  // (0, 1]
    const double u2 = double(next_u32()) * 0x1.0p-32;
    return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
  }
  /// Normal with mean and standard deviation.
  float normal(float mean, float stddev) { return mean + stddev * normal(); }

 private:
  constexpr std::array<std::uint32_t, 4> compute(std::uint64_t block) const {
    return philox4x32_10({std::uint32_t(block), std::uint32_t(block >> 32),
                          std::uint32_t(st_.stream), std::uint32_t(st_.stream >> 32)},
                         {std::uint32_t(st_.seed), std::uint32_t(st_.seed >> 32)});
  }
  philox_state st_;
  std::array<std::uint32_t, 4> buf_{};
};

}  // namespace forge
