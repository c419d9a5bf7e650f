#pragma once
// Threads: a thin layer over OpenMP so kernels say "split this range" and nothing else.
// Work is split statically, so which thread computes which index is fixed for a given
// thread count: results do not depend on scheduling (reductions are done per chunk and then
// combined in index order by the caller).

#include <omp.h>

#include <algorithm>
#include <cstddef>

namespace forge {

/// Threads forge kernels use (OpenMP's current setting; OMP_NUM_THREADS applies).
inline int num_threads() {
  return omp_get_max_threads();
}

/// Sets the number of threads for subsequent kernels.
inline void set_num_threads(int n) {
  omp_set_num_threads(std::max(1, n));
}

/// Calls fn(i) for i in [begin, end) across threads with a static schedule. Runs inline when
/// the range is shorter than `grain` or when already inside a parallel region.
template <class F>
void parallel_for(std::ptrdiff_t begin, std::ptrdiff_t end, F&& fn, std::ptrdiff_t grain = 1) {
  if (end - begin < std::max<std::ptrdiff_t>(grain, 2) || omp_in_parallel()) {
    for (std::ptrdiff_t i = begin; i < end; ++i) fn(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = begin; i < end; ++i) fn(i);
}

/// Splits [0, n) into `parts` contiguous chunks; calls fn(part, lo, hi) for each in parallel.
/// Chunk boundaries depend only on n and parts, so per-chunk partial results are reproducible.
template <class F>
void parallel_chunks(std::ptrdiff_t n, int parts, F&& fn) {
  parts = std::max(1, parts);
  parallel_for(0, parts, [&](std::ptrdiff_t p) {
    const std::ptrdiff_t lo = n * p / parts, hi = n * (p + 1) / parts;
    fn(static_cast<int>(p), lo, hi);
  });
}

}  // namespace forge
