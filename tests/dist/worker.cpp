// Test program (not library code), run under mpirun by data_parallel.cpp and alone as the
// one-process reference: LoRA SFT of a tiny model on the tiny upper-case task with the
// trainer's data parallelism; rank 0 writes the trained adapter weights and the loss log.
//
//   dist_worker OUT_DIR GRAD_ACCUM STEPS [HALT_AFTER [DIE_AFTER_ON_RANK1]]
//
// DIE_AFTER_ON_RANK1 > 0: rank 1 stops after that step and exits with status 3 without a
// word to the others (a crashed process); the others must stop with an error, not hang.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "forge/adapters/lora.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/model/init.hpp"
#include "forge/train/trainer.hpp"
#include "train/tiny_task.hpp"

using namespace forge;
using be_t = backend::simd<>;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator comm({.timeout_s = 10});
  if (argc < 4) {
    std::fprintf(stderr, "usage: dist_worker OUT_DIR GRAD_ACCUM STEPS [HALT_AFTER [DIE]]\n");
    return 1;
  }
  const std::filesystem::path out = argv[1];
  const std::int64_t accum = std::atoll(argv[2]), steps = std::atoll(argv[3]);
  const std::int64_t halt = argc > 4 ? std::atoll(argv[4]) : 0;
  const std::int64_t die = argc > 5 ? std::atoll(argv[5]) : 0;
  omp_set_num_threads(1);  // kernels' reductions then do not depend on the core count
  try {
    auto m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
    auto set = adapters::attach_lora(
        be_t{}, m, {.rank = 4, .alpha = 8, .dropout = 0.1, .target_modules = {"all-linear"}}, 4);
    for (auto& mod : set.modules)
      for (auto& v : mod->B) v = 0.01f;  // start away from B = 0 so every tensor moves
    const auto data = test::upper_task(64, 1, 1);
    const auto val = test::upper_task(16, 1, 2);
    train::trainer_options o{.max_steps = steps,
                             .batch_size = 4,
                             .grad_accum = accum,
                             .optim = {.lr = 5e-3},
                             .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 2},
                             .checkpoint_every = 1,
                             .out_dir = out,
                             .seed = 11,
                             .pad_id = test::tiny_pad,
                             .halt_after = comm.rank() == 1 && die > 0 ? die : halt,
                             .comm = &comm};
    auto r = train::train_sft(be_t{}, m, train::lora_parameters(set), &set, data, val, o);
    if (comm.rank() == 1 && die > 0) std::_Exit(3);  // crash: no finalize, no goodbye
    if (comm.writes()) {
      std::string w;
      for (auto& mod : set.modules)
        for (const auto* v : {&mod->A, &mod->B})
          w.append(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(float));
      io::write_atomic(out / "weights.bin", w);
      std::string log;
      for (auto& e : r.log) {
        char b[96];
        std::snprintf(b, sizeof b, "%lld %.9g %lld\n", (long long)e.step, e.loss,
                      (long long)e.tokens);
        log += b;
      }
      io::write_atomic(out / "log.txt", log);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", comm.rank(), e.what());
    comm.abort(2);
  }
}
