// Test program (not library code), run under mpirun by pipeline.cpp and alone as the
// one-process reference: a small pipeline, adapt<lora> → align<dpo<dense_f32>>, on a tiny
// random model and tiny data, run through run_options::comm. Every rank writes what run()
// returned to RESULT_DIR/result.<rank>.txt (stage by stage: status, metrics as exact hex
// floats, artifact records, model digests; wall times on lines of their own) and its final
// model's digest; the pipeline's own output goes to OUT_BASE/rank<r> (so a rank other than 0
// that wrote anything there would leave a directory behind). It also writes how many gradient
// values its communicator summed (stats.<rank>.txt): the proof that the stages' trainers
// were handed the group rather than each training the whole batch alone.
//
//   dist_pipeline_worker OUT_BASE RESULT_DIR [fail | diverge | deploy]
//
// deploy: adapt<lora> → compress<gptq_as<int4_g32>> → deploy<signed_release> (key in
// RESULT_DIR/keys, written by rank 0): GPTQ runs on every rank and must give every rank the
// same model; the release must be built once, by rank 0, and every rank return its identity.
//
// fail / diverge: the pipeline is adapt<lora> → compress<rank_fault_double>, a test double
// that writes a file into its artifact directory on every rank and then throws on rank 1
// (fail) or changes one weight on rank 1 only (diverge). run() must then throw on every rank;
// each rank writes the message to RESULT_DIR/error.<rank>.txt and exits with status 3.
#include <omp.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <type_traits>

#include "align/tiny_preferences.hpp"
#include "forge/adapters/methods.hpp"
#include "forge/deploy/signed_release.hpp"
#include "forge/dist/mpi.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/model/init.hpp"
#include "forge/pipeline/pipeline.hpp"
#include "forge/quant/methods.hpp"
#include "forge/train/align_methods.hpp"
#include "train/tiny_task.hpp"

using namespace forge;

namespace {

// Test double: forwards every collective to the MPI communicator and counts the f32 values
// summed (the trainers' gradients; their scalars travel as f64).
class counting_communicator_double final : public dist::communicator {
 public:
  explicit counting_communicator_double(dist::communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  void all_reduce_sum(std::span<float> v) override { f32 += v.size(), c_.all_reduce_sum(v); }
  void all_reduce_sum(std::span<double> v) override { c_.all_reduce_sum(v); }
  void broadcast(std::span<std::byte> b, int root) override { c_.broadcast(b, root); }
  void barrier() override { c_.barrier(); }
  std::string name() const override { return c_.name(); }
  std::unique_ptr<dist::pending> start_all_reduce_sum(std::span<float> v) override {
    f32 += v.size();
    return c_.start_all_reduce_sum(v);
  }
  std::unique_ptr<dist::pending> start_all_reduce_sum(std::span<double> v) override {
    return c_.start_all_reduce_sum(v);
  }
  void progress() override { c_.progress(); }
  void all_gather(std::span<std::byte> b, std::span<const std::size_t> at) override {
    c_.all_gather(b, at);
  }
  std::size_t f32 = 0;

 private:
  dist::communicator& c_;
};

// Test double: a Compress-kind method that misbehaves on rank 1 (see the header comment).
struct rank_fault_double {
  static constexpr std::string_view name = "rank_fault_double";
  struct params {
    int mode = 0;  ///< 1: throw on rank 1; 2: change a weight on rank 1
  };
  using accepts = repr::with_lora<repr::dense_f32>;
  using produces = repr::with_lora<repr::dense_f32>;
  using backends = cpu_backends;
  template <Backend B>
  static stage_result<model::causal_lm<float>> apply(const stage_context<B>& ctx, const params& p,
                                                     const no_data&, model::causal_lm<float> m) {
    io::write_atomic(ctx.artifact_dir / "note.txt", "written on every rank\n");
    const int rank = ctx.comm ? ctx.comm->rank() : 0;
    if (p.mode == 1 && rank == 1)
      throw error(error_info{.what = "rank_fault_double fails here", .place = "rank 1"});
    if (p.mode == 2 && rank == 1) m.layers[0].q_proj.weight.value[0] += 1e-3f;
    stage_result<model::causal_lm<float>> r{.model = std::move(m)};
    r.artifacts.push_back("note.txt");
    return r;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(rank_fault_double::params, mode)

std::string hex_float(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%a", v);
  return b;
}

}  // namespace

// What run() returned, as text: stage by stage, metrics as exact hex floats, wall times on
// lines of their own; then the final model (a causal_lm by its digest, a release by its
// directory and manifest digest).
template <class R>
std::string report_text(const R& r) {
  std::string text = std::string("passed ") + (r.passed ? "1" : "0") + "\n";
  for (const auto& s : r.stages) {
    text += "stage " + std::to_string(s.index) + " " + std::string(name_of(s.kind)) + " " +
            s.method + " " + std::string(name_of(s.status)) + " seed " + std::to_string(s.seed) +
            "\n";
    text += "  file " + s.file.lexically_relative(r.directory).generic_string() + "\n";
    text += "  input " + s.input_sha256 + "\n  output " + s.output_sha256 + "\n";
    for (const auto& [k, v] : s.metrics.all()) text += "  metric " + k + " " + hex_float(v) + "\n";
    for (const auto& v : s.gate.verdicts)
      text += "  gate " + v.criterion.text() + " " + (v.passed ? "held" : "failed") + "\n";
    for (const auto& a : s.artifacts)
      text += "  artifact " + a.path.generic_string() + " " + a.sha256 + " " +
              std::to_string(a.bytes) + "\n";
    text += "  wall " + hex_float(s.wall_time_s) + "\n";
  }
  if (!r.model)
    text += "model none\n";
  else if constexpr (std::is_same_v<std::decay_t<decltype(*r.model)>, released_model>)
    text += "release " + r.model->dir.string() + " " + r.model->digest() + "\n";
  else
    text += "model " + model::model_digest(*r.model) + "\n";
  return text;
}

int main(int argc, char** argv) {
  dist::mpi_environment env(&argc, &argv);
  dist::mpi_communicator mpi({.timeout_s = 60});
  counting_communicator_double comm(mpi);
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: dist_pipeline_worker OUT_BASE RESULT_DIR [fail|diverge|deploy]\n");
    return 1;
  }
  const std::filesystem::path base = argv[1], results = argv[2];
  const std::string mode = argc == 4 ? argv[3] : "";
  const std::string fault = mode == "fail" || mode == "diverge" ? mode : "";
  omp_set_num_threads(1);  // kernels' reductions then do not depend on the core count
  try {
    const auto m = model::random_model<float>(test::tiny_config(32), {.seed = 2});
    adapt_data ad;
    ad.train = test::upper_task(32, 1, 1);
    ad.val = test::upper_task(8, 1, 2);
    ad.task = test::upper_items(4, 1, 3);
    ad.general = test::generic_text(4, 4);
    ad.eos = {test::tiny_eos};
    ad.pad_id = test::tiny_pad;
    align_data pd;
    pd.train = test::tiny_preferences(16, 5, 1);
    pd.val = test::tiny_preferences(8, 5, 2);
    pd.eos = {test::tiny_eos};
    pd.pad_id = test::tiny_pad;
    // grad_accum = 2: one micro-batch per rank on two ranks, the order in which one process
    // adds the same two micro-batch gradients.
    auto p = pipeline(adapt<lora>{{.rank = 4,
                                   .alpha = 8,
                                   .dropout = 0.1,
                                   .target_modules = {"all-linear"},
                                   .max_steps = 4,
                                   .batch_size = 2,
                                   .grad_accum = 2,
                                   .learning_rate = 5e-3,
                                   .checkpoint_every = 2},
                                  ad},
                      align<dpo<repr::dense_f32>>{{.rank = 4,
                                                   .alpha = 8,
                                                   .max_steps = 4,
                                                   .batch_size = 2,
                                                   .grad_accum = 2,
                                                   .learning_rate = 5e-3,
                                                   .eval_every = 2},
                                                  pd,
                                                  accept(kl_to_reference <= 10.0)});
    const auto out = base / ("rank" + std::to_string(comm.rank()));
    if (!fault.empty()) {
      auto faulty =
          pipeline(adapt<lora>{{.rank = 4, .max_steps = 2, .batch_size = 2, .grad_accum = 2}, ad},
                   compress<rank_fault_double>{{.mode = fault == "fail" ? 1 : 2}});
      try {
        faulty.run(m, backend::simd<>{}, {.out = out, .seed = 7, .comm = &comm});
      } catch (const std::exception& e) {
        io::write_atomic(results / ("error." + std::to_string(comm.rank()) + ".txt"), e.what());
        return 3;
      }
      return 0;  // the test fails on this: the fault went unnoticed
    }
    if (mode == "deploy") {
      signed_release_params rp;
      rp.name = "tiny";
      rp.gguf = {};
      rp.merged_checkpoint = false;
      rp.signing_key = (results / "keys" / "release.key").string();
      rp.load_requests = 2;
      rp.load_new_tokens = 2;
      if (comm.writes()) {
        std::filesystem::create_directories(results / "keys");
        const std::array<unsigned char, 32> seed = {9, 8, 7, 6, 5, 4, 3, 2, 1};
        govern::save_signing_key(rp.signing_key, govern::signing_key(seed));
      }
      // GPTQ on calibration text, on every rank (deterministic: the ranks' digests must agree).
      compress_data cd;
      for (const auto& e : test::generic_text(8, 6)) {
        cd.calibration.emplace_back(e.input_ids.begin(), e.input_ids.end());
        cd.evaluation.emplace_back(e.input_ids.begin(), e.input_ids.end());
      }
      auto released =
          pipeline(adapt<lora>{{.rank = 4, .max_steps = 2, .batch_size = 2, .grad_accum = 2}, ad},
                   compress<gptq_as<quant::int4_g32>>{{.measure = {.latency_tokens = 4}}, cd},
                   deploy<signed_release>{rp, accept(signature_valid, artifact_scan_clean)})
              .run(m, backend::simd<>{}, {.out = out, .seed = 7, .comm = &comm});
      io::write_atomic(results / ("result." + std::to_string(comm.rank()) + ".txt"),
                       report_text(released));
      return 0;
    }
    auto r = p.run(m, backend::simd<>{},
                   {.out = out, .seed = 7, .comm = comm.size() > 1 ? &comm : nullptr});
    const auto text = report_text(r);
    io::write_atomic(results / ("result." + std::to_string(comm.rank()) + ".txt"), text);
    io::write_atomic(results / ("stats." + std::to_string(comm.rank()) + ".txt"),
                     std::to_string(comm.f32) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", comm.rank(), e.what());
    mpi.abort(2);
  }
}
