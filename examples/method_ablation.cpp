// Method ablations by type swap, on the built-in model with the harness of the stage-order
// ablation (same data, same scoring):
//   adapt:    lora | dora | qlora | full_finetune                       (Adapt alone)
//   compress: rtn | gptq | awq, int4 groups of 64          (after the same adapt<lora>)
//   align:    dpo | ipo | kto | simpo | orpo on the int4 base (after adapt<lora> → gptq)
//
// Usage: method_ablation OUT_DIR [--seeds N] [--quick]
// Writes OUT_DIR/results.csv, OUT_DIR/table.md, OUT_DIR/{adapt,compress,align}.svg and every
// run's reports under OUT_DIR/<group>/<method>/seed<k>/.

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ablation.hpp"

using namespace forge;

int main(int argc, char** argv) try {
  const auto opt = ablation::parse_options(argc, argv, 1);
  const auto& out = opt.out;
  if (ablation::merge_if_asked(opt)) return 0;
  const int seeds = opt.seeds;
  const auto s = ablation::make_setup(opt);
  using I4 = repr::int4_group<64>;
  using F = quant::int4_group<64, true>;
  const auto ap = ablation::adapt_params(s);
  const auto lp = ablation::align_params_for(s);
  const auto ga = accept(exact_match >= 0.0);
  const auto gc = accept(memory_ratio <= 1.0);
  const auto gl = accept(preference_accuracy >= 0.0);
  std::vector<ablation::outcome> rs;
  for (int k = 1; k <= seeds; ++k) {
    const auto seed = std::uint64_t(k);
    ablation::run(rs, s, out, "adapt", "lora", seed, pipeline(adapt<lora>{ap, s.sft, ga}));
    ablation::run(rs, s, out, "adapt", "dora", seed, pipeline(adapt<dora>{ap, s.sft, ga}));
    ablation::run(rs, s, out, "adapt", "qlora", seed, pipeline(adapt<qlora>{ap, s.sft, ga}));
    ablation::run(rs, s, out, "adapt", "full_finetune", seed,
                  pipeline(adapt<full_finetune>{ablation::full_params(s), s.sft, ga}));
    ablation::run(rs, s, out, "compress", "rtn", seed,
                  pipeline(adapt<lora>{ap, s.sft, ga}, compress<rtn_as<F>>{{}, s.calibration, gc}));
    ablation::run(
        rs, s, out, "compress", "gptq", seed,
        pipeline(adapt<lora>{ap, s.sft, ga}, compress<gptq_as<F>>{{}, s.calibration, gc}));
    ablation::run(rs, s, out, "compress", "awq", seed,
                  pipeline(adapt<lora>{ap, s.sft, ga}, compress<awq_as<F>>{{}, s.calibration, gc}));
    auto aligned = [&](const char* name, auto method) {
      using M = decltype(method);
      auto p = name == std::string("simpo") ? ablation::align_params_for(s, 2.0) : lp;
      ablation::run(
          rs, s, out, "align", name, seed,
          pipeline(adapt<lora>{ap, s.sft, ga}, compress<gptq_as<F>>{{}, s.calibration, gc},
                   align<M>{p, s.preferences, gl}));
    };
    aligned("dpo", dpo<I4>{});
    aligned("ipo", ipo<I4>{});
    aligned("kto", kto<I4>{});
    aligned("simpo", simpo<I4>{});
    aligned("orpo", orpo<I4>{});
  }
  std::printf("\n%s", ablation::write_results(out, rs, s.base_bytes / 1048576.0).c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "method_ablation: %s\n", e.what());
  return 1;
}
