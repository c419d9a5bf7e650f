// forge's quantized inference on a GGUF file written by forge's exporter, timed the way
// bench/llama_cpp_compare.py times llama.cpp on the same file (see docs/performance.md).
//
//   bench_gguf write MODEL OUT.gguf [q4_0|q4_k|q8_0]
//       MODEL = 100m (the ~100M-parameter Llama config of bench_model, random weights,
//       seed 1) or builtin (the built-in model). Writes the model with save_llama_gguf: every
//       2-D weight, embeddings and head included, in the chosen type.
//   bench_gguf run MODEL FILE.gguf PROMPT_LEN... [--decode N] [--reps R]
//       Builds MODEL's forge model whose 2-D weights are the file's blocks: each projection
//       and the head a quantized_base<simd<>, F> over the file's bytes (q/k rows put back
//       from llama.cpp's rope order), the embedding table dequantized for lookup. Then, with
//       OMP_NUM_THREADS threads:
//         prefill: forward of a PROMPT_LEN-token prompt into an empty KV cache, logits of the
//                  last position only (as llama.cpp computes them); R repetitions;
//         decode:  after a 16-token prompt, N single-token forwards with the KV cache, R
//                  times over (median of the N·R steps).
//       Prints one JSON object: median and best seconds per prefill, median seconds per
//       decoded token, tokens/s from the medians, and the argmax of the last prefill logits.
// Token ids are drawn from philox(7) below the vocabulary size, the same ids the driver
// gives llama.cpp (it reads them from FILE.gguf.ids.json, written by `write`).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "forge/adapters/qlora.hpp"
#include "forge/adapters/quantized_base_q8.hpp"
#include "forge/builtin/model.hpp"
#include "forge/core/json.hpp"
#include "forge/deploy/export.hpp"
#include "forge/io/gguf.hpp"
#include "forge/model/forward.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/k_quants.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {

// FORGE_BENCH_F32_ACT=1: decode with f32 activations (backend::qmatmul) instead of the
// int8-activation products (backend::qmatmul_q8) that llama.cpp also uses.
const bool q8_activations = [] {
  const char* e = std::getenv("FORGE_BENCH_F32_ACT");
  return !(e && *e == '1');
}();

model::model_config config_100m() {
  model::model_config c;
  c.vocab_size = 32000, c.hidden_size = 768, c.intermediate_size = 2048;
  c.num_hidden_layers = 12, c.num_attention_heads = 12, c.num_key_value_heads = 4;
  c.head_dim = 64, c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.sliding_window.assign(12, 0);
  return c;
}

model::causal_lm<float> base_model(const std::string& which) {
  if (which == "100m") return model::random_model<float>(config_100m(), {.seed = 1});
  if (which == "builtin") return builtin::load_model();
  throw error({.what = "unknown model", .expected = "100m or builtin", .found = which});
}

// The built-in byte-level BPE tokenizer, padded with unused tokens up to the model's vocabulary
// (the 100m config has random weights and no tokenizer of its own; ids are fed directly).
io::gguf_tokenizer tokenizer_for(const model::model_config& c) {
  auto t = exports::gguf_tokenizer_from_hf(builtin::model_dir());
  for (std::size_t i = t.tokens.size(); i < std::size_t(c.vocab_size); ++i) {
    t.tokens.push_back("<|unused_" + std::to_string(i) + "|>");
    t.token_types.push_back(std::int32_t(io::gguf_token_type::unused));
  }
  return t;
}

std::vector<std::int64_t> prompt_ids(std::int64_t n, std::int64_t vocab) {
  philox r(7, 0);
  std::vector<std::int64_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = std::int64_t(r.below(std::uint64_t(vocab)));
  return t;
}

// Inverse of io::permute_rope_rows: llama.cpp's interleaved rotary rows back to Hugging Face's.
std::vector<std::uint8_t> unpermute_rope_rows(std::span<const std::byte> data, std::size_t rows,
                                              std::size_t n_head) {
  std::vector<std::uint8_t> out(data.size());
  const std::size_t row_bytes = data.size() / rows, d = rows / n_head, half = d / 2;
  for (std::size_t h = 0; h < n_head; ++h)
    for (std::size_t r = 0; r < 2; ++r)
      for (std::size_t j = 0; j < half; ++j)
        std::memcpy(out.data() + (h * d + r * half + j) * row_bytes,
                    data.data() + (h * d + 2 * j + r) * row_bytes, row_bytes);
  return out;
}

template <class F>
std::shared_ptr<const model::linear_base<float>> base_of(const io::gguf_file& f,
                                                         const io::gguf_tensor_info& t,
                                                         std::size_t rope_heads) {
  quant::qtensor<F> q;
  q.rows = t.shape[0];
  q.cols = t.shape[1];
  const auto b = f.bytes(t);
  if (rope_heads)
    q.codes = unpermute_rope_rows(b, std::size_t(q.rows), rope_heads);
  else
    q.codes.assign(reinterpret_cast<const std::uint8_t*>(b.data()),
                   reinterpret_cast<const std::uint8_t*>(b.data()) + b.size());
  require(q.codes.size() == F::bytes_for(q.rows, q.cols),
          {.what = "tensor size", .file = f.source(), .place = t.name});
  if (q8_activations) {
    if constexpr (requires {
                    backend::qmatmul_q8(be_t{}, std::span<const float>{}, 0, q, std::span<float>{});
                  })
      return std::make_shared<adapters::quantized_base_q8<be_t, F>>(std::move(q));
  }
  return std::make_shared<adapters::quantized_base<be_t, F>>(std::move(q));
}

std::shared_ptr<const model::linear_base<float>> base_of(const io::gguf_file& f,
                                                         const std::string& name,
                                                         std::size_t rope_heads) {
  const auto& t = f.at(name);
  switch (t.type) {
    case io::ggml_type::q4_0:
      return base_of<quant::q4_0>(f, t, rope_heads);
    case io::ggml_type::q8_0:
      return base_of<quant::q8_0>(f, t, rope_heads);
    case io::ggml_type::q4_k:
      return base_of<quant::q4_k>(f, t, rope_heads);
    default:
      throw error({.what = "tensor type not benchmarked",
                   .file = f.source(),
                   .place = name,
                   .expected = "Q4_0, Q8_0 or Q4_K",
                   .found = std::string(io::name(t.type))});
  }
}

// MODEL with its 2-D weights replaced by the file's quantized blocks.
model::causal_lm<float> model_from_gguf(const std::string& which, const io::gguf_file& f) {
  auto m = base_model(which);
  const auto& c = m.config;
  m.embed_tokens.value = f.to_f32("token_embd.weight");
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    auto& L = m.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    const std::pair<model::linear<float>*, std::string> lins[] = {
        {&L.q_proj, "attn_q"},      {&L.k_proj, "attn_k"},      {&L.v_proj, "attn_v"},
        {&L.o_proj, "attn_output"}, {&L.gate_proj, "ffn_gate"}, {&L.up_proj, "ffn_up"},
        {&L.down_proj, "ffn_down"}};
    for (auto& [lin, n] : lins) {
      const std::size_t heads = n == "attn_q"   ? std::size_t(c.num_attention_heads)
                                : n == "attn_k" ? std::size_t(c.num_key_value_heads)
                                                : 0;
      lin->base = base_of(f, p + n + ".weight", heads);
      lin->weight.value = {};
    }
  }
  m.lm_head.base = base_of(f, f.find("output.weight") ? "output.weight" : "token_embd.weight", 0);
  m.lm_head.weight.value = {};
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU seconds of the process (all threads): on a loaded machine, with one thread, the time
// the computation itself took, without the time it waited descheduled.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int run(const std::string& which, const std::string& path, const std::vector<std::int64_t>& lens,
        std::int64_t n_decode, int reps) {
  const auto f = io::gguf_file::open(path);
  auto m = model_from_gguf(which, f);
  const auto V = m.config.vocab_size;
  json out;
  out["model"] = which;
  out["file"] = path;
  out["threads"] = num_threads();
  model::workspace<float> ws;
  for (const auto S : lens) {
    const auto ids = prompt_ids(S, V);
    model::kv_cache<float> cache(m.config, 1, S);
    std::vector<double> t, cpu;
    std::int64_t argmax = -1;
    for (int r = 0; r < reps + 1; ++r) {  // the first run warms up (arena, page faults)
      cache.length = 0;
      const double c0 = cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      auto z = model::forward(be_t{}, m, ws, {.batch = 1, .seq = S, .input_ids = ids},
                              {.logits = model::logits_for::last}, &cache);
      const double s = seconds_since(t0);
      if (r) t.push_back(s), cpu.push_back(cpu_seconds() - c0);
      argmax = std::int64_t(std::max_element(z.begin(), z.end()) - z.begin());
    }
    out["prefill"][std::to_string(S)] = {{"median_s", median(t)},
                                         {"best_s", *std::min_element(t.begin(), t.end())},
                                         {"tokens_per_s", double(S) / median(t)},
                                         {"cpu_s", median(cpu)},
                                         {"argmax", argmax}};
  }
  if (n_decode > 0) {
    const std::int64_t P = 16;
    const auto ids = prompt_ids(P + n_decode, V);
    model::kv_cache<float> cache(m.config, 1, P + n_decode);
    model::forward(be_t{}, m, ws, {.batch = 1, .seq = P, .input_ids = std::span(ids).first(P)},
                   {.logits = model::logits_for::last}, &cache);
    std::vector<double> t, cpu;
    // `reps` rounds of n_decode tokens, each from the same 16-token prompt (the cache is cut
    // back to it), so that the context stays short and every round does the same work.
    for (std::int64_t step = 0; step < n_decode * reps; ++step) {
      const std::int64_t i = step % n_decode;
      if (i == 0) cache.length = P;
      const double c0 = cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      model::forward(be_t{}, m, ws,
                     {.batch = 1, .seq = 1, .input_ids = std::span(ids).subspan(P + i, 1)},
                     {.logits = model::logits_for::last}, &cache);
      t.push_back(seconds_since(t0));
      cpu.push_back(cpu_seconds() - c0);
    }
    out["decode"] = {{"tokens", n_decode * reps},
                     {"median_s", median(t)},
                     {"best_s", *std::min_element(t.begin(), t.end())},
                     {"tokens_per_s", 1.0 / median(t)},
                     {"cpu_s", median(cpu)}};
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

int write(const std::string& which, const std::string& path, const std::string& type) {
  const auto m = base_model(which);
  const auto tok = tokenizer_for(m.config);
  exports::save_llama_gguf(m, tok, path, exports::parse_gguf_export_type(type), "forge-" + which);
  json ids;
  ids["vocab"] = m.config.vocab_size;
  ids["seed"] = 7;
  for (const std::int64_t n : {16, 128, 512, 1024})
    ids[std::to_string(n)] = prompt_ids(n, m.config.vocab_size);
  save_json(path + ".ids.json", ids);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() >= 3 && a[0] == "write") return write(a[1], a[2], a.size() > 3 ? a[3] : "q4_0");
    if (a.size() >= 4 && a[0] == "run") {
      std::vector<std::int64_t> lens;
      std::int64_t n_decode = 64;
      int reps = 5;
      for (std::size_t i = 3; i < a.size(); ++i) {
        if (a[i] == "--decode" && i + 1 < a.size())
          n_decode = std::stoll(a[++i]);
        else if (a[i] == "--reps" && i + 1 < a.size())
          reps = std::stoi(a[++i]);
        else
          lens.push_back(std::stoll(a[i]));
      }
      return run(a[1], a[2], lens, n_decode, reps);
    }
    std::fprintf(stderr,
                 "usage: bench_gguf write 100m|builtin OUT.gguf [q4_0|q4_k|q8_0]\n"
                 "       bench_gguf run 100m|builtin FILE.gguf PROMPT_LEN... [--decode N] "
                 "[--reps R]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gguf: %s\n", e.what());
    return 1;
  }
}
