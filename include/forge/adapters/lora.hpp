#pragma once
// LoRA (Hu et al. 2021), rsLoRA (Kalajdzievski 2023) and DoRA (Liu et al. 2024) as adapters on
// the model's linear layers, following PEFT's LoraLayer / DoraLinearLayer:
//   LoRA:  y = base(x) + s · B·A·drop(x),         s = alpha / r   (rsLoRA: alpha / √r)
//   DoRA:  y = base(x) + (g − 1) ⊙ (drop(x)·Wᵀ) + g ⊙ s·B·A·drop(x),
//          g = m / ‖W + s·B·A‖_row  with the norm detached (DoRA §4.3, as PEFT does)
// A [r, in], B [out, r], m [out]. The dense W + s·B·A is never formed for LoRA: forward and
// backward are two thin GEMMs through the frozen base. Backward (for LoRA, u = x·Aᵀ):
//   dB += s·dyᵀ·u,   dA += s·(dy·B)ᵀ·x,   dx += s·(dy·B)·A
// Initialisation as PEFT: A Kaiming-uniform (a = √5, i.e. U(±1/√in)) or N(0, 1/r), B = 0;
// DoRA's m starts at ‖W‖_row so the adapted model equals the base at step 0.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "forge/adapters/detail/full_match.hpp"
#include "forge/backend/gemm.hpp"
#include "forge/core/error.hpp"
#include "forge/core/rng.hpp"
#include "forge/model/causal_lm.hpp"

namespace forge::adapters {

/// How lora_A is initialised (PEFT's init_lora_weights = true / "gaussian"); B is zero.
enum class lora_init { kaiming_uniform, gaussian };

/// LoRA hyperparameters; defaults are PEFT's LoraConfig.
struct lora_config {
  int rank = 8;        ///< r
  double alpha = 8;    ///< lora_alpha
  double dropout = 0;  ///< lora_dropout, applied to the adapter's input
  /// Module names matched as PEFT does: a key equal to the name or ending in ".name";
  /// the single entry "all-linear" means every linear layer but the output head.
  std::vector<std::string> target_modules{"q_proj", "v_proj"};
  /// If non-empty, used instead of target_modules: a regex that must match the whole key.
  std::string target_regex{};
  bool use_rslora = false;  ///< scale alpha / √r instead of alpha / r
  bool use_dora = false;    ///< weight-decomposed LoRA
  lora_init init = lora_init::kaiming_uniform;
  /// The adapter's output scale s.
  double scaling() const { return use_rslora ? alpha / std::sqrt(double(rank)) : alpha / rank; }
};

/// A named linear layer of a model ("model.layers.0.self_attn.q_proj", "lm_head").
template <class T>
struct named_linear {
  std::string name;
  model::linear<T>* layer = nullptr;
};

/// Every linear layer of `m` with its module key, in Hugging Face order.
template <class T>
std::vector<named_linear<T>> linear_layers(model::causal_lm<T>& m) {
  std::vector<named_linear<T>> out;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    auto& L = m.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "self_attn.q_proj", &L.q_proj});
    out.push_back({p + "self_attn.k_proj", &L.k_proj});
    out.push_back({p + "self_attn.v_proj", &L.v_proj});
    out.push_back({p + "self_attn.o_proj", &L.o_proj});
    out.push_back({p + "mlp.gate_proj", &L.gate_proj});
    out.push_back({p + "mlp.up_proj", &L.up_proj});
    out.push_back({p + "mlp.down_proj", &L.down_proj});
  }
  out.push_back({"lm_head", &m.lm_head});
  return out;
}

/// True when module key `key` is a target of `c` (PEFT's _check_target_module_exists).
inline bool is_target(const lora_config& c, const std::string& key) {
  if (!c.target_regex.empty()) return detail::full_match(c.target_regex, "target_modules")(key);
  if (c.target_modules.size() == 1 && c.target_modules[0] == "all-linear") return key != "lm_head";
  for (const auto& t : c.target_modules)
    if (key == t || (key.size() > t.size() && key.ends_with("." + t))) return true;
  return false;
}

/// One adapted linear layer: LoRA (or DoRA) weights, their gradients and the math.
template <class T>
class lora_module : public model::linear_adapter<T> {
 public:
  std::string name;  ///< module key, e.g. "model.layers.0.self_attn.q_proj"
  std::int64_t rank = 0, in = 0, out = 0;
  T scale = 1;    ///< s
  T dropout = 0;  ///< probability of zeroing an input element
  bool dora = false;
  std::vector<T> A, B, m;          ///< [r, in], [out, r], [out] (m only for DoRA)
  std::vector<T> dA, dB, dm;       ///< gradients, same shapes
  bool training = false;           ///< dropout is active only while training
  std::uint64_t dropout_seed = 0;  ///< with dropout_step: keys the dropout mask
  std::uint64_t dropout_step = 0;  ///< set per micro-batch by the trainer
  bool merged = false;             ///< true while merged into the base weight
  std::vector<T> merged_norm;      ///< DoRA: the row norms used by merge(), for unmerge()

  /// DoRA: the frozen dense base weight [out, in] (shared, immutable), else null.
  std::shared_ptr<const std::vector<T>> base_weight;

  /// A module for layer `l` (its shape; for DoRA a snapshot of its dense weight).
  lora_module(std::string n, const model::linear<T>& l, const lora_config& c)
      : name(std::move(n)),
        rank(c.rank),
        in(l.in),
        out(l.out),
        scale(T(c.scaling())),
        dropout(T(c.dropout)),
        dora(c.use_dora),
        A(std::size_t(rank * in)),
        B(std::size_t(out * rank)),
        dA(A.size()),
        dB(B.size()) {
    if (!dora) return;
    require(!l.base && !l.weight.value.empty(), {.what = "DoRA needs a dense base weight",
                                                 .place = name,
                                                 .expected = "a dense f32/f64 weight",
                                                 .found = "a replaced (e.g. quantized) base"});
    base_weight = std::make_shared<const std::vector<T>>(l.weight.value);
    m.assign(std::size_t(out), T(0)), dm.assign(std::size_t(out), T(0));
  }

  /// The dense base weight DoRA works with.
  const std::vector<T>& dense_weight(const char*) const { return *base_weight; }

  /// Zeroes the parameter gradients.
  void zero_grad() {
    std::fill(dA.begin(), dA.end(), T(0));
    std::fill(dB.begin(), dB.end(), T(0));
    std::fill(dm.begin(), dm.end(), T(0));
  }

  /// DoRA: the row norms ‖W + s·B·A‖ (detached: treated as a constant in backward).
  std::vector<T> weight_norm() const {
    const auto& W = dense_weight("DoRA");
    std::vector<T> n(static_cast<std::size_t>(out));
    std::vector<double> row(static_cast<std::size_t>(in));
    for (std::int64_t o = 0; o < out; ++o) {
      for (std::int64_t i = 0; i < in; ++i) row[i] = W[o * in + i];
      for (std::int64_t k = 0; k < rank; ++k) {
        const double b = double(scale) * B[o * rank + k];
        if (b != 0)
          for (std::int64_t i = 0; i < in; ++i) row[i] += b * A[k * in + i];
      }
      double s = 0;
      for (double v : row) s += v * v;
      n[o] = T(std::sqrt(s));
    }
    return n;
  }

  /// Folds the adapter into layer `l`'s dense weight (PEFT merge): W ← W + s·B·A, or for
  /// DoRA W ← (m / ‖W + s·B·A‖) ⊙ (W + s·B·A). The module then adds nothing until unmerge().
  void merge(model::linear<T>& l) {
    if (merged) return;
    require(!l.base && l.weight.value.size() == std::size_t(out * in),
            {.what = "merging needs a dense base weight",
             .place = name,
             .expected = "a dense [out, in] weight",
             .found = "a replaced (e.g. quantized) base"});
    auto& W = l.weight.value;
    if (dora) merged_norm = weight_norm();
    add_delta(W, T(1));
    if (dora)
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t i = 0; i < in; ++i) W[o * in + i] *= m[o] / merged_norm[o];
    merged = true;
  }
  /// Undoes merge() on the same layer (up to rounding).
  void unmerge(model::linear<T>& l) {
    if (!merged) return;
    auto& W = l.weight.value;
    if (dora)
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t i = 0; i < in; ++i) W[o * in + i] /= m[o] / merged_norm[o];
    add_delta(W, T(-1));
    merged = false;
  }

 protected:
  // W += sign·s·B·A, accumulated in double per element.
  void add_delta(std::vector<T>& W, T sign) const {
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t i = 0; i < in; ++i) {
        double d = 0;
        for (std::int64_t k = 0; k < rank; ++k) d += double(B[o * rank + k]) * A[k * in + i];
        W[o * in + i] = T(double(W[o * in + i]) + double(sign) * double(scale) * d);
      }
  }

  // The adapter's input: x, or x with inverted dropout (mask keyed by seed, step, call).
  const T* dropped(const T* x, std::int64_t rows, std::vector<T>& buf) const {
    if (!training || dropout <= 0) return x;
    buf.assign(x, x + rows * in);
    philox g(dropout_seed, dropout_step);
    const T keep = T(1) / (T(1) - dropout);
    for (auto& v : buf) v = g.uniform() < float(dropout) ? T(0) : v * keep;
    return buf.data();
  }

  template <class Bk>
  void forward_impl(Bk be, const T* x, std::int64_t rows, T* y) {
    if (merged) return;
    std::vector<T> xbuf, u(std::size_t(rows * rank)), t(std::size_t(rows * out));
    const T* xd = dropped(x, rows, xbuf);
    backend::gemm_nt(be, rows, rank, in, xd, A.data(), u.data(), false);
    for (auto& v : u) v *= scale;
    if (!dora) {
      backend::gemm_nt(be, rows, out, rank, u.data(), B.data(), y, true);
      return;
    }
    // DoRA: y += (g − 1)⊙(xd·Wᵀ) + g⊙(s·u·Bᵀ)
    const auto g = gains();
    std::vector<T> base(std::size_t(rows * out));
    backend::gemm_nt(be, rows, out, in, xd, dense_weight("DoRA").data(), base.data(), false);
    backend::gemm_nt(be, rows, out, rank, u.data(), B.data(), t.data(), false);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t o = 0; o < out; ++o)
        y[r * out + o] += (g[o] - T(1)) * base[r * out + o] + g[o] * t[r * out + o];
  }

  template <class Bk>
  void backward_impl(Bk be, const T* x, const T* dy_in, std::int64_t rows, T* dx) {
    if (merged) return;
    std::vector<T> xbuf, u(std::size_t(rows * rank)), dyb(std::size_t(rows * rank));
    const T* xd = dropped(x, rows, xbuf);
    const bool drop = xd != x;
    std::vector<T> gdy;
    const T* dy = dy_in;
    std::vector<T> g;
    if (dora) {
      // dm_o = Σ_r dy·(base + s·lora)/‖·‖_o; the LoRA path sees g⊙dy; the base path (g−1)⊙dy.
      g = gains();
      const auto n = weight_norm();
      const auto& W = dense_weight("DoRA");
      std::vector<T> base(std::size_t(rows * out)), t(std::size_t(rows * out));
      backend::gemm_nt(be, rows, out, in, xd, W.data(), base.data(), false);
      backend::gemm_nt(be, rows, rank, in, xd, A.data(), u.data(), false);
      backend::gemm_nt(be, rows, out, rank, u.data(), B.data(), t.data(), false);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t o = 0; o < out; ++o)
          dm[o] += dy_in[r * out + o] * (base[r * out + o] + scale * t[r * out + o]) / n[o];
      gdy.resize(std::size_t(rows * out));
      std::vector<T> bdy(std::size_t(rows * out));
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t o = 0; o < out; ++o) {
          gdy[r * out + o] = g[o] * dy_in[r * out + o];
          bdy[r * out + o] = (g[o] - T(1)) * dy_in[r * out + o];
        }
      dy = gdy.data();
      if (dx) add_input_grad(be, bdy.data(), rows, W.data(), in, out, dx, drop);
    }
    backend::gemm_nt(be, rows, rank, in, xd, A.data(), u.data(), false);
    for (auto& v : u) v *= scale;
    backend::gemm_nn(be, rows, out, rank, dy, B.data(), dyb.data(), false);
    for (auto& v : dyb) v *= scale;
    backend::gemm_tn(be, rows, out, rank, dy, u.data(), dB.data(), true);
    backend::gemm_tn(be, rows, rank, in, dyb.data(), xd, dA.data(), true);
    if (dx) add_input_grad(be, dyb.data(), rows, A.data(), in, rank, dx, drop);
  }

 private:
  std::vector<T> gains() const {
    const auto n = weight_norm();
    std::vector<T> g(static_cast<std::size_t>(out));
    for (std::int64_t o = 0; o < out; ++o) g[o] = m[o] / n[o];
    return g;
  }
  // dx += (d·M) through the dropout mask: d [rows, k], M [k, in].
  template <class Bk>
  void add_input_grad(Bk be, const T* d, std::int64_t rows, const T* M, std::int64_t in_,
                      std::int64_t k, T* dx, bool drop) const {
    if (!drop) {
      backend::gemm_nn(be, rows, k, in_, d, M, dx, true);
      return;
    }
    std::vector<T> tmp(std::size_t(rows * in_));
    backend::gemm_nn(be, rows, k, in_, d, M, tmp.data(), false);
    philox g(dropout_seed, dropout_step);  // the same mask as the forward
    const T keep = T(1) / (T(1) - dropout);
    for (std::int64_t i = 0; i < rows * in_; ++i)
      dx[i] += g.uniform() < float(dropout) ? T(0) : tmp[i] * keep;
  }
};

/// lora_module with its kernels taken from backend `Bk`.
template <class T, class Bk>
class lora_linear final : public lora_module<T> {
 public:
  using lora_module<T>::lora_module;
  void forward(const T* x, std::int64_t rows, T* y) override {
    this->forward_impl(Bk{}, x, rows, y);
  }
  void backward(const T* x, const T* dy, std::int64_t rows, T* dx) override {
    this->backward_impl(Bk{}, x, dy, rows, dx);
  }
};

/// The layer of `m` called `key`; forge::error if there is none.
template <class T>
model::linear<T>& layer_named(model::causal_lm<T>& m, const std::string& key) {
  for (auto [k, lin] : linear_layers(m))
    if (k == key) return *lin;
  throw error({.what = "the model has no such layer", .place = key});
}

/// The LoRA modules attached to one model, in Hugging Face module order.
template <class T>
struct lora_set {
  lora_config config;
  std::vector<std::shared_ptr<lora_module<T>>> modules;

  /// Switches dropout on (training) or off (evaluation).
  void train(bool on) {
    for (auto& mod : modules) mod->training = on;
  }
  /// Keys the dropout masks of the next forward/backward (one value per micro-batch).
  void set_dropout_step(std::uint64_t step) {
    for (auto& mod : modules) mod->dropout_step = step;
  }
  void zero_grad() {
    for (auto& mod : modules) mod->zero_grad();
  }
  /// Merges every module into its layer of `m` (see lora_module::merge).
  void merge(model::causal_lm<T>& m) {
    for (auto& mod : modules) mod->merge(layer_named(m, mod->name));
  }
  /// Undoes merge().
  void unmerge(model::causal_lm<T>& m) {
    for (auto& mod : modules) mod->unmerge(layer_named(m, mod->name));
  }
  /// Number of trainable adapter parameters.
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (auto& mod : modules) n += std::int64_t(mod->A.size() + mod->B.size() + mod->m.size());
    return n;
  }
  /// The module adapting `key`, or nullptr.
  lora_module<T>* find(const std::string& key) const {
    for (auto& mod : modules)
      if (mod->name == key) return mod.get();
    return nullptr;
  }
};

/// Attaches LoRA modules (kernels from backend `Bk`) to the layers of `m` that `c` targets,
/// initialised as PEFT does from Philox streams keyed by (seed, module index). Freezes the
/// base model (no base gradients). forge::error for rank < 1, no matching module, a head
/// tied to the embeddings or a module already adapted.
template <class T, class Bk>
lora_set<T> attach_lora(Bk, model::causal_lm<T>& m, const lora_config& c, std::uint64_t seed = 0) {
  require(c.rank >= 1, {.what = "LoRA rank must be positive",
                        .place = "lora_config.rank",
                        .expected = ">= 1",
                        .found = std::to_string(c.rank)});
  require(c.dropout >= 0 && c.dropout < 1, {.what = "LoRA dropout out of range",
                                            .place = "lora_config.dropout",
                                            .expected = "in [0, 1)",
                                            .found = str(c.dropout)});
  if (!c.target_regex.empty()) detail::full_match(c.target_regex, "lora_config.target_regex");
  lora_set<T> set{.config = c, .modules = {}};
  std::uint64_t index = 0;
  for (auto [key, lin] : linear_layers(m)) {
    ++index;
    if (!is_target(c, key)) continue;
    require(!(key == "lm_head" && m.config.tie_word_embeddings),
            {.what = "cannot adapt lm_head tied to the embeddings", .place = key});
    require(lin->adapters.empty(), {.what = "module already has an adapter", .place = key});
    auto mod = std::make_shared<lora_linear<T, Bk>>(key, *lin, c);
    philox g(seed, index);
    if (c.init == lora_init::kaiming_uniform) {
      const double bound = 1.0 / std::sqrt(double(mod->in));  // gain √(1/3) · √(3/fan_in)
      for (auto& v : mod->A) v = T(g.uniform_double() * 2 * bound - bound);
    } else {
      for (auto& v : mod->A) v = T(g.normal() / c.rank);
    }
    mod->dropout_seed = philox(seed, index).fork(1).next_u64();
    if (mod->dora) mod->m = mod->weight_norm();
    lin->adapters.push_back(mod);
    set.modules.push_back(mod);
  }
  if (set.modules.empty()) {
    std::string t = c.target_regex;
    for (const auto& s : c.target_modules) t += (t.empty() ? "" : ", ") + s;
    throw error({.what = "no module matches the LoRA targets",
                 .place = "target_modules",
                 .expected = "names such as q_proj, v_proj, all-linear or a full-match regex",
                 .found = t});
  }
  m.set_trainable(false);
  m.enable_grads();
  return set;
}

/// Attaches a fresh LoRA set (as attach_lora) on top of the adapters `m` already carries;
/// those stay attached, frozen, in front of the new ones, and are not part of the returned
/// set. How a stage trains new adapters on a model an earlier stage adapted.
template <class T, class Bk>
lora_set<T> attach_lora_on_top(Bk be, model::causal_lm<T>& m, const lora_config& c,
                               std::uint64_t seed = 0) {
  auto layers = linear_layers(m);
  std::vector<std::vector<std::shared_ptr<model::linear_adapter<T>>>> old;
  old.reserve(layers.size());
  for (auto& nl : layers) old.push_back(std::exchange(nl.layer->adapters, {}));
  auto restore = [&] {
    for (std::size_t i = 0; i < layers.size(); ++i)
      layers[i].layer->adapters.insert(layers[i].layer->adapters.begin(), old[i].begin(),
                                       old[i].end());
  };
  try {
    auto set = attach_lora(be, m, c, seed);
    restore();
    return set;
  } catch (...) {
    restore();
    throw;
  }
}

/// Removes the adapters of `set` from the layers of `m` (unmerging first if merged).
template <class T>
void detach_lora(lora_set<T>& set, model::causal_lm<T>& m) {
  for (auto& mod : set.modules) {
    auto& l = layer_named(m, mod->name);
    mod->unmerge(l);
    std::erase_if(l.adapters, [&](const auto& p) { return p.get() == mod.get(); });
  }
  set.modules.clear();
}

}  // namespace forge::adapters
