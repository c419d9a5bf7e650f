// Align-stage cost: DPO training with LoRA (r = 16, all linear layers) on a ~25M-parameter
// Llama (hidden 512, 6 layers, vocab 8192) with the reference log-probs cached (computed once
// per pair before training) or live (recomputed per micro-batch with the adapters off), on a
// dense and an NF4 base. Each configuration runs in its own process so that its peak
// resident set (getrusage) is its alone. Reported: policy tokens/s of the training loop, the
// end-to-end tokens/s including the reference work, the seconds spent on references, the
// cache's bytes and the peak RSS.
//
// usage: bench_align [epochs = 2] [pairs = 32] [batch = 4] [prompt = 48] [completion = 48]

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "forge/adapters/qlora.hpp"
#include "forge/model/init.hpp"
#include "forge/train/preference_trainer.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {
model::model_config config() {
  model::model_config c;
  c.vocab_size = 8192, c.hidden_size = 512, c.intermediate_size = 1408, c.num_hidden_layers = 6;
  c.num_attention_heads = 8, c.num_key_value_heads = 8, c.head_dim = 64;
  c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(6, 0);
  return c;
}

struct row {
  double train_tps = 0, e2e_tps = 0, ref_s = 0, train_s = 0, cache_bytes = 0;
};

row run(bool live, bool nf4, int epochs, std::size_t n, std::int64_t B, std::size_t P,
        std::size_t C) {
  auto m = model::random_model<float>(config(), {.seed = 1});
  if (nf4) adapters::quantize_base_nf4(be_t{}, m);
  auto set = adapters::attach_lora(be_t{}, m,
                                   {.rank = 16, .alpha = 32, .target_modules = {"all-linear"}}, 1);
  philox g(7, 1);
  std::vector<data::preference_example> xs(n);
  for (auto& e : xs) {
    for (std::size_t i = 0; i < P; ++i) e.prompt.push_back(std::int32_t(g.below(8192)));
    for (std::size_t i = 0; i < C; ++i) e.chosen.push_back(std::int32_t(g.below(8192)));
    for (std::size_t i = 0; i < C; ++i) e.rejected.push_back(std::int32_t(g.below(8192)));
  }
  const auto steps = std::int64_t(epochs) * std::int64_t(n) / B;
  const auto r = train::train_preference(
      be_t{}, m, train::lora_parameters(set), &set, xs, {},
      {.reference = live ? train::reference_mode::live : train::reference_mode::cached,
       .max_steps = steps,
       .batch_size = B,
       .optim = {.lr = 1e-5}});
  row out;
  out.train_s = r.seconds, out.ref_s = r.reference_seconds;
  // In live mode the reference time is inside the loop; cached mode adds it before.
  const double total = live ? r.seconds : r.seconds + r.reference_seconds;
  out.train_tps = double(r.tokens) / (live ? r.seconds - r.reference_seconds : r.seconds);
  out.e2e_tps = double(r.tokens) / total;
  out.cache_bytes = double(r.reference_cache_bytes);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 2;
  const std::size_t n = argc > 2 ? std::size_t(std::atoll(argv[2])) : 32;
  const std::int64_t B = argc > 3 ? std::atoll(argv[3]) : 4;
  const std::size_t P = argc > 4 ? std::size_t(std::atoll(argv[4])) : 48;
  const std::size_t C = argc > 5 ? std::size_t(std::atoll(argv[5])) : 48;
  std::printf(
      "model: %.1fM parameters; DPO, LoRA r=16 all-linear; %zu pairs x %d epochs, "
      "%lld pairs per step, prompt %zu + completions 2 x %zu tokens\n",
      double(config().parameter_count()) / 1e6, n, epochs, (long long)B, P, C);
  std::printf(
      "| base | reference | policy tokens/s (loop) | tokens/s incl. reference | "
      "reference s | loop s | cache bytes | peak RSS (MiB) |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (bool nf4 : {false, true})
    for (bool live : {false, true}) {
      int fd[2];
      if (pipe(fd) != 0) return 1;
      const pid_t pid = fork();
      if (pid == 0) {
        close(fd[0]);
        const row r = run(live, nf4, epochs, n, B, P, C);
        if (write(fd[1], &r, sizeof r) != sizeof r) _exit(2);
        _exit(0);
      }
      close(fd[1]);
      row r;
      const bool ok = read(fd[0], &r, sizeof r) == sizeof r;
      close(fd[0]);
      int status = 0;
      rusage ru{};
      wait4(pid, &status, 0, &ru);
      if (!ok) return 1;
      std::printf("| %s | %s | %.0f | %.0f | %.2f | %.2f | %.0f | %.0f |\n",
                  nf4 ? "nf4" : "dense f32", live ? "live" : "cached", r.train_tps, r.e2e_tps,
                  r.ref_s, r.train_s, r.cache_bytes, double(ru.ru_maxrss) / 1024.0);
    }
  return 0;
}
