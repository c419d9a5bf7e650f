#pragma once
// What the pipeline runner hands a method's apply(): the backend, where the stage is in the
// pipeline, its seed, the directory for its artifacts and, in a run over several processes,
// their communicator.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "forge/backend/backend.hpp"
#include "forge/dist/communicator.hpp"
#include "forge/pipeline/stage_kind.hpp"

namespace forge {

/// The run-time context of one stage.
template <Backend B>
struct stage_context {
  B backend;                           ///< the backend the pipeline runs on
  stage_kind kind;                     ///< the kind of this stage
  std::size_t index;                   ///< 1-based position in the pipeline
  std::uint64_t seed;                  ///< this stage's seed, derived from the run's seed
  std::filesystem::path artifact_dir;  ///< existing directory for this stage's artifacts
  /// The run's group of processes (run_options::comm), or null for one process. Training
  /// methods hand it to their trainers; on a rank other than 0, artifact_dir is a private
  /// scratch directory that the runner removes after the stage (rank 0's files are the
  /// record), so a method may skip writing there (see writes()).
  dist::communicator* comm = nullptr;

  /// True where this stage's files are the run's record: one process, or rank 0.
  bool writes() const { return comm == nullptr || comm->writes(); }
};

/// The context for a stage's CPU work: `ctx` itself on a CPU backend, else the same stage on
/// backend::simd<>. Methods with no GPU path (quantization, release) run on the CPU this way
/// inside a pipeline on backend::cuda, so that one pipeline type serves both.
template <Backend B>
auto on_cpu(const stage_context<B>& ctx) {
  if constexpr (is_cpu_backend_v<B>)
    return ctx;
  else
    return stage_context<backend::simd<>>{.backend = {},
                                          .kind = ctx.kind,
                                          .index = ctx.index,
                                          .seed = ctx.seed,
                                          .artifact_dir = ctx.artifact_dir,
                                          .comm = ctx.comm};
}

}  // namespace forge
