// Writing your own method policies and running them in a typed forge pipeline.
//
// The "model" here is a small linear classifier so that the program runs in milliseconds, but
// the pipeline code is the same for a Llama checkpoint: three method policies (a fine-tune, an
// int8 quantizer and a release writer), each declaring what representation it accepts and
// produces, which backends it runs on, its parameters and apply(). The pipeline checks at
// compile time that the stages are in order, fit together and gate on metrics they measure;
// at run time it evaluates the gates and writes one JSON report per stage.
//
// usage: custom_method OUT_DIR [--max-memory-ratio R]
// exit status: 0 when every gate passed, 2 when a gate stopped the pipeline, 1 on error.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <forge/govern/hash.hpp>
#include <forge/io/atomic_file.hpp>
#include <forge/pipeline/pipeline.hpp>

namespace toy {

// ---- models: two C++ types, one per representation ----

/// A dense linear classifier: label = (w . x + b > 0).
struct dense_model {
  std::vector<float> w;
  float b = 0;
  /// Content digest recorded in the stage reports.
  std::string digest() const {
    return forge::govern::sha256()
        .update(w.data(), w.size() * sizeof(float))
        .update(&b, sizeof b)
        .hex_digest();
  }
};

/// The same classifier with int8 weights and one float scale: w ~= scale * q.
struct int8_model {
  std::vector<std::int8_t> q;
  float scale = 1;
  float b = 0;
  std::string digest() const {
    return forge::govern::sha256()
        .update(q.data(), q.size())
        .update(&scale, sizeof scale)
        .update(&b, sizeof b)
        .hex_digest();
  }
};

// ---- data: a deterministic synthetic task with exact answers ----

struct example {
  std::vector<float> x;
  int label = 0;
};

/// Train and validation splits; the stage reports carry their hash.
struct task_data {
  std::vector<example> train, val;
  std::string sha256() const {
    forge::govern::sha256 h;
    for (const auto* split : {&train, &val})
      for (const auto& e : *split)
        h.update(e.x.data(), e.x.size() * sizeof(float)).update(&e.label, sizeof e.label);
    return h.hex_digest();
  }
};

/// Uniform in [-1, 1) from SplitMix64, so the data is the same on every platform.
inline float uniform(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

inline task_data make_task(std::size_t dim, std::size_t n_train, std::size_t n_val,
                           std::uint64_t seed) {
  std::vector<float> truth(dim);
  for (auto& t : truth) t = uniform(seed);
  auto draw = [&](std::size_t n) {
    std::vector<example> out(n);
    for (auto& e : out) {
      e.x.resize(dim);
      double dot = 0;
      for (std::size_t i = 0; i < dim; ++i) dot += truth[i] * (e.x[i] = uniform(seed));
      e.label = dot + 0.05 * uniform(seed) > 0 ? 1 : 0;  // a little label noise near the boundary
    }
    return out;
  };
  return {draw(n_train), draw(n_val)};
}

inline double score(const std::vector<float>& w, float b, const std::vector<float>& x) {
  double s = b;
  for (std::size_t i = 0; i < w.size(); ++i) s += double(w[i]) * x[i];
  return s;
}
/// Fraction of examples classified correctly (the task's exact match).
inline double accuracy(const std::vector<float>& w, float b, const std::vector<example>& data) {
  std::size_t ok = 0;
  for (const auto& e : data) ok += (score(w, b, e.x) > 0) == (e.label == 1);
  return double(ok) / double(data.size());
}
/// Mean logistic loss in nats.
inline double log_loss(const std::vector<float>& w, float b, const std::vector<example>& data) {
  double sum = 0;
  for (const auto& e : data) {
    const double z = score(w, b, e.x), y = e.label;
    sum += std::log1p(std::exp(-std::abs(z))) + std::max(z, 0.0) - y * z;  // stable BCE
  }
  return sum / double(data.size());
}

// ---- method 1 (Adapt): full fine-tuning by gradient descent on the logistic loss ----

struct gradient_fine_tune {
  static constexpr std::string_view name = "gradient_fine_tune";
  struct params {
    int epochs = 200;
    double learning_rate = 0.5;
  };
  using data = task_data;
  using accepts = forge::repr::dense_f32;  // full fine-tuning needs dense weights
  using produces = forge::repr::dense_f32;
  using backends = forge::cpu_backends;  // plain loops: any CPU backend will do

  template <forge::Backend B>
  static forge::stage_result<dense_model> apply(const forge::stage_context<B>& ctx, const params& p,
                                                const data& d, dense_model m) {
    const std::size_t dim = m.w.size();
    for (int epoch = 0; epoch < p.epochs; ++epoch) {
      std::vector<double> gw(dim, 0.0);
      double gb = 0;
      for (const auto& e : d.train) {
        const double err = 1.0 / (1.0 + std::exp(-score(m.w, m.b, e.x))) - e.label;  // dBCE/dz
        for (std::size_t i = 0; i < dim; ++i) gw[i] += err * e.x[i];
        gb += err;
      }
      const double step = p.learning_rate / double(d.train.size());
      for (std::size_t i = 0; i < dim; ++i) m.w[i] -= float(step * gw[i]);
      m.b -= float(step * gb);
    }
    forge::io::write_atomic(
        ctx.artifact_dir / "weights.f32",
        std::string_view(reinterpret_cast<const char*>(m.w.data()), m.w.size() * sizeof(float)));
    forge::stage_result<dense_model> r{.model = m};
    r.metrics.set(forge::exact_match, accuracy(m.w, m.b, d.val))
        .set(forge::train_val_gap, log_loss(m.w, m.b, d.val) - log_loss(m.w, m.b, d.train));
    r.artifacts.push_back("weights.f32");
    r.data.push_back({"toy task (train + val)", d.sha256()});
    return r;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(gradient_fine_tune::params, epochs, learning_rate)

// ---- method 2 (Compress): symmetric per-tensor int8 rounding ----

struct int8_rounding {
  static constexpr std::string_view name = "int8_rounding";
  struct params {
    float clip = 1.0f;  ///< fraction of max |w| mapped to 127 (1 = no clipping)
  };
  using data = task_data;  // the validation split measures what rounding cost
  using accepts = forge::repr::dense_f32;
  using produces = forge::repr::int8;
  using backends = forge::cpu_backends;

  template <forge::Backend B>
  static forge::stage_result<int8_model> apply(const forge::stage_context<B>& ctx, const params& p,
                                               const data& d, dense_model m) {
    float max_abs = 0;
    for (float v : m.w) max_abs = std::max(max_abs, std::abs(v));
    int8_model q{.q = {}, .scale = max_abs > 0 ? p.clip * max_abs / 127.0f : 1.0f, .b = m.b};
    std::vector<float> back(m.w.size());
    for (std::size_t i = 0; i < m.w.size(); ++i) {
      const float r = std::clamp(std::nearbyint(m.w[i] / q.scale), -127.0f, 127.0f);
      q.q.push_back(static_cast<std::int8_t>(r));
      back[i] = r * q.scale;
    }
    forge::io::write_atomic(
        ctx.artifact_dir / "weights.int8",
        std::string_view(reinterpret_cast<const char*>(q.q.data()), q.q.size()));
    const double bytes_in = double(m.w.size() * sizeof(float) + sizeof(float));
    const double bytes_out = double(q.q.size() + 2 * sizeof(float));
    forge::stage_result<int8_model> r{.model = q};
    r.metrics.set(forge::memory_bytes, bytes_out)
        .set(forge::memory_ratio, bytes_out / bytes_in)
        .set(forge::exact_match, accuracy(back, q.b, d.val))
        .set(forge::task_score_delta, accuracy(back, q.b, d.val) - accuracy(m.w, m.b, d.val));
    r.artifacts.push_back("weights.int8");
    r.data.push_back({"toy task (train + val)", d.sha256()});
    return r;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(int8_rounding::params, clip)

// ---- method 3 (Deploy): a release directory with a manifest, checked by reloading it ----

struct weights_release {
  static constexpr std::string_view name = "weights_release";
  struct params {
    std::string model_name = "toy-classifier";
    int load_trials = 50;
  };
  using accepts = forge::repr::int8;
  using produces = forge::repr::release;
  using backends = forge::cpu_backends;

  template <forge::Backend B>
  static forge::stage_result<int8_model> apply(const forge::stage_context<B>& ctx, const params& p,
                                               const forge::no_data&, int8_model m) {
    const auto weights = ctx.artifact_dir / "model.int8";
    const std::string bytes(reinterpret_cast<const char*>(m.q.data()), m.q.size());
    forge::io::write_atomic(weights, bytes);
    const std::string digest = forge::govern::sha256_hex(bytes);
    const nlohmann::json manifest = {{"name", p.model_name},
                                     {"scale", m.scale},
                                     {"bias", m.b},
                                     {"weights", {{"file", "model.int8"}, {"sha256", digest}}}};
    forge::io::write_atomic(ctx.artifact_dir / "manifest.json", manifest.dump(2) + "\n");

    // Load test: read the weights back and check them against the manifest, timing each load.
    std::vector<double> ms;
    bool clean = true;
    for (int t = 0; t < p.load_trials; ++t) {
      const auto t0 = std::chrono::steady_clock::now();
      clean = clean && forge::govern::sha256_hex(forge::io::read_file(weights)) == digest;
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    forge::stage_result<int8_model> r{.model = m};
    r.metrics.set(forge::artifact_scan_clean, clean ? 1.0 : 0.0)
        .set(forge::load_p50_ms, ms[ms.size() / 2])
        .set(forge::load_p95_ms, ms[std::min(ms.size() - 1, ms.size() * 95 / 100)]);
    r.artifacts = {"model.int8", "manifest.json"};
    return r;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(weights_release::params, model_name, load_trials)

}  // namespace toy

int main(int argc, char** argv) {
  using namespace forge;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [--max-memory-ratio R]\n", argv[0]);
    return 1;
  }
  double max_memory_ratio = 0.3;  // a runtime threshold: changing it needs no recompilation
  for (int i = 2; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--max-memory-ratio") == 0) max_memory_ratio = std::stod(argv[i + 1]);

  const toy::task_data data = toy::make_task(64, 1000, 400, 2024);
  auto p = pipeline(
      adapt<toy::gradient_fine_tune>{
          {.epochs = 300}, data, accept(exact_match >= 0.9, train_val_gap <= 0.2)},
      compress<toy::int8_rounding>{
          {}, data, accept(task_score_delta >= -0.02, memory_ratio <= max_memory_ratio)},
      deploy<toy::weights_release>{{.model_name = "toy-classifier"},
                                   accept(artifact_scan_clean, load_p95_ms <= 1000.0)});

  try {
    const toy::dense_model base{.w = std::vector<float>(64, 0.0f), .b = 0};
    auto report = p.run(base, backend::scalar{}, {.out = argv[1], .seed = 1});
    for (const auto& s : report.stages) {
      std::printf("stage %zu %-8s %-20s %s\n", s.index, std::string(name_of(s.kind)).c_str(),
                  s.method.c_str(), std::string(name_of(s.status)).c_str());
      for (const auto& v : s.gate.verdicts)
        std::printf("    %-28s measured %.6g  %s\n", v.criterion.text().c_str(),
                    v.measured ? *v.measured : NAN, v.passed ? "ok" : "FAILED");
    }
    if (!report.passed) {
      std::printf("pipeline stopped: %s\nsee %s\n", report.failure->describe().c_str(),
                  report.summary.c_str());
      return 2;
    }
    std::printf("pipeline passed; reports in %s\n", report.directory.c_str());
    return 0;
  } catch (const forge::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
