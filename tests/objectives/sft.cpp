// The SFT objective on the fixture model: the masked, shifted cross-entropy equals a direct
// double-precision computation from the logits over the trained positions only, and
// right-padding a batch changes nothing for the real tokens.

#include <catch2/catch.hpp>

#include <cmath>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/objectives/sft.hpp"

using namespace forge;
using be_t = backend::simd<>;

namespace {
data::sft_example example(std::vector<std::int32_t> ids, std::size_t answer_from) {
  data::sft_example e;
  e.input_ids = ids;
  for (std::size_t i = 0; i < ids.size(); ++i)
    e.labels.push_back(i >= answer_from ? ids[i] : data::ignore_index);
  return e;
}
// Σ over trained t of −log softmax(z[t−1])[label t], from the logits of a single example.
double direct_nll(std::span<const float> z, std::int64_t V, const data::sft_example& e,
                  std::int64_t& n) {
  double s = 0;
  for (std::size_t t = 1; t < e.labels.size(); ++t) {
    if (e.labels[t] == data::ignore_index) continue;
    const float* row = z.data() + (t - 1) * V;
    double mx = row[0], sum = 0;
    for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
    s += mx + std::log(sum) - row[e.labels[t]];
    ++n;
  }
  return s;
}
}  // namespace

TEST_CASE("masked SFT loss over a padded batch equals the direct computation per example") {
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  const std::vector<data::sft_example> xs = {example({5, 17, 99, 3, 250, 7, 8, 1}, 4),
                                             example({9, 10, 11, 400, 12}, 2)};
  const std::int64_t V = m.config.vocab_size;
  double total = 0;
  std::int64_t n = 0;
  for (const auto& e : xs) {  // each example alone, no padding
    model::workspace<float> ws;
    std::vector<std::int64_t> ids(e.input_ids.begin(), e.input_ids.end());
    auto z = model::forward(be_t{}, m, ws,
                            {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids});
    total += direct_nll(z, V, e, n);
  }
  const std::size_t pick[] = {0, 1};
  const auto b = objectives::make_batch(xs, pick, 0);
  CHECK(b.seq == 8);
  CHECK(b.targets() == n);
  CHECK(b.attention_mask[8 + 5] == 0);  // padding is masked
  CHECK(b.labels[8 + 5] == data::ignore_index);
  model::workspace<float> ws;
  const double loss = objectives::sft_forward_loss(be_t{}, m, ws, b, 1.0, false);
  CHECK(std::abs(loss - total / double(n)) < 1e-5);  // f32 logits, 7 trained tokens
}
