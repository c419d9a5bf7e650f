// The export building blocks against independent references:
//  * dense_copy of a model with quantized bases and LoRA/DoRA adapters computes the logits
//    the live model computes (the live forward dequantizes and adds adapters on the fly);
//  * dense_copy leaves the live model untouched (digest before == after);
//  * the GPTQ layout written for an int4 base unpacks (quant::read_gptq / unpack_gptq) to
//    exactly the codes and scales of the live quantized tensors;
//  * gguf_tokenizer_from_hf maps every id of the fixture's tokenizer.json to the token the
//    tokenizer itself names for it.

#include <catch2/catch.hpp>

#include <cmath>

#include "../support/fixtures.hpp"
#include "forge/adapters/methods.hpp"
#include "forge/deploy/export.hpp"
#include "forge/model/init.hpp"
#include "forge/text/load_tokenizer.hpp"

using namespace forge;
using be_t = backend::scalar;

namespace {
model::causal_lm<float> small_model() {
  model::model_config c;
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.sliding_window.assign(std::size_t(c.num_hidden_layers), 0);  // no sliding window
  return model::random_model<float>(c, {.seed = 4, .initializer_range = 0.1});
}

std::vector<float> logits(model::causal_lm<float>& m) {
  const std::vector<std::int64_t> ids = {1, 5, 9, 33, 70, 2, 41};
  model::workspace<float> ws;
  model::forward(be_t{}, m, ws, {.batch = 1, .seq = 7, .input_ids = ids}, {});
  auto l = ws.logits();
  return {l.begin(), l.end()};
}

// Gives every adapter nonzero B so that folding it in changes the weights.
void train_adapters_a_little(adapters::lora_set<float>& set) {
  philox g(2, 0);
  for (auto& mod : set.modules)
    for (auto& b : mod->B) b = float(g.normal() * 0.05);
}

// Tolerance: the dense copy folds s·B·A into W in double and rounds once to f32, where the
// live model adds the adapter's product in f32 beside the base product: differences of a few
// f32 ulps of the logits, far below 1e-4 at these magnitudes (|logits| < 10).
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}
}  // namespace

TEST_CASE("dense_copy folds LoRA, DoRA and quantized bases into the weights the model uses") {
  SECTION("QLoRA: NF4 base + LoRA") {
    auto m = small_model();
    adapters::quantize_base_nf4(be_t{}, m);
    auto set = adapters::attach_lora(be_t{}, m, {.rank = 4, .alpha = 8}, 1);
    train_adapters_a_little(set);
    const auto before = model::model_digest(m);
    auto d = exports::dense_copy(m);
    CHECK(model::model_digest(m) == before);
    CHECK_FALSE(exports::has_quantized_base(d));
    CHECK(exports::attached_adapters(d).modules.empty());
    CHECK(max_diff(logits(d), logits(m)) < 1e-4);
  }
  SECTION("DoRA on a dense base, all linear layers") {
    auto m = small_model();
    auto set = adapters::attach_lora(
        be_t{}, m, {.rank = 2, .alpha = 4, .target_modules = {"all-linear"}, .use_dora = true}, 3);
    train_adapters_a_little(set);
    for (auto& mod : set.modules) mod->m[0] *= 1.5f;  // a learned magnitude
    auto d = exports::dense_copy(m);
    const auto got = logits(d), want = logits(m);
    CHECK(max_diff(got, want) < 1e-4);
    auto plain = small_model();
    CHECK(max_diff(got, logits(plain)) > 1e-3);  // the adapters mattered
  }
}

TEST_CASE("the GPTQ layout of an int4 base holds exactly the live codes and scales") {
  using F = quant::int4_group<32, false>;
  auto m = small_model();
  std::map<std::string, quant::qtensor<F>> live;
  for (auto [key, lin] : adapters::linear_layers(m)) {
    if (key == "lm_head") continue;
    auto q = F::quantize(lin->weight.value, lin->out, lin->in);
    live[key] = q;
    lin->base = std::make_shared<adapters::quantized_base<be_t, F>>(std::move(q));
    lin->weight.value = {};
  }
  const auto dir = test::scratch("deploy_exports_gptq");
  REQUIRE(exports::save_gptq_checkpoint<be_t>(m, dir / "gptq"));
  const auto f = io::safetensors_file::open(dir / "gptq" / "model.safetensors");
  for (const auto& [key, q] : live) {
    INFO(key);
    const auto back = quant::unpack_gptq<F>(quant::read_gptq(f, key), quant::gptq_format::v2);
    CHECK(back.codes == q.codes);
    CHECK(back.zeros == q.zeros);
    CHECK(back.scales == q.scales);  // int4 scales are exact f16 values (format.hpp)
  }
  const auto cfg = load_json(dir / "gptq" / "config.json");
  CHECK(cfg["quantization_config"]["group_size"] == 32);
  CHECK(cfg["quantization_config"]["sym"] == false);
  CHECK(f.find("model.embed_tokens.weight") != nullptr);
  CHECK(f.find("model.layers.0.self_attn.q_proj.weight") == nullptr);
  // A dense model has no GPTQ layout: nothing is written.
  CHECK_FALSE(exports::save_gptq_checkpoint<be_t>(small_model(), dir / "none"));
  CHECK_FALSE(std::filesystem::exists(dir / "none"));
}

TEST_CASE("GGUF tokenizer keys name the fixture's tokens by id") {
  const auto dir = test::llama_a() / "model";
  const auto g = exports::gguf_tokenizer_from_hf(dir);
  const auto tok = text::load_tokenizer(dir);
  REQUIRE(g.tokens.size() == tok.vocab_size());
  for (std::size_t i = 0; i < g.tokens.size(); ++i)
    REQUIRE(g.tokens[i] == tok.id_to_token(std::int32_t(i)).value());
  CHECK(g.bos_id == std::optional<std::uint32_t>(std::uint32_t(*tok.bos_id())));
  CHECK(g.eos_id == std::optional<std::uint32_t>(std::uint32_t(*tok.eos_id())));
  CHECK(g.token_types[std::size_t(*tok.eos_id())] == 3);  // control
  CHECK_FALSE(g.merges.empty());
  CHECK_FALSE(g.chat_template.empty());
}
