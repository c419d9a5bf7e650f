#pragma once
// Whole-model post-training quantization of a model::causal_lm<float>: every decoder
// projection (q/k/v/o, gate/up/down) is replaced by an adapters::quantized_base<Bk, F> — a
// frozen quantized linear base with forward and input gradient, so forward, generate and
// LoRA training keep working on top. Embeddings, norms and the head stay dense (as in GPTQ,
// AWQ and QLoRA); quantize_head_and_embeddings quantizes the embedding and head as well.
//
//   quantize_model_rtn   round to nearest, no data
//   quantize_model_gptq  GPTQ (Frantar et al. 2023) layer by layer, "true sequential": the
//                        inputs of each group of projections are captured by running the
//                        calibration tokens through the model whose earlier projections are
//                        already quantized, in the order {q,k,v} → {o} → {gate,up} → {down}
//                        of each decoder layer (projections in a group share one input and
//                        one Hessian), as GPTQModel's true_sequential does.
//   quantize_model_awq   AWQ (Lin et al. 2024, section 3.2) per decoder layer: the inputs of
//                        the four groups are captured in one pass (earlier layers already
//                        quantized), per-input-channel scales s are searched on each group's
//                        output error (quant/awq.hpp), 1/s is folded into the op that feeds
//                        the group — input_layernorm (q,k,v), v_proj's rows (o_proj, only when
//                        every query head has its own value head, as in llm-awq), the
//                        post-attention norm (gate, up), up_proj's rows (down_proj) — and
//                        W·diag(s) is quantized with RTN.
// Calibration runs layer by layer (detail::layer_calibration): each sequence's hidden states are
// carried from one decoder layer to the next, and a capture pass runs only the layer being
// quantized, so GPTQ (5 one-layer passes per layer) and AWQ (2) cost O(layers) forwards rather
// than O(layers²); `model_quant_options::layerwise = false` restores whole-model passes (same
// results bit for bit).
// Projections whose input width is not a multiple of F's group are kept dense (listed in
// the report) unless `dense_fallback` is false, in which case they are a forge::error.

#include <algorithm>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "forge/adapters/qlora.hpp"
#include "forge/model/forward.hpp"
#include "forge/quant/awq.hpp"
#include "forge/quant/gguf_blocks.hpp"
#include "forge/quant/gptq.hpp"
#include "forge/quant/rtn.hpp"

namespace forge::quant {

/// Options shared by the whole-model quantizers.
struct model_quant_options {
  bool dense_fallback = true;  ///< keep projections F cannot hold dense (else forge::error)
  /// Report each projection's error and RTN's (GPTQ, AWQ): O(out·in²) per projection, which
  /// is minutes for 4096-wide layers; off leaves the errors at 0.
  bool measure_errors = true;
  /// Calibration carries each sequence's hidden states from layer to layer and runs only the
  /// layer being quantized (cost linear in depth). false runs the whole model for every
  /// calibration pass (quadratic in depth); both give bit-identical results (tested).
  bool layerwise = true;
};

/// One quantized projection: its output error under the captured Hessian, and RTN's.
struct layer_error {
  std::string name{};     ///< module key, e.g. "model.layers.0.self_attn.q_proj"
  double error = 0;       ///< tr(ΔW H ΔWᵀ) / out of the installed weight (ΔW = W - Q)
  double rtn_error = 0;   ///< the same for plain RTN of the same (unscaled) weight
  double awq_ratio = -1;  ///< AWQ: chosen exponent α (−1: no scale search for this layer)
};

/// What a whole-model quantization did.
struct model_quant_report {
  std::vector<layer_error> layers{};        ///< quantized projections, in module order
  std::vector<std::string> kept_dense{};    ///< projections left dense (group does not fit)
  std::size_t projection_bytes_before = 0;  ///< f32 bytes of the projections it quantized
  std::size_t projection_bytes_after = 0;   ///< quantized bytes of the same projections
};

/// Bytes of every weight the model holds: dense parameters (f32) plus quantized matrices
/// (projections, head, embedding; a tied head and embedding counted once).
inline std::size_t model_weight_bytes(const model::causal_lm<float>& m) {
  std::size_t b = 0;
  m.for_each_parameter([&](const model::parameter<float>& p) { b += p.value.size() * 4; });
  return b + adapters::quantized_base_bytes(m);
}

/// Bytes of the decoder projections' weights (q/k/v/o, gate/up/down): f32 where dense,
/// quantized bytes where a quantized base replaces them.
inline std::size_t projection_weight_bytes(const model::causal_lm<float>& m) {
  std::size_t b = 0;
  for (auto [key, lin] : adapters::linear_layers(const_cast<model::causal_lm<float>&>(m))) {
    if (key == "lm_head") continue;
    if (auto* q = dynamic_cast<const adapters::quantized_weight*>(lin->base.get()))
      b += q->bytes();
    else
      b += lin->weight.value.size() * 4;
  }
  return b;
}

/// What quantize_head_and_embeddings did.
struct head_embedding_report {
  std::string format{};          ///< the format's name
  std::size_t bytes_before = 0;  ///< f32 bytes of the embedding and head (tied: once)
  std::size_t bytes_after = 0;   ///< quantized bytes of the same
};

/// Quantizes the token embedding and the output head of `m` into format F by round to
/// nearest (llama.cpp's treatment of token_embd and output; GPTQ and AWQ calibrate the
/// decoder projections only). The head becomes an adapters::quantized_base<Bk, F> (forward
/// and input gradient, so adapters can still train on top) and the embedding an
/// adapters::quantized_embedding that dequantizes one row per token; with tied embeddings
/// both share one quantized matrix. Both are frozen afterwards. forge::error when either is
/// already replaced, the head carries adapters (merge them first), or the hidden size is
/// not a multiple of F's group.
template <class Bk, QuantFormat F>
head_embedding_report quantize_head_and_embeddings(model::causal_lm<float>& m) {
  const auto V = m.config.vocab_size, H = m.config.hidden_size;
  const bool tied = m.config.tie_word_embeddings;
  require(!m.embed_base && !m.lm_head.base,
          {.what = "the embedding or the head is already replaced (quantized)",
           .place = "quantize_head_and_embeddings",
           .expected = "dense model.embed_tokens.weight and lm_head.weight"});
  require(m.lm_head.adapters.empty(),
          {.what = "the head carries adapters; merge them before quantizing it",
           .place = "lm_head",
           .expected = "no adapters"});
  require(F::group_size == 0 || H % F::group_size == 0,
          {.what = std::string("the hidden size is not a multiple of the ") + F::name + " group",
           .place = "quantize_head_and_embeddings",
           .expected = "hidden_size % " + std::to_string(F::group_size) + " == 0",
           .found = "hidden_size = " + std::to_string(H)});
  require(std::int64_t(m.embed_tokens.value.size()) == V * H,
          {.what = "embedding matrix has the wrong size",
           .place = "model.embed_tokens.weight",
           .expected = std::to_string(V * H) + " values",
           .found = std::to_string(m.embed_tokens.value.size())});
  if (!tied)
    require(std::int64_t(m.lm_head.weight.value.size()) == V * H,
            {.what = "head matrix has the wrong size",
             .place = "lm_head.weight",
             .expected = std::to_string(V * H) + " values",
             .found = std::to_string(m.lm_head.weight.value.size())});
  head_embedding_report r{.format = F::name};
  auto freeze = [](model::parameter<float>& p) {
    std::vector<float>().swap(p.value);
    std::vector<float>().swap(p.grad);
    p.trainable = false;
  };
  using base_t = adapters::quantized_base<Bk, F>;
  auto emb = std::make_shared<const base_t>(F::quantize(m.embed_tokens.value, V, H));
  r.bytes_before += m.embed_tokens.value.size() * sizeof(float);
  r.bytes_after += emb->bytes();
  std::shared_ptr<const base_t> head = emb;
  if (!tied) {
    head = std::make_shared<const base_t>(F::quantize(m.lm_head.weight.value, V, H));
    r.bytes_before += m.lm_head.weight.value.size() * sizeof(float);
    r.bytes_after += head->bytes();
    freeze(m.lm_head.weight);
  }
  m.embed_base = std::make_shared<const adapters::quantized_embedding<Bk, F>>(emb);
  m.lm_head.base = head;
  freeze(m.embed_tokens);
  return r;
}

/// The formats quantize_head_and_embeddings takes by name ("q8_0"); "dense" does nothing.
/// forge::error naming `place` for any other name.
template <class Bk>
std::optional<head_embedding_report> quantize_head_and_embeddings(model::causal_lm<float>& m,
                                                                  const std::string& format,
                                                                  const std::string& place) {
  if (format == "dense") return std::nullopt;
  if (format == q8_0::name) return quantize_head_and_embeddings<Bk, q8_0>(m);
  throw error({.what = "unknown format for the embedding and head",
               .place = place,
               .expected = "\"dense\" or \"q8_0\"",
               .found = "\"" + format + "\""});
}

/// Merges every LoRA/DoRA adapter into its dense base weight and removes all adapters
/// (the model then computes what it computed with them, up to rounding).
inline void merge_and_drop_adapters(model::causal_lm<float>& m) {
  for (auto [key, lin] : adapters::linear_layers(m)) {
    for (auto& a : lin->adapters) {
      auto* l = dynamic_cast<adapters::lora_module<float>*>(a.get());
      require(l != nullptr, {.what = "only LoRA/DoRA adapters can be merged before quantization",
                             .place = key,
                             .expected = "lora_module adapters"});
      l->merge(*lin);
    }
    lin->adapters.clear();
  }
}

namespace detail {

/// A pass-through adapter that records the inputs its layer sees: a GPTQ Hessian and/or
/// up to `keep_rows` activation rows (AWQ). Adds nothing to the output.
class activation_capture final : public model::linear_adapter<float> {
 public:
  activation_capture(std::int64_t in, bool hessian, std::int64_t keep_rows)
      : in_(in), keep_(keep_rows) {
    if (hessian) acc_ = std::make_unique<hessian_accumulator>(in);
  }
  void forward(const float* x, std::int64_t rows, float*) override {
    if (acc_) acc_->add_batch(std::span<const float>(x, std::size_t(rows * in_)), rows);
    const std::int64_t take = std::min(rows, keep_ - rows_);
    if (take > 0) {
      xs_.insert(xs_.end(), x, x + take * in_);
      rows_ += take;
    }
  }
  void backward(const float*, const float*, std::int64_t, float*) override {}
  const hessian& h() const { return acc_->get(); }
  std::span<const float> rows() const { return xs_; }
  std::int64_t row_count() const { return rows_; }

 private:
  std::int64_t in_, keep_, rows_ = 0;
  std::unique_ptr<hessian_accumulator> acc_;
  std::vector<float> xs_;
};

/// Runs every calibration sequence through the model (batch 1, no logits kept beyond the
/// call): the capture adapters see each layer's inputs.
template <class Bk>
void run_calibration(Bk be, model::causal_lm<float>& m,
                     const std::vector<std::vector<std::int64_t>>& calib) {
  require(!calib.empty(),
          {.what = "calibration needs at least one token sequence", .place = "model quantization"});
  model::workspace<float> ws;
  for (std::size_t i = 0; i < calib.size(); ++i) {
    const auto& s = calib[i];
    require(!s.empty() && std::int64_t(s.size()) <= m.config.max_position_embeddings,
            {.what = "calibration sequence length out of range",
             .place = "calibration sequence " + std::to_string(i),
             .expected = "1.." + std::to_string(m.config.max_position_embeddings) + " tokens",
             .found = std::to_string(s.size())});
    model::forward(be, m, ws,
                   {.batch = 1, .seq = std::int64_t(s.size()), .input_ids = std::span(s)},
                   {.logits = model::logits_for::last});
  }
}

/// Calibration one decoder layer at a time: hidden[s] holds sequence s's input to the current
/// layer (first the embeddings). run(li, advance) swaps layer li into a one-layer model (final
/// norm copied, a 1-wide zero head so no vocabulary product is paid), runs every sequence
/// through it — capture adapters on its projections see exactly the inputs the whole model
/// would give them — and with `advance` keeps the layer's outputs as the next layer's inputs.
template <class Bk>
class layer_calibration {
 public:
  layer_calibration(Bk be, model::causal_lm<float>& m,
                    const std::vector<std::vector<std::int64_t>>& calib)
      : be_(be), m_(m) {
    require(!calib.empty(), {.what = "calibration needs at least one token sequence",
                             .place = "model quantization"});
    const auto& c = m.config;
    const std::int64_t H = c.hidden_size;
    for (std::size_t i = 0; i < calib.size(); ++i) {
      const auto& s = calib[i];
      require(!s.empty() && std::int64_t(s.size()) <= c.max_position_embeddings,
              {.what = "calibration sequence length out of range",
               .place = "calibration sequence " + std::to_string(i),
               .expected = "1.." + std::to_string(c.max_position_embeddings) + " tokens",
               .found = std::to_string(s.size())});
      std::vector<float> x(s.size() * std::size_t(H));
      for (std::size_t t = 0; t < s.size(); ++t) {
        require(
            s[t] >= 0 && s[t] < c.vocab_size,
            {.what = "token id out of range",
             .place = "calibration sequence " + std::to_string(i) + ", token " + std::to_string(t),
             .expected = "in [0, " + std::to_string(c.vocab_size) + ")",
             .found = std::to_string(s[t])});
        m.embed_row(s[t], x.data() + t * std::size_t(H));
      }
      hidden_.push_back(std::move(x));
    }
    sub_.config = c;
    sub_.config.num_hidden_layers = 1;
    sub_.config.vocab_size = 1;
    sub_.config.tie_word_embeddings = false;
    sub_.layers.resize(1);
    sub_.norm = m.norm;
    sub_.lm_head.in = H;
    sub_.lm_head.out = 1;
    sub_.lm_head.weight.value.assign(std::size_t(H), 0.0f);
    sub_.lm_head.weight.shape = {1, H};
  }

  void run(std::size_t li, bool advance) {
    const auto& c = m_.config;
    if (!c.sliding_window.empty()) sub_.config.sliding_window = {c.sliding_window[li]};
    std::swap(sub_.layers[0], m_.layers[li]);
    struct swap_back {
      model::decoder_layer<float>& a;
      model::decoder_layer<float>& b;
      ~swap_back() { std::swap(a, b); }
    } guard{sub_.layers[0], m_.layers[li]};
    const std::int64_t H = c.hidden_size;
    for (auto& x : hidden_) {
      const std::int64_t S = std::int64_t(x.size()) / H;
      model::forward(be_, sub_, ws_, {.batch = 1, .seq = S, .inputs_embeds = std::span(x)},
                     {.logits = model::logits_for::last});
      if (advance) std::copy_n(ws_.x_final_, x.size(), x.data());
    }
  }

 private:
  Bk be_;
  model::causal_lm<float>& m_;
  model::causal_lm<float> sub_{};
  model::workspace<float> ws_{};
  std::vector<std::vector<float>> hidden_{};
};

/// tr(ΔW H ΔWᵀ) / rows with ΔW = W - dequant(q): the GPTQ objective (per output row).
template <QuantFormat F>
double hessian_error(std::span<const float> w, const qtensor<F>& q, const hessian& h) {
  const auto d = dequantize(q);
  const std::int64_t n = h.n;
  double total = 0;
  std::vector<double> e(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < q.rows; ++r) {
    for (std::int64_t i = 0; i < n; ++i)
      e[std::size_t(i)] = double(w[std::size_t(r * n + i)]) - d[std::size_t(r * n + i)];
    for (std::int64_t i = 0; i < n; ++i) {
      if (e[std::size_t(i)] == 0) continue;
      double s = 0;
      const double* hi = h.h.data() + i * n;
      for (std::int64_t j = 0; j < n; ++j) s += hi[j] * e[std::size_t(j)];
      total += e[std::size_t(i)] * s;
    }
  }
  return q.rows ? total / double(q.rows) : 0.0;
}

template <class F>
bool fits(const model::linear<float>& l) {
  return F::group_size <= 0 || l.in % F::group_size == 0;
}

/// Checks that F can hold layer `key`; false (kept dense, recorded) or forge::error.
template <class F>
bool check_fits(const std::string& key, const model::linear<float>& l, const model_quant_options& o,
                model_quant_report& rep) {
  require(!l.base, {.what = "projection is already quantized", .place = key});
  require(l.adapters.empty(),
          {.what = "adapters must be merged before quantization (merge_and_drop_adapters)",
           .place = key});
  if (fits<F>(l)) return true;
  require(o.dense_fallback, {.what = "input width is not a multiple of the quantization group",
                             .place = key,
                             .expected = "in % " + std::to_string(F::group_size) + " == 0",
                             .found = "in = " + std::to_string(l.in)});
  rep.kept_dense.push_back(key);
  return false;
}

/// Act-order int4 tensors: reorders the stored columns inside each group by input feature
/// (a relabelling: the same groups, codes and constants), the order a GPTQ checkpoint's
/// g_idx implies, so a saved and reloaded model multiplies in the same order and computes
/// the same bits. The permutation is dropped when it becomes the identity.
template <class F>
void canonical_group_order(qtensor<F>& t) {
  if constexpr (is_int4_group_v<F>) {
    if (t.perm.empty()) return;
    constexpr std::int64_t G = F::group_size;
    std::vector<std::int32_t> order(t.perm.size());
    std::iota(order.begin(), order.end(), 0);
    for (std::int64_t g = 0; g < t.cols / G; ++g)
      std::sort(order.begin() + g * G, order.begin() + (g + 1) * G,
                [&](std::int32_t a, std::int32_t b) {
                  return t.perm[std::size_t(a)] < t.perm[std::size_t(b)];
                });
    auto u = t;
    bool identity = true;
    for (std::int64_t k = 0; k < t.cols; ++k) {
      const auto from = order[std::size_t(k)];
      u.perm[std::size_t(k)] = t.perm[std::size_t(from)];
      identity = identity && u.perm[std::size_t(k)] == k;
      for (std::int64_t r = 0; r < t.rows; ++r) F::set_code(u, r, k, F::code(t, r, from));
    }
    if (identity) u.perm.clear();
    t = std::move(u);
  }
}

/// Replaces l's dense weight by the quantized base q.
template <class Bk, class F>
void install(model::linear<float>& l, qtensor<F> q, model_quant_report& rep) {
  rep.projection_bytes_before += l.weight.value.size() * 4;
  auto b = std::make_shared<adapters::quantized_base<Bk, F>>(std::move(q));
  rep.projection_bytes_after += b->bytes();
  l.base = b;
  std::vector<float>().swap(l.weight.value);
  std::vector<float>().swap(l.weight.grad);
  l.weight.trainable = false;
}

/// The projection groups of decoder layer `li` that share an input, in forward order.
inline std::vector<std::vector<std::pair<std::string, model::linear<float>*>>> layer_groups(
    model::causal_lm<float>& m, std::size_t li) {
  auto& L = m.layers[li];
  const std::string p = "model.layers." + std::to_string(li) + ".";
  return {{{p + "self_attn.q_proj", &L.q_proj},
           {p + "self_attn.k_proj", &L.k_proj},
           {p + "self_attn.v_proj", &L.v_proj}},
          {{p + "self_attn.o_proj", &L.o_proj}},
          {{p + "mlp.gate_proj", &L.gate_proj}, {p + "mlp.up_proj", &L.up_proj}},
          {{p + "mlp.down_proj", &L.down_proj}}};
}

/// AWQ's weight clipping (llm-awq auto_clip; int4 formats): for each output row and group of
/// the scaled weight ws (rows x cols), the largest magnitude kept is max|w|·(1 − i/20) for
/// the i in 0..9 that minimises the group's output error eᵀ H_s e, e = w − Q(clamp(w)),
/// with H_s = diag(1/s) H diag(1/s) the Hessian of the scaled inputs X/s. ws is clamped in
/// place. The reference does not clip q_proj and k_proj (their errors are amplified by the
/// attention scores); the caller skips them likewise.
template <class F>
void awq_clip(std::vector<float>& ws, std::int64_t rows, std::int64_t cols, const hessian& h,
              std::span<const float> s) {
  if constexpr (is_int4_group_v<F>) {
    constexpr std::int64_t G = F::group_size;
    constexpr int grid = 20, steps = 10;
    parallel_for(0, rows, [&](std::ptrdiff_t r) {
      std::vector<float> w(G), c(G);
      std::vector<double> e(G);
      for (std::int64_t g = 0; g < cols / G; ++g) {
        float* wr = ws.data() + r * cols + g * G;
        std::copy(wr, wr + G, w.begin());
        float mx = 0;
        for (float v : w) mx = std::max(mx, std::fabs(v));
        double best = std::numeric_limits<double>::infinity();
        float best_mx = mx;
        for (int i = 0; i < steps; ++i) {
          const float lim = mx * (1.0f - float(i) / grid);
          for (std::int64_t k = 0; k < G; ++k)
            c[std::size_t(k)] = std::clamp(w[std::size_t(k)], -lim, lim);
          const auto q = F::quantize(c, 1, G);
          const auto dq = dequantize(q);
          for (std::int64_t k = 0; k < G; ++k)
            e[std::size_t(k)] = double(w[std::size_t(k)]) - dq[std::size_t(k)];
          double err = 0;
          for (std::int64_t a = 0; a < G; ++a) {
            double acc = 0;
            for (std::int64_t b = 0; b < G; ++b)
              acc +=
                  h(g * G + a, g * G + b) / (double(s[std::size_t(g * G + b)])) * e[std::size_t(b)];
            err += e[std::size_t(a)] / double(s[std::size_t(g * G + a)]) * acc;
          }
          if (err < best) best = err, best_mx = lim;
        }
        for (std::int64_t k = 0; k < G; ++k)
          wr[k] = std::clamp(w[std::size_t(k)], -best_mx, best_mx);
      }
    });
  }
}

/// Runs every check before anything changes, so a model is never left half quantized.
template <class F>
void precheck(model::causal_lm<float>& m, const model_quant_options& o) {
  model_quant_report scratch;
  for (std::size_t li = 0; li < m.layers.size(); ++li)
    for (auto& g : layer_groups(m, li))
      for (auto& [key, l] : g) check_fits<F>(key, *l, o, scratch);
}

}  // namespace detail

/// Round-to-nearest quantization of every decoder projection of `m` into format F, with
/// kernels of backend `Bk`.
template <QuantFormat F, class Bk>
model_quant_report quantize_model_rtn(Bk, model::causal_lm<float>& m,
                                      const model_quant_options& o = {}) {
  model_quant_report rep;
  detail::precheck<F>(m, o);
  for (std::size_t li = 0; li < m.layers.size(); ++li)
    for (auto& g : detail::layer_groups(m, li))
      for (auto& [key, l] : g) {
        if (!detail::check_fits<F>(key, *l, o, rep)) continue;
        auto q = quantize_rtn<F>(l->weight.value, l->out, l->in);
        rep.layers.push_back({.name = key});
        detail::install<Bk>(*l, std::move(q), rep);
      }
  return rep;
}

/// GPTQ of every decoder projection into the int4 group format F, calibrated on `calib`
/// (token sequences), true sequential (see the header comment).
template <class F, class Bk>
model_quant_report quantize_model_gptq(Bk be, model::causal_lm<float>& m,
                                       const std::vector<std::vector<std::int64_t>>& calib,
                                       const gptq_params& p = {},
                                       const model_quant_options& o = {}) {
  model_quant_report rep;
  detail::precheck<F>(m, o);
  std::optional<detail::layer_calibration<Bk>> lc;
  if (o.layerwise) lc.emplace(be, m, calib);
  for (std::size_t li = 0; li < m.layers.size(); ++li) {
    for (auto& g : detail::layer_groups(m, li)) {
      std::vector<std::pair<std::string, model::linear<float>*>> todo;
      for (auto& kl : g)
        if (detail::check_fits<F>(kl.first, *kl.second, o, rep)) todo.push_back(kl);
      if (todo.empty()) continue;
      // Inputs of the group (one shared input) with everything before it already quantized.
      auto cap = std::make_shared<detail::activation_capture>(todo[0].second->in, true, 0);
      todo[0].second->adapters.push_back(cap);
      if (lc)
        lc->run(li, false);
      else
        detail::run_calibration(be, m, calib);
      todo[0].second->adapters.clear();
      for (auto& [key, l] : todo) {
        auto q = quantize_gptq<F>(l->weight.value, l->out, l->in, cap->h(), p);
        detail::canonical_group_order(q);
        layer_error e{.name = key};
        if (o.measure_errors) {
          const auto r = quantize_rtn<F>(l->weight.value, l->out, l->in);
          e.error = detail::hessian_error(l->weight.value, q, cap->h());
          e.rtn_error = detail::hessian_error(l->weight.value, r, cap->h());
        }
        rep.layers.push_back(e);
        detail::install<Bk>(*l, std::move(q), rep);
      }
    }
    if (lc && li + 1 < m.layers.size()) lc->run(li, true);  // the quantized layer's outputs
  }
  return rep;
}

/// AWQ options: the α grid and how many activation rows per group the search uses.
struct awq_options {
  int grid = 20;                 ///< α ∈ {0, 1/grid, ..., (grid-1)/grid} (the reference's 20)
  std::int64_t max_rows = 4096;  ///< calibration token rows kept per group for the search
  bool clip = true;              ///< llm-awq's weight clipping (auto_clip) after scaling
};

/// AWQ of every decoder projection into format F (see the header comment), calibrated on
/// `calib`.
template <QuantFormat F, class Bk>
model_quant_report quantize_model_awq(Bk be, model::causal_lm<float>& m,
                                      const std::vector<std::vector<std::int64_t>>& calib,
                                      const awq_options& a = {},
                                      const model_quant_options& o = {}) {
  model_quant_report rep;
  detail::precheck<F>(m, o);
  const auto& c = m.config;
  const bool per_head_v = c.num_key_value_heads == c.num_attention_heads;
  std::optional<detail::layer_calibration<Bk>> lc;
  if (o.layerwise) lc.emplace(be, m, calib);
  for (std::size_t li = 0; li < m.layers.size(); ++li) {
    auto& L = m.layers[li];
    auto groups = detail::layer_groups(m, li);
    // Which projections F can hold; capture the four group inputs in one pass.
    std::vector<std::vector<bool>> ok(groups.size());
    std::vector<std::shared_ptr<detail::activation_capture>> caps(groups.size());
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      for (auto& [key, l] : groups[gi]) ok[gi].push_back(detail::check_fits<F>(key, *l, o, rep));
      caps[gi] =
          std::make_shared<detail::activation_capture>(groups[gi][0].second->in, true, a.max_rows);
      groups[gi][0].second->adapters.push_back(caps[gi]);
    }
    if (lc)
      lc->run(li, false);
    else
      detail::run_calibration(be, m, calib);
    for (auto& g : groups) g[0].second->adapters.clear();
    // A group can be scaled only if all its members are quantized and the op before it can
    // absorb 1/s: o_proj needs one value head per query head, down_proj a dense up_proj.
    std::vector<std::vector<float>> scales(groups.size());
    std::vector<double> ratios(groups.size(), -1);
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      const bool all = std::all_of(ok[gi].begin(), ok[gi].end(), [](bool b) { return b; });
      const bool foldable = gi == 0 || gi == 2 || (gi == 1 && per_head_v) || gi == 3;
      if (!all || !foldable) continue;
      std::vector<awq_linear> ls;
      for (auto& [key, l] : groups[gi]) ls.push_back({l->weight.value, l->out});
      const auto& cap = *caps[gi];
      auto res =
          awq_search<F>(ls, groups[gi][0].second->in, cap.rows(), cap.row_count(), a.grid, be);
      scales[gi] = std::move(res.scales);
      ratios[gi] = res.ratio;
    }
    // v_proj's rows feed o_proj and up_proj's rows feed down_proj: fold those (dense) first.
    if (!scales[1].empty()) {
      std::vector<float> s(scales[1]);
      fold_scales_into_linear(
          L.v_proj.weight.value, L.v_proj.out, L.v_proj.in, s,
          L.v_proj.bias ? std::span<float>(L.v_proj.bias->value) : std::span<float>{});
    }
    if (!scales[3].empty())
      fold_scales_into_linear(
          L.up_proj.weight.value, L.up_proj.out, L.up_proj.in, scales[3],
          L.up_proj.bias ? std::span<float>(L.up_proj.bias->value) : std::span<float>{});
    if (!scales[0].empty()) fold_scales_into_rmsnorm(L.input_layernorm.value, scales[0]);
    if (!scales[2].empty()) fold_scales_into_rmsnorm(L.post_attention_layernorm.value, scales[2]);
    for (std::size_t gi = 0; gi < groups.size(); ++gi)
      for (std::size_t k = 0; k < groups[gi].size(); ++k) {
        if (!ok[gi][k]) continue;
        auto& [key, l] = groups[gi][k];
        const auto& h = caps[gi]->h();
        layer_error e{.name = key, .awq_ratio = ratios[gi]};
        if (o.measure_errors)
          e.rtn_error = detail::hessian_error(l->weight.value,
                                              quantize_rtn<F>(l->weight.value, l->out, l->in), h);
        // W·diag(s) (s = 1 where the group is not scaled), clipped, then RTN.
        std::vector<float> s = scales[gi];
        if (s.empty()) s.assign(std::size_t(l->in), 1.0f);
        std::vector<float> ws(l->weight.value);
        for (std::int64_t row = 0; row < l->out; ++row)
          for (std::int64_t i = 0; i < l->in; ++i)
            ws[std::size_t(row * l->in + i)] *= s[std::size_t(i)];
        const bool query_or_key = key.ends_with("q_proj") || key.ends_with("k_proj");
        if (a.clip && !query_or_key) detail::awq_clip<F>(ws, l->out, l->in, h, s);
        auto q = F::quantize(ws, l->out, l->in);
        // The error in the original coordinates: dequant(q)·diag(1/s) against W.
        double total = 0;
        if (o.measure_errors) {
          const auto d = dequantize(q);
          const std::int64_t n = l->in;
          std::vector<double> dw(static_cast<std::size_t>(n));
          for (std::int64_t row = 0; row < l->out; ++row) {
            for (std::int64_t i = 0; i < n; ++i)
              dw[std::size_t(i)] = double(l->weight.value[std::size_t(row * n + i)]) -
                                   double(d[std::size_t(row * n + i)]) / s[std::size_t(i)];
            for (std::int64_t i = 0; i < n; ++i) {
              double acc = 0;
              for (std::int64_t j = 0; j < n; ++j) acc += h(i, j) * dw[std::size_t(j)];
              total += dw[std::size_t(i)] * acc;
            }
          }
        }
        e.error = total / double(l->out);
        rep.layers.push_back(e);
        detail::install<Bk>(*l, std::move(q), rep);
      }
    if (lc && li + 1 < m.layers.size()) lc->run(li, true);  // the quantized layer's outputs
  }
  return rep;
}

}  // namespace forge::quant
