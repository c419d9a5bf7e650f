// The whole-model GPTQ checkpoint against an independent reader: a numpy program written from
// the GPTQ layout's definition (qweight/qzeros/scales/g_idx, v1 zero points stored minus one)
// and the Llama architecture (transformers' LlamaForCausalLM: RMSNorm, rotate-half RoPE,
// grouped-query attention, SwiGLU) reads config.json and model.safetensors and computes the
// logits in float64; they must match the model forge quantized in memory. The fixture's
// down_proj (176 inputs) does not fit groups of 64, so the file also exercises the dense
// exclusions ("dynamic": {"-:...": {}}).

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/quant/gptq_model.hpp"
#include "forge/quant/model_quantize.hpp"

using namespace forge;
using Bk = backend::simd<>;

TEST_CASE("a numpy Llama reading our GPTQ checkpoint computes our quantized model's logits") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto m = io::load_hf_checkpoint<float>(test::llama_a() / "model");
  std::vector<std::vector<std::int64_t>> calib;
  philox g(5);
  for (int i = 0; i < 8; ++i) {
    calib.emplace_back();
    for (int t = 0; t < 24; ++t) calib.back().push_back(std::int64_t(g.below(512)));
  }
  const auto rep =
      quant::quantize_model_gptq<quant::int4_group<64, false>>(Bk{}, m, calib, {.act_order = true});
  REQUIRE(rep.kept_dense.size() == 2);
  const auto dir = test::scratch("compress_gptq_interop");
  quant::save_gptq_checkpoint<Bk, 64, false>(m, dir, {.desc_act = true});
  const std::vector<std::int64_t> ids = {0, 17, 250, 3, 99, 411, 12, 7, 300, 64};
  model::workspace<float> ws;
  const auto z = model::forward(Bk{}, m, ws, {.batch = 1, .seq = 10, .input_ids = ids});
  const std::vector<float> logits(z.begin(), z.end());
  const std::vector<io::tensor_view> expect = {
      io::f32_view("logits", {10, m.config.vocab_size}, logits)};
  io::write_safetensors(dir / "expect.safetensors", expect);
  std::ofstream(dir / "check.py") << R"PY(
import sys, json, numpy as np
from safetensors.numpy import load_file
d, ids = sys.argv[1], np.array(json.loads(sys.argv[2]))
cfg = json.load(open(d + "/config.json"))
qc = cfg["quantization_config"]
assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 64
assert qc["sym"] is False and qc["desc_act"] is True and qc.get("checkpoint_format", "gptq") == "gptq"
assert set(qc["dynamic"]) == {"-:model.layers.0.mlp.down_proj", "-:model.layers.1.mlp.down_proj"}
t = load_file(d + "/model.safetensors")
H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd, eps, theta = cfg.get("head_dim", H // nh), cfg["rms_norm_eps"], cfg["rope_parameters"]["rope_theta"]
shifts = np.arange(0, 32, 4, dtype=np.uint32)
def weight(p):  # [out, in] float64
    if p + ".qweight" not in t:
        return t[p + ".weight"].astype(np.float64)
    qw, qz, sc, gi = t[p + ".qweight"], t[p + ".qzeros"], t[p + ".scales"], t[p + ".g_idx"]
    K, N = qw.shape[0] * 8, qw.shape[1]
    q = ((qw.view(np.uint32)[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(K, N)
    zz = ((qz.view(np.uint32)[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(qz.shape[0], N) + 1
    return (sc.astype(np.float64)[gi] * (q.astype(np.float64) - zz[gi].astype(np.float64))).T
def rms(v, w):
    return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w.astype(np.float64)
S = len(ids)
inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
ang = np.outer(np.arange(S, dtype=np.float64), inv)
cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
def rope(v):
    h = hd // 2
    return v * cos[:, None, :] + np.concatenate([-v[..., h:], v[..., :h]], -1) * sin[:, None, :]
x = t["model.embed_tokens.weight"].astype(np.float64)[ids]
mask = np.triu(np.full((S, S), -np.inf), 1)
for l in range(cfg["num_hidden_layers"]):
    p = "model.layers.%d." % l
    h = rms(x, t[p + "input_layernorm.weight"])
    q = rope((h @ weight(p + "self_attn.q_proj").T).reshape(S, nh, hd))
    k = rope((h @ weight(p + "self_attn.k_proj").T).reshape(S, nkv, hd))
    v = (h @ weight(p + "self_attn.v_proj").T).reshape(S, nkv, hd)
    k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
    s = np.einsum("shd,thd->hst", q, k) / np.sqrt(hd) + mask
    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
    x = x + np.einsum("hst,thd->shd", s, v).reshape(S, nh * hd) @ weight(p + "self_attn.o_proj").T
    h = rms(x, t[p + "post_attention_layernorm.weight"])
    gt, up = h @ weight(p + "mlp.gate_proj").T, h @ weight(p + "mlp.up_proj").T
    x = x + (gt / (1 + np.exp(-gt)) * up) @ weight(p + "mlp.down_proj").T
x = rms(x, t["model.norm.weight"])
head = t["embed_tokens" if cfg.get("tie_word_embeddings") else "lm_head.weight"].astype(np.float64)
z = x @ head.T
exp = load_file(d + "/expect.safetensors")["logits"].astype(np.float64)
# forge computes in f32 (the numpy reference in f64): differences of a few 1e-6 relative to
# the largest logit are rounding; a layout error moves logits by far more than 1e-4.
err = np.abs(z - exp).max() / np.abs(z).max()
print("max relative difference", err)
assert err < 1e-4, err
)PY";
  std::string id_list = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) id_list += (i ? "," : "") + std::to_string(ids[i]);
  id_list += "]";
  const std::string cmd =
      py + " " + (dir / "check.py").string() + " " + dir.string() + " '" + id_list + "'";
  CHECK(std::system(cmd.c_str()) == 0);
}
