#pragma once
// The Compress stage's method policies for forge's pipeline: `compress<rtn>`, `compress<gptq>`
// and `compress<awq>` (int4, symmetric, groups of 128), and the same methods in any format
// through `rtn_as<F>`, `gptq_as<F>` and `awq_as<F>` (e.g. `compress<gptq_as<quant::int4_g32>>`,
// `compress<rtn_as<quant::int8_channel>>`): the format is part of the type because the
// representation a stage produces is checked at compile time.
//
// Each method takes a model::causal_lm<float> — dense, or dense with LoRA/DoRA adapters,
// which are merged into the base first and dropped — quantizes every decoder projection into
// an adapters::quantized_base (quant/model_quantize.hpp) and, with
// `measure.embedding_format = "q8_0"`, the embedding and head, measures the Compress metrics on
// `compress_data` and writes into the stage's artifact directory:
//   model/            int4 formats: the GPTQ checkpoint layout (quant/gptq_model.hpp)
//   compression.json  bytes (projections and whole model, before/after), perplexities, task
//                     scores, latency, and each projection's output error vs RTN's
// `compress<distill>` makes a shallower (and optionally narrower) student by layer selection
// and trains it against the input model with the distillation loss (objectives/distill.hpp);
// it writes model/ in HF layout.
// Metrics: memory_bytes (every weight of the output model: dense parameters in f32 plus the
// quantized bases), memory_ratio (that over the same count for the input model — whole
// model, embeddings and head included; compression.json also gives the projections-only
// ratio), perplexity and perplexity_ratio on the evaluation sequences, exact_match and
// task_score_delta on the task items, latency_ms and tokens_per_second of greedy decoding.

#include <chrono>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/adapters/methods.hpp"  // model_digest, which the pipeline runner reports
#include "forge/eval/task.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/objectives/distill.hpp"
#include "forge/pipeline/method.hpp"
#include "forge/pipeline/metrics.hpp"
#include "forge/pipeline/stage_context.hpp"
#include "forge/pipeline/stage_result.hpp"
#include "forge/quant/gptq_model.hpp"
#include "forge/quant/model_quantize.hpp"

namespace forge {

/// What a Compress stage calibrates and measures on (token ids of the model's vocabulary).
struct compress_data {
  std::vector<std::vector<std::int64_t>> calibration{};  ///< calibration sequences (GPTQ, AWQ)
  std::vector<std::vector<std::int64_t>> evaluation{};   ///< held-out text for perplexity
  std::vector<eval::task_item> task{};                   ///< optional exact-match task items
  std::vector<std::int64_t> eos{};                       ///< tokens that end a task answer
  std::vector<data::sft_example> train{};                ///< distillation text (compress<distill>)
  std::string name = "compression data";                 ///< how reports name it
  /// SHA-256 of every part, for the stage report.
  std::string sha256() const {
    govern::sha256 h;
    for (const auto* s : {&calibration, &evaluation}) {
      const std::uint64_t n = s->size();
      h.update(&n, 8);
      for (const auto& e : *s) {
        const std::uint64_t k = e.size();
        h.update(&k, 8).update(e.data(), e.size() * 8);
      }
    }
    for (const auto& t : task)
      h.update(t.prompt.data(), t.prompt.size() * 8).update(t.answer.data(), t.answer.size() * 8);
    h.update(eos.data(), eos.size() * 8);
    for (const auto& e : train)
      h.update(e.input_ids.data(), e.input_ids.size() * 4)
          .update(e.labels.data(), e.labels.size() * 4);
    return h.hex_digest();
  }
};

/// Settings shared by the Compress methods: what else is quantized, what is measured and
/// written.
struct compress_measure {
  bool dense_fallback = true;        ///< keep projections the format cannot hold dense
  std::int64_t latency_tokens = 16;  ///< greedy tokens timed for latency (0: not measured)
  bool save_checkpoint = true;       ///< write model/ (int4 formats)
  /// The token embedding and output head: "dense" (f32, as GPTQ, AWQ and QLoRA keep them) or
  /// "q8_0" (GGUF Q8_0 blocks by round to nearest, 8.5 bits per weight, as llama.cpp stores
  /// them; quant::quantize_head_and_embeddings). In vocabulary-heavy small models they are a
  /// large share of the weights.
  std::string embedding_format = "dense";
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(compress_measure, dense_fallback, latency_tokens,
                                   save_checkpoint, embedding_format)

/// Parameters of RTN (nothing to tune besides measurement).
struct rtn_params {
  compress_measure measure{};
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(rtn_params, measure)

/// Parameters of GPTQ; defaults are GPTQModel's (damp 0.01, no act-order, block 128).
struct gptq_method_params {
  double percdamp = 0.01;
  bool act_order = false;
  bool static_groups = false;
  std::int64_t block_size = 128;
  compress_measure measure{};
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(gptq_method_params, percdamp, act_order, static_groups,
                                   block_size, measure)

/// Parameters of AWQ: the α grid (llm-awq's 20 points) and the activation rows searched on.
struct awq_method_params {
  int grid = 20;
  std::int64_t max_rows = 4096;
  compress_measure measure{};
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(awq_method_params, grid, max_rows, measure)

/// Parameters of distillation into a shallower student (layer selection from the teacher).
struct distill_params {
  std::vector<std::size_t> layers{};  ///< teacher layers the student keeps (empty: every 2nd)
  std::int64_t intermediate = 0;      ///< student MLP width (0: the teacher's)
  std::int64_t max_steps = 100;
  std::int64_t batch_size = 8;
  double learning_rate = 1e-3;
  double weight_decay = 0;
  std::string schedule = "cosine";  ///< constant, linear or cosine
  std::int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;
  double alpha = 0.5;                 ///< weight of the KL term
  double temperature = 2.0;           ///< softening temperature T
  std::string direction = "forward";  ///< "forward" KL(teacher ‖ student) or "reverse"
  std::int32_t pad_id = 0;
  compress_measure measure{};
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(distill_params, layers, intermediate, max_steps, batch_size,
                                   learning_rate, weight_decay, schedule, warmup_steps,
                                   max_grad_norm, alpha, temperature, direction, pad_id, measure)

namespace quant {

/// The pipeline representation tag of quantization format F.
template <class F>
struct repr_of;
template <int G, bool S>
struct repr_of<int4_group<G, S>> {
  using type = repr::int4_group<std::size_t(G)>;
};
template <>
struct repr_of<int8_channel> {
  using type = repr::int8;
};
template <bool D>
struct repr_of<nf4_format<D>> {
  using type = repr::nf4;
};

/// Token-level perplexity exp(Σ NLL / Σ predicted tokens) of `m` on `seqs` (each sequence
/// predicts its tokens 2..n from their prefixes), batch 1, log-softmax in double.
template <class Bk>
double sequence_perplexity(Bk be, model::causal_lm<float>& m,
                           const std::vector<std::vector<std::int64_t>>& seqs) {
  model::workspace<float> ws;
  double nll = 0;
  std::int64_t n = 0;
  const auto V = m.config.vocab_size;
  for (const auto& s : seqs) {
    if (s.size() < 2) continue;
    const auto z =
        model::forward(be, m, ws, {.batch = 1, .seq = std::int64_t(s.size()), .input_ids = s});
    for (std::size_t t = 0; t + 1 < s.size(); ++t) {
      const float* row = z.data() + std::int64_t(t) * V;
      double mx = row[0], sum = 0;
      for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
      for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      nll -= double(row[s[t + 1]]) - mx - std::log(sum);
      ++n;
    }
  }
  require(n > 0, {.what = "perplexity needs a sequence of at least two tokens",
                  .place = "sequence_perplexity"});
  return std::exp(nll / double(n));
}

/// Milliseconds per greedily decoded token (the prompt is the first 8 tokens of `prompt`;
/// its prefill is included, amortised over `tokens` steps).
template <class Bk>
double decode_ms_per_token(Bk be, model::causal_lm<float>& m,
                           const std::vector<std::int64_t>& prompt, std::int64_t tokens) {
  std::vector<std::int64_t> p(prompt.begin(),
                              prompt.begin() + std::min<std::ptrdiff_t>(8, prompt.size()));
  const auto t0 = std::chrono::steady_clock::now();
  auto g = model::generate(be, m, {p}, {.max_new_tokens = tokens, .eos_token_ids = {-1}});
  const auto t1 = std::chrono::steady_clock::now();
  const auto made = std::max<std::size_t>(1, g.tokens[0].size());
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / double(made);
}

namespace detail {

/// The shared body of the Compress methods: merge adapters, measure, quantize, measure,
/// write artifacts.
template <class F, class B, class Quantize>
stage_result<model::causal_lm<float>> run_compress(const stage_context<B>& ctx,
                                                   const compress_measure& ms,
                                                   const compress_data& d,
                                                   model::causal_lm<float> m, Quantize&& quantize,
                                                   const gptq_save_options& save) {
  const auto be = ctx.backend;
  merge_and_drop_adapters(m);
  nlohmann::json rep;
  const auto total_before = model_weight_bytes(m);
  const auto proj_before = projection_weight_bytes(m);
  double ppl_before = 0, em_before = 0;
  if (!d.evaluation.empty()) ppl_before = sequence_perplexity(be, m, d.evaluation);
  if (!d.task.empty()) em_before = eval::evaluate_task(be, m, d.task, d.eos).exact_match;
  const auto& latency_prompt = !d.evaluation.empty()    ? d.evaluation[0]
                               : !d.calibration.empty() ? d.calibration[0]
                                                        : std::vector<std::int64_t>{};
  const bool time_it = ms.latency_tokens > 0 && !latency_prompt.empty();
  const double ms_before =
      time_it ? decode_ms_per_token(be, m, latency_prompt, ms.latency_tokens) : 0.0;
  if (ms.embedding_format != "dense" && ms.embedding_format != q8_0::name)
    throw error({.what = "unknown format for the embedding and head",
                 .place = "measure.embedding_format",
                 .expected = "\"dense\" or \"q8_0\"",
                 .found = "\"" + ms.embedding_format + "\""});
  const model_quant_report q = quantize(m);
  const auto he =
      quantize_head_and_embeddings<B>(m, ms.embedding_format, "measure.embedding_format");
  stage_result<model::causal_lm<float>> r{.model = {}};
  const auto total_after = model_weight_bytes(m);
  const auto proj_after = projection_weight_bytes(m);
  r.metrics.set(memory_bytes, double(total_after))
      .set(memory_ratio, double(total_after) / double(total_before));
  rep["format"] = F::name;
  rep["bytes"] = {{"model_before", total_before},
                  {"model_after", total_after},
                  {"model_ratio", double(total_after) / double(total_before)},
                  {"projections_before", proj_before},
                  {"projections_after", proj_after},
                  {"projections_ratio", double(proj_after) / double(proj_before)},
                  {"metric_memory_ratio_counts", "model"}};
  rep["embedding_format"] = ms.embedding_format;
  if (he)
    rep["bytes"]["head_and_embedding"] = {{"before", he->bytes_before}, {"after", he->bytes_after}};
  if (!d.evaluation.empty()) {
    const double after = sequence_perplexity(be, m, d.evaluation);
    r.metrics.set(perplexity, after).set(perplexity_ratio, after / ppl_before);
    rep["perplexity"] = {{"before", ppl_before}, {"after", after}};
  }
  if (!d.task.empty()) {
    const double em = eval::evaluate_task(be, m, d.task, d.eos).exact_match;
    r.metrics.set(exact_match, em).set(task_score_delta, em - em_before);
    rep["exact_match"] = {{"before", em_before}, {"after", em}};
  }
  if (time_it) {
    const double ms_tok = decode_ms_per_token(be, m, latency_prompt, ms.latency_tokens);
    r.metrics.set(latency_ms, ms_tok).set(tokens_per_second, 1000.0 / ms_tok);
    rep["latency_ms_per_token"] = {{"before", ms_before}, {"after", ms_tok}};
  }
  rep["kept_dense"] = q.kept_dense;
  for (const auto& l : q.layers) {
    nlohmann::json e = {{"name", l.name}, {"error", l.error}, {"rtn_error", l.rtn_error}};
    if (l.awq_ratio >= 0) e["awq_ratio"] = l.awq_ratio;
    rep["layers"].push_back(e);
  }
  io::write_atomic(ctx.artifact_dir / "compression.json", rep.dump(2) + "\n");
  r.artifacts.push_back("compression.json");
  if constexpr (is_int4_group_v<F>) {
    if (ms.save_checkpoint) {
      save_gptq_checkpoint<B, F::group_size, F::symmetric>(m, ctx.artifact_dir / "model", save);
      for (const char* f :
           {"model/config.json", "model/model.safetensors", "model/generation_config.json"})
        r.artifacts.push_back(f);
    }
  }
  r.data.push_back({d.name, d.sha256()});
  r.model = std::move(m);
  return r;
}

}  // namespace detail
}  // namespace quant

/// What every Compress method accepts: a dense f32 model, with or without LoRA adapters.
using compress_inputs = representations<repr::dense_f32, repr::with_lora<repr::dense_f32>>;

/// Round-to-nearest quantization into format F: no calibration data; the baseline.
template <quant::QuantFormat F>
struct rtn_as {
  static constexpr std::string_view name = "rtn";
  using params = rtn_params;
  using data = compress_data;
  using accepts = compress_inputs;
  using produces = typename quant::repr_of<F>::type;
  using backends = all_backends;  ///< cuda: this work runs on the CPU (on_cpu)
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (!is_cpu_backend_v<B>) {
      return apply(on_cpu(ctx), p, d, std::move(m));
    } else {
      return quant::detail::run_compress<F>(ctx, p.measure, d, std::move(m),
                                            [&](model::causal_lm<float>& mm) {
                                              return quant::quantize_model_rtn<F>(
                                                  ctx.backend, mm,
                                                  {.dense_fallback = p.measure.dense_fallback});
                                            },
                                            {});
    }
  }
};

/// GPTQ (Frantar et al. 2023) into the int4 group format F, true sequential.
template <class F>
struct gptq_as {
  static constexpr std::string_view name = "gptq";
  using params = gptq_method_params;
  using data = compress_data;
  using accepts = compress_inputs;
  using produces = typename quant::repr_of<F>::type;
  using backends = all_backends;  ///< cuda: this work runs on the CPU (on_cpu)
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (!is_cpu_backend_v<B>) {
      return apply(on_cpu(ctx), p, d, std::move(m));
    } else {
      const quant::gptq_params gp{.percdamp = p.percdamp,
                                  .act_order = p.act_order,
                                  .static_groups = p.static_groups,
                                  .block_size = p.block_size};
      return quant::detail::run_compress<F>(
          ctx, p.measure, d, std::move(m),
          [&](model::causal_lm<float>& mm) {
            return quant::quantize_model_gptq<F>(ctx.backend, mm, d.calibration, gp,
                                                 {.dense_fallback = p.measure.dense_fallback});
          },
          {.desc_act = p.act_order && !p.static_groups, .damp_percent = p.percdamp});
    }
  }
};

/// AWQ (Lin et al. 2024): activation-aware scales folded into the previous op, then RTN.
template <quant::QuantFormat F>
struct awq_as {
  static constexpr std::string_view name = "awq";
  using params = awq_method_params;
  using data = compress_data;
  using accepts = compress_inputs;
  using produces = typename quant::repr_of<F>::type;
  using backends = all_backends;  ///< cuda: this work runs on the CPU (on_cpu)
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (!is_cpu_backend_v<B>) {
      return apply(on_cpu(ctx), p, d, std::move(m));
    } else {
      return quant::detail::run_compress<F>(ctx, p.measure, d, std::move(m),
                                            [&](model::causal_lm<float>& mm) {
                                              return quant::quantize_model_awq<F>(
                                                  ctx.backend, mm, d.calibration,
                                                  {.grid = p.grid, .max_rows = p.max_rows},
                                                  {.dense_fallback = p.measure.dense_fallback});
                                            },
                                            {});
    }
  }
};

namespace quant::detail {
/// The format tag of a dense student (compression.json's "format").
struct dense_student {
  static constexpr const char* name = "dense f32 student";
};
}  // namespace quant::detail

/// Knowledge distillation (Hinton et al. 2015) into a student with fewer decoder layers,
/// initialised by layer selection from the input model (the teacher), trained on
/// `compress_data::train` with α·T²·KL + (1 − α)·CE. Writes the student in HF layout
/// (model/) besides compression.json.
struct distill {
  static constexpr std::string_view name = "distill";
  using params = distill_params;
  using data = compress_data;
  using accepts = compress_inputs;
  using produces = repr::dense_f32;
  using backends = all_backends;  ///< cuda: this work runs on the CPU (on_cpu)
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const data& d, model::causal_lm<float> m) {
    if constexpr (!is_cpu_backend_v<B>) {
      return apply(on_cpu(ctx), p, d, std::move(m));
    } else {
      require(p.direction == "forward" || p.direction == "reverse",
              {.what = "unknown KL direction",
               .place = "distill_params.direction",
               .expected = "forward or reverse",
               .found = p.direction});
      auto layers = p.layers;
      if (layers.empty())
        for (std::size_t i = 0; i < m.layers.size(); i += 2) layers.push_back(i);
      const train::distill_train_options o{
          .max_steps = p.max_steps,
          .batch_size = p.batch_size,
          .max_grad_norm = p.max_grad_norm,
          .optim = {.lr = p.learning_rate, .weight_decay = p.weight_decay},
          .sched = {.kind = train::parse_schedule_kind(p.schedule), .warmup_steps = p.warmup_steps},
          .seed = ctx.seed,
          .pad_id = p.pad_id,
          .loss = {.alpha = p.alpha,
                   .temperature = p.temperature,
                   .direction = p.direction == "forward" ? objectives::kl_direction::forward
                                                         : objectives::kl_direction::reverse}};
      auto r = quant::detail::run_compress<quant::detail::dense_student>(
          ctx, p.measure, d, std::move(m),
          [&](model::causal_lm<float>& teacher) {
            auto student = train::init_student_from_teacher(teacher, layers, p.intermediate);
            train::train_distill(ctx.backend, student, teacher, d.train, o);
            student.set_trainable(false);
            student.enable_grads();
            teacher = std::move(student);
            return quant::model_quant_report{};
          },
          {});
      if (p.measure.save_checkpoint) {
        io::save_hf_checkpoint(r.model, ctx.artifact_dir / "model");
        for (const char* f :
             {"model/config.json", "model/model.safetensors", "model/generation_config.json"})
          r.artifacts.push_back(f);
      }
      return r;
    }
  }
};

/// RTN into symmetric int4 with groups of 128.
using rtn = rtn_as<quant::int4_g128>;
/// GPTQ into symmetric int4 with groups of 128 (GPTQModel's default).
using gptq = gptq_as<quant::int4_g128>;
/// AWQ into symmetric int4 with groups of 128.
using awq = awq_as<quant::int4_g128>;

}  // namespace forge
