// Whole-model decode with quantized weights: greedy tokens/s after an 8-token prompt and the
// weight memory of a ~100M and a ~1B-parameter Llama config (random weights: the speed does not
// depend on the values), with every decoder projection in f32, int8_channel, int4_g128 or NF4
// (double quantization). Quantized projections run the inference kernels (int8 activations,
// 16-row VNNI panels: adapters::quantized_base_q8); the quantized variants also hold the
// embedding and head as Q8_0 (quant::quantize_head_and_embeddings), as a deployment would.
// Decode time per token = (time of 1 + T new tokens − time of 1 new token) / T, so the prompt's
// prefill is not counted; median of 3.
//
// Usage: bench_quant_model [--configs 100m,1b] [--tokens T] (threads: OMP_NUM_THREADS)
// Prints a Markdown table.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "forge/adapters/quantized_base_q8.hpp"
#include "forge/model/generate.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/model_quantize.hpp"

using namespace forge;
using Bk = backend::simd<>;

namespace {

model::model_config config(const std::string& name) {
  model::model_config c;
  if (name == "100m") {  // the model bench's 100m config
    c.vocab_size = 32000, c.hidden_size = 768, c.intermediate_size = 2048;
    c.num_hidden_layers = 12, c.num_attention_heads = 12, c.num_key_value_heads = 4;
    c.tie_word_embeddings = true;
  } else {  // "1b": TinyLlama-1.1B's shapes
    c.vocab_size = 32000, c.hidden_size = 2048, c.intermediate_size = 5632;
    c.num_hidden_layers = 22, c.num_attention_heads = 32, c.num_key_value_heads = 4;
    c.tie_word_embeddings = false;
  }
  c.head_dim = 64, c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(std::size_t(c.num_hidden_layers), 0);
  return c;
}

template <class F>
void quantize_projections(model::causal_lm<float>& m) {
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (key == "lm_head") continue;
    auto q = F::quantize(lin->weight.value, lin->out, lin->in);
    lin->base = std::make_shared<adapters::quantized_base_q8<Bk, F>>(std::move(q));
    std::vector<float>().swap(lin->weight.value);
    lin->weight.trainable = false;
  }
  quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
}

double seconds_for(model::causal_lm<float>& m, std::int64_t tokens) {
  const std::vector<std::int64_t> prompt = {1, 17, 250, 3, 99, 411, 12, 7};
  const auto t0 = std::chrono::steady_clock::now();
  model::generate(Bk{}, m, {prompt}, {.max_new_tokens = tokens, .eos_token_ids = {-1}});
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double decode_ms(model::causal_lm<float>& m, std::int64_t tokens) {
  std::vector<double> v;
  seconds_for(m, 2);  // warm-up
  for (int r = 0; r < 3; ++r)
    v.push_back((seconds_for(m, 1 + tokens) - seconds_for(m, 1)) * 1e3 / double(tokens));
  std::sort(v.begin(), v.end());
  return v[1];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> configs = {"100m", "1b"};
  std::int64_t tokens = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokens")) tokens = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--configs")) {
      configs.clear();
      std::string s = argv[i + 1];
      for (std::size_t p = 0; p <= s.size();) {
        const auto q = std::min(s.find(',', p), s.size());
        configs.push_back(s.substr(p, q - p));
        p = q + 1;
      }
    }
  }
  std::printf("| config | parameters | weights | weight memory (MiB) | decode ms/token | tokens/s | "
              "vs f32 |\n|---|---|---|---|---|---|---|\n");
  for (const auto& name : configs) {
    const auto base = model::random_model<float>(config(name), {.seed = 1});
    std::size_t params = 0;
    base.for_each_parameter([&](const model::parameter<float>& p) { params += p.value.size(); });
    double f32_ms = 0;
    for (const char* fmt : {"f32", "int8_channel", "int4_g128", "nf4"}) {
      auto m = base;
      const std::string f = fmt;
      if (f == "int8_channel") quantize_projections<quant::int8_channel>(m);
      if (f == "int4_g128") quantize_projections<quant::int4_g128>(m);
      if (f == "nf4") quantize_projections<quant::nf4>(m);
      const double ms = decode_ms(m, tokens);
      if (f == "f32") f32_ms = ms;
      std::printf("| %s | %.0fM | %s%s | %.1f | %.2f | %.1f | %.2fx |\n", name.c_str(),
                  double(params) / 1e6, fmt, f == "f32" ? "" : " (+ Q8_0 embedding, head)",
                  double(quant::model_weight_bytes(m)) / 1048576.0, ms, 1000.0 / ms, f32_ms / ms);
      std::fflush(stdout);
    }
  }
}
