// The trainer: gradient accumulation equals one large batch, the loss curve files, a paused
// and resumed run is bit-identical to a straight one, a run killed with SIGKILL at random
// moments (also mid-write) keeps a loadable checkpoint and resumes to the same result, early
// stopping, and a NaN loss stops training with a clear error and the checkpoint kept.

#include <catch2/catch.hpp>

#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "../support/fixtures.hpp"
#include "forge/adapters/lora.hpp"
#include "forge/model/init.hpp"
#include "forge/train/trainer.hpp"
#include "tiny_task.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {
struct lora_run {
  model::causal_lm<float> m;
  adapters::lora_set<float> set;
  explicit lora_run(double dropout = 0.1) {
    omp_set_num_threads(1);  // bit-identical reductions
    m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
    set = adapters::attach_lora(
        be_t{}, m, {.rank = 4, .alpha = 8, .dropout = dropout, .target_modules = {"all-linear"}},
        4);
    for (auto& mod : set.modules)  // start away from B = 0 so every tensor moves
      for (auto& v : mod->B) v = 0.01f;
  }
  train::train_result train(const train::trainer_options& o) {
    const auto data = test::upper_task(64, 1, 1);
    const auto val = test::upper_task(16, 1, 2);
    return train::train_sft(be_t{}, m, train::lora_parameters(set), &set, data, val, o);
  }
  std::vector<float> weights() const {
    std::vector<float> w;
    for (auto& mod : set.modules)
      w.insert(w.end(), mod->A.begin(), mod->A.end()),
          w.insert(w.end(), mod->B.begin(), mod->B.end());
    return w;
  }
};

train::trainer_options opts(const std::filesystem::path& dir, std::int64_t steps) {
  return {.max_steps = steps,
          .batch_size = 4,
          .grad_accum = 2,
          .optim = {.lr = 5e-3},
          .sched = {.kind = train::schedule_kind::cosine, .warmup_steps = 5},
          .eval_every = 10,
          .checkpoint_every = 1,
          .out_dir = dir,
          .seed = 17};
}
}  // namespace

TEST_CASE("gradient accumulation gives the gradient of the whole batch") {
  // Two micro-batches of 2 vs one batch of 4 with the same examples: same step.
  const auto data = test::upper_task(4, 1, 1);
  std::vector<std::vector<float>> after;
  for (auto [bs, acc] : {std::pair{4, 1}, {2, 2}}) {
    lora_run r(0.0);
    train::train_sft(be_t{}, r.m, train::lora_parameters(r.set), &r.set, data, {},
                     {.max_steps = 1,
                      .batch_size = bs,
                      .grad_accum = acc,
                      .max_grad_norm = 0,
                      .optim = {.lr = 1e-3},
                      .sched = {.kind = train::schedule_kind::constant},
                      .seed = 1});
    after.push_back(r.weights());
  }
  double d = 0;
  for (std::size_t i = 0; i < after[0].size(); ++i)
    d = std::max(d, double(std::abs(after[0][i] - after[1][i])));
  CHECK(d < 1e-6);  // f32 summation order differs; one Adam step moves weights by ~lr
}

TEST_CASE("packed micro-batches train like padded ones") {
  // The same examples per step, padded to the longest or packed into rows with segment ids:
  // same loss per step and same weights, up to f32 summation order (one Adam step at lr
  // 1e-3 moves weights by ~1e-3, so 1e-6 absolute is ~1000x below a real difference).
  const auto data = test::upper_task(8, 1, 1);
  std::vector<std::vector<float>> after;
  std::vector<std::vector<double>> losses;
  std::size_t longest = 0;
  for (auto& e : data) longest = std::max(longest, e.input_ids.size());
  for (std::size_t pack : {std::size_t(0), 2 * longest + 1}) {
    lora_run r(0.0);
    auto res = train::train_sft(be_t{}, r.m, train::lora_parameters(r.set), &r.set, data, {},
                                {.max_steps = 3,
                                 .batch_size = 4,
                                 .max_grad_norm = 0,
                                 .optim = {.lr = 1e-3},
                                 .sched = {.kind = train::schedule_kind::constant},
                                 .seed = 1,
                                 .pack_row_length = pack});
    after.push_back(r.weights());
    losses.emplace_back();
    for (auto& l : res.log) losses.back().push_back(l.loss);
  }
  REQUIRE(losses[0].size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(losses[1][i] == Approx(losses[0][i]).epsilon(1e-5));
  double d = 0;
  for (std::size_t i = 0; i < after[0].size(); ++i)
    d = std::max(d, double(std::abs(after[0][i] - after[1][i])));
  CHECK(d < 1e-6);
  // And packing did pack: four examples fit in fewer rows than four.
  const std::vector<std::size_t> pick = {0, 1, 2, 3};
  auto packed = objectives::make_packed_batch(data, pick, 2 * longest + 1, 0);
  CHECK(packed.batch < 4);
  CHECK(packed.segment_ids.size() == std::size_t(packed.batch * packed.seq));
}

TEST_CASE("a paused and resumed run is bit-identical to a straight run") {
  const auto d1 = test::scratch("train_straight"), d2 = test::scratch("train_resumed");
  lora_run a;
  auto ra = a.train(opts(d1, 40));
  lora_run b;
  auto o = opts(d2, 40);
  o.halt_after = 20;
  auto rb1 = b.train(o);
  CHECK(rb1.steps == 20);
  lora_run c;  // a fresh process would start from a fresh model: resume from the checkpoint
  o.halt_after = 0;
  auto rc = c.train(o);
  CHECK(rc.resumed);
  CHECK(rc.steps == 40);
  CHECK(a.weights() == c.weights());  // bit for bit
  CHECK(ra.log == rc.log);
  CHECK(ra.evals == rc.evals);
  CHECK(io::read_file(d1 / "loss.csv") == io::read_file(d2 / "loss.csv"));
  CHECK(io::read_file(d1 / "loss.csv").find("step,loss,lr,grad_norm,tokens,val_loss\n1,") == 0);
  CHECK(io::read_file(d1 / "loss.svg").find("<svg") == 0);
  CHECK(ra.log.back().loss < ra.log.front().loss);
}

TEST_CASE("a training process killed with SIGKILL keeps its last checkpoint and resumes") {
  const auto ref_dir = test::scratch("train_kill_reference");
  lora_run ref;
  const auto want = ref.train(opts(ref_dir, 30));
  philox g(2024, 0);
  int killed_mid_run = 0;
  // Kill times spread over the run: the reference run's training time × U(0.02, 0.7) plus
  // a little for the child's start.
  const double run_us = want.seconds * 1e6;
  for (int trial = 0; trial < 6; ++trial) {
    const auto dir = test::scratch("train_kill_" + std::to_string(trial));
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the child trains, checkpointing after every step
      try {
        lora_run r;
        r.train(opts(dir, 30));
      } catch (...) {
        _exit(3);
      }
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(
        2000 + std::int64_t(run_us * (0.02 + 0.68 * g.uniform_double()))));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    killed_mid_run += WIFSIGNALED(status);
    // No temporary file is ever mistaken for the checkpoint; the checkpoint, if any, loads.
    lora_run r;
    auto res = r.train(opts(dir, 30));
    INFO("trial " << trial);
    CHECK(res.steps == 30);
    CHECK(r.weights() == ref.weights());
    CHECK(res.log == want.log);
  }
  // At least one kill must land mid-run (timing on a shared machine varies, so not all do).
  CHECK(killed_mid_run >= 1);
}

TEST_CASE("early stopping ends the run when the metric stops improving") {
  lora_run r(0.0);
  auto o = opts({}, 200);
  o.eval_every = 1;
  o.optim.lr = 0;  // nothing changes, so validation loss never improves
  o.stop = {.metric = "val_loss", .patience = 3};
  auto res = r.train(o);
  CHECK(res.stopped_early);
  CHECK(res.steps == 4);  // the first evaluation sets the best, three more fail to improve
  o.stop.metric = "accuracy";
  lora_run r2(0.0);
  CHECK_THROWS_WITH(r2.train(o),
                    Catch::Contains("early-stopping metric") && Catch::Contains("accuracy"));
}

TEST_CASE("a NaN loss stops training with a clear error and keeps the last good checkpoint") {
  const auto dir = test::scratch("train_nan");
  lora_run r(0.0);
  auto o = opts(dir, 50);
  o.halt_after = 3;
  r.train(o);
  const auto good = io::read_file(train::checkpoint_path(dir));
  o.halt_after = 0;
  lora_run r2(0.0);
  r2.m.norm.value[0] = std::numeric_limits<float>::quiet_NaN();  // poisoned base weights
  CHECK_THROWS_WITH(r2.train(o), Catch::Contains("not finite") && Catch::Contains("step 4") &&
                                     Catch::Contains("checkpoint.safetensors"));
  CHECK(io::read_file(train::checkpoint_path(dir)) == good);
}

TEST_CASE("a checkpoint of other parameters is refused by name") {
  const auto dir = test::scratch("train_mismatch");
  lora_run r(0.0);
  auto o = opts(dir, 2);
  r.train(o);
  auto m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
  auto set = adapters::attach_lora(be_t{}, m,
                                   {.rank = 2, .alpha = 8, .target_modules = {"all-linear"}}, 4);
  const auto data = test::upper_task(8, 1, 1);
  o.max_steps = 4;
  CHECK_THROWS_WITH(train::train_sft(be_t{}, m, train::lora_parameters(set), &set, data, {}, o),
                    Catch::Contains("does not fit") && Catch::Contains("lora_A"));
}
