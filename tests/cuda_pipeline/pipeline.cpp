// p.run(model, backend::cuda{}) against p.run(model, backend::simd<>{}): the same pipelines on
// the built-in model — Adapt with LoRA, Adapt with QLoRA, Adapt with full fine-tuning, Adapt
// (LoRA) then Align (DPO on top of the SFT adapter), and Align with KTO (cached and live
// reference) — once trained on the GPU and once on the CPU, compared step by step (loss,
// gradient norm), adapter by adapter (weight by weight) and metric by metric. Full
// fine-tuning is also checked below the pipeline: the gradients of every weight against
// forge's CPU backward (f32 and bf16, separate and tied head), AdamW steps against train_sft
// (all weights, a frozen subset), and a halted + resumed GPU run.
// Prints a PASS/FAIL table; exits nonzero on any failure.
//
//   forge_cuda_pipeline MODEL_DIR OUT_DIR           both backends, compared
//   forge_cuda_pipeline MODEL_DIR OUT_DIR --cpu     the CPU runs alone (no GPU needed): checks
//                                                   that the reference trains (loss falls)
//
// Why the tolerances are tight: the GPU path is the f32 trainer, the same arithmetic as the CPU
// in f32 with f32 accumulation; the runs differ only in summation order (cuBLAS vs Eigen and
// OpenMP), RoPE angles (f32 on the GPU as transformers computes them, double on the CPU) and
// AdamW's moment update form (β·m + (1−β)·g vs m + (g − m)(1−β)). Each is a relative difference
// near 1e-7 per operation; over 12 optimizer steps AdamW's normalisation by √v amplifies it for
// entries whose gradients are tiny, so the adapters are held to 2e-3 (relative norm), the losses
// and gradient norms per step to 2e-4, the CPU-measured metrics of the two trained models to
// 2e-4. DPO's stage runs on the SFT adapter of its own backend's Adapt stage, merged into the
// GPU's base (the CPU adds it as an adapter): float rounding again, same bounds. QLoRA uses
// the same bounds: the GPU re-quantizes the CPU's dequantized NF4 base, whose
// values are code × block absmax, to the same codes and absmax.

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "forge/adapters/methods.hpp"
#include "forge/core/rng.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/init.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/train/align_methods.hpp"

namespace {

using namespace forge;

int failures = 0;

void check(const std::string& what, double measured, double tol) {
  const bool ok = std::isfinite(measured) && measured <= tol;
  std::printf("%-4s %-58s %.3e (tolerance %.1e)\n", ok ? "PASS" : "FAIL", what.c_str(), measured,
              tol);
  failures += !ok;
}

// Deterministic SFT examples: a prompt of random tokens (not trained) and a completion that
// repeats it shifted by one token id (trained), ending in token 3 (the model's eos).
std::vector<data::sft_example> examples(std::uint64_t seed, int n, std::int64_t vocab) {
  philox g(seed, 0);
  std::vector<data::sft_example> out;
  for (int i = 0; i < n; ++i) {
    data::sft_example e;
    e.id = "ex" + std::to_string(i);
    const int len = 4 + int(g.below(12));
    std::vector<std::int32_t> prompt;
    for (int k = 0; k < len; ++k)
      prompt.push_back(std::int32_t(8 + g.below(std::uint32_t(vocab - 8))));
    e.input_ids.push_back(0);
    e.labels.push_back(data::ignore_index);
    for (auto t : prompt) e.input_ids.push_back(t), e.labels.push_back(data::ignore_index);
    for (auto t : prompt) {
      const std::int32_t c = 8 + (t - 8 + 1) % std::int32_t(vocab - 8);
      e.input_ids.push_back(c), e.labels.push_back(c);
    }
    e.input_ids.push_back(3), e.labels.push_back(3);
    out.push_back(std::move(e));
  }
  return out;
}

adapt_data make_data(std::int64_t vocab) {
  adapt_data d;
  d.train = examples(1, 48, vocab);
  d.val = examples(2, 8, vocab);
  d.general = examples(3, 8, vocab);
  for (const auto& e : examples(4, 3, vocab)) {
    eval::task_item t;
    std::size_t k = 0;
    while (k < e.labels.size() && e.labels[k] == data::ignore_index) ++k;
    t.prompt.assign(e.input_ids.begin(), e.input_ids.begin() + std::ptrdiff_t(k));
    t.answer.assign(e.input_ids.begin() + std::ptrdiff_t(k), e.input_ids.end() - 1);
    d.task.push_back(std::move(t));
  }
  d.eos = {3};
  d.pad_id = 4;
  d.name = "shifted-copy sft";
  return d;
}

// Preference pairs: chosen continues the prompt as the SFT data does, rejected is random.
std::vector<data::preference_example> pairs(std::uint64_t seed, int n, std::int64_t vocab) {
  philox g(seed, 1);
  std::vector<data::preference_example> out;
  for (const auto& e : examples(seed, n, vocab)) {
    data::preference_example p;
    p.id = e.id;
    std::size_t k = 0;
    while (k < e.labels.size() && e.labels[k] == data::ignore_index) ++k;
    p.prompt.assign(e.input_ids.begin(), e.input_ids.begin() + std::ptrdiff_t(k));
    p.chosen.assign(e.input_ids.begin() + std::ptrdiff_t(k), e.input_ids.end());
    for (std::size_t i = 0; i < p.chosen.size(); ++i)
      p.rejected.push_back(std::int32_t(8 + g.below(std::uint32_t(vocab - 8))));
    out.push_back(std::move(p));
  }
  return out;
}

struct curve {
  std::vector<double> loss, norm;
};
curve read_curve(const std::filesystem::path& csv) {
  std::ifstream f(csv);
  require(bool(f), {.what = "loss curve missing", .file = csv.string()});
  curve c;
  std::string line;
  std::getline(f, line);
  while (std::getline(f, line)) {
    std::stringstream ss(line);
    std::string cell;
    std::vector<std::string> cells;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    c.loss.push_back(std::stod(cells.at(1)));
    c.norm.push_back(std::stod(cells.at(3)));
  }
  return c;
}

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-12));
  return m;
}

// ‖x − y‖ / ‖y‖ over all A (or all B) matrices of the attached LoRA modules.
double adapter_diff(model::causal_lm<float>& x, model::causal_lm<float>& y, bool b_side,
                    std::size_t& modules) {
  double num = 0, den = 0;
  modules = 0;
  auto lx = adapters::linear_layers(x), ly = adapters::linear_layers(y);
  for (std::size_t i = 0; i < lx.size(); ++i) {
    auto& ax = lx[i].layer->adapters;
    auto& ay = ly[i].layer->adapters;
    if (ax.size() != ay.size()) return INFINITY;
    for (std::size_t k = 0; k < ax.size(); ++k) {
      auto* mx = dynamic_cast<adapters::lora_module<float>*>(ax[k].get());
      auto* my = dynamic_cast<adapters::lora_module<float>*>(ay[k].get());
      if (!mx || !my) return INFINITY;
      const auto& vx = b_side ? mx->B : mx->A;
      const auto& vy = b_side ? my->B : my->A;
      if (vx.size() != vy.size()) return INFINITY;
      for (std::size_t j = 0; j < vx.size(); ++j)
        num += (double(vx[j]) - vy[j]) * (double(vx[j]) - vy[j]), den += double(vy[j]) * vy[j];
      ++modules;
    }
  }
  return modules ? std::sqrt(num / std::max(den, 1e-300)) : INFINITY;
}

lora_params adapt_params() {
  return {.rank = 8,
          .alpha = 16,
          .target_modules = {"q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"},
          .max_steps = 12,
          .batch_size = 4,
          .grad_accum = 2,
          .learning_rate = 2e-3,
          .warmup_steps = 2,
          .max_grad_norm = 1.0,
          .eval_every = 6};
}

template <class B>
auto run_dpo(const model::causal_lm<float>& base, const adapt_data& d, const align_data& a, B be,
             const std::filesystem::path& out) {
  std::filesystem::remove_all(out);
  auto p =
      pipeline(adapt<lora>{adapt_params(), d}, align<dpo<repr::dense_f32>>{{.beta = 0.1,
                                                                            .max_steps = 8,
                                                                            .batch_size = 4,
                                                                            .grad_accum = 2,
                                                                            .learning_rate = 1e-3,
                                                                            .eval_every = 4},
                                                                           a});
  return p.run(base, be, {.out = out, .seed = 11});
}

void compare_curves(const std::string& name, const curve& cc, const curve& gc) {
  std::printf("     step  loss simd       loss cuda       grad-norm simd  grad-norm cuda\n");
  for (std::size_t i = 0; i < std::min(cc.loss.size(), gc.loss.size()); ++i)
    std::printf("     %4zu  %.9f  %.9f  %.9f  %.9f\n", i + 1, cc.loss[i], gc.loss[i], cc.norm[i],
                gc.norm[i]);
  check(name + ": loss per step, max relative difference", max_rel(gc.loss, cc.loss), 2e-4);
  check(name + ": gradient norm per step, max relative difference", max_rel(gc.norm, cc.norm),
        2e-4);
}

void compare_dpo(const model::causal_lm<float>& base, const adapt_data& d, const align_data& a,
                 const std::filesystem::path& out, bool cpu_only) {
  auto cpu = run_dpo(base, d, a, backend::simd<>{}, out / "dpo_simd");
  check("dpo simd: pipeline passed", cpu.passed ? 0.0 : 1.0, 0.0);
  const auto cc = read_curve(out / "dpo_simd" / "02_align" / "loss.csv");
  // The CPU reference learns the preference: DPO's loss starts at log 2 and falls.
  check("dpo simd: last loss / first loss", cc.loss.back() / cc.loss.at(0), 0.99);
  if (cpu_only) return;
  auto gpu = run_dpo(base, d, a, backend::cuda{}, out / "dpo_cuda");
  check("dpo cuda: pipeline passed", gpu.passed ? 0.0 : 1.0, 0.0);
  if (!gpu.passed || !cpu.passed) {
    for (const auto& st : gpu.stages) std::printf("cuda stage error: %s\n", st.error.c_str());
    return;
  }
  compare_curves("dpo", cc, read_curve(out / "dpo_cuda" / "02_align" / "loss.csv"));
  std::size_t mods = 0;
  check("dpo: LoRA A (SFT and DPO adapters), relative norm difference",
        adapter_diff(*gpu.model, *cpu.model, false, mods), 2e-3);
  check("dpo: LoRA B (SFT and DPO adapters), relative norm difference",
        adapter_diff(*gpu.model, *cpu.model, true, mods), 2e-3);
  check("dpo: adapter modules (20 SFT + 28 DPO) - 48", std::abs(double(mods) - 48.0), 0.0);
  for (const char* metric : {"preference_accuracy", "reward_margin", "kl_to_reference"}) {
    const auto x = gpu.stages.at(1).metrics.get(std::string_view(metric));
    const auto y = cpu.stages.at(1).metrics.get(std::string_view(metric));
    const double diff = x && y ? std::abs(*x - *y) / std::max(std::abs(*y), 1e-3) : INFINITY;
    check(std::string("dpo: metric ") + metric + " (CPU-measured), relative difference", diff,
          2e-4);
  }
}

// What the GPU trainer does not do is refused before anything touches a GPU, with a
// forge::error naming the setting (so this runs in the CPU half too).
void refusals(const model::causal_lm<float>& base) {
  const backend::simd<> cpu{};
  auto refused = [&](const std::string& what, adapters::lora_config c, bool bias,
                     const std::string& needle) {
    auto m = base;
    m.config.qkv_bias = bias;
    std::string text = "no error";
    try {
      auto set = adapters::attach_lora(cpu, m, c, 1);
      train::open_cuda_session(cpu, m, set, cuda::base_storage::dense, cuda::precision::f32, 1, 16);
    } catch (const forge::error& e) {
      text = e.what();
    }
    const bool ok = text.find(needle) != std::string::npos;
    std::printf("%-4s refused on cuda: %-47s %s\n", ok ? "PASS" : "FAIL", what.c_str(),
                text.substr(0, 90).c_str());
    failures += !ok;
  };
  refused("LoRA dropout", {.rank = 4, .dropout = 0.1}, false, "lora_config.dropout");
  refused("DoRA", {.rank = 4, .use_dora = true}, false, "lora_config.use_dora");
  refused("an adapter on lm_head", {.rank = 4, .target_modules = {"lm_head"}}, false, "lm_head");
  refused("a model with q/k/v biases", {.rank = 4}, true, "linear biases");
}

// The bridge alone: the base model's summed completion log-probs through a GPU session
// (adapters attached with B = 0, so they add nothing) against the CPU forward. f32 on both
// sides over about 30 tokens a row: relative 1e-5.
void compare_forward(const model::causal_lm<float>& base, const align_data& a) {
  auto m = base;
  const backend::simd<> cpu{};
  auto set =
      adapters::attach_lora(cpu, m, {.rank = 4, .alpha = 4, .target_modules = {"q_proj"}}, 1);
  auto s =
      train::open_cuda_session(cpu, m, set, cuda::base_storage::dense, cuda::precision::f32, 8, 64);
  const std::vector<std::size_t> pick{0, 1, 2, 3};
  const auto b = train::detail::pair_batch(a.train, pick, a.pad_id);
  const auto gpu = train::cuda_detail::gpu_logprobs(*s.gpu, b, a.pad_id, true);
  const auto gpu_off = train::cuda_detail::gpu_logprobs(*s.gpu, b, a.pad_id, false);
  model::workspace<float> ws;
  const auto ref = objectives::sequence_logprobs(cpu, m, ws, b);
  for (std::size_t i = 0; i < ref.size(); ++i)
    std::printf("     row %zu  log p cpu %.6f  cuda %.6f  cuda (adapters off) %.6f\n", i, ref[i],
                gpu[i], gpu_off[i]);
  check("session: base sequence log-probs, max relative difference", max_rel(gpu, ref), 1e-5);
  check("session: adapters off (B = 0) changes nothing, max relative difference",
        max_rel(gpu_off, gpu), 1e-6);
}

template <class Method, class B>
auto run_one(const model::causal_lm<float>& base, const adapt_data& d, B be,
             const std::filesystem::path& out) {
  std::filesystem::remove_all(out);
  auto p = pipeline(adapt<Method>{adapt_params(), d});
  return p.run(base, be, {.out = out, .seed = 7});
}

template <class Method>
void compare(const char* name, const model::causal_lm<float>& base, const adapt_data& d,
             const std::filesystem::path& out, bool cpu_only) {
  auto cpu = run_one<Method>(base, d, backend::simd<>{}, out / (std::string(name) + "_simd"));
  check(std::string(name) + " simd: pipeline passed", cpu.passed ? 0.0 : 1.0, 0.0);
  const auto cc = read_curve(out / (std::string(name) + "_simd") / "01_adapt" / "loss.csv");
  // The CPU reference trains: the mean loss of the last 3 steps is below the first step's.
  const double late = (cc.loss.at(9) + cc.loss.at(10) + cc.loss.at(11)) / 3;
  check(std::string(name) + " simd: late loss / first loss", late / cc.loss.at(0), 0.95);
  if (cpu_only) return;

  auto gpu = run_one<Method>(base, d, backend::cuda{}, out / (std::string(name) + "_cuda"));
  check(std::string(name) + " cuda: pipeline passed", gpu.passed ? 0.0 : 1.0, 0.0);
  if (!gpu.passed || !cpu.passed) {
    if (!gpu.stages.empty()) std::printf("cuda stage error: %s\n", gpu.stages[0].error.c_str());
    return;
  }
  compare_curves(name, cc,
                 read_curve(out / (std::string(name) + "_cuda") / "01_adapt" / "loss.csv"));
  std::size_t mods = 0;
  check(std::string(name) + ": LoRA A, relative norm difference",
        adapter_diff(*gpu.model, *cpu.model, false, mods), 2e-3);
  check(std::string(name) + ": LoRA B, relative norm difference",
        adapter_diff(*gpu.model, *cpu.model, true, mods), 2e-3);
  check(std::string(name) + ": adapted modules (4 layers x 5 targets) - 20",
        std::abs(double(mods) - 20.0), 0.0);
  for (const char* metric : {"perplexity", "regression_delta", "train_val_gap"}) {
    const auto a = gpu.stages[0].metrics.get(std::string_view(metric));
    const auto b = cpu.stages[0].metrics.get(std::string_view(metric));
    const double diff = a && b ? std::abs(*a - *b) / std::max(std::abs(*b), 1e-3) : INFINITY;
    check(std::string(name) + ": metric " + metric + " (CPU-measured), relative difference", diff,
          2e-4);
  }
  const auto ea = gpu.stages[0].metrics.get(std::string_view("exact_match"));
  const auto eb = cpu.stages[0].metrics.get(std::string_view("exact_match"));
  check(std::string(name) + ": exact_match, difference", ea && eb ? std::abs(*ea - *eb) : INFINITY,
        0.0);
  for (const char* f : {"adapter/adapter_model.safetensors", "checkpoint.safetensors", "loss.svg"})
    check(std::string(name) + " cuda: artifact " + f + " written",
          std::filesystem::exists(out / (std::string(name) + "_cuda") / "01_adapt" / f) ? 0.0 : 1.0,
          0.0);
}

// ---- full fine-tuning

// max over the parameters of ‖x_k − y_k‖ / ‖y_k‖ (x, y: the parameters' values in order);
// `worst` names the parameter where it is reached.
double max_rel_norm(const std::vector<std::vector<float>>& x,
                    const std::vector<std::vector<float>>& y, const std::vector<std::string>& names,
                    std::string& worst) {
  if (x.size() != y.size() || x.empty()) return INFINITY;
  double m = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    if (x[k].size() != y[k].size()) return INFINITY;
    double num = 0, den = 0;
    for (std::size_t i = 0; i < x[k].size(); ++i)
      num += (double(x[k][i]) - y[k][i]) * (double(x[k][i]) - y[k][i]),
          den += double(y[k][i]) * y[k][i];
    const double r = den > 0 ? std::sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
    if (r > m || worst.empty()) m = std::max(m, r), worst = names[k];
  }
  return m;
}

// Gradients of every weight for one padded micro-batch: the GPU full fine-tuning session
// against forge's CPU backward (mean cross-entropy over the kept targets).
// f32: both sides compute in f32 with f32 accumulation; they differ in summation order
// (cuBLAS vs Eigen), in the RoPE angles (f32 on the GPU as transformers does, double on the
// CPU) and in the attention's softmax form, each a relative 1e-7 per operation. Through
// 4 layers and sums over ~100 tokens the gradients agree to ~1e-6 relative; bound 1e-4 per
// tensor (relative norm). bf16: storage rounding of 2^-9 per value in every activation and
// weight, compounded through the layers: bound 5e-2.
void compare_full_grads(const model::causal_lm<float>& base, const adapt_data& d, bool tied) {
  const backend::simd<> cpu{};
  auto m = base;
  if (tied) {  // the same extents with the head tied to the embedding
    auto c = base.config;
    c.tie_word_embeddings = true;
    m = model::random_model<float>(c, {.seed = 5, .initializer_range = 0.05});
  }
  const std::string tag = tied ? "full grads (tied head)" : "full grads";
  const std::vector<std::size_t> pick{0, 1, 2};
  const auto b = objectives::make_batch(d.train, pick, d.pad_id);
  auto cm = m;
  auto cps = train::model_parameters(cm);
  model::workspace<float> ws;
  const double cl = objectives::sft_forward_loss(cpu, cm, ws, b, 1.0, true);
  model::backward(cpu, cm, ws);
  std::vector<std::vector<float>> cg;
  std::vector<std::string> names;
  for (const auto& p : cps) cg.emplace_back(p.grad.begin(), p.grad.end()), names.push_back(p.name);
  for (auto prec : {cuda::precision::f32, cuda::precision::bf16}) {
    auto gm = m;
    auto s = train::open_cuda_full_session(gm, train::model_parameters(gm), prec, b.batch,
                                           train::cuda_detail::padded_seq(b.seq));
    std::vector<std::int64_t> ids, targets;
    train::cuda_detail::batch_arrays(b, train::cuda_detail::padded_seq(b.seq), d.pad_id, ids,
                                     targets);
    std::vector<float> w(ids.size(), 0.0f);
    for (std::size_t t = 0; t < w.size(); ++t)
      if (targets[t] != data::ignore_index) w[t] = float(1.0 / double(b.targets()));
    s.gpu->zero_grad();
    const double gl = s.gpu->forward_backward(b.batch, train::cuda_detail::padded_seq(b.seq),
                                              ids.data(), targets.data(), w.data());
    std::vector<std::vector<float>> gg;
    for (std::size_t k = 0; k < s.params.size(); ++k) {
      gg.emplace_back(s.params[k].value.size());
      s.gpu->get_grad(s.where[k].first, s.where[k].second, gg.back().data());
    }
    const bool f32 = prec == cuda::precision::f32;
    const std::string t = tag + (f32 ? " f32" : " bf16");
    std::string worst;
    const double rel = max_rel_norm(gg, cg, names, worst);
    check(t + ": loss, relative difference", std::abs(gl - cl) / cl, f32 ? 1e-5 : 2e-2);
    check(t + ": " + std::to_string(names.size()) + " tensors, max rel. norm diff (" +
              worst.substr(0, 18) + ")",
          rel, f32 ? 1e-4 : 5e-2);
  }
}

std::vector<std::vector<float>> values_of(model::causal_lm<float>& m,
                                          std::vector<std::string>* names = nullptr) {
  std::vector<std::vector<float>> v;
  m.for_each_parameter([&](const model::parameter<float>& p) {
    v.emplace_back(p.value.begin(), p.value.end());
    if (names) names->push_back(p.name);
  });
  return v;
}

// Δ = after − before, tensor by tensor.
std::vector<std::vector<float>> updates(const std::vector<std::vector<float>>& after,
                                        const std::vector<std::vector<float>>& before) {
  auto d = after;
  for (std::size_t k = 0; k < d.size(); ++k)
    for (std::size_t i = 0; i < d[k].size(); ++i) d[k][i] -= before[k][i];
  return d;
}

// A few AdamW steps of train_sft_cuda_full against train_sft's full fine-tuning (the same
// data order, accumulation, clipping, schedule, weight decay): per-step loss and gradient norm,
// and each tensor's update Δ = θ_6 − θ_0 (the update, not θ, so the bound says something about
// the training). Once with every weight trained, once with a subset (frozen weights must not
// move at all). Then a GPU run halted at step 3 and resumed from its checkpoint must end where
// the uninterrupted GPU run ends. Bounds: per-step loss and norm 2e-4 relative and updates 2e-3
// relative norm, as the LoRA comparison (same arithmetic; AdamW's m/√v amplifies the rounding
// differences of entries with tiny gradients); frozen weights and the resumed run exact (the
// GPU's reductions run in a fixed order and the checkpoint holds the f32 masters and moments).
void compare_full_steps(const model::causal_lm<float>& base, const adapt_data& d,
                        const std::filesystem::path& out) {
  const backend::simd<> cpu{};
  std::vector<std::string> names;
  auto b0 = base;
  const auto before = values_of(b0, &names);
  for (const std::string& pattern :
       {std::string(".*"),
        std::string("model\\.layers\\.[13]\\..*|model\\.norm\\.weight|lm_head\\.weight")}) {
    const bool all = pattern == ".*";
    const std::string tag = all ? "full steps (all weights)" : "full steps (subset)";
    train::trainer_options o{.max_steps = 6,
                             .batch_size = 4,
                             .grad_accum = 2,
                             .max_grad_norm = 1.0,
                             .optim = {.lr = 1e-3, .weight_decay = 0.01},
                             .sched = {.warmup_steps = 1},
                             .seed = 3,
                             .pad_id = d.pad_id};
    auto cm = base;
    const auto cr =
        train::train_sft(cpu, cm, train::model_parameters(cm, pattern), nullptr, d.train, d.val, o);
    auto gm = base;
    const auto gr = train::train_sft_cuda_full(cpu, gm, train::model_parameters(gm, pattern),
                                               d.train, d.val, o);
    curve cc, gc;
    for (const auto& e : cr.log) cc.loss.push_back(e.loss), cc.norm.push_back(e.grad_norm);
    for (const auto& e : gr.log) gc.loss.push_back(e.loss), gc.norm.push_back(e.grad_norm);
    compare_curves(tag, cc, gc);
    const auto cu = updates(values_of(cm), before), gu = updates(values_of(gm), before);
    std::vector<std::vector<float>> cu_t, gu_t, frozen_g;
    std::vector<std::string> tn;
    std::size_t frozen = 0;
    double frozen_moved = 0;
    const std::regex re(pattern);
    for (std::size_t k = 0; k < names.size(); ++k) {
      if (std::regex_match(names[k], re)) {
        cu_t.push_back(cu[k]), gu_t.push_back(gu[k]), tn.push_back(names[k]);
      } else {
        ++frozen;
        for (std::size_t i = 0; i < gu[k].size(); ++i)
          frozen_moved = std::max(frozen_moved, double(std::abs(gu[k][i])));
      }
    }
    std::string worst;
    check(tag + ": updates of " + std::to_string(tn.size()) + " tensors, max rel. norm diff",
          max_rel_norm(gu_t, cu_t, tn, worst), 2e-3);
    if (!all) {
      check(tag + ": " + std::to_string(frozen) + " frozen tensors, largest change", frozen_moved,
            0.0);
      continue;
    }
    // Halted at step 3 and resumed (GPU both times) against the uninterrupted GPU run.
    auto o2 = o;
    o2.out_dir = out / "full_resume";
    std::filesystem::remove_all(o2.out_dir);
    o2.halt_after = 3;
    auto hm = base;
    train::train_sft_cuda_full(cpu, hm, train::model_parameters(hm), d.train, d.val, o2);
    o2.halt_after = 0;
    o2.resume = true;
    auto rm = base;
    const auto rr =
        train::train_sft_cuda_full(cpu, rm, train::model_parameters(rm), d.train, d.val, o2);
    check("full steps: resumed run resumed", rr.resumed ? 0.0 : 1.0, 0.0);
    std::string w2;
    check("full steps: halted + resumed vs uninterrupted GPU run, max rel. norm diff",
          max_rel_norm(values_of(rm), values_of(gm), names, w2), 0.0);
  }
}

template <class B>
auto run_full(const model::causal_lm<float>& base, const adapt_data& d, B be,
              const std::filesystem::path& out) {
  std::filesystem::remove_all(out);
  auto p = pipeline(adapt<full_finetune>{{.max_steps = 12,
                                          .batch_size = 4,
                                          .grad_accum = 2,
                                          .learning_rate = 5e-4,
                                          .warmup_steps = 2,
                                          .max_grad_norm = 1.0,
                                          .eval_every = 6},
                                         d});
  return p.run(base, be, {.out = out, .seed = 7});
}

// adapt<full_finetune> through the pipeline on both backends: per-step curves, the update of
// every weight, the CPU-measured metrics and the artifacts (bounds as compare()'s).
void compare_full_pipeline(const model::causal_lm<float>& base, const adapt_data& d,
                           const std::filesystem::path& out, bool cpu_only) {
  auto cpu = run_full(base, d, backend::simd<>{}, out / "full_simd");
  check("full_finetune simd: pipeline passed", cpu.passed ? 0.0 : 1.0, 0.0);
  const auto cc = read_curve(out / "full_simd" / "01_adapt" / "loss.csv");
  const double late = (cc.loss.at(9) + cc.loss.at(10) + cc.loss.at(11)) / 3;
  check("full_finetune simd: late loss / first loss", late / cc.loss.at(0), 0.95);
  if (cpu_only) return;
  auto gpu = run_full(base, d, backend::cuda{}, out / "full_cuda");
  check("full_finetune cuda: pipeline passed", gpu.passed ? 0.0 : 1.0, 0.0);
  if (!gpu.passed || !cpu.passed) {
    if (!gpu.stages.empty()) std::printf("cuda stage error: %s\n", gpu.stages[0].error.c_str());
    return;
  }
  compare_curves("full_finetune", cc, read_curve(out / "full_cuda" / "01_adapt" / "loss.csv"));
  std::vector<std::string> names;
  auto b0 = base;
  const auto before = values_of(b0, &names);
  std::string worst;
  check("full_finetune: update of every weight, max rel. norm diff",
        max_rel_norm(updates(values_of(*gpu.model), before), updates(values_of(*cpu.model), before),
                     names, worst),
        2e-3);
  for (const char* metric : {"perplexity", "regression_delta", "train_val_gap"}) {
    const auto a = gpu.stages[0].metrics.get(std::string_view(metric));
    const auto b = cpu.stages[0].metrics.get(std::string_view(metric));
    const double diff = a && b ? std::abs(*a - *b) / std::max(std::abs(*b), 1e-3) : INFINITY;
    check(std::string("full_finetune: metric ") + metric + " (CPU-measured), relative difference",
          diff, 2e-4);
  }
  const auto ea = gpu.stages[0].metrics.get(std::string_view("exact_match"));
  const auto eb = cpu.stages[0].metrics.get(std::string_view("exact_match"));
  check("full_finetune: exact_match, difference", ea && eb ? std::abs(*ea - *eb) : INFINITY, 0.0);
  for (const char* f : {"model/model.safetensors", "checkpoint.safetensors", "loss.svg"})
    check(std::string("full_finetune cuda: artifact ") + f + " written",
          std::filesystem::exists(out / "full_cuda" / "01_adapt" / f) ? 0.0 : 1.0, 0.0);
}

// ---- KTO

template <class B>
auto run_kto(const model::causal_lm<float>& base, const align_data& a, B be,
             const std::string& reference, const std::filesystem::path& out) {
  std::filesystem::remove_all(out);
  auto p = pipeline(align<kto<repr::dense_f32>>{{.beta = 0.1,
                                                 .desirable_weight = 1.0,
                                                 .undesirable_weight = 1.5,
                                                 .reference = reference,
                                                 .max_steps = 8,
                                                 .batch_size = 4,
                                                 .grad_accum = 2,
                                                 .learning_rate = 1e-3,
                                                 .eval_every = 4},
                                                a});
  return p.run(base, be, {.out = out, .seed = 13});
}

// align<kto> on both backends, with the reference cached and live: per-step curves (the KL
// estimate enters every step's loss), the adapters, the CPU-measured metrics. Bounds as
// compare_dpo's (the same arithmetic: GPU sequence log-probs into the CPU's loss code).
void compare_kto(const model::causal_lm<float>& base, const align_data& a,
                 const std::filesystem::path& out, bool cpu_only) {
  for (const std::string& reference : {std::string("cached"), std::string("live")}) {
    const std::string tag = "kto (" + reference + " reference)";
    auto cpu = run_kto(base, a, backend::simd<>{}, reference, out / ("kto_simd_" + reference));
    check(tag + " simd: pipeline passed", cpu.passed ? 0.0 : 1.0, 0.0);
    const auto cc = read_curve(out / ("kto_simd_" + reference) / "01_align" / "loss.csv");
    // The CPU reference learns: KTO's loss starts near 0.5·(w_d + w_u)/2 and falls.
    check(tag + " simd: last loss / first loss", cc.loss.back() / cc.loss.at(0), 0.99);
    if (cpu_only) continue;
    auto gpu = run_kto(base, a, backend::cuda{}, reference, out / ("kto_cuda_" + reference));
    check(tag + " cuda: pipeline passed", gpu.passed ? 0.0 : 1.0, 0.0);
    if (!gpu.passed || !cpu.passed) {
      for (const auto& st : gpu.stages) std::printf("cuda stage error: %s\n", st.error.c_str());
      continue;
    }
    compare_curves(tag, cc, read_curve(out / ("kto_cuda_" + reference) / "01_align" / "loss.csv"));
    std::size_t mods = 0;
    check(tag + ": LoRA A, relative norm difference",
          adapter_diff(*gpu.model, *cpu.model, false, mods), 2e-3);
    check(tag + ": LoRA B, relative norm difference",
          adapter_diff(*gpu.model, *cpu.model, true, mods), 2e-3);
    check(tag + ": adapter modules (4 layers x 7) - 28", std::abs(double(mods) - 28.0), 0.0);
    for (const char* metric : {"preference_accuracy", "reward_margin", "kl_to_reference"}) {
      const auto x = gpu.stages.at(0).metrics.get(std::string_view(metric));
      const auto y = cpu.stages.at(0).metrics.get(std::string_view(metric));
      const double diff = x && y ? std::abs(*x - *y) / std::max(std::abs(*y), 1e-3) : INFINITY;
      check(tag + ": metric " + metric + " (CPU-measured), relative difference", diff, 2e-4);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR OUT_DIR [--cpu]\n", argv[0]);
    return 2;
  }
  const bool cpu_only = argc > 3 && std::string(argv[3]) == "--cpu";
  try {
    const auto base = io::load_hf_checkpoint<float>(argv[1]);
    const auto d = make_data(base.config.vocab_size);
    refusals(base);
    compare<lora>("lora", base, d, argv[2], cpu_only);
    compare<qlora>("qlora", base, d, argv[2], cpu_only);
    if (!cpu_only) {
      compare_full_grads(base, d, false);
      compare_full_grads(base, d, true);
      compare_full_steps(base, d, argv[2]);
    }
    // The CPU half (CI, no GPU) keeps to the runs it had: full fine-tuning and KTO on the CPU
    // are tested in tests/adapters and tests/align, and CI's time is shared.
    if (!cpu_only) compare_full_pipeline(base, d, argv[2], cpu_only);
    align_data a;
    a.train = pairs(5, 32, base.config.vocab_size);
    a.val = pairs(6, 8, base.config.vocab_size);
    a.pad_id = 4;
    a.name = "shifted-copy preferences";
    if (!cpu_only) compare_forward(base, a);
    compare_dpo(base, d, a, argv[2], cpu_only);
    if (!cpu_only) compare_kto(base, a, argv[2], cpu_only);
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
