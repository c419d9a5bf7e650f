#pragma once
// The Adapt stage's method policies for forge's pipeline: `adapt<lora>`, `adapt<dora>`,
// `adapt<qlora>` and `adapt<full_finetune>` — one word to swap for an ablation. Each trains
// with SFT on `adapt_data`, measures the Adapt metrics (exact match and calibration on the
// held-out task, validation perplexity, regression delta on general held-out text, the
// train/validation loss gap) and writes into the stage's artifact directory:
//   adapter/  (PEFT layout; LoRA, DoRA, QLoRA)   or   model/  (full fine-tuning, HF layout)
//   loss.csv, loss.svg, checkpoint.safetensors (the resumable training state)
// The model flowing through the pipeline is a model::causal_lm<float>; LoRA-family methods
// return it with their adapters attached (unmerged), QLoRA with NF4 base projections.
// lora, qlora and full_finetune also run on backend::cuda: the adapters (or, for full
// fine-tuning, the weights) train on the GPU (one .cu file of the program includes
// forge/backend/cuda/pipeline_impl.cuh; docs/backends.md), evaluation stays on the CPU.

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/qlora.hpp"
#include "forge/eval/task.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/train/cuda_sft.hpp"
#include "forge/train/trainer.hpp"

namespace forge::model {

/// SHA-256 (hex) of a model's content: config-implied parameters, quantized bases and the
/// parameters of attached LoRA/DoRA adapters, in Hugging Face module order.
inline std::string model_digest(const causal_lm<float>& m) {
  govern::sha256 h;
  m.for_each_parameter([&](const parameter<float>& p) {
    h.update(p.name.data(), p.name.size()).update(p.value.data(), p.value.size() * sizeof(float));
  });
  for (auto [key, lin] : adapters::linear_layers(const_cast<causal_lm<float>&>(m))) {
    if (auto* q = dynamic_cast<const adapters::quantized_weight*>(lin->base.get()))
      for (auto s : q->storage()) h.update(s.data(), s.size());
    for (auto& a : lin->adapters)
      if (auto* l = dynamic_cast<const adapters::lora_module<float>*>(a.get())) {
        h.update(key.data(), key.size());
        for (auto* v : {&l->A, &l->B, &l->m}) h.update(v->data(), v->size() * sizeof(float));
      }
  }
  if (auto* t = dynamic_cast<const adapters::quantized_table*>(m.embed_base.get())) {
    h.update("model.embed_tokens", 18);
    for (auto s : t->source()->storage()) h.update(s.data(), s.size());
  }
  return h.hex_digest();
}

}  // namespace forge::model

namespace forge {

/// What an Adapt stage trains and measures on.
struct adapt_data {
  std::vector<data::sft_example> train{};    ///< SFT examples (labels -100 where not trained)
  std::vector<data::sft_example> val{};      ///< validation examples (loss, perplexity)
  std::vector<eval::task_item> task{};       ///< held-out prompts with exact answers
  std::vector<data::sft_example> general{};  ///< general held-out text (regression delta)
  std::vector<std::int64_t> eos{};           ///< tokens that end a generated answer
  std::int32_t pad_id = 0;                   ///< padding token of batches
  std::string name = "sft data";             ///< how reports name it
  /// SHA-256 of every split, for the stage report.
  std::string sha256() const {
    govern::sha256 h;
    for (const auto* s : {&train, &val, &general})
      for (const auto& e : *s)
        h.update(e.input_ids.data(), e.input_ids.size() * 4)
            .update(e.labels.data(), e.labels.size() * 4);
    for (const auto& t : task)
      h.update(t.prompt.data(), t.prompt.size() * 8).update(t.answer.data(), t.answer.size() * 8);
    return h.hex_digest();
  }
};

/// Parameters of the LoRA-family methods: PEFT's LoraConfig defaults for the adapter and
/// transformers' TrainingArguments defaults for training (learning rate 5e-5, no weight
/// decay, linear schedule, clipping at 1, batch 8).
struct lora_params {
  int rank = 8;
  double alpha = 8;
  double dropout = 0;
  std::vector<std::string> target_modules{"q_proj", "v_proj"};  ///< PEFT's Llama default
  bool use_rslora = false;
  std::int64_t max_steps = 100;
  std::int64_t batch_size = 8;
  std::int64_t grad_accum = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0;
  std::string schedule = "linear";  ///< constant, linear or cosine
  std::int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;
  std::int64_t eval_every = 0;  ///< 0: evaluate at the end only
  std::int64_t checkpoint_every = 0;
  bool eight_bit_optimizer = false;
  bool show_progress = false;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(lora_params, rank, alpha, dropout, target_modules, use_rslora,
                                   max_steps, batch_size, grad_accum, learning_rate, weight_decay,
                                   schedule, warmup_steps, max_grad_norm, eval_every,
                                   checkpoint_every, eight_bit_optimizer)

/// Parameters of full fine-tuning: which parameters train (a full-match regex over Hugging
/// Face names) and the training settings.
struct full_finetune_params {
  std::string parameters = ".*";
  std::int64_t max_steps = 100;
  std::int64_t batch_size = 8;
  std::int64_t grad_accum = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0;
  std::string schedule = "linear";
  std::int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;
  std::int64_t eval_every = 0;
  std::int64_t checkpoint_every = 0;
  bool eight_bit_optimizer = false;
  bool show_progress = false;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(full_finetune_params, parameters, max_steps, batch_size,
                                   grad_accum, learning_rate, weight_decay, schedule, warmup_steps,
                                   max_grad_norm, eval_every, checkpoint_every, eight_bit_optimizer)

namespace adapters::detail {

/// The trainer settings of an Adapt stage; `comm` (the run's group, or null) spreads each
/// step's micro-batches over the ranks.
template <class P>
train::trainer_options trainer_options_of(const P& p, const std::filesystem::path& dir,
                                          std::uint64_t seed, std::int32_t pad,
                                          dist::communicator* comm = nullptr) {
  return {.max_steps = p.max_steps,
          .batch_size = p.batch_size,
          .grad_accum = p.grad_accum,
          .max_grad_norm = p.max_grad_norm,
          .optim = {.lr = p.learning_rate,
                    .weight_decay = p.weight_decay,
                    .eight_bit = p.eight_bit_optimizer},
          .sched = {.kind = train::parse_schedule_kind(p.schedule), .warmup_steps = p.warmup_steps},
          .eval_every = p.eval_every,
          .checkpoint_every = p.checkpoint_every,
          .out_dir = dir,
          .seed = seed,
          .pad_id = pad,
          .show_progress = p.show_progress,
          .comm = comm};
}

template <class Be, class P, class Save>
stage_result<model::causal_lm<float>> measure_adapt(Be be, const P& p, const adapt_data& d,
                                                    model::causal_lm<float> m, double ppl_before,
                                                    Save&& save);

/// Trains, measures every Adapt metric and writes the curves; `save` writes the weights.
template <class B, class P, class Save>
stage_result<model::causal_lm<float>> run_adapt(const stage_context<B>& ctx, const P& p,
                                                const adapt_data& d, model::causal_lm<float> m,
                                                std::vector<train::trainable<float>> params,
                                                lora_set<float>* set, double ppl_before,
                                                Save&& save) {
  const auto be = ctx.backend;
  train::evaluator<float> task_eval;
  if (!d.task.empty())
    task_eval = [&](model::causal_lm<float>& mm) {
      return std::map<std::string, double>{
          {"exact_match", eval::evaluate_task(be, mm, d.task, d.eos).exact_match}};
    };
  auto res = train::train_sft(be, m, std::move(params), set, d.train, d.val,
                              trainer_options_of(p, ctx.artifact_dir, ctx.seed, d.pad_id, ctx.comm),
                              task_eval);
  (void)res;
  // Over several ranks only rank 0 saves the weights (the runner records its files).
  return measure_adapt(be, p, d, std::move(m), ppl_before,
                       [&](model::causal_lm<float>& mm) -> std::vector<std::filesystem::path> {
                         if (ctx.writes()) return save(mm);
                         return {};
                       });
}

/// The Adapt metrics of a trained model (CPU backend `Be`), the saved weights, the curves.
template <class Be, class P, class Save>
stage_result<model::causal_lm<float>> measure_adapt(Be be, const P& p, const adapt_data& d,
                                                    model::causal_lm<float> m, double ppl_before,
                                                    Save&& save) {
  stage_result<model::causal_lm<float>> r{.model = {}};
  if (!d.task.empty()) {
    const auto s = eval::evaluate_task(be, m, d.task, d.eos);
    r.metrics.set(exact_match, s.exact_match).set(ece, s.ece).set(mce, s.mce);
  }
  if (!d.val.empty()) {
    const double vl = train::mean_loss(be, m, d.val, p.batch_size, d.pad_id);
    const std::size_t n =
        std::min<std::size_t>(d.train.size(), std::max<std::size_t>(d.val.size(), 64));
    const double tl = train::mean_loss(be, m, std::span(d.train).first(n), p.batch_size, d.pad_id);
    r.metrics.set(perplexity, eval::perplexity_from_loss(vl))
        .set(train_val_gap, eval::train_val_gap(tl, vl));
  }
  if (!d.general.empty()) {
    const double after = std::exp(train::mean_loss(be, m, d.general, p.batch_size, d.pad_id));
    r.metrics.set(regression_delta, eval::regression_delta(after, ppl_before));
  }
  r.artifacts = save(m);
  for (const char* f : {"loss.csv", "loss.svg", "checkpoint.safetensors"}) r.artifacts.push_back(f);
  r.data.push_back({d.name, d.sha256()});
  r.model = std::move(m);
  return r;
}

template <class B>
double general_ppl(B be, model::causal_lm<float>& m, const adapt_data& d, std::int64_t batch) {
  return d.general.empty() ? 0.0 : std::exp(train::mean_loss(be, m, d.general, batch, d.pad_id));
}

/// LoRA-family apply: optional NF4 base, adapters, training, PEFT adapter out.
template <class B>
stage_result<model::causal_lm<float>> apply_lora(const stage_context<B>& ctx, const lora_params& p,
                                                 const adapt_data& d, model::causal_lm<float> m,
                                                 bool dora, bool nf4) {
  const double before = general_ppl(ctx.backend, m, d, p.batch_size);
  if (nf4) quantize_base_nf4(ctx.backend, m);
  lora_config c{.rank = p.rank,
                .alpha = p.alpha,
                .dropout = p.dropout,
                .target_modules = p.target_modules,
                .use_rslora = p.use_rslora,
                .use_dora = dora};
  auto set = std::make_shared<lora_set<float>>(attach_lora(ctx.backend, m, c, ctx.seed));
  auto params = train::lora_parameters(*set);
  return run_adapt(ctx, p, d, std::move(m), std::move(params), set.get(), before,
                   [&](model::causal_lm<float>&) {
                     io::save_peft_adapter(*set, ctx.artifact_dir / "adapter");
                     return std::vector<std::filesystem::path>{"adapter/adapter_config.json",
                                                               "adapter/adapter_model.safetensors"};
                   });
}

/// LoRA-family apply on backend::cuda: the adapters train on the GPU (train/cuda_sft.hpp, f32,
/// the CPU's data order and optimizer); quantization, adapter initialisation and every
/// evaluation run on the CPU (backend::simd<>), so the same seed gives the same initial
/// adapters and the metrics are measured as on a CPU run.
/// (A template so that a program which never runs on backend::cuda never references the GPU
/// entry point.)
template <class B>
stage_result<model::causal_lm<float>> apply_lora_cuda(const stage_context<B>& ctx,
                                                      const lora_params& p, const adapt_data& d,
                                                      model::causal_lm<float> m, bool nf4) {
  const backend::simd<> cpu{};
  const double before = general_ppl(cpu, m, d, p.batch_size);
  if (nf4) quantize_base_nf4(cpu, m);
  lora_config c{.rank = p.rank,
                .alpha = p.alpha,
                .dropout = p.dropout,
                .target_modules = p.target_modules,
                .use_rslora = p.use_rslora};
  auto set = std::make_shared<lora_set<float>>(attach_lora(cpu, m, c, ctx.seed));
  train::evaluator<float> task_eval;
  if (!d.task.empty())
    task_eval = [&](model::causal_lm<float>& mm) {
      return std::map<std::string, double>{
          {"exact_match", eval::evaluate_task(cpu, mm, d.task, d.eos).exact_match}};
    };
  // The GPU trainer is one process: a group of several ranks reaches its clear refusal.
  dist::communicator* group = ctx.comm && ctx.comm->size() > 1 ? ctx.comm : nullptr;
  train::train_sft_cuda(cpu, m, *set, d.train, d.val,
                        trainer_options_of(p, ctx.artifact_dir, ctx.seed, d.pad_id, group),
                        {.base = nf4 ? cuda::base_storage::nf4 : cuda::base_storage::dense,
                         .storage = cuda::precision::f32},
                        task_eval);
  return measure_adapt(cpu, p, d, std::move(m), before, [&](model::causal_lm<float>&) {
    if (!ctx.writes()) return std::vector<std::filesystem::path>{};
    io::save_peft_adapter(*set, ctx.artifact_dir / "adapter");
    return std::vector<std::filesystem::path>{"adapter/adapter_config.json",
                                              "adapter/adapter_model.safetensors"};
  });
}

/// Full fine-tuning on backend::cuda: every weight on the GPU (train/cuda_sft.hpp's
/// train_sft_cuda_full, f32, the CPU's data order and optimizer), evaluation on the CPU
/// (backend::simd<>). A template for the same reason as apply_lora_cuda.
template <class B>
stage_result<model::causal_lm<float>> apply_full_cuda(const stage_context<B>& ctx,
                                                      const full_finetune_params& p,
                                                      const adapt_data& d,
                                                      model::causal_lm<float> m) {
  const backend::simd<> cpu{};
  const double before = general_ppl(cpu, m, d, p.batch_size);
  auto params = train::model_parameters(m, p.parameters);
  train::evaluator<float> task_eval;
  if (!d.task.empty())
    task_eval = [&](model::causal_lm<float>& mm) {
      return std::map<std::string, double>{
          {"exact_match", eval::evaluate_task(cpu, mm, d.task, d.eos).exact_match}};
    };
  train::train_sft_cuda_full(cpu, m, std::move(params), d.train, d.val,
                             trainer_options_of(p, ctx.artifact_dir, ctx.seed, d.pad_id),
                             cuda::precision::f32, task_eval);
  return measure_adapt(cpu, p, d, std::move(m), before, [&](model::causal_lm<float>& mm) {
    io::save_hf_checkpoint(mm, ctx.artifact_dir / "model");
    return std::vector<std::filesystem::path>{"model/config.json", "model/model.safetensors"};
  });
}

}  // namespace adapters::detail

/// LoRA (Hu et al. 2021) on a dense base: `adapt<lora>{{.rank = 16, .alpha = 32}, data, gate}`.
struct lora {
  static constexpr std::string_view name = "lora";
  using params = lora_params;
  using data = adapt_data;
  using accepts = repr::dense_f32;
  using produces = repr::with_lora<repr::dense_f32>;
  using backends = all_backends;  ///< cuda: training on the GPU, evaluation on the CPU
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (std::same_as<B, backend::cuda>)
      return adapters::detail::apply_lora_cuda(ctx, p, d, std::move(m), false);
    else
      return adapters::detail::apply_lora(ctx, p, d, std::move(m), false, false);
  }
};

/// DoRA (Liu et al. 2024): LoRA with a learned magnitude per output row.
struct dora {
  static constexpr std::string_view name = "dora";
  using params = lora_params;
  using data = adapt_data;
  using accepts = repr::dense_f32;
  using produces = repr::with_lora<repr::dense_f32>;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return adapters::detail::apply_lora(ctx, p, d, std::move(m), true, false);
  }
};

/// QLoRA (Dettmers et al. 2023): the base projections quantized to NF4 with double
/// quantization, LoRA in f32 on top.
struct qlora {
  static constexpr std::string_view name = "qlora";
  using params = lora_params;
  using data = adapt_data;
  using accepts = repr::dense_f32;
  using produces = repr::nf4_lora;
  using backends = all_backends;  ///< cuda: NF4 base on the GPU, evaluation on the CPU
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (std::same_as<B, backend::cuda>)
      return adapters::detail::apply_lora_cuda(ctx, p, d, std::move(m), true);
    else
      return adapters::detail::apply_lora(ctx, p, d, std::move(m), false, true);
  }
};

/// LoRA on a frozen base of representation `Base` — dense or quantized (int4 after GPTQ,
/// NF4) — and on top of any adapters an earlier stage attached (kept, frozen). The Adapt
/// method for the orders `research_order` studies where Adapt is not first: Compress → Adapt
/// (`lora_over<repr::int4_g128>`), Align → Adapt (`lora_over<repr::dense_f32>`).
template <Representation Base>
struct lora_over {
  static constexpr std::string_view name = "lora";
  using params = lora_params;
  using data = adapt_data;
  using accepts = representations<Base, repr::with_lora<Base>>;
  using produces = repr::with_lora<Base>;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    const double before = adapters::detail::general_ppl(ctx.backend, m, d, p.batch_size);
    adapters::lora_config c{.rank = p.rank,
                            .alpha = p.alpha,
                            .dropout = p.dropout,
                            .target_modules = p.target_modules,
                            .use_rslora = p.use_rslora};
    auto set = std::make_shared<adapters::lora_set<float>>(
        adapters::attach_lora_on_top(ctx.backend, m, c, ctx.seed));
    auto params = train::lora_parameters(*set);
    return adapters::detail::run_adapt(ctx, p, d, std::move(m), std::move(params), set.get(),
                                       before, [&](model::causal_lm<float>&) {
                                         io::save_peft_adapter(*set, ctx.artifact_dir / "adapter");
                                         return std::vector<std::filesystem::path>{
                                             "adapter/adapter_config.json",
                                             "adapter/adapter_model.safetensors"};
                                       });
  }
};

/// Full fine-tuning of all (or the selected) parameters; writes the model in HF layout.
struct full_finetune {
  static constexpr std::string_view name = "full_finetune";
  using params = full_finetune_params;
  using data = adapt_data;
  using accepts = repr::dense_f32;
  using produces = repr::dense_f32;
  using backends = all_backends;  ///< cuda: every weight trains on the GPU, evaluation on the CPU
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (std::same_as<B, backend::cuda>) {
      return adapters::detail::apply_full_cuda(ctx, p, d, std::move(m));
    } else {
      const double before = adapters::detail::general_ppl(ctx.backend, m, d, p.batch_size);
      auto params = train::model_parameters(m, p.parameters);
      return adapters::detail::run_adapt(ctx, p, d, std::move(m), std::move(params), nullptr,
                                         before, [&](model::causal_lm<float>& mm) {
                                           io::save_hf_checkpoint(mm, ctx.artifact_dir / "model");
                                           return std::vector<std::filesystem::path>{
                                               "model/config.json", "model/model.safetensors"};
                                         });
    }
  }
};

}  // namespace forge
