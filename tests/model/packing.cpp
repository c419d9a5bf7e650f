// Packed training rows compute exactly what their examples compute one by one: with
// data::packer's rows (position ids restarting, first label of each example ignored) and
// segment ids in the model input, the summed loss and every parameter gradient equal the
// sums over the unpacked examples. f64 on the fixture model, so the only differences are
// summation order: tolerance 1e-10 relative.

#include <catch2/catch.hpp>
#include <cmath>

#include "../support/fixtures.hpp"
#include "forge/core/rng.hpp"
#include "forge/data/packing.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/forward.hpp"

using namespace forge;

namespace {
struct loss_and_grads {
  double total = 0;  // summed cross-entropy over trained targets
  std::vector<std::vector<double>> grads;
};

template <class Bk>
loss_and_grads run(Bk be, model::causal_lm<double>& m, std::int64_t S,
                   const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& labels,
                   const std::vector<std::int32_t>& pos, const std::vector<std::int32_t>& seg) {
  std::vector<std::int64_t> ids64(ids.begin(), ids.end()), lab64(labels.begin(), labels.end()),
      pos64(pos.begin(), pos.end());
  std::int64_t targets = 0;  // labels at t + 1 that are trained
  for (std::int64_t t = 1; t < S; ++t) targets += lab64[t] != data::ignore_index;
  model::workspace<double> ws;
  model::forward(
      be, m, ws,
      {.batch = 1, .seq = S, .input_ids = ids64, .position_ids = pos64, .segment_ids = seg},
      {.for_backward = true});
  const double mean = model::causal_lm_loss(be, ws, lab64, double(targets));
  model::backward(be, m, ws);
  return {mean * double(targets), {}};
}
}  // namespace

TEST_CASE("packed rows give the summed loss and gradients of their examples") {
  auto m = io::load_hf_checkpoint<double>(test::llama_a() / "model");
  m.enable_grads();
  philox rng(5);
  std::vector<data::sft_example> examples;
  for (int len : {5, 7, 3, 6, 4}) {
    data::sft_example ex;
    for (int t = 0; t < len; ++t) {
      ex.input_ids.push_back(std::int32_t(rng.below(512)));
      ex.labels.push_back(t < 2 ? data::ignore_index : ex.input_ids.back());  // prompt masked
    }
    examples.push_back(ex);
  }
  auto rows = data::pack_examples(examples, {.row_length = 13, .pad_id = 0});
  REQUIRE(rows.size() >= 2);
  REQUIRE(rows[0].ids.size() >= 2);  // at least one row really holds several examples

  auto collect = [&] {
    std::vector<std::vector<double>> g;
    m.for_each_parameter([&](auto& p) {
      if (p.has_grad()) g.push_back(p.grad);
    });
    return g;
  };
  auto zero = [&] {
    m.for_each_parameter([&](auto& p) {
      if (p.has_grad()) std::fill(p.grad.begin(), p.grad.end(), 0.0);
    });
  };

  for (auto be : {0, 1}) {
    INFO("backend " << (be ? "simd" : "scalar"));
    auto go = [&](auto backend) {
      zero();
      double unpacked = 0;
      for (auto& ex : examples) {
        std::vector<std::int32_t> pos(ex.input_ids.size());
        for (std::size_t t = 0; t < pos.size(); ++t) pos[t] = std::int32_t(t);
        unpacked +=
            run(backend, m, std::int64_t(pos.size()), ex.input_ids, ex.labels, pos, {}).total;
      }
      auto g_unpacked = collect();
      zero();
      double packed = 0;
      for (auto& r : rows)
        packed += run(backend, m, std::int64_t(r.input_ids.size()), r.input_ids, r.labels,
                      r.position_ids, data::segment_ids(r))
                      .total;
      auto g_packed = collect();
      CHECK(std::abs(packed - unpacked) <= 1e-10 * std::abs(unpacked));
      REQUIRE(g_packed.size() == g_unpacked.size());
      double worst = 0;
      for (std::size_t i = 0; i < g_packed.size(); ++i) {
        double num = 0, den = 0;
        for (std::size_t k = 0; k < g_packed[i].size(); ++k) {
          num += std::pow(g_packed[i][k] - g_unpacked[i][k], 2);
          den += std::pow(g_unpacked[i][k], 2);
        }
        worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
      }
      CHECK(worst <= 1e-10);

      // Control: without segment ids the packed row leaks attention across examples.
      zero();
      double leaky = 0;
      for (auto& r : rows)
        leaky += run(backend, m, std::int64_t(r.input_ids.size()), r.input_ids, r.labels,
                     r.position_ids, {})
                     .total;
      CHECK(std::abs(leaky - unpacked) > 1e-6 * std::abs(unpacked));
    };
    if (be == 0)
      go(backend::scalar{});
    else
      go(backend::simd<>{});
  }
}

TEST_CASE("segment ids are refused with a KV cache and must match the batch") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  model::workspace<float> ws;
  std::vector<std::int64_t> ids = {1, 2, 3};
  std::vector<std::int32_t> seg = {0, 0};
  CHECK_THROWS_WITH(model::forward(backend::scalar{}, m, ws,
                                   {.batch = 1, .seq = 3, .input_ids = ids, .segment_ids = seg}),
                    Catch::Contains("segment_ids size"));
  model::kv_cache<float> cache(m.config, 1, 8);
  std::vector<std::int32_t> seg3 = {0, 0, 1};
  CHECK_THROWS_WITH(
      model::forward(backend::scalar{}, m, ws,
                     {.batch = 1, .seq = 3, .input_ids = ids, .segment_ids = seg3}, {}, &cache),
      Catch::Contains("KV cache"));
}
