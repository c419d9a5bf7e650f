#pragma once
// Training checkpoints: one safetensors file holding everything a resumed run needs to
// continue bit-identically — the trainable tensors, both AdamW moments (f32, or 8-bit codes
// with their block absmax), and in the metadata key "forge.trainer_state" a JSON object with
// the step, the data position (examples consumed), the seed of every random stream (data
// order and dropout are counter-based, keyed by seed and step, so seed + step restore them),
// the training and evaluation logs and the early-stopping state. Tensor keys:
//   value/<name>, adam_m/<name>, adam_v/<name>  (+ adam_m_absmax/<name>, adam_v_absmax/<name>)
// The file is written atomically: a crash leaves the previous checkpoint or the new one.

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "forge/core/json.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/train/adamw.hpp"
#include "forge/train/loss_curve.hpp"

namespace forge::train {

/// The non-tensor state of a training run.
struct trainer_state {
  std::int64_t step = 0;           ///< optimizer steps done
  std::int64_t examples_seen = 0;  ///< data position: examples consumed so far
  std::uint64_t seed = 0;          ///< the run's seed (data order, dropout)
  std::vector<log_entry> log{};
  std::vector<eval_entry> evals{};
  double best = 0;  ///< best early-stopping metric so far
  bool has_best = false;
  std::int64_t bad_evals = 0;  ///< evaluations since the best one
};

inline json to_json_state(const trainer_state& s) {
  json log = json::array(), evals = json::array();
  for (auto& e : s.log) log.push_back({e.step, e.loss, e.lr, e.grad_norm, e.tokens});
  for (auto& e : s.evals) evals.push_back({{"step", e.step}, {"metrics", e.metrics}});
  return {{"step", s.step},         {"examples_seen", s.examples_seen},
          {"seed", s.seed},         {"log", log},
          {"evals", evals},         {"best", s.best},
          {"has_best", s.has_best}, {"bad_evals", s.bad_evals}};
}

inline trainer_state state_from_json(const json& j, const std::string& src) {
  trainer_state s;
  s.step = get_field<std::int64_t>(j, "step", src);
  s.examples_seen = get_field<std::int64_t>(j, "examples_seen", src);
  s.seed = get_field<std::uint64_t>(j, "seed", src);
  s.best = get_field<double>(j, "best", src);
  s.has_best = get_field<bool>(j, "has_best", src);
  s.bad_evals = get_field<std::int64_t>(j, "bad_evals", src);
  for (auto& e : get_field<json>(j, "log", src))
    s.log.push_back({e.at(0).get<std::int64_t>(), e.at(1).get<double>(), e.at(2).get<double>(),
                     e.at(3).get<double>(), e.at(4).get<std::int64_t>()});
  for (auto& e : get_field<json>(j, "evals", src))
    s.evals.push_back({get_field<std::int64_t>(e, "step", src),
                       get_field<std::map<std::string, double>>(e, "metrics", src)});
  return s;
}

/// Writes the checkpoint file `path` atomically.
template <class T>
void save_checkpoint(const std::filesystem::path& path, adamw<T>& opt, const trainer_state& st) {
  std::vector<std::vector<float>> f32s;
  f32s.reserve(opt.params().size() * 5);
  std::vector<io::tensor_view> views;
  auto add_f32 = [&](std::string key, std::vector<float> v) {
    const auto n = std::int64_t(v.size());
    f32s.push_back(std::move(v));
    views.push_back(io::f32_view(std::move(key), {n}, f32s.back()));
  };
  for (std::size_t i = 0; i < opt.params().size(); ++i) {
    const auto& p = opt.params()[i];
    add_f32("value/" + p.name, std::vector<float>(p.value.begin(), p.value.end()));
    for (auto [tag, s] :
         {std::pair{"adam_m", &opt.first_moments()[i]}, {"adam_v", &opt.second_moments()[i]}}) {
      if (!s->f32.empty()) {
        add_f32(std::string(tag) + "/" + p.name, s->f32);
      } else {
        views.push_back({std::string(tag) + "/" + p.name,
                         dtype::u8,
                         {std::int64_t(s->codes.size())},
                         std::as_bytes(std::span(s->codes))});
        add_f32(std::string(tag) + "_absmax/" + p.name, s->absmax);
      }
    }
  }
  auto js = to_json_state(st);
  js["adam_steps"] = opt.steps();
  io::write_safetensors(path, views, {{"forge.trainer_state", js.dump()}});
}

/// Restores `opt` (parameter values and moments) from checkpoint `path` and returns the
/// trainer state. The checkpoint must hold exactly the optimizer's tensors with their sizes.
template <class T>
trainer_state load_checkpoint(const std::filesystem::path& path, adamw<T>& opt) {
  auto f = io::safetensors_file::open(path);
  const std::string src = path.string();
  const auto it = f.metadata().find("forge.trainer_state");
  require(it != f.metadata().end(), {.what = "not a forge training checkpoint",
                                     .file = src,
                                     .place = "__metadata__",
                                     .expected = "a forge.trainer_state entry"});
  const json js = parse_json(it->second, src + " (forge.trainer_state)");
  auto read = [&](const std::string& key, std::size_t n) {
    const auto& t = f.at(key);
    require(t.numel() == n, {.what = "checkpoint tensor does not fit the trained parameter",
                             .file = src,
                             .place = key,
                             .expected = std::to_string(n) + " values",
                             .found = std::to_string(t.numel()) + " values"});
    return f.to_f32(key);
  };
  std::size_t expected_tensors = 0;
  for (std::size_t i = 0; i < opt.params().size(); ++i) {
    const auto& p = opt.params()[i];
    const auto v = read("value/" + p.name, p.value.size());
    for (std::size_t j = 0; j < v.size(); ++j) p.value[j] = T(v[j]);
    ++expected_tensors;
    for (auto [tag, s] :
         {std::pair{"adam_m", &opt.first_moments()[i]}, {"adam_v", &opt.second_moments()[i]}}) {
      const std::string key = std::string(tag) + "/" + p.name;
      if (!s->f32.empty()) {
        s->f32 = read(key, p.value.size());
        ++expected_tensors;
      } else {
        const auto& t = f.at(key);
        require(t.type == dtype::u8 && t.numel() == s->codes.size(),
                {.what = "checkpoint 8-bit state does not fit",
                 .file = src,
                 .place = key,
                 .expected = std::to_string(s->codes.size()) + " u8 codes"});
        const auto b = f.bytes(t);
        std::memcpy(s->codes.data(), b.data(), b.size());
        s->absmax = read(std::string(tag) + "_absmax/" + p.name, s->absmax.size());
        expected_tensors += 2;
      }
    }
  }
  require(f.tensors().size() == expected_tensors,
          {.what = "checkpoint holds tensors the run does not train",
           .file = src,
           .expected = std::to_string(expected_tensors) + " tensors",
           .found = std::to_string(f.tensors().size())});
  opt.set_steps(get_field<std::int64_t>(js, "adam_steps", src));
  return state_from_json(js, src);
}

}  // namespace forge::train
