// GPU LoRA/QLoRA training of a whole Llama model (backend/cuda/lora_trainer.cuh) against the
// reference tools and double-precision references:
//  - causal GQA attention through cuBLAS (attention_gemm.cuh), forward and backward, against a
//    double-precision CPU evaluation of its formulas, seq 77 (several warp strides per row);
//  - NF4 quantize/dequantize kernels against a scalar CPU quantizer (bit-exact codes);
//  - the llama_a fixture (transformers + PEFT): logits without and with the adapter, the LoRA
//    loss and all 28 LoRA gradients, in f32 (tight) and bf16 (loose, see each tolerance);
//  - QLoRA: the NF4-base trainer equals the dense trainer given the dequantized weights;
//  - the DPO loss (cDPO smoothing) of a fixture pair and its 28 LoRA gradients, and five
//    AdamW steps, against PyTorch + PEFT in float64 (lora_steps_reference.py, run as a ctest
//    setup test; path in FORGE_LORA_STEPS_REF);
//  - bf16 training lowers the loss; bad input is a forge::error.

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_test.cuh"
#include "forge/backend/cuda/lora_trainer.cuh"
#include "safetensors_read.cuh"

using namespace forge::cuda;
using namespace forge::cuda::test;

namespace {

std::string fixture_dir() {
  const char* e = std::getenv("FORGE_FIXTURES");
  return std::string(e && *e ? e : "../shared/fixtures") + "/hf/llama_a";
}

// The integer or number after "key": in a JSON text (config.json has flat numeric fields).
double json_number(const std::string& text, const std::string& key) {
  const auto at = text.find("\"" + key + "\"");
  if (at == std::string::npos) throw forge::error({.what = "config field missing", .place = key});
  const auto colon = text.find(':', at);
  return std::stod(text.substr(colon + 1, 32));
}

const char* proj_module(llama_proj p) {
  return p == llama_proj::gate || p == llama_proj::up || p == llama_proj::down ? "mlp"
                                                                               : "self_attn";
}
std::string module_name(std::int64_t l, llama_proj p) {
  return "model.layers." + std::to_string(l) + "." + proj_module(p) + "." + llama_proj_name(p);
}

struct fixture_model {
  llama_dims dims{};
  std::int64_t rank = 0;
  float alpha = 0;
  std::map<std::string, std::vector<float>> w;  // HF names
  std::vector<std::int64_t> ids;
  std::int64_t batch = 0, seq = 0;

  fixture_model() {
    const std::string dir = fixture_dir();
    std::ifstream cf(dir + "/model/config.json");
    std::stringstream cs;
    cs << cf.rdbuf();
    const std::string c = cs.str();
    dims.vocab = std::int64_t(json_number(c, "vocab_size"));
    dims.hidden = std::int64_t(json_number(c, "hidden_size"));
    dims.intermediate = std::int64_t(json_number(c, "intermediate_size"));
    dims.layers = std::int64_t(json_number(c, "num_hidden_layers"));
    dims.heads = std::int64_t(json_number(c, "num_attention_heads"));
    dims.kv_heads = std::int64_t(json_number(c, "num_key_value_heads"));
    dims.head_dim = std::int64_t(json_number(c, "head_dim"));
    dims.rms_eps = float(json_number(c, "rms_norm_eps"));
    dims.rope_theta = float(json_number(c, "rope_theta"));
    std::ifstream af(dir + "/adapter/adapter_config.json");
    std::stringstream as;
    as << af.rdbuf();
    rank = std::int64_t(json_number(as.str(), "r"));
    alpha = float(json_number(as.str(), "lora_alpha"));
    st_file m(dir + "/model/model.safetensors");
    const char* globals[] = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    for (auto n : globals) w[n] = m.f32(n);
    for (std::int64_t l = 0; l < dims.layers; ++l) {
      const std::string at = "model.layers." + std::to_string(l) + ".";
      w[at + "input_layernorm.weight"] = m.f32(at + "input_layernorm.weight");
      w[at + "post_attention_layernorm.weight"] = m.f32(at + "post_attention_layernorm.weight");
      for (auto p : llama_projs) w[module_name(l, p)] = m.f32(module_name(l, p) + ".weight");
    }
    st_file ex(dir + "/expect.safetensors");
    const auto idd = ex.values("input_ids");
    ids.assign(idd.begin(), idd.end());
    batch = ex.shape("input_ids")[0];
    seq = ex.shape("input_ids")[1];
  }

  llama_host_weights host() const {
    llama_host_weights h;
    h.embed = w.at("model.embed_tokens.weight").data();
    h.final_norm = w.at("model.norm.weight").data();
    h.lm_head = w.at("lm_head.weight").data();
    for (std::int64_t l = 0; l < dims.layers; ++l) {
      const std::string at = "model.layers." + std::to_string(l) + ".";
      auto P = [&](llama_proj p) { return w.at(module_name(l, p)).data(); };
      h.layers.push_back({.input_norm = w.at(at + "input_layernorm.weight").data(),
                          .q = P(llama_proj::q),
                          .k = P(llama_proj::k),
                          .v = P(llama_proj::v),
                          .o = P(llama_proj::o),
                          .post_norm = w.at(at + "post_attention_layernorm.weight").data(),
                          .gate = P(llama_proj::gate),
                          .up = P(llama_proj::up),
                          .down = P(llama_proj::down)});
    }
    return h;
  }
};

std::string peft_name(std::int64_t l, llama_proj p, const char* which, bool default_adapter) {
  return "base_model.model." + module_name(l, p) + "." + which +
         (default_adapter ? ".default.weight" : ".weight");
}

template <class T>
void load_adapter(lora_trainer<T>& tr, const fixture_model& fx) {
  st_file a(fixture_dir() + "/adapter/adapter_model.safetensors");
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs)
      tr.set_lora(l, p, a.f32(peft_name(l, p, "lora_A", false)).data(),
                  a.f32(peft_name(l, p, "lora_B", false)).data());
}

template <class T>
void zero_adapter(lora_trainer<T>& tr, const fixture_model& fx) {
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      std::vector<float> A(std::size_t(tr.in_features(p) * fx.rank), 0.0f);
      std::vector<float> B(std::size_t(tr.out_features(p) * fx.rank), 0.0f);
      tr.set_lora(l, p, A.data(), B.data());
    }
}

std::vector<double> to_d(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Relative norm error of every LoRA gradient against the fixture's grad.* tensors; returns
// the largest.
template <class T>
double worst_grad_error(lora_trainer<T>& tr, const fixture_model& fx, const st_file& ex) {
  double worst = 0;
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      std::vector<float> dA(std::size_t(tr.in_features(p) * fx.rank));
      std::vector<float> dB(std::size_t(tr.out_features(p) * fx.rank));
      tr.get_lora_grad(l, p, dA.data(), dB.data());
      const double ea = rel_err(ex.values("grad." + peft_name(l, p, "lora_A", true)), dA);
      const double eb = rel_err(ex.values("grad." + peft_name(l, p, "lora_B", true)), dB);
      worst = std::max({worst, std::isnan(ea) ? 1e30 : ea, std::isnan(eb) ? 1e30 : eb});
    }
  return worst;
}

template <class T>
void check_fixture(report& rep, context& ctx, const fixture_model& fx, double tol_logits,
                   double tol_loss, double tol_grad, const char* why, std::int64_t blocks) {
  std::string tn = type_name<T>();
  if (blocks > 1) tn += ", " + std::to_string(blocks) + " attention blocks";
  st_file ex(fixture_dir() + "/expect.safetensors");
  lora_trainer<T> tr(ctx, fx.dims, fx.host(),
                     {.rank = fx.rank,
                      .alpha = fx.alpha,
                      .max_batch = fx.batch,
                      .max_seq = fx.seq,
                      .attention_blocks = blocks});
  const auto targets = lora_trainer<T>::causal_targets(fx.batch, fx.seq, fx.ids.data());
  std::vector<float> logits(std::size_t(fx.batch * fx.seq * fx.dims.vocab));
  tr.forward(fx.batch, fx.seq, fx.ids.data(), nullptr, logits.data());
  rep.check("fixture " + tn + " base logits vs transformers", rel_err(ex.values("logits"), logits),
            tol_logits);
  load_adapter(tr, fx);
  tr.forward(fx.batch, fx.seq, fx.ids.data(), nullptr, logits.data());
  rep.check("fixture " + tn + " LoRA logits vs PEFT", rel_err(ex.values("logits_lora"), logits),
            tol_logits);
  tr.zero_grad();
  const double loss = tr.forward_backward(fx.batch, fx.seq, fx.ids.data(), targets.data());
  const double ref = ex.values("loss_lora")[0];
  rep.check("fixture " + tn + " LoRA loss vs PEFT (relative)", std::abs(loss - ref) / ref,
            tol_loss);
  rep.check("fixture " + tn + " worst of 28 LoRA gradients vs PEFT", worst_grad_error(tr, fx, ex),
            tol_grad);
  // A second backward without zero_grad doubles every gradient (accumulation).
  tr.forward_backward(fx.batch, fx.seq, fx.ids.data(), targets.data());
  std::vector<float> dA(std::size_t(tr.in_features(llama_proj::down) * fx.rank));
  std::vector<float> dB(std::size_t(tr.out_features(llama_proj::down) * fx.rank));
  tr.get_lora_grad(0, llama_proj::down, dA.data(), dB.data());
  auto ref2 = ex.values("grad." + peft_name(0, llama_proj::down, "lora_A", true));
  for (auto& v : ref2) v *= 2;
  rep.check("fixture " + tn + " gradients accumulate over two backwards", rel_err(ref2, dA),
            tol_grad);
  std::printf("  (%s: %s)\n", tn.c_str(), why);
}

// Causal GQA attention through cuBLAS against double-precision formulas, in one block (plain
// head-major) and in several causal blocks (the blocked query layout); seq 77 runs the
// register-resident softmax kernels, seq 1040 the looping ones (seq > 1024).
void check_attention(report& rep, context& ctx, test_rng& rng, std::int64_t B, std::int64_t S,
                     std::int64_t H, std::int64_t KV, std::int64_t blocks) {
  const std::int64_t D = 64, g = H / KV;
  const causal_attention_dims a{.batch = B,
                                .seq = S,
                                .heads = H,
                                .kv_heads = KV,
                                .head_dim = D,
                                .scale = 0.125f,
                                .blocks = blocks};
  const std::string tag = " (seq " + std::to_string(S) + ", " + std::to_string(blocks) + " blocks)";
  std::vector<double> q, k, v, dout;
  auto hq = random_vector<float>(
      std::size_t(B * H * S * D), [&] { return rng.normal(); }, q);
  auto hk = random_vector<float>(
      std::size_t(B * KV * S * D), [&] { return rng.normal(); }, k);
  auto hv = random_vector<float>(
      std::size_t(B * KV * S * D), [&] { return rng.normal(); }, v);
  auto hdo = random_vector<float>(
      std::size_t(B * H * S * D), [&] { return rng.normal(); }, dout);
  std::vector<double> o(q.size(), 0), dq(q.size(), 0), dk(k.size(), 0), dv(v.size(), 0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t kh = h / g;
      auto qr = [&](std::int64_t i) { return std::size_t(a.q_row(b, h, i) * D); };
      auto Q = [&](std::int64_t i) { return &q[qr(i)]; };
      auto K = [&](std::int64_t j) { return &k[std::size_t(((b * KV + kh) * S + j) * D)]; };
      auto Vv = [&](std::int64_t j) { return &v[std::size_t(((b * KV + kh) * S + j) * D)]; };
      for (std::int64_t i = 0; i < S; ++i) {
        std::vector<double> p(std::size_t(i + 1)), dp(std::size_t(i + 1));
        double mx = -1e300, sum = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (std::int64_t e = 0; e < D; ++e) s += Q(i)[e] * K(j)[e];
          p[std::size_t(j)] = 0.125 * s;
          mx = std::max(mx, p[std::size_t(j)]);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (auto& x : p) x /= sum;
        const double* dO = &dout[qr(i)];
        double* Oi = &o[qr(i)];
        double dsum = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (std::int64_t e = 0; e < D; ++e) {
            Oi[e] += p[std::size_t(j)] * Vv(j)[e];
            s += dO[e] * Vv(j)[e];
          }
          dp[std::size_t(j)] = s;
          dsum += p[std::size_t(j)] * s;
        }
        for (std::int64_t j = 0; j <= i; ++j) {
          const double ds = p[std::size_t(j)] * (dp[std::size_t(j)] - dsum);
          for (std::int64_t e = 0; e < D; ++e) {
            dq[qr(i) + std::size_t(e)] += 0.125 * ds * K(j)[e];
            dk[std::size_t(((b * KV + kh) * S + j) * D + e)] += 0.125 * ds * Q(i)[e];
            dv[std::size_t(((b * KV + kh) * S + j) * D + e)] += p[std::size_t(j)] * dO[e];
          }
        }
      }
    }
  device_buffer<float> dq_(hq.data(), hq.size()), dk_(hk.data(), hk.size()),
      dv_(hv.data(), hv.size()), ddo(hdo.data(), hdo.size());
  device_buffer<float> out(hq.size()), gq(hq.size()), gk(hk.size()), gv(hv.size());
  device_buffer<float> scores(std::size_t(a.score_elements())),
      probs(std::size_t(a.score_elements()));
  causal_attention_forward<float>(ctx, a, dq_.data(), dk_.data(), dv_.data(), out.data(),
                                  scores.data(), probs.data());
  causal_attention_backward<float>(ctx, a, dq_.data(), dk_.data(), dv_.data(), ddo.data(),
                                   gq.data(), gk.data(), gv.data(), scores.data(), probs.data());
  ctx.synchronize();
  // f32 products over at most 1040 terms (~sqrt(1040)·2^-24 relative) and an f32 softmax.
  rep.check("cuBLAS causal GQA attention f32 forward" + tag, rel_err(o, out.download()), 1e-5);
  rep.check("cuBLAS causal GQA attention f32 dq" + tag, rel_err(dq, gq.download()), 1e-5);
  rep.check("cuBLAS causal GQA attention f32 dk" + tag, rel_err(dk, gk.download()), 1e-5);
  rep.check("cuBLAS causal GQA attention f32 dv" + tag, rel_err(dv, gv.download()), 1e-5);
}

// Scalar NF4 quantizer: absmax of each flat block of 64, then the code value nearest to
// w/absmax (ties to the lower code), first weight of a byte in the high nibble.
void host_nf4(const std::vector<float>& w, std::vector<std::uint8_t>& codes,
              std::vector<float>& absmax) {
  const std::size_t blocks = w.size() / 64;
  codes.assign(w.size() / 2, 0);
  absmax.assign(blocks, 0);
  for (std::size_t b = 0; b < blocks; ++b) {
    float a = 0;
    for (int i = 0; i < 64; ++i) a = std::max(a, std::fabs(w[b * 64 + std::size_t(i)]));
    absmax[b] = a;
    const float inv = 1.0f / std::max(a, 1e-38f);
    for (int i = 0; i < 64; ++i) {
      const float v = std::clamp(w[b * 64 + std::size_t(i)] * inv, -1.0f, 1.0f);
      int best = 0;
      for (int c = 1; c < 16; ++c)
        if (std::fabs(double(v) - nf4_values[c]) < std::fabs(double(v) - nf4_values[best]))
          best = c;
      auto& byte = codes[(b * 64 + std::size_t(i)) / 2];
      byte = std::uint8_t(i % 2 == 0 ? (byte & 0x0f) | (best << 4) : (byte & 0xf0) | best);
    }
  }
}
std::vector<float> host_nf4_dequant(const std::vector<std::uint8_t>& codes,
                                    const std::vector<float>& absmax) {
  std::vector<float> w(codes.size() * 2);
  for (std::size_t i = 0; i < w.size(); ++i) {
    const int q = i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15;
    w[i] = nf4_values[q] * absmax[i / 64];
  }
  return w;
}

void check_nf4_kernels(report& rep, context& ctx, test_rng& rng) {
  const std::int64_t rows = 96, cols = 320;
  std::vector<float> w(std::size_t(rows * cols));
  for (auto& x : w) x = float(0.05 * rng.normal());
  for (int i = 0; i < 64; ++i) w[std::size_t(64 * 7 + i)] = 0.0f;  // an all-zero block
  std::vector<std::uint8_t> codes;
  std::vector<float> absmax;
  host_nf4(w, codes, absmax);
  device_buffer<float> dw(w.data(), w.size());
  const nf4_matrix q = nf4_quantize(ctx, rows, cols, dw.data());
  device_buffer<float> back(w.size());
  device_buffer<__nv_bfloat16> back16(w.size());
  nf4_dequantize<float>(ctx, q, back.data());
  nf4_dequantize<__nv_bfloat16>(ctx, q, back16.data());
  ctx.synchronize();
  const auto gc = q.codes.download();
  const auto ga = q.absmax.download();
  std::size_t code_mismatch = 0, absmax_mismatch = 0, deq_mismatch = 0;
  for (std::size_t i = 0; i < gc.size(); ++i) code_mismatch += gc[i] != codes[i];
  for (std::size_t i = 0; i < ga.size(); ++i) absmax_mismatch += ga[i] != absmax[i];
  const auto hd = host_nf4_dequant(codes, absmax);
  const auto g32 = back.download();
  const auto g16 = back16.download();
  for (std::size_t i = 0; i < hd.size(); ++i)
    deq_mismatch +=
        g32[i] != hd[i] || __bfloat162float(g16[i]) != __bfloat162float(__float2bfloat16_rn(hd[i]));
  rep.expect("nf4_quantize codes equal the scalar quantizer (" + std::to_string(code_mismatch) +
                 " differ)",
             code_mismatch == 0);
  rep.expect("nf4_quantize absmax equal the scalar quantizer", absmax_mismatch == 0);
  rep.expect("nf4_dequantize f32 and bf16 equal code·absmax rounded once", deq_mismatch == 0);
}

// The NF4-base trainer against the dense trainer fed the dequantized weights (host).
void check_qlora(report& rep, context& ctx, const fixture_model& fx) {
  fixture_model deq = fx;
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      auto& w = deq.w[module_name(l, p)];
      std::vector<std::uint8_t> codes;
      std::vector<float> absmax;
      host_nf4(w, codes, absmax);
      w = host_nf4_dequant(codes, absmax);
    }
  const lora_trainer_options base{
      .rank = fx.rank, .alpha = fx.alpha, .max_batch = fx.batch, .max_seq = fx.seq};
  auto qo = base;
  qo.base = base_storage::nf4;
  lora_trainer<float> qt(ctx, fx.dims, fx.host(), qo), dt(ctx, deq.dims, deq.host(), base);
  load_adapter(qt, fx);
  load_adapter(dt, fx);
  const auto targets = lora_trainer<float>::causal_targets(fx.batch, fx.seq, fx.ids.data());
  qt.zero_grad();
  dt.zero_grad();
  const double lq = qt.forward_backward(fx.batch, fx.seq, fx.ids.data(), targets.data());
  const double ld = dt.forward_backward(fx.batch, fx.seq, fx.ids.data(), targets.data());
  // Same weights and the same f32 products: agreement to f32 rounding of a few operations.
  rep.check("QLoRA (NF4 base) loss vs dense on dequantized weights", std::abs(lq - ld) / ld, 1e-6);
  double worst = 0;
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      std::vector<float> a1(std::size_t(qt.in_features(p) * fx.rank)),
          b1(std::size_t(qt.out_features(p) * fx.rank));
      auto a2 = a1, b2 = b1;
      qt.get_lora_grad(l, p, a1.data(), b1.data());
      dt.get_lora_grad(l, p, a2.data(), b2.data());
      worst = std::max({worst, rel_err(to_d(a2), a1), rel_err(to_d(b2), b1)});
    }
  rep.check("QLoRA (NF4 base) gradients vs dense on dequantized weights", worst, 1e-5);
  std::printf("  (QLoRA fixture loss %.6f; dense on dequantized weights %.6f)\n", lq, ld);
}

// Five AdamW steps against PyTorch + PEFT in float64.
void check_steps(report& rep, context& ctx, const fixture_model& fx) {
  const char* path = std::getenv("FORGE_LORA_STEPS_REF");
  if (!path || !*path) {
    rep.expect(
        "training-step reference present (FORGE_LORA_STEPS_REF; made by "
        "lora_steps_reference.py)",
        false);
    return;
  }
  st_file ref(path);
  const auto losses = ref.values("losses");
  lora_trainer<float> tr(
      ctx, fx.dims, fx.host(),
      {.rank = fx.rank, .alpha = fx.alpha, .max_batch = fx.batch, .max_seq = fx.seq});
  load_adapter(tr, fx);
  const auto targets = lora_trainer<float>::causal_targets(fx.batch, fx.seq, fx.ids.data());
  const adamw_options opt{
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
  double worst_loss = 0;
  for (std::size_t s = 0; s < losses.size(); ++s) {
    const double l = tr.train_step(fx.batch, fx.seq, fx.ids.data(), targets.data(), opt);
    std::printf("  step %zu: loss %.7f, PyTorch float64 %.7f\n", s + 1, l, losses[s]);
    worst_loss = std::max(worst_loss, std::abs(l - losses[s]) / losses[s]);
  }
  // f32 forward against float64: the fixture check's 1e-5 scale.
  rep.check("5 AdamW steps: losses vs PyTorch+PEFT float64 (worst)", worst_loss, 1e-5);
  st_file a0(fixture_dir() + "/adapter/adapter_model.safetensors");
  double worst = 0;
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      std::vector<float> A(std::size_t(tr.in_features(p) * fx.rank)),
          B(std::size_t(tr.out_features(p) * fx.rank));
      tr.get_lora(l, p, A.data(), B.data());
      for (auto [which, got] : {std::pair{"lora_A", &A}, {"lora_B", &B}}) {
        const auto want = ref.values(peft_name(l, p, which, true));
        const auto start = a0.values(peft_name(l, p, which, false));
        // error relative to the distance travelled: f32 gradients (~1e-6 relative) through
        // Adam's normalisation stay far below 1e-3 of the update.
        double num = 0, den = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
          num += (double((*got)[i]) - want[i]) * (double((*got)[i]) - want[i]);
          den += (want[i] - start[i]) * (want[i] - start[i]);
        }
        worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
      }
    }
  rep.check("5 AdamW steps: LoRA weights vs PyTorch (error / update)", worst, 1e-3);
}

// DPO of one pair (chosen = sequence 0, rejected = sequence 1, prompt = the first 6 tokens)
// against PyTorch + PEFT in float64 with the adapter-disabled model as reference.
void check_dpo(report& rep, context& ctx, const fixture_model& fx) {
  const char* path = std::getenv("FORGE_LORA_STEPS_REF");
  if (!path || !*path) {
    rep.expect("DPO reference present (FORGE_LORA_STEPS_REF)", false);
    return;
  }
  st_file ref(path);
  lora_trainer<float> tr(ctx, fx.dims, fx.host(),
                         {.rank = fx.rank, .alpha = fx.alpha, .max_batch = 2, .max_seq = fx.seq});
  load_adapter(tr, fx);
  const std::int64_t S = fx.seq, prompt = 6;
  std::vector<std::int64_t> targets(std::size_t(2 * S));
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t t = 0; t < S; ++t)
      targets[std::size_t(b * S + t)] =
          t + 1 >= prompt && t + 1 < S ? fx.ids[std::size_t(b * S + t + 1)] : ce_ignore_index;
  tr.zero_grad();
  const double loss =
      tr.dpo_forward_backward(1, S, fx.ids.data(), targets.data(), fx.ids.data() + S,
                              targets.data() + S, {.beta = 0.1f, .label_smoothing = 0.1f});
  const double want = ref.values("dpo.loss")[0];
  std::printf("  DPO loss %.9f, PyTorch float64 %.9f\n", loss, want);
  // f32 sequence log-probabilities (sums of 12 terms near −6) enter h through β = 0.1.
  rep.check("DPO loss vs PyTorch+PEFT float64 (relative)", std::abs(loss - want) / want, 1e-5);
  double worst = 0;
  for (std::int64_t l = 0; l < fx.dims.layers; ++l)
    for (auto p : llama_projs) {
      std::vector<float> dA(std::size_t(tr.in_features(p) * fx.rank));
      std::vector<float> dB(std::size_t(tr.out_features(p) * fx.rank));
      tr.get_lora_grad(l, p, dA.data(), dB.data());
      const double ea = rel_err(ref.values("dpo.grad." + peft_name(l, p, "lora_A", true)), dA);
      const double eb = rel_err(ref.values("dpo.grad." + peft_name(l, p, "lora_B", true)), dB);
      worst = std::max({worst, std::isnan(ea) ? 1e30 : ea, std::isnan(eb) ? 1e30 : eb});
    }
  // As the SFT gradients (1e-4), through one more f32 weighting per token.
  rep.check("DPO worst of 28 LoRA gradients vs PyTorch+PEFT", worst, 1e-4);
  // Training on the pair raises the chosen-over-rejected margin: the loss falls.
  double first = 0, last = 0;
  for (int s = 0; s < 10; ++s) {
    last =
        tr.dpo_step(1, S, fx.ids.data(), targets.data(), fx.ids.data() + S, targets.data() + S,
                    {.beta = 0.1f, .label_smoothing = 0.1f}, {.lr = 1e-2f, .weight_decay = 0.0f});
    if (s == 0) first = last;
  }
  std::printf("  DPO training: loss %.4f -> %.4f in 10 steps\n", first, last);
  rep.expect("DPO steps lower the DPO loss", last < first - 0.05);
}

// bf16 training on the fixture batch: the loss falls, and the first steps track f32.
void check_bf16_training(report& rep, context& ctx, const fixture_model& fx) {
  const lora_trainer_options o{
      .rank = fx.rank, .alpha = fx.alpha, .max_batch = fx.batch, .max_seq = fx.seq};
  lora_trainer<__nv_bfloat16> tb(ctx, fx.dims, fx.host(), o);
  lora_trainer<float> tf(ctx, fx.dims, fx.host(), o);
  tb.init_lora(7);
  tf.init_lora(7);
  const auto targets = lora_trainer<float>::causal_targets(fx.batch, fx.seq, fx.ids.data());
  const adamw_options opt{.lr = 1e-2f, .weight_decay = 0.0f};
  std::vector<double> lb, lf;
  for (int s = 0; s < 60; ++s) {
    lb.push_back(tb.train_step(fx.batch, fx.seq, fx.ids.data(), targets.data(), opt));
    if (s < 5) lf.push_back(tf.train_step(fx.batch, fx.seq, fx.ids.data(), targets.data(), opt));
  }
  std::printf("  bf16 training losses: step 1 %.4f, 10 %.4f, 20 %.4f, 40 %.4f, 60 %.4f\n", lb[0],
              lb[9], lb[19], lb[39], lb[59]);
  double worst = 0;
  for (int s = 0; s < 5; ++s)
    worst = std::max(worst, std::abs(lb[std::size_t(s)] - lf[std::size_t(s)]) / lf[std::size_t(s)]);
  // bf16 logits carry ~2^-9 relative rounding per stored activation; the loss of a 512-way
  // softmax moves by about that times the logit scale: 1e-2 of a loss near 6 is ~25x margin.
  rep.check("bf16 vs f32 training: first 5 losses (relative, worst)", worst, 1e-2);
  rep.expect("bf16 LoRA training lowers the loss to below 75% in 60 steps",
             lb[59] < 0.75 * lb[0] && lb[19] < lb[0] && lb[39] < lb[19]);
}

void check_errors(report& rep, context& ctx, const fixture_model& fx) {
  lora_trainer<float> tr(
      ctx, fx.dims, fx.host(),
      {.rank = fx.rank, .alpha = fx.alpha, .max_batch = fx.batch, .max_seq = fx.seq});
  auto ids = fx.ids;
  ids[5] = fx.dims.vocab;  // out of range
  const auto targets = lora_trainer<float>::causal_targets(fx.batch, fx.seq, fx.ids.data());
  bool named = false;
  try {
    tr.forward_backward(fx.batch, fx.seq, ids.data(), targets.data());
  } catch (const forge::error& e) {
    named = std::string(e.what()).find("input_ids[5]") != std::string::npos;
  }
  rep.expect("an out-of-range token id is a forge::error naming its index", named);
  bool too_big = false;
  try {
    tr.forward_backward(fx.batch + 1, fx.seq, fx.ids.data(), targets.data());
  } catch (const forge::error&) {
    too_big = true;
  }
  rep.expect("a batch larger than planned is a forge::error", too_big);
  auto h = fx.host();
  h.layers[1].down = nullptr;
  bool missing = false;
  try {
    lora_trainer<float> bad(ctx, fx.dims, h, {.rank = 4, .max_batch = 1, .max_seq = 4});
  } catch (const forge::error& e) {
    missing = std::string(e.what()).find("layers.1.down_proj") != std::string::npos;
  }
  rep.expect("a missing weight is a forge::error naming it", missing);
}

}  // namespace

int main() {
  report rep("lora_trainer");
  try {
    context ctx;
    test_rng rng(20261124);
    check_attention(rep, ctx, rng, 2, 77, 4, 2, 1);
    check_attention(rep, ctx, rng, 2, 77, 4, 2, 7);
    check_attention(rep, ctx, rng, 1, 1040, 2, 1, 4);
    check_nf4_kernels(rep, ctx, rng);
    const fixture_model fx;
    // f32: every product and reduction in f32 against transformers' f32 (CPU) run; the CPU
    // forge test holds the same fixture to 1e-4 max-abs.
    check_fixture<float>(rep, ctx, fx, 1e-5, 1e-5, 1e-4,
                         "f32 products and reductions against transformers' f32 run", 1);
    check_fixture<float>(rep, ctx, fx, 1e-5, 1e-5, 1e-4, "the same, 18 positions in 3 blocks", 3);
    // bf16: weights, activations and LoRA copies rounded to bf16 (2^-9 relative each); two
    // layers chain ~10 such roundings into the logits (~1e-2), and the gradients pass through
    // the same chain twice more.
    check_fixture<__nv_bfloat16>(rep, ctx, fx, 3e-2, 1e-2, 8e-2,
                                 "bf16 storage, f32 accumulation: rounding chains of ~10 bf16 "
                                 "steps per pass",
                                 2);
    check_qlora(rep, ctx, fx);
    check_steps(rep, ctx, fx);
    check_dpo(rep, ctx, fx);
    check_bf16_training(rep, ctx, fx);
    check_errors(rep, ctx, fx);
  } catch (const std::exception& e) {
    std::printf("FAIL       exception: %s\n", e.what());
    return 1;
  }
  return rep.finish();
}
