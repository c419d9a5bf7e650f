#pragma once
// Forward and backward passes of a Llama-family causal LM (transformers' LlamaModel /
// MistralModel / Qwen2Model + the LM head), one layer at a time:
//   x⁰ = embed(ids)                                   (or caller-given input embeddings)
//   per layer:  a = x + o_proj(attn(rope(q_proj(n₁)), rope(k_proj(n₁)), v_proj(n₁))),
//               n₁ = rmsnorm(x; w₁)
//               x' = a + down_proj(silu(gate_proj(n₂)) ⊙ up_proj(n₂)),  n₂ = rmsnorm(a; w₂)
//   logits = lm_head(rmsnorm(x^L; w_f))
// backward() runs the layers in reverse with the *_backward kernels and accumulates into
// every trainable parameter's gradient and, optionally, into the input embeddings' gradient.
//
// Activation memory is planned once per shape in a single arena (`workspace`): inference
// keeps one layer's activations; training keeps every layer's (about
// N·(5H + 2Q + 2K + 3I) + B·heads·S² scalars per layer, N = B·S tokens); with `recompute`
// (gradient checkpointing) only each layer's input x is kept and the layer is re-run
// during backward, which gives bit-identical gradients.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "forge/backend/attention.hpp"
#include "forge/backend/cross_entropy.hpp"
#include "forge/backend/rmsnorm.hpp"
#include "forge/backend/rope.hpp"
#include "forge/backend/swiglu.hpp"
#include "forge/model/causal_lm.hpp"
#include "forge/model/kv_cache.hpp"
#include "forge/model/rope.hpp"

namespace forge::model {

/// Which positions get logits.
enum class logits_for { all, last };

/// What a forward pass keeps.
struct forward_options {
  logits_for logits = logits_for::all;
  bool for_backward = false;  ///< keep activations so backward() can run
  bool recompute = false;     ///< with for_backward: keep only layer inputs (checkpointing)
};

/// One batch of inputs. Exactly one of input_ids / inputs_embeds is given.
template <class T>
struct model_input {
  std::int64_t batch = 1, seq = 0;
  std::span<const std::int64_t> input_ids{};  ///< [batch, seq]
  std::span<const T> inputs_embeds{};         ///< [batch, seq, hidden]
  std::span<const std::int64_t>
      attention_mask{};  ///< [batch, seq], 1 token / 0 padding; empty = all 1
  std::span<const std::int64_t> position_ids{};  ///< [batch, seq]; empty = cache length + 0..seq-1
  /// [batch, seq] example id of each token of a packed row (data::packer's rows): attention
  /// stays within equal ids, so a packed row computes what its examples do one by one.
  /// Empty = one example per row. Not with a KV cache.
  std::span<const std::int32_t> segment_ids{};
};

/// The activation arena of one model and batch shape, reused across calls.
template <class T>
class workspace {
 public:
  /// Activations of one decoder layer (pointers into the arena; null where not kept).
  struct layer_acts {
    T *x_in = nullptr, *rstd1 = nullptr, *xn1 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr,
      *probs = nullptr, *att = nullptr, *x_mid = nullptr, *rstd2 = nullptr, *xn2 = nullptr,
      *g = nullptr, *u = nullptr, *h = nullptr;
  };

  /// Logits of the last forward: [batch·seq, vocab] or [batch, vocab] (logits_for::last).
  std::span<const T> logits() const { return {logits_, std::size_t(logit_rows_ * vocab_)}; }
  /// Gradient of the loss w.r.t. logits(), same shape; filled by the caller or a loss.
  std::span<T> dlogits() { return {dlogits_, std::size_t(logit_rows_ * vocab_)}; }
  std::int64_t logit_rows() const { return logit_rows_; }
  std::int64_t batch() const { return B_; }
  std::int64_t seq() const { return S_; }
  /// Scalars in the arena (its size in bytes is this times sizeof(T)).
  std::size_t arena_size() const { return arena_.size(); }

  // ---- state of the last forward (read by backward) ----
  std::int64_t B_ = 0, S_ = 0, N_ = 0, vocab_ = 0, logit_rows_ = 0, kv_len_ = 0;
  forward_options opts_;
  bool ready_for_backward_ = false;
  std::vector<std::int64_t> ids_;
  bool from_embeds_ = false;
  std::vector<unsigned char> mask_;     ///< [B, S] key mask (training), empty = none
  std::vector<std::int32_t> segments_;  ///< [B, S] segment ids of packed rows, empty = none
  std::vector<T> cos_, sin_;
  std::vector<layer_acts> acts_;  ///< per layer (training) or one shared set
  layer_acts scratch_;            ///< recompute target with checkpointing
  T *x_final_ = nullptr, *rstd_f_ = nullptr, *xn_f_ = nullptr, *head_in_ = nullptr;
  T *logits_ = nullptr, *dlogits_ = nullptr;
  T *dx_ = nullptr, *dxn_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr,
    *datt_ = nullptr, *dg_ = nullptr, *du_ = nullptr, *dh_ = nullptr, *dhead_ = nullptr;
  std::vector<T> arena_;

  /// Lays out the arena for a call (sizes only depend on config, shape and options).
  void plan(const model_config& c, std::int64_t B, std::int64_t S, std::int64_t kv_len,
            const forward_options& o) {
    B_ = B, S_ = S, N_ = B * S, vocab_ = c.vocab_size, kv_len_ = kv_len, opts_ = o;
    const std::int64_t N = N_, H = c.hidden_size, I = c.intermediate_size;
    const std::int64_t Q = c.num_attention_heads * c.head_dim;
    const std::int64_t K = c.num_key_value_heads * c.head_dim;
    const std::int64_t L = c.num_hidden_layers;
    logit_rows_ = o.logits == logits_for::all ? N : B;
    std::size_t total = 0;
    std::vector<std::pair<T**, std::int64_t>> slots;
    auto take = [&](T** p, std::int64_t n) {
      slots.push_back({p, n});
      total += std::size_t(n);
    };
    auto full_set = [&](layer_acts& a, bool with_x, bool with_probs) {
      if (with_x) take(&a.x_in, N * H);
      take(&a.rstd1, N), take(&a.xn1, N * H), take(&a.q, N * Q), take(&a.k, N * K);
      take(&a.v, N * K), take(&a.att, N * Q), take(&a.x_mid, N * H), take(&a.rstd2, N);
      take(&a.xn2, N * H), take(&a.g, N * I), take(&a.u, N * I), take(&a.h, N * I);
      if (with_probs) take(&a.probs, B * c.num_attention_heads * S * kv_len);
    };
    acts_.assign(std::size_t(o.for_backward ? L : 1), layer_acts{});
    scratch_ = layer_acts{};
    if (!o.for_backward) {
      full_set(acts_[0], true, false);  // x_in holds the residual stream in place
    } else if (o.recompute) {
      for (auto& a : acts_) take(&a.x_in, N * H);
      full_set(scratch_, false, true);
    } else {
      for (auto& a : acts_) full_set(a, true, true);
    }
    take(&x_final_, N * H), take(&rstd_f_, N), take(&xn_f_, N * H);
    if (o.logits == logits_for::last) take(&head_in_, B * H);
    take(&logits_, logit_rows_ * vocab_);
    dx_ = dxn_ = dq_ = dk_ = dv_ = datt_ = dg_ = du_ = dh_ = dhead_ = dlogits_ = nullptr;
    if (o.for_backward) {
      take(&dlogits_, logit_rows_ * vocab_), take(&dx_, N * H), take(&dxn_, N * H);
      take(&dq_, N * Q), take(&dk_, N * K), take(&dv_, N * K), take(&datt_, N * Q);
      take(&dg_, N * I), take(&du_, N * I), take(&dh_, N * I);
      if (o.logits == logits_for::last) take(&dhead_, B * H);
    }
    if (arena_.size() < total) {
      arena_.clear();
      arena_.shrink_to_fit();
      arena_.resize(total);
    }
    std::size_t off = 0;
    for (auto& [p, n] : slots) {
      *p = arena_.data() + off;
      off += std::size_t(n);
    }
    if (o.recompute && o.for_backward)
      for (auto& a : acts_) {  // everything but x_in lives in the shared scratch set
        T* x = a.x_in;
        a = scratch_;
        a.x_in = x;
      }
  }
};

namespace detail {

/// Per-call context shared by every layer.
template <class T>
struct call_context {
  std::int64_t B, S, N;
  kv_cache<T>* cache;
  std::int64_t past;              ///< cache length before this call
  const unsigned char* key_mask;  ///< [B, S] (no cache) or the cache's [B, capacity]
  const T *cos, *sin;
  const std::int32_t* segments;  ///< [B, S] packed-row segment ids, or null
};

template <class T>
void add_inplace(T* y, const T* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}

/// The attention call of layer `li` over this call's own B x S tokens (no cache yet).
inline backend::attention_shape attention_shape_of(const model_config& c, std::size_t li,
                                                   std::int64_t B, std::int64_t S,
                                                   const std::int32_t* segments) {
  return {.batch = B,
          .q_len = S,
          .kv_len = S,
          .kv_stride = S,
          .heads = c.num_attention_heads,
          .kv_heads = c.num_key_value_heads,
          .head_dim = c.head_dim,
          .q_offset = 0,
          .window = c.sliding_window[li],
          .scale = 1.0 / std::sqrt(double(c.head_dim)),
          .segments = segments};
}

/// One decoder layer: x_out = layer(x_in), filling `a`. x_out may alias a.x_in.
template <class T, class Bk>
void layer_forward(Bk be, const model_config& c, decoder_layer<T>& L, std::size_t li,
                   typename workspace<T>::layer_acts& a, const call_context<T>& cx, T* x_out) {
  const std::int64_t N = cx.N, H = c.hidden_size, D = c.head_dim;
  const std::int64_t Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  const std::int64_t K = Hk * D, I = c.intermediate_size;
  backend::rmsnorm_forward(be, N, H, a.x_in, L.input_layernorm.value.data(), T(c.rms_norm_eps),
                           a.xn1, a.rstd1);
  linear_forward(be, L.q_proj, a.xn1, N, a.q);
  linear_forward(be, L.k_proj, a.xn1, N, a.k);
  linear_forward(be, L.v_proj, a.xn1, N, a.v);
  backend::rope_forward(be, N, Hq, D, a.q, cx.cos, cx.sin);
  backend::rope_forward(be, N, Hk, D, a.k, cx.cos, cx.sin);
  auto as = attention_shape_of(c, li, cx.B, cx.S, cx.segments);
  const T *kk = a.k, *vv = a.v;
  if (cx.cache) {
    auto& ck = cx.cache->k[li];
    auto& cv = cx.cache->v[li];
    const std::int64_t cap = cx.cache->capacity;
    for (std::int64_t b = 0; b < cx.B; ++b) {
      std::copy_n(a.k + b * cx.S * K, cx.S * K, ck.data() + (b * cap + cx.past) * K);
      std::copy_n(a.v + b * cx.S * K, cx.S * K, cv.data() + (b * cap + cx.past) * K);
    }
    as.kv_len = cx.past + cx.S, as.kv_stride = cap, as.q_offset = cx.past;
    kk = ck.data(), vv = cv.data();
  }
  backend::attention_forward(be, as, a.q, kk, vv, cx.key_mask, a.att, a.probs);
  linear_forward(be, L.o_proj, a.att, N, a.x_mid);
  add_inplace(a.x_mid, a.x_in, N * H);
  backend::rmsnorm_forward(be, N, H, a.x_mid, L.post_attention_layernorm.value.data(),
                           T(c.rms_norm_eps), a.xn2, a.rstd2);
  linear_forward(be, L.gate_proj, a.xn2, N, a.g);
  linear_forward(be, L.up_proj, a.xn2, N, a.u);
  backend::swiglu_forward(be, N * I, a.g, a.u, a.h);
  linear_forward(be, L.down_proj, a.h, N, x_out);
  add_inplace(x_out, a.x_mid, N * H);
}

/// Backward of one layer: ws.dx_ holds d(x_out) on entry and d(x_in) on exit.
template <class T, class Bk>
void layer_backward(Bk be, const model_config& c, decoder_layer<T>& L, std::size_t li,
                    workspace<T>& ws, const typename workspace<T>::layer_acts& a) {
  const std::int64_t N = ws.N_, H = c.hidden_size, D = c.head_dim;
  const std::int64_t Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  const std::int64_t I = c.intermediate_size;
  auto* w2 = &L.post_attention_layernorm;
  auto* w1 = &L.input_layernorm;
  // MLP: x_out = x_mid + down(h)
  linear_backward(be, L.down_proj, a.h, ws.dx_, N, ws.dh_, false);
  backend::swiglu_backward(be, N * I, a.g, a.u, ws.dh_, ws.dg_, ws.du_);
  linear_backward(be, L.gate_proj, a.xn2, ws.dg_, N, ws.dxn_, false);
  linear_backward(be, L.up_proj, a.xn2, ws.du_, N, ws.dxn_, true);
  backend::rmsnorm_backward(be, N, H, a.x_mid, w2->value.data(), a.rstd2, ws.dxn_, ws.dx_,
                            w2->has_grad() ? w2->grad.data() : nullptr, true);
  // Attention: x_mid = x_in + o(attn(...))
  linear_backward(be, L.o_proj, a.att, ws.dx_, N, ws.datt_, false);
  auto as =
      attention_shape_of(c, li, ws.B_, ws.S_, ws.segments_.empty() ? nullptr : ws.segments_.data());
  backend::attention_backward(be, as, a.q, a.k, a.v, a.probs, ws.datt_, ws.dq_, ws.dk_, ws.dv_);
  backend::rope_backward(be, N, Hq, D, ws.dq_, ws.cos_.data(), ws.sin_.data());
  backend::rope_backward(be, N, Hk, D, ws.dk_, ws.cos_.data(), ws.sin_.data());
  linear_backward(be, L.q_proj, a.xn1, ws.dq_, N, ws.dxn_, false);
  linear_backward(be, L.k_proj, a.xn1, ws.dk_, N, ws.dxn_, true);
  linear_backward(be, L.v_proj, a.xn1, ws.dv_, N, ws.dxn_, true);
  backend::rmsnorm_backward(be, N, H, a.x_in, w1->value.data(), a.rstd1, ws.dxn_, ws.dx_,
                            w1->has_grad() ? w1->grad.data() : nullptr, true);
}

inline std::string shape_text(std::int64_t a, std::int64_t b) {
  std::string s = "[";
  s.append(std::to_string(a)).append(", ").append(std::to_string(b)).append("]");
  return s;
}

}  // namespace detail

/// Runs the model on `in`; returns the logits (see workspace::logits()). With a cache, the
/// new tokens occupy cache slots [cache.length, cache.length + seq), attention_mask covers
/// only the new tokens, and cache.length advances by seq.
template <class T, class Bk>
std::span<const T> forward(Bk be, causal_lm<T>& m, workspace<T>& ws, const model_input<T>& in,
                           const forward_options& o = {}, kv_cache<T>* cache = nullptr) {
  const auto& c = m.config;
  const std::int64_t B = in.batch, S = in.seq, N = B * S, H = c.hidden_size;
  require(B > 0 && S > 0, {.what = "empty batch",
                           .place = "forward",
                           .expected = "batch > 0 and seq > 0",
                           .found = detail::shape_text(B, S)});
  require(!(o.for_backward && cache),
          {.what = "training forward cannot use a kv cache", .place = "forward"});
  const bool embeds = !in.inputs_embeds.empty();
  require(embeds != !in.input_ids.empty(),
          {.what = "give exactly one of input_ids and inputs_embeds", .place = "forward"});
  if (embeds)
    require(std::int64_t(in.inputs_embeds.size()) == N * H,
            {.what = "inputs_embeds size",
             .place = "forward",
             .expected = std::to_string(N * H),
             .found = std::to_string(in.inputs_embeds.size())});
  else
    require(std::int64_t(in.input_ids.size()) == N, {.what = "input_ids size",
                                                     .place = "forward",
                                                     .expected = std::to_string(N),
                                                     .found = std::to_string(in.input_ids.size())});
  if (!in.attention_mask.empty())
    require(std::int64_t(in.attention_mask.size()) == N,
            {.what = "attention_mask size",
             .place = "forward",
             .expected = std::to_string(N),
             .found = std::to_string(in.attention_mask.size())});
  if (!in.position_ids.empty())
    require(std::int64_t(in.position_ids.size()) == N,
            {.what = "position_ids size",
             .place = "forward",
             .expected = std::to_string(N),
             .found = std::to_string(in.position_ids.size())});
  if (!in.segment_ids.empty()) {
    require(std::int64_t(in.segment_ids.size()) == N,
            {.what = "segment_ids size",
             .place = "forward",
             .expected = std::to_string(N),
             .found = std::to_string(in.segment_ids.size())});
    require(!cache, {.what = "segment_ids (packed rows) cannot be used with a KV cache",
                     .place = "forward"});
  }
  const std::int64_t past = cache ? cache->length : 0;
  if (cache) {
    require(cache->batch == B, {.what = "kv cache batch size",
                                .place = "forward",
                                .expected = std::to_string(B),
                                .found = std::to_string(cache->batch)});
    require(past + S <= cache->capacity,
            {.what = "kv cache full",
             .place = "forward",
             .expected = "at most " + std::to_string(cache->capacity - past) + " new tokens",
             .found = std::to_string(S)});
  }

  ws.plan(c, B, S, past + S, o);
  ws.ready_for_backward_ = false;
  ws.from_embeds_ = embeds;
  ws.ids_.assign(in.input_ids.begin(), in.input_ids.end());

  // Positions: given, or the cache slot index (transformers' cache_position default).
  std::vector<std::int64_t> pos(static_cast<std::size_t>(N));
  for (std::int64_t t = 0; t < N; ++t) {
    pos[t] = in.position_ids.empty() ? past + t % S : in.position_ids[t];
    require(pos[t] >= 0, {.what = "negative position id",
                          .place = "position " + std::to_string(t),
                          .expected = ">= 0",
                          .found = std::to_string(pos[t])});
  }
  rope_tables<T>(c, pos.data(), N, ws.cos_, ws.sin_);

  // Key mask: per slot of this call (no cache) or of the cache.
  ws.mask_.clear();
  const unsigned char* key_mask = nullptr;
  if (cache) {
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        cache->mask[b * cache->capacity + past + s] =
            in.attention_mask.empty() ? 1 : (in.attention_mask[b * S + s] != 0);
    key_mask = cache->mask.data();
  } else if (!in.attention_mask.empty()) {
    ws.mask_.resize(static_cast<std::size_t>(N));
    for (std::int64_t t = 0; t < N; ++t) ws.mask_[t] = in.attention_mask[t] != 0;
    key_mask = ws.mask_.data();
  }

  // Embeddings into layer 0's input.
  T* x0 = ws.acts_[0].x_in;
  if (embeds) {
    std::copy(in.inputs_embeds.begin(), in.inputs_embeds.end(), x0);
  } else {
    for (std::int64_t t = 0; t < N; ++t) {
      const std::int64_t id = in.input_ids[t];
      require(id >= 0 && id < c.vocab_size,
              {.what = "token id out of range",
               .place = "input_ids[" + std::to_string(t) + "]",
               .expected = "in [0, " + std::to_string(c.vocab_size) + ")",
               .found = std::to_string(id)});
      m.embed_row(id, x0 + t * H);
    }
  }

  ws.segments_.assign(in.segment_ids.begin(), in.segment_ids.end());
  detail::call_context<T> cx{B,
                             S,
                             N,
                             cache,
                             past,
                             key_mask,
                             ws.cos_.data(),
                             ws.sin_.data(),
                             ws.segments_.empty() ? nullptr : ws.segments_.data()};
  const std::size_t L = m.layers.size();
  for (std::size_t li = 0; li < L; ++li) {
    auto& a = ws.acts_[o.for_backward ? li : 0];
    T* x_out = li + 1 < L ? (o.for_backward ? ws.acts_[li + 1].x_in : a.x_in) : ws.x_final_;
    detail::layer_forward(be, c, m.layers[li], li, a, cx, x_out);
  }
  backend::rmsnorm_forward(be, N, H, ws.x_final_, m.norm.value.data(), T(c.rms_norm_eps), ws.xn_f_,
                           ws.rstd_f_);
  const T* head_in = ws.xn_f_;
  if (o.logits == logits_for::last) {
    for (std::int64_t b = 0; b < B; ++b)
      std::copy_n(ws.xn_f_ + (b * S + S - 1) * H, H, ws.head_in_ + b * H);
    head_in = ws.head_in_;
  }
  linear_forward(be, m.lm_head, head_in, ws.logit_rows_, ws.logits_, &m.head_weight());
  if (cache) cache->length = past + S;
  ws.ready_for_backward_ = o.for_backward;
  return ws.logits();
}

/// Back-propagates ws.dlogits() (set by the caller or by causal_lm_loss) through the model:
/// parameter gradients accumulate into every trainable parameter with an allocated
/// gradient (see causal_lm::enable_grads); d_inputs_embeds [batch·seq·hidden], if given,
/// receives the gradient w.r.t. the layer-0 input (overwritten).
template <class T, class Bk>
void backward(Bk be, causal_lm<T>& m, workspace<T>& ws, std::span<T> d_inputs_embeds = {}) {
  require(ws.ready_for_backward_,
          {.what = "backward needs a forward with for_backward = true", .place = "backward"});
  const auto& c = m.config;
  const std::int64_t N = ws.N_, H = c.hidden_size, B = ws.B_, S = ws.S_;
  if (!d_inputs_embeds.empty())
    require(std::int64_t(d_inputs_embeds.size()) == N * H,
            {.what = "d_inputs_embeds size",
             .place = "backward",
             .expected = std::to_string(N * H),
             .found = std::to_string(d_inputs_embeds.size())});
  // Head and final norm.
  T* dxn = ws.dxn_;
  if (ws.opts_.logits == logits_for::last) {
    linear_backward(be, m.lm_head, ws.head_in_, ws.dlogits_, B, ws.dhead_, false, &m.head_weight());
    std::fill_n(dxn, N * H, T(0));
    for (std::int64_t b = 0; b < B; ++b)
      std::copy_n(ws.dhead_ + b * H, H, dxn + (b * S + S - 1) * H);
  } else {
    linear_backward(be, m.lm_head, ws.xn_f_, ws.dlogits_, N, dxn, false, &m.head_weight());
  }
  backend::rmsnorm_backward(be, N, H, ws.x_final_, m.norm.value.data(), ws.rstd_f_, dxn, ws.dx_,
                            m.norm.has_grad() ? m.norm.grad.data() : nullptr, false);
  // Layers in reverse; with checkpointing each layer is first re-run from its saved input.
  detail::call_context<T> cx{B,
                             S,
                             N,
                             nullptr,
                             0,
                             ws.mask_.empty() ? nullptr : ws.mask_.data(),
                             ws.cos_.data(),
                             ws.sin_.data(),
                             ws.segments_.empty() ? nullptr : ws.segments_.data()};
  for (std::size_t li = m.layers.size(); li-- > 0;) {
    auto& a = ws.acts_[li];
    if (ws.opts_.recompute) {
      // The layer output is not needed: write it into dxn's buffer, which is free here.
      detail::layer_forward(be, c, m.layers[li], li, a, cx, ws.dxn_);
    }
    detail::layer_backward(be, c, m.layers[li], li, ws, a);
  }
  // Embeddings.
  if (!ws.from_embeds_ && !m.embed_base && m.embed_tokens.has_grad()) {
    T* g = m.embed_tokens.grad.data();
    for (std::int64_t t = 0; t < N; ++t) detail::add_inplace(g + ws.ids_[t] * H, ws.dx_ + t * H, H);
  }
  if (!d_inputs_embeds.empty()) std::copy_n(ws.dx_, N * H, d_inputs_embeds.data());
}

/// Causal-LM loss of transformers' ForCausalLMLoss: logits at t predict labels at t + 1,
/// mean cross-entropy over labels ≠ -100. Needs logits_for::all. Writes ws.dlogits() for
/// dLoss = 1 (times grad_scale) and returns the loss.
template <class T, class Bk>
double causal_lm_loss(Bk be, workspace<T>& ws, std::span<const std::int64_t> labels,
                      double grad_scale = 1.0) {
  require(ws.opts_.logits == logits_for::all,
          {.what = "the causal LM loss needs logits for all positions", .place = "loss"});
  const std::int64_t B = ws.B_, S = ws.S_;
  require(std::int64_t(labels.size()) == B * S, {.what = "labels size",
                                                 .place = "loss",
                                                 .expected = std::to_string(B * S),
                                                 .found = std::to_string(labels.size())});
  std::vector<std::int64_t> targets(static_cast<std::size_t>(B * S), backend::ignore_index);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t s = 0; s + 1 < S; ++s) targets[b * S + s] = labels[b * S + s + 1];
  return backend::cross_entropy(be, B * S, ws.vocab_, ws.logits_, targets.data(), ws.dlogits_,
                                grad_scale);
}

}  // namespace forge::model
