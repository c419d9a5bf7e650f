// The stage-order ablation (the staged post-training paper, Table V): the proposed order
// Adapt → Compress → Align against compress-first, align-before-compress and
// align-before-adapt, each one `research_order` of the same three method types (the Adapt
// method after another stage is `lora_over<base>`, the same LoRA on whatever base it gets),
// over several seeds, scored by the composite of docs/ablations.md.
//
// Usage: stage_order_ablation OUT_DIR [--seeds N] [--quick]
// Writes OUT_DIR/results.csv, OUT_DIR/table.md, OUT_DIR/stage_order.svg and every run's
// reports under OUT_DIR/stage_order/<order>/seed<k>/.

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ablation.hpp"

using namespace forge;

int main(int argc, char** argv) try {
  const auto opt = ablation::parse_options(argc, argv, 3);
  const auto& out = opt.out;
  if (ablation::merge_if_asked(opt)) return 0;
  const int seeds = opt.seeds;
  const auto s = ablation::make_setup(opt);
  using G = gptq_as<quant::int4_group<64, true>>;
  using I4 = repr::int4_group<64>;
  const auto ap = ablation::adapt_params(s);
  const auto lp = ablation::align_params_for(s);
  // Lenient gates: an ablation measures every order to the end.
  const auto ga = accept(exact_match >= 0.0);
  const auto gc = accept(memory_ratio <= 1.0);
  const auto gl = accept(preference_accuracy >= 0.0);
  std::vector<ablation::outcome> rs;
  for (int k = 1; k <= seeds; ++k) {
    const auto seed = std::uint64_t(k);
    ablation::run(rs, s, out, "stage_order", "adapt-compress-align", seed,
                  research_order(adapt<lora>{ap, s.sft, ga}, compress<G>{{}, s.calibration, gc},
                                 align<dpo<I4>>{lp, s.preferences, gl}));
    ablation::run(
        rs, s, out, "stage_order", "compress-adapt-align", seed,
        research_order(compress<G>{{}, s.calibration, gc}, adapt<lora_over<I4>>{ap, s.sft, ga},
                       align<dpo<I4>>{lp, s.preferences, gl}));
    ablation::run(rs, s, out, "stage_order", "adapt-align-compress", seed,
                  research_order(adapt<lora>{ap, s.sft, ga},
                                 align<dpo<repr::dense_f32>>{lp, s.preferences, gl},
                                 compress<G>{{}, s.calibration, gc}));
    ablation::run(rs, s, out, "stage_order", "align-adapt-compress", seed,
                  research_order(align<dpo<repr::dense_f32>>{lp, s.preferences, gl},
                                 adapt<lora_over<repr::dense_f32>>{ap, s.sft, ga},
                                 compress<G>{{}, s.calibration, gc}));
  }
  std::printf("\n%s", ablation::write_results(out, rs, s.base_bytes / 1048576.0).c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "stage_order_ablation: %s\n", e.what());
  return 1;
}
