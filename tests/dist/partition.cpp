// The ZeRO-1 partition of parameter values over ranks and the backward order of tensor names
// used by the overlapped reduction: pure functions, checked against their definitions on
// many generated cases (no MPI needed).
#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include "forge/core/rng.hpp"
#include "forge/dist/gradient_buckets.hpp"
#include "forge/dist/zero1.hpp"

using namespace forge;

TEST_CASE("ZeRO-1 pieces cover every value once, cut on blocks, and split evenly") {
  philox g(7, 0);
  for (int trial = 0; trial < 500; ++trial) {
    const int world = 1 + int(g.below(8));
    std::vector<std::size_t> sizes(1 + g.below(12));
    for (auto& n : sizes) n = g.below(4) == 0 ? g.below(5) : 1 + g.below(5000);  // some empty
    std::size_t total = 0;
    for (auto n : sizes) total += n;
    const auto pieces = dist::shard_pieces(sizes, world, 256);
    // Coverage: the pieces of each tensor tile [0, n) in order, owners never decreasing.
    std::vector<std::size_t> next(sizes.size(), 0), per_rank(std::size_t(world), 0);
    int last_owner = 0;
    for (const auto& p : pieces) {
      REQUIRE(p.tensor < sizes.size());
      CHECK(p.lo == next[p.tensor]);
      CHECK(p.lo < p.hi);
      CHECK(p.owner >= last_owner);
      CHECK(p.owner < world);
      // Every cut inside a tensor is on a block boundary of that tensor.
      if (p.lo > 0) CHECK(p.lo % 256 == 0);
      next[p.tensor] = p.hi;
      per_rank[std::size_t(p.owner)] += p.hi - p.lo;
      last_owner = p.owner;
    }
    for (std::size_t t = 0; t < sizes.size(); ++t) CHECK(next[t] == sizes[t]);
    // Balance: each rank's share is within one block below and one block above total/world
    // (a cut moves down by less than a block).
    for (int r = 0; r < world; ++r) {
      const double ideal = double(total) / world;
      CHECK(double(per_rank[std::size_t(r)]) > ideal - 256 - 1);
      CHECK(double(per_rank[std::size_t(r)]) < ideal + 256 + 1);
    }
  }
}

TEST_CASE("tensor names map to the backward event after which they are final") {
  // 4 layers: the head and final norm first (event 0), layer 3 once backward reaches layer 2
  // (event 1), ..., layer 1 at event 3, layer 0 and the embeddings when backward returns (4).
  CHECK(dist::detail::ready_event("lm_head.weight", 4) == 0);
  CHECK(dist::detail::ready_event("lm_head.lora_A", 4) == 0);
  CHECK(dist::detail::ready_event("model.norm.weight", 4) == 0);
  CHECK(dist::detail::ready_event("model.layers.3.mlp.down_proj.lora_B", 4) == 1);
  CHECK(dist::detail::ready_event("model.layers.2.self_attn.q_proj.weight", 4) == 2);
  CHECK(dist::detail::ready_event("model.layers.1.input_layernorm.weight", 4) == 3);
  CHECK(dist::detail::ready_event("model.layers.0.mlp.up_proj.weight", 4) == 4);
  CHECK(dist::detail::ready_event("model.embed_tokens.weight", 4) == 4);
  // Anything unexpected goes last: reduced after backward, never too early.
  CHECK(dist::detail::ready_event("model.layers.9.mlp.up_proj.weight", 4) == 4);
  CHECK(dist::detail::ready_event("model.layers.x.mlp", 4) == 4);
  CHECK(dist::detail::ready_event("something.else", 4) == 4);
  CHECK(dist::detail::ready_event("base_model.model.model.layers.2.mlp.gate_proj.lora_A", 4) == 2);
}
