#pragma once
// int4 tensors in the GPTQ checkpoint layout read by transformers (through GPTQModel /
// optimum) and the GPTQ kernels (AutoGPTQ's QuantLinear.pack). For a linear layer PREFIX with
// in_features K, out_features N and group size G:
//   PREFIX.qweight  I32 [K/8, N]   qweight[i][o] = Σ_j q[o][8i+j] << 4j   (input order)
//   PREFIX.qzeros   I32 [K/G, N/8] qzeros[g][c] = Σ_j z'[g][8c+j] << 4j
//   PREFIX.scales   F16 [K/G, N]
//   PREFIX.g_idx    I32 [K]        group of each input feature
// and the dequantized weight W[o][i] = scales[g_idx[i]][o] * (q[o][i] - z[g_idx[i]][o]).
// checkpoint_format "gptq" (v1, what transformers' quantization_config names by default)
// stores z' = z - 1; "gptq_v2" (GPTQModel's internal format) stores z' = z. A v1 file cannot
// hold a zero point of 0 (asymmetric groups with no negative weight): writing one is an error
// that suggests v2.

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "forge/core/dtype.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/quant/int4.hpp"

namespace forge::quant {

/// Which zero-point convention the qzeros tensor uses.
enum class gptq_format { v1, v2 };

/// One layer's tensors in the GPTQ layout (owned buffers, ready to write).
struct gptq_packed {
  std::int64_t in_features = 0, out_features = 0, group_size = 0;
  std::vector<std::int32_t> qweight{};  ///< [in/8, out]
  std::vector<std::int32_t> qzeros{};   ///< [in/G, out/8]
  std::vector<std::uint16_t> scales{};  ///< [in/G, out], f16 bits
  std::vector<std::int32_t> g_idx{};    ///< [in]
};

/// Packs an int4 tensor (any group size, symmetric or not, with or without act-order).
template <int G, bool Sym>
gptq_packed pack_gptq(const qtensor<int4_group<G, Sym>>& t, gptq_format fmt = gptq_format::v1) {
  using F = int4_group<G, Sym>;
  require(t.cols % 8 == 0 && t.rows % 8 == 0,
          {.what = "GPTQ packing needs in and out features divisible by 8",
           .place = "pack_gptq",
           .found = std::to_string(t.rows) + " x " + std::to_string(t.cols)});
  const std::int64_t K = t.cols, N = t.rows, groups = K / G;
  std::vector<std::int64_t> pos(static_cast<std::size_t>(K));  // input feature -> stored column
  std::iota(pos.begin(), pos.end(), 0);
  if (!t.perm.empty())
    for (std::int64_t k = 0; k < K; ++k)
      pos[static_cast<std::size_t>(t.perm[static_cast<std::size_t>(k)])] = k;
  gptq_packed p;
  p.in_features = K;
  p.out_features = N;
  p.group_size = G;
  p.qweight.assign(static_cast<std::size_t>(K / 8 * N), 0);
  p.qzeros.assign(static_cast<std::size_t>(groups * N / 8), 0);
  p.scales.resize(static_cast<std::size_t>(groups * N));
  p.g_idx.resize(static_cast<std::size_t>(K));
  for (std::int64_t i = 0; i < K; ++i)
    p.g_idx[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(pos[static_cast<std::size_t>(i)] / G);
  for (std::int64_t o = 0; o < N; ++o)
    for (std::int64_t i = 0; i < K; ++i) {
      const auto q = static_cast<std::uint32_t>(F::code(t, o, pos[static_cast<std::size_t>(i)]));
      auto& word = p.qweight[static_cast<std::size_t>((i / 8) * N + o)];
      word = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) | q << (4 * (i % 8)));
    }
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t o = 0; o < N; ++o) {
      const auto prm = F::group(t, o, g);
      p.scales[static_cast<std::size_t>(g * N + o)] = to_f16(prm.scale).bits;
      int z = static_cast<int>(prm.zero);
      if (fmt == gptq_format::v1) {
        require(z >= 1,
                {.what = "zero point 0 cannot be stored in the GPTQ v1 layout",
                 .place = "pack_gptq group " + std::to_string(g) + " row " + std::to_string(o),
                 .expected = "zero points 1..15 (or gptq_format::v2)",
                 .found = "0"});
        z -= 1;
      }
      auto& word = p.qzeros[static_cast<std::size_t>(g * (N / 8) + o / 8)];
      word = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) |
                                       static_cast<std::uint32_t>(z) << (4 * (o % 8)));
    }
  return p;
}

/// Unpacks a GPTQ layer into int4 tensor form; the group size and symmetry must be F's. A
/// g_idx that is not i / G (act-order) becomes the tensor's column permutation: input
/// features sorted by group, each group holding exactly G of them.
template <class F>
qtensor<F> unpack_gptq(const gptq_packed& p, gptq_format fmt = gptq_format::v1) {
  constexpr std::int64_t G = F::group_size;
  const std::int64_t K = p.in_features, N = p.out_features, groups = K / G;
  auto bad = [&](const std::string& what, const std::string& exp, const std::string& found) {
    throw error({.what = what, .place = "unpack_gptq", .expected = exp, .found = found});
  };
  if (p.group_size != G || K % G != 0 || K % 8 != 0 || N % 8 != 0)
    bad("GPTQ layer shape or group size does not fit the format",
        "group " + std::to_string(G) + ", features divisible by 8",
        "group " + std::to_string(p.group_size) + ", " + std::to_string(N) + " x " +
            std::to_string(K));
  if (p.qweight.size() != static_cast<std::size_t>(K / 8 * N) ||
      p.qzeros.size() != static_cast<std::size_t>(groups * N / 8) ||
      p.scales.size() != static_cast<std::size_t>(groups * N) ||
      p.g_idx.size() != static_cast<std::size_t>(K))
    bad("GPTQ tensor sizes disagree with the layer shape",
        "qweight [K/8,N], qzeros [K/G,N/8], scales [K/G,N], g_idx [K]", "other sizes");
  std::vector<std::int64_t> count(static_cast<std::size_t>(groups), 0);
  for (auto g : p.g_idx) {
    if (g < 0 || g >= groups)
      bad("g_idx out of range", "0.." + std::to_string(groups - 1), std::to_string(g));
    ++count[static_cast<std::size_t>(g)];
  }
  for (auto c : count)
    if (c != G)
      bad("a group does not hold exactly group_size input features", std::to_string(G),
          std::to_string(c));
  auto t = F::empty(N, K);
  std::vector<std::int32_t> order(static_cast<std::size_t>(K));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) {
    return p.g_idx[static_cast<std::size_t>(a)] < p.g_idx[static_cast<std::size_t>(b)];
  });
  bool identity = true;
  for (std::int64_t k = 0; k < K; ++k)
    identity = identity && order[static_cast<std::size_t>(k)] == k;
  if (!identity) t.perm = order;
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t o = 0; o < N; ++o) {
      const auto word =
          static_cast<std::uint32_t>(p.qzeros[static_cast<std::size_t>(g * (N / 8) + o / 8)]);
      int z = static_cast<int>((word >> (4 * (o % 8))) & 0xf);
      if (fmt == gptq_format::v1) z = (z + 1) & 0xf;
      const float s = to_f32(f16{p.scales[static_cast<std::size_t>(g * N + o)]});
      if (F::symmetric && z != 8)
        bad("a symmetric GPTQ layer has a zero point other than 8", "8", std::to_string(z));
      F::set_group(t, o, g, {s, static_cast<float>(z)});
    }
  for (std::int64_t k = 0; k < K; ++k) {
    const std::int64_t i = order[static_cast<std::size_t>(k)];
    for (std::int64_t o = 0; o < N; ++o) {
      const auto word =
          static_cast<std::uint32_t>(p.qweight[static_cast<std::size_t>((i / 8) * N + o)]);
      F::set_code(t, o, k, static_cast<std::uint8_t>((word >> (4 * (i % 8))) & 0xf));
    }
  }
  return t;
}

/// The tensors of a packed layer named PREFIX.qweight, .qzeros, .scales, .g_idx (views into p).
inline void append_gptq_views(std::vector<io::tensor_view>& views, const std::string& prefix,
                              const gptq_packed& p) {
  const std::int64_t K = p.in_features, N = p.out_features, groups = K / p.group_size;
  views.push_back(
      {prefix + ".qweight", dtype::i32, {K / 8, N}, std::as_bytes(std::span(p.qweight))});
  views.push_back(
      {prefix + ".qzeros", dtype::i32, {groups, N / 8}, std::as_bytes(std::span(p.qzeros))});
  views.push_back(
      {prefix + ".scales", dtype::f16, {groups, N}, std::as_bytes(std::span(p.scales))});
  views.push_back({prefix + ".g_idx", dtype::i32, {K}, std::as_bytes(std::span(p.g_idx))});
}

/// Reads PREFIX.qweight/.qzeros/.scales/.g_idx (g_idx optional: i / G when absent).
inline gptq_packed read_gptq(const io::safetensors_file& f, const std::string& prefix) {
  gptq_packed p;
  const auto& qw = f.at(prefix + ".qweight");
  const auto& sc = f.at(prefix + ".scales");
  auto shape_error = [&](const std::string& name, const std::string& exp) {
    throw error({.what = "GPTQ tensor has an unexpected shape",
                 .file = f.source(),
                 .place = "tensor " + name,
                 .expected = exp});
  };
  if (qw.shape.size() != 2) shape_error(qw.name, "2 dimensions [in/8, out]");
  if (sc.shape.size() != 2 || sc.shape[1] != qw.shape[1] || sc.shape[0] <= 0)
    shape_error(sc.name, "[groups, out]");
  p.in_features = qw.shape[0] * 8;
  p.out_features = qw.shape[1];
  if (p.in_features % sc.shape[0] != 0) shape_error(sc.name, "groups dividing in_features");
  p.group_size = p.in_features / sc.shape[0];
  p.qweight = f.copy_as<std::int32_t>(prefix + ".qweight", dtype::i32);
  p.qzeros = f.copy_as<std::int32_t>(prefix + ".qzeros", dtype::i32);
  p.scales = f.copy_as<std::uint16_t>(prefix + ".scales", dtype::f16);
  if (f.find(prefix + ".g_idx")) {
    p.g_idx = f.copy_as<std::int32_t>(prefix + ".g_idx", dtype::i32);
  } else {
    p.g_idx.resize(static_cast<std::size_t>(p.in_features));
    for (std::int64_t i = 0; i < p.in_features; ++i)
      p.g_idx[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i / p.group_size);
  }
  return p;
}

/// The "quantization_config" object of config.json for a GPTQ checkpoint (JSON text).
inline std::string gptq_quantization_config(int group_size, bool sym, bool desc_act,
                                            double damp_percent = 0.01,
                                            gptq_format fmt = gptq_format::v1) {
  std::string s = "{\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": ";
  s += std::to_string(group_size);
  s += ", \"desc_act\": ";
  s += desc_act ? "true" : "false";
  s += ", \"sym\": ";
  s += sym ? "true" : "false";
  s += ", \"damp_percent\": " + str(damp_percent);
  s += ", \"static_groups\": false, \"true_sequential\": true, \"checkpoint_format\": \"";
  s += fmt == gptq_format::v1 ? "gptq" : "gptq_v2";
  s += "\"}";
  return s;
}

}  // namespace forge::quant
