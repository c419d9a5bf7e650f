#pragma once
// The Align stage's method policies: `align<dpo<>>`, `align<cdpo<>>`, `align<ipo<>>`,
// `align<hinge<>>`, `align<robust_dpo<>>`, `align<simpo<>>`, `align<orpo<>>`, `align<kto<>>`
// and `align<grpo<>>` — one word to swap for an ablation. Each is a template over the frozen
// base representation `Base` (repr::nf4 by default — the paper's order puts Align after
// Compress and QLoRA): it accepts `Base` and `with_lora<Base>` and produces `with_lora<Base>`
// (a method declares one produced representation, so the base is a template argument:
// `align<dpo<repr::int4_g128>>` after a GPTQ stage, `align<dpo<repr::dense_f32>>` on a dense
// model). Base must be dense_f32, int4_group<G> or nf4.
//
// apply() attaches a fresh LoRA set (PEFT defaults unless the parameters say otherwise) on
// top of whatever adapters the input carries — an SFT adapter from Adapt stays, frozen, part
// of the reference — trains it with the method's objective (train/preference_trainer.hpp or,
// for GRPO, train/grpo.hpp), and measures the Align metrics:
//   preference_accuracy, reward_margin   on the held-out pairs (train pairs if none)
//   kl_to_reference                      mean per-token KL to the input model on those pairs
//   helpfulness_delta                    task exact match after − before (needs `task`)
//   refusal_accuracy, false_refusal_rate, jailbreak_resistance   greedy answers to `safety`
//                                        scored by eval::is_refusal (needs encode/decode)
// Artifacts: adapter/ (the alignment adapter, PEFT layout) and checkpoint.safetensors (the
// resumable state); loss.csv and loss.svg for the offline methods.
//
// The pairwise methods (dpo, cdpo, robust_dpo, ipo, hinge, simpo, orpo) and kto also run on
// backend::cuda: the adapters train on the GPU (train/cuda_preference.hpp; one .cu file of the
// program includes forge/backend/cuda/pipeline_impl.cuh), every metric is measured on the CPU
// (backend::simd<>). grpo is CPU-only.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/methods.hpp"  // model::model_digest, which the pipeline runner needs
#include "forge/adapters/qlora.hpp"
#include "forge/eval/safety.hpp"
#include "forge/eval/task.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/peft_adapter.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/train/cuda_preference.hpp"
#include "forge/train/grpo.hpp"
#include "forge/train/preference_trainer.hpp"

namespace forge {

/// What an Align stage trains and measures on.
struct align_data {
  std::vector<data::preference_example> train{};  ///< preference pairs (offline methods)
  std::vector<data::preference_example> val{};    ///< held-out pairs (accuracy, margin, KL)
  std::vector<eval::safety_item> safety{};        ///< harmful, benign and jailbreak prompts
  std::vector<eval::task_item> task{};            ///< exact-answer items (helpfulness delta)
  std::vector<std::int64_t> eos{};                ///< tokens that end a generated answer
  std::int32_t pad_id = 0;
  /// Prompt text → token ids with the chat template's generation prompt (for safety).
  std::function<std::vector<std::int64_t>(const std::string&)> encode_prompt{};
  /// Generated token ids → text (for safety).
  std::function<std::string(std::span<const std::int64_t>)> decode{};
  std::int64_t max_new_tokens = 32;  ///< safety answers are generated up to this length
  /// GRPO: prompts (token ids) and the verifiable reward of a completion.
  std::vector<std::vector<std::int64_t>> prompts{};
  train::reward_function reward{};
  std::string name = "preference data";  ///< how reports name it
  /// SHA-256 of the pairs, safety prompts, task items and GRPO prompts.
  std::string sha256() const {
    govern::sha256 h;
    for (const auto* s : {&train, &val})
      for (const auto& e : *s)
        for (const auto* v : {&e.prompt, &e.chosen, &e.rejected})
          h.update(v->data(), v->size() * 4).update("|", 1);
    for (const auto& it : safety)
      h.update(it.prompt.data(), it.prompt.size()).update(it.should_refuse ? "1" : "0", 1);
    for (const auto& t : task)
      h.update(t.prompt.data(), t.prompt.size() * 8).update(t.answer.data(), t.answer.size() * 8);
    for (const auto& p : prompts) h.update(p.data(), p.size() * 8).update("|", 1);
    return h.hex_digest();
  }
};

/// Parameters of the offline preference methods: the loss (TRL's DPOConfig / CPOConfig /
/// ORPOConfig / KTOConfig defaults), the LoRA adapter (PEFT's defaults but all linear
/// layers) and training.
struct align_params {
  double beta = 0.1;             ///< β (λ of ORPO; SimPO's default is 2.0 — set it)
  double label_smoothing = 0.0;  ///< ε: cdpo and robust_dpo need 0 < ε < 0.5
  double simpo_gamma = 0.5;      ///< γ of SimPO
  double sft_weight = 0.0;  ///< α·NLL(chosen) added: CPO's cpo_alpha (SimPO), TRL's rpo_alpha
  double desirable_weight = 1.0, undesirable_weight = 1.0;  ///< KTO
  std::string reference = "cached";                         ///< cached or live
  int rank = 8;
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> target_modules{"all-linear"};
  std::int64_t max_steps = 100;
  std::int64_t batch_size = 8;
  std::int64_t grad_accum = 1;
  double learning_rate = 5e-6;
  double weight_decay = 0;
  std::string schedule = "linear";
  std::int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;
  std::int64_t eval_every = 0;
  std::int64_t checkpoint_every = 0;
  bool show_progress = false;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(align_params, beta, label_smoothing, simpo_gamma, sft_weight,
                                   desirable_weight, undesirable_weight, reference, rank, alpha,
                                   dropout, target_modules, max_steps, batch_size, grad_accum,
                                   learning_rate, weight_decay, schedule, warmup_steps,
                                   max_grad_norm, eval_every, checkpoint_every)

/// Parameters of GRPO (TRL's GRPOConfig defaults, β = 0.04) and its LoRA adapter.
struct grpo_params {
  std::int64_t max_steps = 100;
  std::int64_t prompts_per_step = 4;
  std::int64_t num_generations = 8;
  std::int64_t num_iterations = 1;
  std::int64_t max_new_tokens = 32;
  double temperature = 1.0;
  double beta = 0.04;
  double epsilon = 0.2;
  double epsilon_high = 0.2;
  int rank = 8;
  double alpha = 16;
  std::vector<std::string> target_modules{"all-linear"};
  double learning_rate = 1e-6;
  double max_grad_norm = 1.0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(grpo_params, max_steps, prompts_per_step, num_generations,
                                   num_iterations, max_new_tokens, temperature, beta, epsilon,
                                   epsilon_high, rank, alpha, target_modules, learning_rate,
                                   max_grad_norm)

namespace align_detail {

template <class R>
inline constexpr bool is_align_base_v =
    std::is_same_v<R, repr::dense_f32> || std::is_same_v<R, repr::nf4>;
template <std::size_t G>
inline constexpr bool is_align_base_v<repr::int4_group<G>> = true;

/// Checks at run time that `m`'s decoder projections are stored as `Base` says.
template <class Base>
void check_base(model::causal_lm<float>& m) {
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (key == "lm_head") continue;
    const bool quantized = bool(lin->base);
    const bool want = !std::is_same_v<Base, repr::dense_f32>;
    require(quantized == want, {.what = "the model's base does not match the method's Base",
                                .place = key,
                                .expected = std::string(Base::name),
                                .found = quantized ? "a quantized base" : "a dense weight"});
  }
}

/// Attaches a fresh LoRA set on top of any adapters already on `m` (kept, frozen).
template <class Bk>
std::shared_ptr<adapters::lora_set<float>> attach_on_top(Bk be, model::causal_lm<float>& m,
                                                         const adapters::lora_config& c,
                                                         std::uint64_t seed) {
  return std::make_shared<adapters::lora_set<float>>(adapters::attach_lora_on_top(be, m, c, seed));
}

/// Greedy answers to the safety prompts, scored by the refusal classifier.
template <class Bk>
eval::safety_scores safety_of(Bk be, model::causal_lm<float>& m, const align_data& d) {
  require(bool(d.encode_prompt) && bool(d.decode),
          {.what = "safety evaluation needs align_data.encode_prompt and decode",
           .place = "align_data"});
  return eval::evaluate_safety(d.safety, [&](const std::string& p) {
    auto g = model::generate(be, m, {d.encode_prompt(p)},
                             {.max_new_tokens = d.max_new_tokens, .eos_token_ids = d.eos});
    auto toks = g.tokens[0];
    while (!toks.empty() && std::find(d.eos.begin(), d.eos.end(), toks.back()) != d.eos.end())
      toks.pop_back();
    return d.decode(toks);
  });
}

/// The CPU backend a stage on `B` evaluates with: B itself, or backend::simd<> for cuda.
template <class B>
auto cpu_of(B b) {
  if constexpr (is_cpu_backend_v<B>)
    return b;
  else
    return backend::simd<>{};
}

/// The Align metrics other than those of the objective, and the artifacts; `be` is the CPU
/// backend they are measured on.
template <class B, class Be>
void measure(const stage_context<B>& ctx, Be be, model::causal_lm<float>& m, const align_data& d,
             adapters::lora_set<float>& set, double task_before,
             const std::optional<eval::safety_scores>& safety_before,
             stage_result<model::causal_lm<float>>& r) {
  const auto& pairs = d.val.empty() ? d.train : d.val;
  if (!pairs.empty())
    r.metrics.set(kl_to_reference, train::reference_kl(be, m, pairs, 8, d.pad_id, &set));
  if (!d.task.empty())
    r.metrics.set(helpfulness_delta,
                  eval::evaluate_task(be, m, d.task, d.eos).exact_match - task_before);
  if (!d.safety.empty()) {
    const auto s = safety_of(be, m, d);
    if (s.harmful) r.metrics.set(refusal_accuracy, s.refusal_accuracy);
    if (s.benign) r.metrics.set(false_refusal_rate, s.false_refusal_rate);
    if (s.jailbreaks) r.metrics.set(jailbreak_resistance, s.jailbreak_resistance);
    if (const auto& b = safety_before) {
      if (s.harmful) r.metrics.set(refusal_gain, s.refusal_accuracy - b->refusal_accuracy);
      if (s.benign)
        r.metrics.set(false_refusal_change, s.false_refusal_rate - b->false_refusal_rate);
      if (s.jailbreaks)
        r.metrics.set(jailbreak_resistance_gain, s.jailbreak_resistance - b->jailbreak_resistance);
    }
  }
  // Over several ranks only rank 0 writes (the runner records rank 0's files).
  if (ctx.writes()) io::save_peft_adapter(set, ctx.artifact_dir / "adapter");
  r.artifacts.push_back("adapter/adapter_config.json");
  r.artifacts.push_back("adapter/adapter_model.safetensors");
  r.data.push_back({d.name, d.sha256()});
}

/// Offline preference apply(): LoRA on top, train, measure.
template <class Base, class B>
stage_result<model::causal_lm<float>> apply_offline(const stage_context<B>& ctx,
                                                    const align_params& p, const align_data& d,
                                                    model::causal_lm<float> m,
                                                    train::preference_objective obj) {
  check_base<Base>(m);
  require(!d.train.empty(), {.what = "no preference pairs", .place = "align_data.train"});
  require(p.reference == "cached" || p.reference == "live", {.what = "unknown reference mode",
                                                             .place = "align_params.reference",
                                                             .expected = "cached or live",
                                                             .found = p.reference});
  const auto be = cpu_of(ctx.backend);
  const double task_before =
      d.task.empty() ? 0.0 : eval::evaluate_task(be, m, d.task, d.eos).exact_match;
  // The same safety prompts before training, so the gate can ask for a gain.
  std::optional<eval::safety_scores> safety_before;
  if (!d.safety.empty()) safety_before = safety_of(be, m, d);
  auto set = attach_on_top(
      be, m,
      {.rank = p.rank, .alpha = p.alpha, .dropout = p.dropout, .target_modules = p.target_modules},
      ctx.seed);
  train::preference_trainer_options o{
      .objective = obj,
      .reference =
          p.reference == "live" ? train::reference_mode::live : train::reference_mode::cached,
      .max_steps = p.max_steps,
      .batch_size = p.batch_size,
      .grad_accum = p.grad_accum,
      .max_grad_norm = p.max_grad_norm,
      .optim = {.lr = p.learning_rate, .weight_decay = p.weight_decay},
      .sched = {.kind = train::parse_schedule_kind(p.schedule), .warmup_steps = p.warmup_steps},
      .eval_every = p.eval_every,
      .checkpoint_every = p.checkpoint_every,
      .out_dir = ctx.artifact_dir,
      .seed = ctx.seed,
      .pad_id = d.pad_id,
      .show_progress = p.show_progress,
      .comm = ctx.comm};
  if constexpr (std::same_as<B, backend::cuda>) {
    // The GPU trainer is one process: a group of several ranks reaches its clear refusal.
    if (o.comm && o.comm->size() == 1) o.comm = nullptr;
    // The adapters train on the GPU; an NF4 base stays NF4 there unless earlier adapters
    // must be merged into it (then the merged weights are dense f32).
    std::size_t attached = 0;
    for (auto [key, lin] : adapters::linear_layers(m)) attached += lin->adapters.size();
    const bool nf4 = std::is_same_v<Base, repr::nf4> && attached == set->modules.size();
    train::train_preference_cuda(be, m, *set, d.train, d.val, o,
                                 {.base = nf4 ? cuda::base_storage::nf4 : cuda::base_storage::dense,
                                  .storage = cuda::precision::f32});
  } else {
    train::train_preference(be, m, train::lora_parameters(*set), set.get(), d.train, d.val, o);
  }
  stage_result<model::causal_lm<float>> r{.model = {}};
  const auto& pairs = d.val.empty() ? d.train : d.val;
  // Over several ranks each computes 1/N of the pairs' reference values and they are gathered
  // (the same values as one process's: one pair per forward).
  const auto cache = obj.needs_reference() ? train::compute_reference_cache(
                                                 be, m, pairs, false, d.pad_id, set.get(), ctx.comm)
                                           : train::reference_cache{};
  const auto s = train::evaluate_preferences(be, m, std::span(pairs), obj,
                                             obj.needs_reference() ? &cache : nullptr, p.batch_size,
                                             d.pad_id, set.get());
  r.metrics.set(preference_accuracy, s.accuracy).set(reward_margin, s.margin);
  measure(ctx, be, m, d, *set, task_before, safety_before, r);
  for (const char* f : {"loss.csv", "loss.svg", "checkpoint.safetensors"}) r.artifacts.push_back(f);
  r.model = std::move(m);
  return r;
}

}  // namespace align_detail

/// The representations an Align method on `Base` accepts: the bare base or it with LoRA.
template <class Base>
using align_accepts = representations<Base, repr::with_lora<Base>>;

#define FORGE_ALIGN_METHOD_HEAD(NAME, BACKENDS)                                               \
  static_assert(align_detail::is_align_base_v<Base>,                                          \
                "forge: Align methods train LoRA on a dense_f32, int4_group<G> or nf4 base"); \
  static constexpr std::string_view name = NAME;                                              \
  using data = align_data;                                                                    \
  using accepts = align_accepts<Base>;                                                        \
  using produces = repr::with_lora<Base>;                                                     \
  using backends = BACKENDS;

/// DPO (Rafailov et al. 2023): TRL's "sigmoid" loss.
template <Representation Base = repr::nf4>
struct dpo {
  FORGE_ALIGN_METHOD_HEAD("dpo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(
        ctx, p, d, std::move(m),
        {.pair = {
             .kind = objectives::pair_loss::sigmoid, .beta = p.beta, .sft_weight = p.sft_weight}});
  }
};

/// Conservative DPO (Mitchell 2023): DPO with label smoothing ε (0 < ε < 0.5).
template <Representation Base = repr::nf4>
struct cdpo {
  FORGE_ALIGN_METHOD_HEAD("cdpo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    require(p.label_smoothing > 0 && p.label_smoothing < 0.5,
            {.what = "cdpo needs label smoothing",
             .place = "align_params.label_smoothing",
             .expected = "0 < label_smoothing < 0.5",
             .found = str(p.label_smoothing)});
    return align_detail::apply_offline<Base>(ctx, p, d, std::move(m),
                                             {.pair = {.kind = objectives::pair_loss::sigmoid,
                                                       .beta = p.beta,
                                                       .label_smoothing = p.label_smoothing,
                                                       .sft_weight = p.sft_weight}});
  }
};

/// Robust DPO (Chowdhury et al. 2024): unbiased under label noise ε (0 < ε < 0.5).
template <Representation Base = repr::nf4>
struct robust_dpo {
  FORGE_ALIGN_METHOD_HEAD("robust_dpo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    require(p.label_smoothing > 0 && p.label_smoothing < 0.5,
            {.what = "robust_dpo needs the label-noise rate",
             .place = "align_params.label_smoothing",
             .expected = "0 < label_smoothing < 0.5",
             .found = str(p.label_smoothing)});
    return align_detail::apply_offline<Base>(ctx, p, d, std::move(m),
                                             {.pair = {.kind = objectives::pair_loss::robust,
                                                       .beta = p.beta,
                                                       .label_smoothing = p.label_smoothing,
                                                       .sft_weight = p.sft_weight}});
  }
};

/// IPO (Azar et al. 2023), with TRL's per-token averaged log-ratios.
template <Representation Base = repr::nf4>
struct ipo {
  FORGE_ALIGN_METHOD_HEAD("ipo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(
        ctx, p, d, std::move(m),
        {.pair = {.kind = objectives::pair_loss::ipo, .beta = p.beta, .sft_weight = p.sft_weight}});
  }
};

/// SLiC's hinge loss on the DPO log-ratio margin.
template <Representation Base = repr::nf4>
struct hinge {
  FORGE_ALIGN_METHOD_HEAD("hinge", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(
        ctx, p, d, std::move(m),
        {.pair = {
             .kind = objectives::pair_loss::hinge, .beta = p.beta, .sft_weight = p.sft_weight}});
  }
};

/// SimPO (Meng et al. 2024): length-normalised, no reference, target margin γ.
template <Representation Base = repr::nf4>
struct simpo {
  FORGE_ALIGN_METHOD_HEAD("simpo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(ctx, p, d, std::move(m),
                                             {.pair = {.kind = objectives::pair_loss::simpo,
                                                       .beta = p.beta,
                                                       .label_smoothing = p.label_smoothing,
                                                       .simpo_gamma = p.simpo_gamma,
                                                       .sft_weight = p.sft_weight}});
  }
};

/// ORPO (Hong et al. 2024): SFT loss plus the odds-ratio term, no reference.
template <Representation Base = repr::nf4>
struct orpo {
  FORGE_ALIGN_METHOD_HEAD("orpo", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(
        ctx, p, d, std::move(m), {.pair = {.kind = objectives::pair_loss::orpo, .beta = p.beta}});
  }
};

/// KTO (Ethayarajh et al. 2024) on the unpaired pairs, KL from mismatched completions.
template <Representation Base = repr::nf4>
struct kto {
  FORGE_ALIGN_METHOD_HEAD("kto", all_backends)
  using params = align_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    return align_detail::apply_offline<Base>(
        ctx, p, d, std::move(m),
        {.kto = true,
         .kto_opts = {.beta = p.beta,
                      .desirable_weight = p.desirable_weight,
                      .undesirable_weight = p.undesirable_weight}});
  }
};

/// GRPO (Shao et al. 2024) with align_data's prompts and verifiable reward.
template <Representation Base = repr::nf4>
struct grpo {
  FORGE_ALIGN_METHOD_HEAD("grpo", cpu_backends)
  using params = grpo_params;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    align_detail::check_base<Base>(m);
    require(!d.prompts.empty() && bool(d.reward),
            {.what = "GRPO needs prompts and a reward function", .place = "align_data"});
    const auto be = ctx.backend;
    const double task_before =
        d.task.empty() ? 0.0 : eval::evaluate_task(be, m, d.task, d.eos).exact_match;
    std::optional<eval::safety_scores> safety_before;
    if (!d.safety.empty()) safety_before = align_detail::safety_of(be, m, d);
    auto set = align_detail::attach_on_top(
        be, m, {.rank = p.rank, .alpha = p.alpha, .target_modules = p.target_modules}, ctx.seed);
    const auto res = train::train_grpo(be, m, train::lora_parameters(*set), set.get(),
                                       std::span(d.prompts), d.reward,
                                       {.max_steps = p.max_steps,
                                        .prompts_per_step = p.prompts_per_step,
                                        .num_generations = p.num_generations,
                                        .num_iterations = p.num_iterations,
                                        .max_new_tokens = p.max_new_tokens,
                                        .temperature = p.temperature,
                                        .beta = p.beta,
                                        .epsilon_low = p.epsilon,
                                        .epsilon_high = p.epsilon_high,
                                        .max_grad_norm = p.max_grad_norm,
                                        .optim = {.lr = p.learning_rate, .weight_decay = 0},
                                        .eos_token_ids = d.eos,
                                        .pad_id = d.pad_id,
                                        .seed = ctx.seed,
                                        .comm = ctx.comm,
                                        .out_dir = ctx.artifact_dir});
    stage_result<model::causal_lm<float>> r{.model = {}};
    if (!d.train.empty() || !d.val.empty()) {
      const auto& pairs = d.val.empty() ? d.train : d.val;
      const train::preference_objective obj{};
      const auto cache = train::compute_reference_cache(be, m, pairs, false, d.pad_id, set.get());
      const auto s =
          train::evaluate_preferences(be, m, std::span(pairs), obj, &cache, 8, d.pad_id, set.get());
      r.metrics.set(preference_accuracy, s.accuracy).set(reward_margin, s.margin);
    }
    align_detail::measure(ctx, be, m, d, *set, task_before, safety_before, r);
    r.artifacts.push_back("checkpoint.safetensors");
    (void)res;
    r.model = std::move(m);
    return r;
  }
};

#undef FORGE_ALIGN_METHOD_HEAD

}  // namespace forge
