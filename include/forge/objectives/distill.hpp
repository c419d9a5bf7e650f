#pragma once
// Knowledge distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural
// Network", section 2): a student learns the teacher's temperature-softened next-token
// distribution besides the data,
//   L = α · T² · KL_T + (1 − α) · CE,   averaged over the trained positions,
//   forward KL (the paper's):  KL(p_t ‖ p_s),  p = softmax(z / T)
//   reverse KL (mode seeking, Gu et al. 2024 "MiniLLM"):  KL(p_s ‖ p_t)
// The T² keeps the soft term's gradient magnitude independent of T (paper, section 2).
// Gradients w.r.t. the student logits z_s:
//   forward:  T · (p_s − p_t)
//   reverse:  T · p_s ⊙ (log p_s − log p_t − KL(p_s ‖ p_t))
//   CE:       softmax(z_s) − onehot(y)
// The student is initialised from the teacher by layer selection (init_student_from_teacher)
// and trained with train_distill (AdamW, warmup schedule, global-norm clipping of train/).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/data/sft.hpp"
#include "forge/objectives/sft.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/clip.hpp"
#include "forge/train/parameters.hpp"
#include "forge/train/schedule.hpp"

namespace forge::objectives {

/// Which KL divergence the soft term uses.
enum class kl_direction {
  forward,  ///< KL(teacher ‖ student), Hinton et al.
  reverse   ///< KL(student ‖ teacher), mode seeking
};

/// The distillation loss's settings.
struct distill_options {
  double alpha = 0.5;        ///< weight of the soft (KL) term; 1 − α weighs the CE term
  double temperature = 2.0;  ///< T > 0 softens both distributions
  kl_direction direction = kl_direction::forward;
};

/// Distillation loss over `rows` positions with student and teacher logits [rows, vocab] and
/// the target token of each row (backend::ignore_index = -100: the row is not trained).
/// Returns the mean over trained rows; if `grad` is non-empty it receives dL/dz_s times
/// `grad_scale` (rows not trained get 0). forge::error on mismatched sizes or bad settings.
template <class T>
double distill_loss(std::span<const T> student, std::span<const T> teacher,
                    std::span<const std::int64_t> targets, std::int64_t rows, std::int64_t vocab,
                    const distill_options& o, std::span<T> grad = {}, double grad_scale = 1.0) {
  const auto n = std::size_t(rows * vocab);
  require(student.size() == n && teacher.size() == n && targets.size() == std::size_t(rows) &&
              (grad.empty() || grad.size() == n),
          {.what = "distillation logits, targets or gradient disagree in size",
           .place = "distill_loss",
           .expected = std::to_string(rows) + " x " + std::to_string(vocab)});
  require(o.temperature > 0 && o.alpha >= 0 && o.alpha <= 1,
          {.what = "distillation needs temperature > 0 and 0 <= alpha <= 1",
           .place = "distill_options",
           .found = "T = " + str(o.temperature) + ", alpha = " + str(o.alpha)});
  std::int64_t trained = 0;
  for (auto y : targets) {
    require(y == -100 || (y >= 0 && y < vocab),
            {.what = "target token out of range", .place = "distill_loss", .found = str(y)});
    trained += y != -100;
  }
  if (!grad.empty()) std::fill(grad.begin(), grad.end(), T(0));
  if (trained == 0) return 0.0;
  const double Tm = o.temperature, a = o.alpha;
  const auto nv = static_cast<std::size_t>(vocab);
  std::vector<double> ls(nv), lt(nv), l1(nv);
  // log softmax of z / t into out.
  auto log_softmax = [&](const T* z, double t, std::vector<double>& out) {
    double mx = -INFINITY;
    for (std::int64_t v = 0; v < vocab; ++v) mx = std::max(mx, double(z[v]) / t);
    double s = 0;
    for (std::int64_t v = 0; v < vocab; ++v) s += std::exp(double(z[v]) / t - mx);
    const double lse = mx + std::log(s);
    for (std::int64_t v = 0; v < vocab; ++v) out[std::size_t(v)] = double(z[v]) / t - lse;
  };
  double total = 0;
  const double w = 1.0 / double(trained);
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto y = targets[std::size_t(r)];
    if (y == -100) continue;
    const T* zs = student.data() + r * vocab;
    const T* zt = teacher.data() + r * vocab;
    log_softmax(zs, Tm, ls);
    log_softmax(zt, Tm, lt);
    log_softmax(zs, 1.0, l1);
    double kl = 0;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const auto i = std::size_t(v);
      kl += o.direction == kl_direction::forward ? std::exp(lt[i]) * (lt[i] - ls[i])
                                                 : std::exp(ls[i]) * (ls[i] - lt[i]);
    }
    const double ce = -l1[std::size_t(y)];
    total += a * Tm * Tm * kl + (1 - a) * ce;
    if (grad.empty()) continue;
    T* g = grad.data() + r * vocab;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const auto i = std::size_t(v);
      const double ps = std::exp(ls[i]), pt = std::exp(lt[i]);
      const double dkl =
          o.direction == kl_direction::forward ? Tm * (ps - pt) : Tm * ps * (ls[i] - lt[i] - kl);
      const double dce = std::exp(l1[i]) - (v == y ? 1.0 : 0.0);
      g[v] = T(grad_scale * w * (a * dkl + (1 - a) * dce));
    }
  }
  return total * w;
}

}  // namespace forge::objectives

namespace forge::train {

/// A student that keeps the teacher's embeddings, final norm and head and the decoder layers
/// `layers` (teacher indices, in the order given), copied. With `intermediate` > 0 the MLPs
/// are also made narrower: each kept layer keeps the `intermediate` hidden neurons i with the
/// largest ‖gate_i‖·‖up_i‖·‖down_:,i‖ (a data-free magnitude criterion; neurons keep their
/// order). The teacher's projections must be dense (no quantized bases); adapters are not
/// copied. forge::error on a bad index or width.
inline model::causal_lm<float> init_student_from_teacher(const model::causal_lm<float>& teacher,
                                                         const std::vector<std::size_t>& layers,
                                                         std::int64_t intermediate = 0) {
  const std::int64_t I = teacher.config.intermediate_size, H = teacher.config.hidden_size;
  require(intermediate >= 0 && intermediate <= I, {.what = "student intermediate size out of range",
                                                   .place = "init_student_from_teacher",
                                                   .expected = "0 (keep) .. " + std::to_string(I),
                                                   .found = std::to_string(intermediate)});
  require(!layers.empty(),
          {.what = "a student needs at least one layer", .place = "init_student_from_teacher"});
  model::causal_lm<float> s;
  s.config = teacher.config;
  s.generation = teacher.generation;
  s.config.num_hidden_layers = std::int64_t(layers.size());
  if (intermediate > 0) s.config.intermediate_size = intermediate;
  s.config.sliding_window.clear();
  s.embed_tokens = teacher.embed_tokens;
  s.embed_base = teacher.embed_base;
  s.norm = teacher.norm;
  s.lm_head = teacher.lm_head;
  s.lm_head.adapters.clear();
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const auto i = layers[k];
    require(i < teacher.layers.size(),
            {.what = "student layer index out of range",
             .place = "init_student_from_teacher, entry " + std::to_string(k),
             .expected = "< " + std::to_string(teacher.layers.size()),
             .found = std::to_string(i)});
    auto L = teacher.layers[i];
    const std::string from = "model.layers." + std::to_string(i) + ".";
    const std::string to = "model.layers." + std::to_string(k) + ".";
    auto rename = [&](model::parameter<float>& p) { p.name = to + p.name.substr(from.size()); };
    rename(L.input_layernorm);
    rename(L.post_attention_layernorm);
    for (auto* l :
         {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj}) {
      require(!l->base, {.what = "distillation needs a dense teacher (dequantize it first)",
                         .place = l->weight.name});
      l->adapters.clear();
      rename(l->weight);
      if (l->bias) rename(*l->bias);
    }
    if (intermediate > 0 && intermediate < I) {
      // Rank neurons, keep the top `intermediate` in their original order.
      const auto ni = static_cast<std::size_t>(I);
      std::vector<double> score(ni);
      for (std::int64_t n = 0; n < I; ++n) {
        double g = 0, u = 0, d = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          const double a = L.gate_proj.weight.value[std::size_t(n * H + h)];
          const double b = L.up_proj.weight.value[std::size_t(n * H + h)];
          const double c = L.down_proj.weight.value[std::size_t(h * I + n)];
          g += a * a, u += b * b, d += c * c;
        }
        score[std::size_t(n)] = std::sqrt(g * u * d);
      }
      std::vector<std::int64_t> keep(ni);
      for (std::int64_t n = 0; n < I; ++n) keep[std::size_t(n)] = n;
      std::stable_sort(keep.begin(), keep.end(), [&](auto a, auto b) {
        return score[std::size_t(a)] > score[std::size_t(b)];
      });
      keep.resize(std::size_t(intermediate));
      std::sort(keep.begin(), keep.end());
      auto rows = [&](model::linear<float>& l) {
        std::vector<float> w(std::size_t(intermediate * H));
        for (std::size_t k = 0; k < keep.size(); ++k)
          std::copy_n(l.weight.value.begin() + keep[k] * H, H, w.begin() + std::int64_t(k) * H);
        l.weight.value = std::move(w);
        l.weight.shape = {intermediate, H};
        l.out = intermediate;
        if (l.bias) {
          std::vector<float> b(keep.size());
          for (std::size_t k = 0; k < keep.size(); ++k) b[k] = l.bias->value[std::size_t(keep[k])];
          l.bias->value = std::move(b);
          l.bias->shape = {intermediate};
        }
      };
      rows(L.gate_proj);
      rows(L.up_proj);
      std::vector<float> w(std::size_t(H * intermediate));
      for (std::int64_t h = 0; h < H; ++h)
        for (std::size_t k = 0; k < keep.size(); ++k)
          w[std::size_t(h * intermediate) + k] =
              L.down_proj.weight.value[std::size_t(h * I + keep[k])];
      L.down_proj.weight.value = std::move(w);
      L.down_proj.weight.shape = {H, intermediate};
      L.down_proj.in = intermediate;
    }
    s.layers.push_back(std::move(L));
    s.config.sliding_window.push_back(teacher.config.sliding_window[i]);
  }
  return s;
}

/// Settings of train_distill (the trainer's defaults where it has one).
struct distill_train_options {
  std::int64_t max_steps = 100;
  std::int64_t batch_size = 8;
  double max_grad_norm = 1.0;
  adamw_options optim{};
  schedule sched{};  ///< total_steps 0 → max_steps
  std::uint64_t seed = 0;
  std::int32_t pad_id = 0;
  objectives::distill_options loss{};
};

/// Trains every parameter of `student` to match `teacher` (frozen; any representation,
/// e.g. quantized) on the SFT examples `train` (labels -100 where not trained) with the
/// distillation loss. Examples are drawn in a seeded shuffled order. Returns the loss of
/// each step. The two models must share the vocabulary.
template <class Bk>
std::vector<double> train_distill(Bk be, model::causal_lm<float>& student,
                                  model::causal_lm<float>& teacher,
                                  std::span<const data::sft_example> train,
                                  const distill_train_options& o) {
  require(!train.empty(), {.what = "no training examples", .place = "train_distill"});
  require(student.config.vocab_size == teacher.config.vocab_size,
          {.what = "student and teacher vocabularies differ",
           .place = "train_distill",
           .expected = std::to_string(teacher.config.vocab_size),
           .found = std::to_string(student.config.vocab_size)});
  adamw<float> opt(model_parameters(student), o.optim);
  schedule sched = o.sched;
  if (sched.total_steps == 0) sched.total_steps = o.max_steps;
  model::workspace<float> ws_s, ws_t;
  std::vector<std::size_t> perm(train.size());
  std::int64_t seen = 0, epoch = -1;
  std::vector<double> losses;
  const auto V = student.config.vocab_size;
  for (std::int64_t step = 0; step < o.max_steps; ++step) {
    std::vector<std::size_t> pick;
    for (std::int64_t i = 0; i < o.batch_size; ++i, ++seen) {
      const std::int64_t e = seen / std::int64_t(train.size());
      if (e != epoch) {
        for (std::size_t k = 0; k < perm.size(); ++k) perm[k] = k;
        philox g(o.seed, std::uint64_t(e));
        for (std::size_t k = perm.size(); k > 1; --k)
          std::swap(perm[k - 1], perm[g.below(std::uint32_t(k))]);
        epoch = e;
      }
      pick.push_back(perm[std::size_t(seen % std::int64_t(train.size()))]);
    }
    const auto b = objectives::make_batch(train, pick, o.pad_id);
    const model::model_input<float> in{.batch = b.batch,
                                       .seq = b.seq,
                                       .input_ids = b.input_ids,
                                       .attention_mask = b.attention_mask};
    const auto zt = model::forward(be, teacher, ws_t, in);
    std::vector<float> zteach(zt.begin(), zt.end());
    const auto zs = model::forward(be, student, ws_s, in, {.for_backward = true});
    std::vector<std::int64_t> targets(std::size_t(b.batch * b.seq), -100);
    for (std::int64_t r = 0; r < b.batch; ++r)
      for (std::int64_t s = 0; s + 1 < b.seq; ++s)
        targets[std::size_t(r * b.seq + s)] = b.labels[std::size_t(r * b.seq + s + 1)];
    zero_grads(opt.params());
    const double l = objectives::distill_loss<float>(zs, zteach, targets, b.batch * b.seq, V,
                                                     o.loss, ws_s.dlogits());
    require(std::isfinite(l), {.what = "distillation loss is not finite; stopped",
                               .place = "step " + std::to_string(step + 1),
                               .found = str(l)});
    model::backward(be, student, ws_s);
    clip_grad_norm(opt.params(), o.max_grad_norm);
    opt.step(o.optim.lr * sched.factor(step));
    losses.push_back(l);
  }
  return losses;
}

}  // namespace forge::train
