// Test program (not library code), run under mpirun by grpo.cpp and alone as the one-process
// reference: GRPO with LoRA on a tiny random model, prompts "w=" of the tiny upper-case task
// and a verifiable reward (the share of answer characters right, +1 for stopping with eos),
// with train_grpo's data parallelism. Rank 0 writes the trained adapter weights (weights.bin)
// and the per-step log with exact hex floats (log.txt).
//
//   dist_grpo_worker OUT_DIR PROMPTS_PER_STEP STEPS [HALT_AFTER]
// Checkpoints go to OUT_DIR; a run finds one there and resumes from it.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "forge/adapters/lora.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/model/init.hpp"
#include "forge/train/grpo.hpp"
#include "train/tiny_task.hpp"

using namespace forge;
using be_t = backend::simd<>;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator comm({.timeout_s = 30});
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: dist_grpo_worker OUT_DIR PROMPTS_PER_STEP STEPS [HALT]\n");
    return 1;
  }
  const std::filesystem::path out = argv[1];
  const std::int64_t per_step = std::atoll(argv[2]), steps = std::atoll(argv[3]);
  const std::int64_t halt = argc == 5 ? std::atoll(argv[4]) : 0;
  omp_set_num_threads(1);  // kernels' reductions then do not depend on the core count
  try {
    auto m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
    auto set = adapters::attach_lora(be_t{}, m,
                                     {.rank = 4, .alpha = 8, .target_modules = {"all-linear"}}, 4);
    for (auto& mod : set.modules)
      for (auto& v : mod->B) v = 0.01f;  // start away from B = 0 so every tensor moves
    std::vector<std::vector<std::int64_t>> prompts;
    std::vector<std::vector<std::int64_t>> answers;
    for (const auto& e : test::upper_task(12, 3, 1)) {
      std::vector<std::int64_t> p, a;
      for (std::size_t i = 0; i < e.input_ids.size(); ++i)
        (e.labels[i] == data::ignore_index ? p : a).push_back(e.input_ids[i]);
      prompts.push_back(p);
      answers.push_back(a);
    }
    const train::reward_function reward = [&](std::size_t i, std::span<const std::int64_t> y) {
      double r = 0;
      for (std::size_t k = 0; k < y.size() && k < answers[i].size(); ++k)
        r += y[k] == answers[i][k] ? 0.25 : 0.0;
      return r + (!y.empty() && y.back() == test::tiny_eos ? 1.0 : 0.0);
    };
    const auto res =
        train::train_grpo(be_t{}, m, train::lora_parameters(set), &set, prompts, reward,
                          {.max_steps = steps,
                           .prompts_per_step = per_step,
                           .num_generations = 4,
                           .num_iterations = 2,
                           .max_new_tokens = 5,
                           .beta = 0.04,
                           .optim = {.lr = 5e-3, .weight_decay = 0},
                           .eos_token_ids = {test::tiny_eos},
                           .pad_id = test::tiny_pad,
                           .seed = 9,
                           .comm = comm.size() > 1 ? &comm : nullptr,
                           .reduce = {.bucket_elements = 512},
                           .out_dir = steps > 0 ? out : std::filesystem::path(),
                           .checkpoint_every = 1,
                           .halt_after = halt});
    if (comm.writes()) {
      std::string w;
      for (const auto& p : train::lora_parameters(set))
        w.append(reinterpret_cast<const char*>(p.value.data()), p.value.size() * sizeof(float));
      io::write_atomic(out / "weights.bin", w);
      std::string text;
      for (const auto& e : res.log) {
        char b[256];
        std::snprintf(b, sizeof b,
                      "%lld reward %a std %a kl %a loss %a clip %a tokens %lld norm %a\n",
                      (long long)e.step, e.reward, e.reward_std, e.kl, e.loss, e.clip_fraction,
                      (long long)e.tokens, e.grad_norm);
        text += b;
      }
      io::write_atomic(out / "log.txt", text);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", comm.rank(), e.what());
    comm.abort(2);
  }
}
