// Test program (not library code), run under mpirun by data_parallel.cpp and alone as the
// one-process reference: LoRA SFT of a tiny model on the tiny upper-case task (or DPO / KTO
// on tiny preference pairs, or full fine-tuning) with the trainers' data parallelism; rank 0
// writes the trained weights, the loss log and the reduction statistics.
//
//   dist_worker OUT_DIR GRAD_ACCUM STEPS [HALT_AFTER [DIE_AFTER_ON_RANK1]] [FLAGS]
//   FLAGS: --dpo | --kto     preference training instead of SFT
//          --full            full fine-tuning (every parameter) instead of LoRA
//          --zero1           optimizer state sharded over the ranks
//          --no-overlap      reduce after backward instead of during it
//          --bucket=N        gradient bucket size in values
//          --mpi-chunk=N     MPI message size in values (many messages in flight)
//
// DIE_AFTER_ON_RANK1 > 0: rank 1 stops after that step and exits with status 3 without a
// word to the others (a crashed process); the others must stop with an error, not hang.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "align/tiny_preferences.hpp"
#include "forge/adapters/lora.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/model/init.hpp"
#include "forge/train/preference_trainer.hpp"
#include "forge/train/trainer.hpp"
#include "train/tiny_task.hpp"

using namespace forge;
using be_t = backend::simd<>;

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  std::size_t chunk = 1 << 20;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]).rfind("--mpi-chunk=", 0) == 0)
      chunk = std::size_t(std::atoll(argv[i] + 12));
  dist::mpi_communicator comm({.timeout_s = 10, .bucket_elements = chunk});
  std::vector<std::string> pos;
  bool dpo = false, kto = false, full = false, zero1 = false, overlap = true;
  std::size_t bucket = 1 << 18;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dpo")
      dpo = true;
    else if (a == "--kto")
      kto = true;
    else if (a == "--full")
      full = true;
    else if (a == "--zero1")
      zero1 = true;
    else if (a == "--no-overlap")
      overlap = false;
    else if (a.rfind("--mpi-chunk=", 0) == 0)
      continue;
    else if (a.rfind("--bucket=", 0) == 0)
      bucket = std::size_t(std::atoll(a.c_str() + 9));
    else
      pos.push_back(a);
  }
  if (pos.size() < 3) {
    std::fprintf(stderr,
                 "usage: dist_worker OUT_DIR GRAD_ACCUM STEPS [HALT_AFTER [DIE]] [FLAGS]\n");
    return 1;
  }
  const std::filesystem::path out = pos[0];
  const std::int64_t accum = std::atoll(pos[1].c_str()), steps = std::atoll(pos[2].c_str());
  const std::int64_t halt = pos.size() > 3 ? std::atoll(pos[3].c_str()) : 0;
  const std::int64_t die = pos.size() > 4 ? std::atoll(pos[4].c_str()) : 0;
  omp_set_num_threads(1);  // kernels' reductions then do not depend on the core count
  try {
    auto m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
    adapters::lora_set<float> set;
    std::vector<train::trainable<float>> params;
    if (full) {
      params = train::model_parameters(m);
    } else {
      set = adapters::attach_lora(
          be_t{}, m, {.rank = 4, .alpha = 8, .dropout = 0.1, .target_modules = {"all-linear"}}, 4);
      for (auto& mod : set.modules)
        for (auto& v : mod->B) v = 0.01f;  // start away from B = 0 so every tensor moves
      params = train::lora_parameters(set);
    }
    const std::int64_t halt_after = comm.rank() == 1 && die > 0 ? die : halt;
    const dist::reduce_options reduce{.overlap = overlap, .bucket_elements = bucket};
    std::vector<train::log_entry> log;
    dist::reduce_stats stats;
    std::size_t state_bytes = 0;
    if (dpo || kto) {
      const auto pairs = test::tiny_preferences(24, 5, 1);
      const auto val = test::tiny_preferences(8, 5, 2);
      train::preference_trainer_options o{
          .objective = {.kto = kto, .pair = {.beta = 0.1}},
          .max_steps = steps,
          .batch_size = 2,
          .grad_accum = accum,
          .optim = {.lr = 5e-3},
          .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 2},
          .eval_every = 3,
          .checkpoint_every = 1,
          .out_dir = out,
          .seed = 11,
          .pad_id = test::tiny_pad,
          .halt_after = halt_after,
          .comm = &comm,
          .reduce = reduce,
          .shard_optimizer = zero1};
      auto r = train::train_preference(be_t{}, m, params, full ? nullptr : &set, pairs, val, o);
      log = r.log, stats = r.reduce, state_bytes = r.optimizer_state_bytes;
    } else {
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
                               .halt_after = halt_after,
                               .comm = &comm,
                               .reduce = reduce,
                               .shard_optimizer = zero1};
      auto r = train::train_sft(be_t{}, m, params, full ? nullptr : &set, data, val, o);
      log = r.log, stats = r.reduce, state_bytes = r.optimizer_state_bytes;
    }
    if (comm.rank() == 1 && die > 0) std::_Exit(3);  // crash: no finalize, no goodbye
    // Every rank reports its statistics; rank 0 also the weights and the log.
    char line[160];
    std::snprintf(line, sizeof line, "%lld %lld %.6f %zu\n", (long long)stats.buckets,
                  (long long)stats.buckets_early, stats.wait_seconds, state_bytes);
    io::write_atomic(out / ("stats." + std::to_string(comm.rank()) + ".txt"), line);
    if (comm.writes()) {
      std::string w;
      for (const auto& p : params)
        w.append(reinterpret_cast<const char*>(p.value.data()), p.value.size() * sizeof(float));
      io::write_atomic(out / "weights.bin", w);
      std::string text;
      for (auto& e : log) {
        char b[96];
        std::snprintf(b, sizeof b, "%lld %.9g %lld\n", (long long)e.step, e.loss,
                      (long long)e.tokens);
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
