#pragma once
// The run-time half of the test doubles in doubles.hpp: model digests, the shared step body
// and the JSON form of their parameters. Include this to run pipelines of doubles.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "doubles.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/pipeline/pipeline.hpp"

namespace forge::test {

inline std::string toy_model_double::digest() const {
  std::string s = std::to_string(value);
  for (const auto& h : history) s += "|" + h;
  return govern::sha256_hex(s);
}

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(double_params, tag, exact_match, regression_delta,
                                   perplexity_ratio, refusal_accuracy, false_refusal_rate,
                                   signature_valid, artifact)

namespace detail {
template <class B>
stage_result<toy_model_double> step(const stage_context<B>& ctx, const double_params& p,
                                    const data_double& d, toy_model_double in,
                                    std::string_view what) {
  in.history.push_back(std::string(what) + ":" + p.tag);
  in.value += 1;
  stage_result<toy_model_double> r{.model = std::move(in)};
  if (!p.artifact.empty()) {
    io::write_atomic(ctx.artifact_dir / "artifact.txt", p.artifact);
    r.artifacts.push_back("artifact.txt");
  }
  r.data.push_back({d.name, govern::sha256_hex(d.name)});
  return r;
}
}  // namespace detail

}  // namespace forge::test
