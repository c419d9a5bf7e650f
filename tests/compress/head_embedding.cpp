// The token embedding and output head quantized to Q8_0 (quant::quantize_head_and_embeddings),
// checked against references:
//  * every embedding row is the Q8_0 rounding of the dense row (ggml's quantize_row_q8_0_ref,
//    itself checked bit-exact in tests/quant), bit for bit;
//  * the quantized model's logits and input gradients equal those of its own dense copy
//    (exports::dense_copy: the dequantized values in f32 matrices) up to f32 summation order;
//  * memory: exactly the Q8_0 bytes replace the f32 bytes, a tied matrix counted once;
//  * the GPTQ checkpoint keeps them exactly (reloaded logits bit-identical), a GGUF Q8_0
//    export holds the very same blocks, and a dense Hugging Face save refuses them.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "../support/fixtures.hpp"
#include "forge/adapters/methods.hpp"
#include "forge/core/json.hpp"
#include "forge/deploy/export.hpp"
#include "forge/io/gguf.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/init.hpp"
#include "forge/quant/gptq_model.hpp"
#include "forge/quant/model_quantize.hpp"

using namespace forge;
using Bk = backend::simd<>;

namespace {

model::causal_lm<float> small_model(bool tied, std::int64_t hidden = 64) {
  model::model_config c;
  c.vocab_size = 97, c.hidden_size = hidden, c.intermediate_size = 96;
  c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.head_dim = hidden / 4, c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.sliding_window.assign(2, 0);
  return model::random_model<float>(c, {.seed = 11, .initializer_range = 0.1});
}

const std::vector<std::int64_t> ids = {3, 96, 0, 41, 41, 7, 88, 15, 60, 2, 19, 33};

std::vector<float> logits(model::causal_lm<float>& m) {
  model::workspace<float> ws;
  const auto z =
      model::forward(Bk{}, m, ws, {.batch = 1, .seq = std::int64_t(ids.size()), .input_ids = ids});
  return {z.begin(), z.end()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

double max_abs(const std::vector<float>& a) {
  double d = 0;
  for (float v : a) d = std::max(d, std::abs(double(v)));
  return d;
}

}  // namespace

TEST_CASE("a Q8_0 embedding returns ggml's Q8_0 rounding of every row, bit for bit") {
  auto m = small_model(false);
  const auto E = m.embed_tokens.value;
  const auto V = m.config.vocab_size, H = m.config.hidden_size;
  const auto ref = quant::dequantize(quant::q8_0::quantize(E, V, H));
  const auto r = quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
  CHECK(r.format == "q8_0");
  REQUIRE(m.embed_base);
  CHECK(m.embed_tokens.value.empty());
  CHECK_FALSE(m.embed_tokens.trainable);
  std::vector<float> row(static_cast<std::size_t>(H));
  std::size_t differ = 0;
  for (std::int64_t v = 0; v < V; ++v) {
    m.embed_row(v, row.data());
    CHECK(std::memcmp(row.data(), ref.data() + v * H, std::size_t(H) * 4) == 0);
    for (std::int64_t i = 0; i < H; ++i) differ += row[std::size_t(i)] != E[std::size_t(v * H + i)];
  }
  CHECK(differ > std::size_t(V * H) / 2);  // it really is rounded (8 bits, random weights)
}

TEST_CASE("quantized head and embedding: logits and gradients of the dense dequantized copy") {
  for (bool tied : {false, true}) {
    INFO("tied " << tied);
    auto m = small_model(tied);
    auto dense = m;  // the unquantized model
    const auto bytes_before = quant::model_weight_bytes(m);
    const auto digest_before = model::model_digest(m);
    const auto r = quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
    const auto V = m.config.vocab_size, H = m.config.hidden_size;
    const std::size_t q8 = quant::q8_0::bytes_for(V, H);  // 34 bytes per 32 weights
    const std::size_t matrices = tied ? 1 : 2;
    CHECK(r.bytes_before == matrices * std::size_t(V * H) * 4);
    CHECK(r.bytes_after == matrices * q8);
    CHECK(quant::model_weight_bytes(m) == bytes_before - r.bytes_before + r.bytes_after);
    CHECK(adapters::quantized_weights(m).size() == matrices);
    if (tied) {
      auto* t = dynamic_cast<const adapters::quantized_table*>(m.embed_base.get());
      REQUIRE(t);
      CHECK(t->source().get() == m.lm_head.base.get());  // one matrix serves both
    }
    CHECK(model::model_digest(m) != digest_before);
    CHECK(exports::has_quantized_base(m));

    // The quantized model computes what its dequantized dense copy computes: the same f32
    // values; only the order of the f32 sums differs (kernels), so 1e-5 of the logit scale.
    auto copy = exports::dense_copy(m);
    CHECK_FALSE(exports::has_quantized_base(copy));
    CHECK_FALSE(copy.embed_base);
    const auto zq = logits(m), zc = logits(copy), zd = logits(dense);
    CHECK(max_abs_diff(zq, zc) <= 1e-5 * max_abs(zc));
    // Against the unquantized model: Q8_0 moves each weight by at most half a step (amax/254
    // of its block), which here moves logits by well under 2% of their scale, but not by 0.
    const double dq = max_abs_diff(zq, zd);
    CHECK(dq > 0);
    CHECK(dq <= 0.02 * max_abs(zd));

    // Input gradients through the quantized head (what an adapter trained on top sees): the
    // backward from inputs_embeds of the quantized model and of the dense copy agree.
    const auto N = std::int64_t(ids.size());
    std::vector<float> x(std::size_t(N * H));
    for (std::int64_t t = 0; t < N; ++t) copy.embed_row(ids[std::size_t(t)], x.data() + t * H);
    std::vector<std::int64_t> labels(ids.begin(), ids.end());
    auto input_grad = [&](model::causal_lm<float>& mm) {
      mm.set_trainable(false);
      mm.enable_grads();
      model::workspace<float> ws;
      model::forward(Bk{}, mm, ws,
                     {.batch = 1, .seq = N, .inputs_embeds = std::span<const float>(x)},
                     {.for_backward = true});
      model::causal_lm_loss(Bk{}, ws, std::span<const std::int64_t>(labels));
      std::vector<float> dx(x.size());
      model::backward(Bk{}, mm, ws, std::span<float>(dx));
      return dx;
    };
    const auto gq = input_grad(m), gc = input_grad(copy);
    CHECK(max_abs(gc) > 0);
    CHECK(max_abs_diff(gq, gc) <= 1e-5 * max_abs(gc));
  }
}

TEST_CASE("quantize_head_and_embeddings refuses what it cannot do, naming the place") {
  auto m = small_model(false);
  quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
  CHECK_THROWS_WITH((quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m)),
                    Catch::Contains("already replaced"));
  auto narrow = small_model(false, 48);  // 48 is not a multiple of the 32-value block
  CHECK_THROWS_WITH((quant::quantize_head_and_embeddings<Bk, quant::q8_0>(narrow)),
                    Catch::Contains("hidden_size % 32 == 0"));
  CHECK_FALSE(narrow.embed_base);
  auto other = small_model(false);
  CHECK_THROWS_WITH(quant::quantize_head_and_embeddings<Bk>(other, "q4_k", "params.fmt"),
                    Catch::Contains("params.fmt") && Catch::Contains("q4_k"));
  CHECK_FALSE(quant::quantize_head_and_embeddings<Bk>(other, "dense", "params.fmt"));
  CHECK_FALSE(other.embed_base);
  // A dense Hugging Face checkpoint has no place for a quantized matrix: an error, never a
  // checkpoint without its embedding.
  const auto dir = test::scratch("head_embedding_hf");
  CHECK_THROWS_WITH(io::save_hf_checkpoint(m, dir / "m"),
                    Catch::Contains("model.embed_tokens.weight") && Catch::Contains("dense"));
  CHECK_FALSE(std::filesystem::exists(dir / "m" / "model.safetensors"));
  io::save_hf_checkpoint(exports::dense_copy(m), dir / "d");  // the dense copy saves
}

TEST_CASE("GPTQ checkpoint with a Q8_0 embedding and head reloads bit-identical") {
  for (bool tied : {false, true}) {
    INFO("tied " << tied);
    auto m = small_model(tied);
    quant::quantize_model_rtn<quant::int4_group<32, true>>(Bk{}, m, {});
    quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
    const auto dir = test::scratch(tied ? "head_embedding_gptq_tied" : "head_embedding_gptq");
    quant::save_gptq_checkpoint<Bk, 32, true>(m, dir);
    const auto cfg = load_json(dir / "config.json");
    REQUIRE(cfg.contains("forge_quantized_dense"));
    CHECK(cfg["forge_quantized_dense"]["model.embed_tokens.weight"] == "q8_0");
    CHECK(cfg["forge_quantized_dense"].contains("lm_head.weight") == !tied);
    // The release's GPTQ export (v2 zero points, F32 tensors) keeps them the same way.
    const auto release = test::scratch(tied ? "head_embedding_rel_tied" : "head_embedding_rel");
    REQUIRE(exports::save_gptq_checkpoint<Bk>(m, release));
    for (const auto& d : {dir, release}) {
      INFO(d);
      auto back = quant::load_gptq_checkpoint<Bk>(d);
      REQUIRE(back.embed_base);
      REQUIRE(back.lm_head.base);
      CHECK(quant::model_weight_bytes(back) == quant::model_weight_bytes(m));
      CHECK(model::model_digest(back) == model::model_digest(m));
      CHECK(logits(back) == logits(m));
    }
  }
}

TEST_CASE("a checkpoint that marks non-Q8_0 values as q8_0 is refused") {
  auto m = small_model(false);
  quant::quantize_model_rtn<quant::int4_group<32, true>>(Bk{}, m, {});
  const auto dir = test::scratch("head_embedding_gptq_bad");
  quant::save_gptq_checkpoint<Bk, 32, true>(m, dir, {.dense_as = dtype::f32});  // dense embed
  auto cfg = load_json(dir / "config.json");
  cfg["forge_quantized_dense"] = {{"model.embed_tokens.weight", "q8_0"}};
  save_json(dir / "config.json", cfg);
  CHECK_THROWS_WITH(
      quant::load_gptq_checkpoint<Bk>(dir),
      Catch::Contains("not q8_0 values") && Catch::Contains("model.embed_tokens.weight"));
  cfg["forge_quantized_dense"] = {{"model.norm.weight", "q8_0"}};
  save_json(dir / "config.json", cfg);
  CHECK_THROWS_WITH(quant::load_gptq_checkpoint<Bk>(dir), Catch::Contains("model.norm.weight"));
  cfg["forge_quantized_dense"] = {{"lm_head.weight", "q4_0"}};
  save_json(dir / "config.json", cfg);
  CHECK_THROWS_WITH(quant::load_gptq_checkpoint<Bk>(dir), Catch::Contains("q4_0"));
}

TEST_CASE("a Q8_0 GGUF export holds the model's own Q8_0 embedding and head blocks") {
  const auto fixture = test::llama_a();
  auto m = io::load_hf_checkpoint<float>(fixture / "model");
  quant::quantize_head_and_embeddings<Bk, quant::q8_0>(m);
  const auto path = test::scratch("head_embedding_gguf") / "m.gguf";
  exports::save_llama_gguf(m, exports::gguf_tokenizer_from_hf(fixture / "model"), path,
                           exports::gguf_export_type::q8_0);
  const auto f = io::gguf_file::open(path);
  auto* emb = dynamic_cast<const adapters::quantized_table*>(m.embed_base.get());
  auto* head = dynamic_cast<const adapters::quantized_weight*>(m.lm_head.base.get());
  REQUIRE(emb);
  REQUIRE(head);
  // The export dequantizes and quantizes again; Q8_0 of Q8_0 values gives back the blocks.
  for (auto [name, q] :
       {std::pair{"token_embd.weight", emb->source().get()},
        std::pair{"output.weight", static_cast<const adapters::quantized_weight*>(head)}}) {
    INFO(name);
    const auto& t = f.at(name);
    REQUIRE(t.type == io::ggml_type::q8_0);
    const auto bytes = f.bytes(t);
    const auto stored = q->storage()[0];  // Q8_0 codes: the 34-byte blocks
    REQUIRE(bytes.size() == stored.size());
    CHECK(std::memcmp(bytes.data(), stored.data(), bytes.size()) == 0);
  }
}
