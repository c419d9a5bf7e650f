// Throughput and device memory of GPU LoRA / QLoRA training steps (lora_trainer.cuh) on a
// random Llama model, for comparison with lora_train_baseline.py (PyTorch + PEFT) run on the
// same machine in the same sitting.
//
// Usage: forge_cuda_lora_train_bench MODEL MODE [BATCH SEQ STEPS [phases]]
//   MODEL: small (12 layers, hidden 768, 12 heads, intermediate 2048, vocab 32000) or
//          1b    (22 layers, hidden 2048, 32/4 heads, intermediate 5632, vocab 32000)
//   MODE:  lora (bf16 base) or qlora (NF4 base); LoRA r = 16, alpha = 32 on all seven
//          projections of every layer; AdamW on the f32 LoRA masters. dpo: a DPO step (bf16
//          base as the reference model) on BATCH/2 pairs whose first SEQ/2 tokens are prompt.
// Each step is zero_grad + forward + backward + AdamW and waits for its loss (as a PyTorch
// loop calling loss.item() does). After 3 warm-up steps, STEPS steps are timed with a host
// clock; the median step gives tokens/s (each step replayed as a CUDA graph; the median of
// the same steps launched without graphs is printed beside it). Memory: bytes the trainer's pool
// took from the driver (weights, LoRA state, activation arena, cuBLAS workspace), and the device
// memory in use (cudaMemGetInfo) minus what was in use once the context existed. Prints one
// Markdown table row; with "phases", first a table of GPU time per phase of a step (CUDA events at
// the trainer's phase hook, summed over layers, mean of 3 steps).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "forge/backend/cuda/lora_trainer.cuh"

using namespace forge::cuda;

namespace {

std::vector<float> random_host(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<float> v(n);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = scale * (float(std::uint32_t(s >> 40)) / float(1u << 23) - 1.0f);  // uniform [-s, s)
  }
  return v;
}

std::size_t used_device_bytes() {
  std::size_t free_b = 0, total_b = 0;
  FORGE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s small|1b lora|qlora [batch seq steps]\n", argv[0]);
    return 2;
  }
  try {
    const std::string model = argv[1], mode = argv[2];
    const std::int64_t batch = argc > 3 ? std::atoll(argv[3]) : 8;
    const std::int64_t seq = argc > 4 ? std::atoll(argv[4]) : 512;
    const int steps = argc > 5 ? std::atoi(argv[5]) : 10;
    llama_dims d;
    if (model == "small") {
      d = {.vocab = 32000,
           .hidden = 768,
           .intermediate = 2048,
           .layers = 12,
           .heads = 12,
           .kv_heads = 12,
           .head_dim = 64};
    } else if (model == "1b") {
      d = {.vocab = 32000,
           .hidden = 2048,
           .intermediate = 5632,
           .layers = 22,
           .heads = 32,
           .kv_heads = 4,
           .head_dim = 64};
    } else {
      std::fprintf(stderr, "unknown model %s\n", model.c_str());
      return 2;
    }
    if (mode != "lora" && mode != "qlora" && mode != "dpo") {
      std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
      return 2;
    }
    context ctx;
    const std::size_t used0 = used_device_bytes();
    // One random tensor per distinct shape, shared by every layer (timing does not depend on
    // the values; uniform with the standard deviation 0.02 of transformers' initialiser).
    const float a = 0.02f * 1.7320508f;
    const std::int64_t H = d.hidden, I = d.intermediate, nq = d.heads * d.head_dim,
                       nkv = d.kv_heads * d.head_dim;
    const auto embed = random_host(std::size_t(d.vocab * H), 1, a);
    const auto head = random_host(std::size_t(d.vocab * H), 2, a);
    const auto wq = random_host(std::size_t(nq * H), 3, a),
               wk = random_host(std::size_t(nkv * H), 4, a),
               wv = random_host(std::size_t(nkv * H), 5, a),
               wo = random_host(std::size_t(H * nq), 6, a),
               wg = random_host(std::size_t(I * H), 7, a),
               wu = random_host(std::size_t(I * H), 8, a),
               wd = random_host(std::size_t(H * I), 9, a);
    const std::vector<float> ones(std::size_t(H), 1.0f);
    llama_host_weights w{.embed = embed.data(), .final_norm = ones.data(), .lm_head = head.data()};
    for (std::int64_t l = 0; l < d.layers; ++l)
      w.layers.push_back({.input_norm = ones.data(),
                          .q = wq.data(),
                          .k = wk.data(),
                          .v = wv.data(),
                          .o = wo.data(),
                          .post_norm = ones.data(),
                          .gate = wg.data(),
                          .up = wu.data(),
                          .down = wd.data()});
    lora_trainer<__nv_bfloat16> tr(
        ctx, d, w,
        {.rank = 16,
         .alpha = 32.0f,
         .base = mode == "qlora" ? base_storage::nf4 : base_storage::dense,
         .max_batch = batch,
         .max_seq = seq,
         .attention_blocks = std::getenv("FORGE_ATTENTION_BLOCKS")
                                 ? std::atoll(std::getenv("FORGE_ATTENTION_BLOCKS"))
                                 : 0});
    tr.init_lora(1);
    std::vector<std::int64_t> ids(std::size_t(batch * seq));
    std::uint64_t s = 12345;
    for (auto& t : ids) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      t = std::int64_t((s >> 33) % std::uint64_t(d.vocab));
    }
    auto targets = lora_trainer<__nv_bfloat16>::causal_targets(batch, seq, ids.data());
    const adamw_options opt{.lr = 1e-4f, .weight_decay = 0.0f};
    if (mode == "dpo") {
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t t = 0; t + 1 < seq / 2; ++t) targets[std::size_t(b * seq + t)] = -100;
      const std::int64_t pairs = batch / 2, half = pairs * seq;
      auto dpo = [&] {
        return tr.dpo_step(pairs, seq, ids.data(), targets.data(), ids.data() + half,
                           targets.data() + half, {.beta = 0.1f}, opt);
      };
      for (int i = 0; i < 3; ++i) dpo();
      std::vector<double> ms;
      for (int i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        dpo();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      std::printf(
          "| forge %s dpo | %lld pairs x %lld | %.2f | %.2f..%.2f | %.0f (tokens of both "
          "sequences) | %.0f | %.0f | %.0f | - |\n",
          model.c_str(), (long long)pairs, (long long)seq, med, ms.front(), ms.back(),
          double(batch * seq) / (med * 1e-3),
          double(ctx.pool().allocated_bytes()) / double(1 << 20),
          double(used_device_bytes() - used0) / double(1 << 20),
          double(tr.activation_bytes()) / double(1 << 20));
      return 0;
    }
    double first = 0, last = 0;
    for (int i = 0; i < 3; ++i) {
      const double l = tr.train_step(batch, seq, ids.data(), targets.data(), opt);
      if (i == 0) first = l;
    }
    std::vector<double> ms;
    for (int i = 0; i < steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      last = tr.train_step(batch, seq, ids.data(), targets.data(), opt);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    // The same steps launched kernel by kernel (no CUDA graph), for the launch-cost share.
    tr.use_graphs(false);
    std::vector<double> eager;
    for (int i = 0; i < std::max(3, steps / 2); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      tr.train_step(batch, seq, ids.data(), targets.data(), opt);
      const auto t1 = std::chrono::steady_clock::now();
      eager.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(eager.begin(), eager.end());
    const double eager_med = eager[eager.size() / 2];
    const double used = double(used_device_bytes() - used0) / double(1 << 20);
    const double pool = double(ctx.pool().allocated_bytes()) / double(1 << 20);
    std::printf(
        "| forge %s %s | %lld x %lld | %.2f | %.2f..%.2f | %.0f | %.0f | %.0f | %.0f | "
        "%.4f -> %.4f | without graphs %.2f ms |\n",
        model.c_str(), mode.c_str(), (long long)batch, (long long)seq, med, ms.front(), ms.back(),
        double(batch * seq) / (med * 1e-3), pool, used,
        double(tr.activation_bytes()) / double(1 << 20), first, last, eager_med);
    std::fflush(stdout);
    if (argc > 6 && std::string(argv[6]) == "phases") {
      std::vector<std::pair<std::string, cudaEvent_t>> marks;
      std::vector<cudaEvent_t> spare;
      tr.set_phase_hook([&](const char* name) {
        cudaEvent_t e;
        FORGE_CUDA_CHECK(cudaEventCreate(&e));
        FORGE_CUDA_CHECK(cudaEventRecord(e, ctx.stream()));
        marks.emplace_back(name, e);
      });
      std::map<std::string, double> total;
      const int reps = 3;
      for (int i = 0; i < reps; ++i) {
        tr.train_step(batch, seq, ids.data(), targets.data(), opt);
        cudaEvent_t end;
        FORGE_CUDA_CHECK(cudaEventCreate(&end));
        FORGE_CUDA_CHECK(cudaEventRecord(end, ctx.stream()));
        ctx.synchronize();
        for (std::size_t k = 0; k < marks.size(); ++k) {
          float t = 0;
          FORGE_CUDA_CHECK(cudaEventElapsedTime(&t, marks[k].second,
                                                k + 1 < marks.size() ? marks[k + 1].second : end));
          total[marks[k].first] += double(t) / reps;
          cudaEventDestroy(marks[k].second);
        }
        cudaEventDestroy(end);
        marks.clear();
      }
      double sum = 0;
      for (auto& [k, v] : total) sum += v;
      std::printf("\n| phase (%s %s) | GPU ms per step | share |\n|---|---|---|\n", model.c_str(),
                  mode.c_str());
      for (auto& [k, v] : total)
        std::printf("| %s | %.3f | %.1f%% |\n", k.c_str(), v, 100 * v / sum);
      std::printf("| total | %.3f | |\n\n", sum);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  return 0;
}
