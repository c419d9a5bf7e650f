// A pipeline's Align stage across MPI ranks: pipeline(align<dpo<dense_f32>>) with
// run_options::comm on a 4-layer 256-wide random model (LoRA r=16 on every linear layer) and
// random preference pairs (prompt 32, answers 32 tokens); the same global batch (8
// micro-batches of 4 pairs per step) however many ranks run it. Rank 0 prints the stage's wall
// time (training, the reference cache and the held-out evaluation on 16 pairs) and training
// pairs per second of stage time.
//   mpirun -np N bench_dist_pipeline [steps] [OUT_DIR]
// OUT_DIR (default: bench-dist-pipeline-<ranks>) must not exist or be empty.
// Each rank uses OMP_NUM_THREADS threads (set it to cores / ranks).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "forge/core/rng.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/model/init.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/train/align_methods.hpp"

using namespace forge;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator comm;
  const std::int64_t steps = argc > 1 ? std::atoll(argv[1]) : 4;
  const std::string out = argc > 2 ? argv[2] : "bench-dist-pipeline-" + std::to_string(comm.size());
  model::model_config c;
  c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 688;
  c.num_hidden_layers = 4, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.head_dim = 64, c.max_position_embeddings = 256;
  c.sliding_window.assign(4, 0);
  const auto m = model::random_model<float>(c, {.seed = 1});
  align_data d;
  philox g(5, 0);
  auto tokens = [&](int n) {
    std::vector<std::int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back(std::int32_t(3 + g.below(4093)));
    return v;
  };
  for (int i = 0; i < 64 + 16; ++i) {
    data::preference_example e;
    e.prompt = tokens(32), e.chosen = tokens(32), e.rejected = tokens(32);
    (i < 64 ? d.train : d.val).push_back(std::move(e));
  }
  constexpr std::int64_t batch = 4, accum = 8;
  auto p = pipeline(align<dpo<repr::dense_f32>>{{.rank = 16,
                                                 .alpha = 32,
                                                 .max_steps = steps,
                                                 .batch_size = batch,
                                                 .grad_accum = accum,
                                                 .learning_rate = 1e-4},
                                                d});
  try {
    auto r = p.run(m, backend::simd<>{}, {.out = out, .seed = 3, .comm = &comm});
    const double s = r.stages.at(0).wall_time_s;
    if (comm.writes())
      std::printf(
          "ranks %d  threads/rank %s  align<dpo> stage: %lld steps x %lld pairs  %.2f s  "
          "%.2f pairs/s  preference_accuracy %.4f\n",
          comm.size(), std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "?",
          (long long)steps, (long long)(batch * accum), s, double(steps * batch * accum) / s,
          r.stages[0].metrics.get("preference_accuracy").value_or(-1));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", comm.rank(), e.what());
    comm.abort(2);
  }
}
