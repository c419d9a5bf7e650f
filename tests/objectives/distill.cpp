// Distillation: the loss's gradient against central finite differences in double, and a
// one-layer student distilled from the two-layer tiny model against the same one-layer
// student architecture trained from scratch with cross-entropy only, on the copy task the
// teacher was trained on.

#include <catch2/catch.hpp>

#include <omp.h>

#include "../train/tiny_task.hpp"
#include "forge/eval/task.hpp"
#include "forge/objectives/distill.hpp"

using namespace forge;
using objectives::distill_options;
using objectives::kl_direction;

TEST_CASE("distill_loss gradient matches central finite differences (double)") {
  const std::int64_t rows = 4, V = 7;
  philox g(11);
  std::vector<double> zs(rows * V), zt(rows * V);
  for (auto& v : zs) v = 2 * g.normal();
  for (auto& v : zt) v = 2 * g.normal();
  const std::vector<std::int64_t> y = {3, -100, 0, 6};
  for (auto dir : {kl_direction::forward, kl_direction::reverse})
    for (double T : {1.0, 2.5})
      for (double a : {0.0, 0.3, 1.0}) {
        const distill_options o{.alpha = a, .temperature = T, .direction = dir};
        std::vector<double> grad(zs.size());
        objectives::distill_loss<double>(zs, zt, y, rows, V, o, grad);
        // h = 1e-5: the central difference's truncation error is O(h²) ≈ 1e-10 relative and
        // its rounding error ≈ 1e-16 / 1e-5 = 1e-11, so 1e-7 absolute is a safe bound.
        for (std::size_t i = 0; i < zs.size(); ++i) {
          auto zp = zs, zm = zs;
          zp[i] += 1e-5, zm[i] -= 1e-5;
          const double fd = (objectives::distill_loss<double>(zp, zt, y, rows, V, o) -
                             objectives::distill_loss<double>(zm, zt, y, rows, V, o)) /
                            2e-5;
          INFO("dir " << int(dir) << " T " << T << " alpha " << a << " i " << i);
          CHECK(grad[i] == Approx(fd).margin(1e-7));
        }
        if (y[1] == -100)
          for (std::int64_t v = 0; v < V; ++v) CHECK(grad[std::size_t(V + v)] == 0.0);
      }
  // Identical distributions: the KL term is zero, so alpha = 1 gives loss 0.
  CHECK(objectives::distill_loss<double>(zt, zt, y, rows, V, {.alpha = 1.0}) ==
        Approx(0.0).margin(1e-12));
  CHECK_THROWS_AS(objectives::distill_loss<double>(zs, zt, y, rows, V, {.temperature = 0}), error);
}

namespace {
double ppl(model::causal_lm<float>& m, const std::vector<data::sft_example>& xs) {
  return std::exp(train::mean_loss(backend::simd<>{}, m, std::span(xs), 32, test::tiny_pad));
}
}  // namespace

TEST_CASE("a 1-layer student distilled from the 2-layer tiny model beats CE from scratch") {
  omp_set_num_threads(1);  // deterministic weights
  auto teacher = test::pretrained_tiny_base();
  omp_set_num_threads(2);
  const auto text = test::generic_text(2000, 41);
  const auto held = test::generic_text(128, 42);
  const auto items = test::copy_items(100, 43);
  const std::vector<std::int64_t> eos = {test::tiny_eos};
  const train::distill_train_options o{
      .max_steps = 60,
      .batch_size = 16,
      .optim = {.lr = 3e-3, .weight_decay = 0},
      .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 10},
      .seed = 3,
      .loss = {.alpha = 0.5, .temperature = 2.0}};
  // Student by layer selection (teacher layer 1 of 0..1), and the same architecture from a
  // random initialisation trained with CE only (alpha = 0), same steps and data.
  auto student = train::init_student_from_teacher(teacher, {1});
  REQUIRE(student.layers.size() == 1);
  CHECK(student.layers[0].q_proj.weight.name == "model.layers.0.self_attn.q_proj.weight");
  auto cfg1 = test::tiny_config();
  cfg1.num_hidden_layers = 1;
  cfg1.sliding_window.assign(1, 0);
  auto scratch = model::random_model<float>(cfg1, {.seed = 5});
  const auto ld = train::train_distill(backend::simd<>{}, student, teacher, text, o);
  auto oce = o;
  oce.loss.alpha = 0;
  const auto lc = train::train_distill(backend::simd<>{}, scratch, teacher, text, oce);
  // Ablation (reported, not asserted): the layer-selected student with CE only.
  auto selected_ce = train::init_student_from_teacher(teacher, {1});
  train::train_distill(backend::simd<>{}, selected_ce, teacher, text, oce);
  CHECK(ld.back() < ld.front());
  CHECK(lc.back() < lc.front());
  const backend::simd<> be;
  const double em_t = eval::evaluate_task(be, teacher, items, eos).exact_match;
  const double em_d = eval::evaluate_task(be, student, items, eos).exact_match;
  const double em_c = eval::evaluate_task(be, scratch, items, eos).exact_match;
  const double em_s = eval::evaluate_task(be, selected_ce, items, eos).exact_match;
  const double p_t = ppl(teacher, held), p_d = ppl(student, held), p_c = ppl(scratch, held);
  const double p_s = ppl(selected_ce, held);
  WARN("exact match teacher " << em_t << " distilled " << em_d << " scratch " << em_c
                              << "; perplexity teacher " << p_t << " distilled " << p_d
                              << " scratch " << p_c << "; share of teacher's score " << em_d / em_t
                              << "; ablation layer-selected CE only: exact match " << em_s
                              << " perplexity " << p_s);
  // A narrower student too: 1 layer, MLP width 64 of 128 (magnitude-selected neurons).
  auto narrow = train::init_student_from_teacher(teacher, {1}, 64);
  CHECK(narrow.config.intermediate_size == 64);
  CHECK(narrow.layers[0].down_proj.weight.shape == std::vector<std::int64_t>{64, 64});
  CHECK(narrow.layers[0].gate_proj.weight.shape == std::vector<std::int64_t>{64, 64});
  train::train_distill(be, narrow, teacher, text, o);
  const double em_n = eval::evaluate_task(be, narrow, items, eos).exact_match;
  const double p_n = ppl(narrow, held);
  WARN("narrow distilled student (1 layer, MLP 64): exact match " << em_n << " perplexity " << p_n);
  CHECK(p_n < p_c);
  CHECK(em_t > 0.5);  // the teacher knows the task (else the comparison says nothing)
  CHECK(em_d > em_c);
  CHECK(p_d < p_c);
  CHECK(em_d >= 0.5 * em_t);  // the distilled student keeps at least half the teacher's score
}
