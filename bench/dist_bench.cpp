// Data-parallel SFT throughput: the same global batch (8 micro-batches of 8 sequences of 128
// tokens per optimizer step) on however many MPI ranks run it; rank 0 prints tokens/s, and
// every rank how long it waited on the gradient sum after its backward (the communication
// that was not hidden behind compute) and how much AdamW state it holds.
//   mpirun -np N bench_dist [steps] [--full] [--zero1] [--no-overlap] [--bucket=N]
//   --full        train every parameter (default: LoRA r=16 on every linear layer)
//   --zero1       shard the AdamW state over the ranks
//   --no-overlap  reduce after backward instead of bucket by bucket during it
// Each rank uses OMP_NUM_THREADS threads (set it to cores / ranks).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/core/rng.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/model/init.hpp"
#include "forge/train/trainer.hpp"

using namespace forge;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator comm;
  std::int64_t steps = 4;
  bool full = false, zero1 = false;
  dist::reduce_options reduce{};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--full")
      full = true;
    else if (a == "--zero1")
      zero1 = true;
    else if (a == "--no-overlap")
      reduce.overlap = false;
    else if (a.rfind("--bucket=", 0) == 0)
      reduce.bucket_elements = std::size_t(std::atoll(a.c_str() + 9));
    else
      steps = std::atoll(a.c_str());
  }
  model::model_config c;
  c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 688;
  c.num_hidden_layers = 4, c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.head_dim = 64, c.max_position_embeddings = 256;
  c.sliding_window.assign(4, 0);
  auto m = model::random_model<float>(c, {.seed = 1});
  adapters::lora_set<float> set;
  std::vector<train::trainable<float>> params;
  if (full) {
    params = train::model_parameters(m);
  } else {
    set = adapters::attach_lora(backend::simd<>{}, m,
                                {.rank = 16, .alpha = 32, .target_modules = {"all-linear"}}, 2);
    params = train::lora_parameters(set);
  }
  std::size_t n_params = 0;
  for (auto& p : params) n_params += p.value.size();
  std::vector<data::sft_example> xs(256);
  philox g(5, 0);
  for (auto& e : xs) {
    for (int i = 0; i < 128; ++i) e.input_ids.push_back(std::int32_t(g.below(4096)));
    e.labels = e.input_ids;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = train::train_sft(backend::simd<>{}, m, params, full ? nullptr : &set, xs, {},
                            {.max_steps = steps,
                             .batch_size = 8,
                             .grad_accum = 8,
                             .seed = 3,
                             .comm = &comm,
                             .reduce = reduce,
                             .shard_optimizer = zero1});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::int64_t tokens = 0;
  for (auto& e : r.log) tokens += e.tokens;
  if (comm.writes())
    std::printf(
        "ranks %d  threads/rank %s  %s (%zu values)%s  overlap %s  steps %lld  tokens %lld  "
        "%.1f s  %.1f tokens/s\n",
        comm.size(), std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "?",
        full ? "full fine-tuning" : "LoRA", n_params, zero1 ? "  ZeRO-1" : "",
        reduce.overlap ? "on" : "off", (long long)steps, (long long)tokens, s, double(tokens) / s);
  // The cost of one gradient sum when every rank is ready (no compute to wait for): what
  // overlapping can hide at best.
  std::vector<float> grad(n_params, 1.0f);
  comm.barrier();
  const auto t1 = std::chrono::steady_clock::now();
  const int reps = 5;
  for (int k = 0; k < reps; ++k) comm.all_reduce_sum(std::span<float>(grad));
  const double sum_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() / reps;
  if (comm.writes())
    std::printf("  one gradient sum of %zu values (%.1f MB), all ranks ready: %.3f s\n", n_params,
                double(n_params) * 4 / 1e6, sum_s);
  comm.barrier();
  for (int k = 0; k < comm.size(); ++k) {
    if (k == comm.rank())
      std::printf(
          "  rank %d: waited %.3f s on gradient sums after backward (%.1f%% of the run); "
          "%lld buckets, %lld started during backward; AdamW state %.2f MB\n",
          k, r.reduce.wait_seconds, 100 * r.reduce.wait_seconds / s, (long long)r.reduce.buckets,
          (long long)r.reduce.buckets_early, double(r.optimizer_state_bytes) / 1e6);
    std::fflush(stdout);
    comm.barrier();
  }
  return 0;
}
