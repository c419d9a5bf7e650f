#pragma once
// What the pipeline runner hands a method's apply(): the backend, where the stage is in the
// pipeline, its seed and the directory for its artifacts.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "forge/backend/backend.hpp"
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
                                          .artifact_dir = ctx.artifact_dir};
}

}  // namespace forge
