// Data-parallel LoRA SFT throughput: the same global batch (8 micro-batches of 8 sequences of
// 128 tokens per optimizer step) on however many MPI ranks run it; rank 0 prints tokens/s.
//   mpirun -np 1 bench_dist [steps]    mpirun -np 2 bench_dist [steps]
// Each rank uses OMP_NUM_THREADS threads (set it to cores / ranks).
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "forge/adapters/lora.hpp"
#include "forge/core/rng.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/model/init.hpp"
#include "forge/train/trainer.hpp"

using namespace forge;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator comm;
  const std::int64_t steps = argc > 1 ? std::atoll(argv[1]) : 4;
  model::model_config c;
  c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 688;
  c.num_hidden_layers = 4, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.head_dim = 64, c.max_position_embeddings = 256;
  c.sliding_window.assign(4, 0);
  auto m = model::random_model<float>(c, {.seed = 1});
  auto set = adapters::attach_lora(backend::simd<>{}, m,
                                   {.rank = 16, .alpha = 32, .target_modules = {"all-linear"}}, 2);
  std::vector<data::sft_example> xs(256);
  philox g(5, 0);
  for (auto& e : xs) {
    for (int i = 0; i < 128; ++i) e.input_ids.push_back(std::int32_t(g.below(4096)));
    e.labels = e.input_ids;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = train::train_sft(backend::simd<>{}, m, train::lora_parameters(set), &set, xs, {},
                            {.max_steps = steps, .batch_size = 8, .grad_accum = 8,
                             .seed = 3, .comm = &comm});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::int64_t tokens = 0;
  for (auto& e : r.log) tokens += e.tokens;
  if (comm.writes())
    std::printf("ranks %d  threads/rank %s  steps %lld  tokens %lld  %.1f s  %.1f tokens/s\n",
                comm.size(), std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "?",
                (long long)steps, (long long)tokens, s, double(tokens) / s);
  return 0;
}
