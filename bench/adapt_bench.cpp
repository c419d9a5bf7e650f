// Adapt-stage cost on a ~100M-parameter Llama (hidden 768, 12 layers, vocab 8192): training
// tokens/s and peak memory of LoRA (r = 16, all linear layers), QLoRA (the same adapters on
// an NF4 double-quantized base) and full fine-tuning, each in its own process so the peak
// resident set (getrusage) is that mode's alone. Besides the measured peak, the table gives
// the accounted bytes: base weights, trainable parameters + gradients, AdamW states.
//
// usage: bench_adapt [steps = 3] [batch = 4] [seq = 64]

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "forge/adapters/qlora.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/clip.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {
model::model_config config() {
  model::model_config c;
  c.vocab_size = 8192, c.hidden_size = 768, c.intermediate_size = 2048, c.num_hidden_layers = 12;
  c.num_attention_heads = 12, c.num_key_value_heads = 12, c.head_dim = 64;
  c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(12, 0);
  return c;
}

struct row {
  double tokens_per_s = 0, base_bytes = 0, trainable = 0, optimizer_bytes = 0;
};

row run(const std::string& mode, int steps, std::int64_t B, std::int64_t S) {
  auto m = model::random_model<float>(config(), {.seed = 1});
  adapters::lora_set<float> set;
  std::vector<train::trainable<float>> params;
  row r;
  if (mode == "full") {
    params = train::model_parameters(m);
  } else {
    if (mode == "qlora") adapters::quantize_base_nf4(be_t{}, m);
    set = adapters::attach_lora(be_t{}, m, {.rank = 16, .alpha = 32, .target_modules = {"all-linear"}}, 1);
    params = train::lora_parameters(set);
  }
  m.for_each_parameter([&](const model::parameter<float>& p) { r.base_bytes += double(p.value.size()) * 4; });
  r.base_bytes += double(adapters::quantized_base_bytes(m));
  for (auto& p : params) r.trainable += double(p.value.size());
  train::adamw<float> opt(params, {.lr = 1e-4});
  std::vector<std::int64_t> ids(std::size_t(B * S));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 7919) % 8192);
  model::workspace<float> ws;
  double secs = 0;
  for (int s = 0; s <= steps; ++s) {  // step 0 is a warm-up
    const auto t0 = std::chrono::steady_clock::now();
    train::zero_grads(params);
    model::forward(be_t{}, m, ws, {.batch = B, .seq = S, .input_ids = ids}, {.for_backward = true});
    model::causal_lm_loss(be_t{}, ws, ids);
    model::backward(be_t{}, m, ws);
    train::clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    if (s > 0) secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  r.tokens_per_s = double(B * S * steps) / secs;
  r.optimizer_bytes = double(opt.state_bytes());
  return r;
}
}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 3;
  const std::int64_t B = argc > 2 ? std::atoll(argv[2]) : 4, S = argc > 3 ? std::atoll(argv[3]) : 64;
  std::printf("model: %.1fM parameters, batch %lld x %lld tokens, %d timed steps\n",
              double(config().parameter_count()) / 1e6, (long long)B, (long long)S, steps);
  std::printf("| mode | tokens/s | peak RSS (MiB) | base weights (MiB) | trainable params | grads + AdamW (MiB) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (std::string mode : {"lora", "qlora", "full"}) {
    int fd[2];
    if (pipe(fd) != 0) return 1;
    const pid_t pid = fork();
    if (pid == 0) {
      close(fd[0]);
      const row r = run(mode, steps, B, S);
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
    const double mib = 1024.0 * 1024.0;
    std::printf("| %s | %.0f | %.0f | %.1f | %.2fM | %.1f |\n", mode.c_str(), r.tokens_per_s,
                double(ru.ru_maxrss) / 1024.0, r.base_bytes / mib, r.trainable / 1e6,
                (r.trainable * 4 + r.optimizer_bytes) / mib);
  }
  return 0;
}
