// pretrain_builtin: builds forge's built-in base model from nothing but a seed.
//
//   1. generates the pre-training corpus (forge::builtin::corpus),
//   2. trains a byte-level BPE tokenizer on it (forge::text::bpe_trainer),
//   3. packs the tokenized corpus into rows of --context tokens,
//   4. pre-trains a small Llama model from random weights with full-parameter AdamW,
//   5. writes config.json, model.safetensors (bf16), generation_config.json, tokenizer.json,
//      tokenizer_config.json and provenance.json into --out.
// The run is deterministic: the same arguments, thread count and instruction set give the
// same bytes (docs/builtin.md has the command that made models/builtin).
//
// usage: pretrain_builtin --out DIR [--work DIR] [--seed N] [--docs N] [--steps N]
//                         [--batch N] [--lr X] [--vocab N] [--context N] [--halt-after N]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/backend/backend.hpp"
#include "forge/builtin/chat.hpp"
#include "forge/builtin/corpus.hpp"
#include "forge/builtin/model.hpp"
#include "forge/builtin/tokenizer.hpp"
#include "forge/core/error.hpp"
#include "forge/core/parallel.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/hf_checkpoint.hpp"
#include "forge/model/init.hpp"
#include "forge/text/bpe_trainer.hpp"
#include "forge/text/load_tokenizer.hpp"
#include "forge/train/parameters.hpp"
#include "forge/train/trainer.hpp"

namespace fb = forge::builtin;

namespace {

struct args {
  std::filesystem::path out, work;
  std::uint64_t seed = 1;
  std::size_t docs = 60000;
  std::int64_t steps = 1000;
  std::int64_t batch = 16;
  double lr = 2e-3;
  std::size_t vocab = 2048;
  std::size_t context = 256;
  std::int64_t halt_after = 0;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw forge::error({.what = "missing value", .place = k});
    const std::string v = argv[++i];
    if (k == "--out")
      a.out = v;
    else if (k == "--work")
      a.work = v;
    else if (k == "--seed")
      a.seed = std::stoull(v);
    else if (k == "--docs")
      a.docs = std::stoull(v);
    else if (k == "--steps")
      a.steps = std::stoll(v);
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--lr")
      a.lr = std::stod(v);
    else if (k == "--vocab")
      a.vocab = std::stoull(v);
    else if (k == "--context")
      a.context = std::stoull(v);
    else if (k == "--halt-after")
      a.halt_after = std::stoll(v);
    else
      throw forge::error({.what = "unknown option",
                          .place = k,
                          .expected = "--out --work --seed --docs --steps --batch --lr --vocab "
                                      "--context --halt-after"});
  }
  if (a.out.empty()) throw forge::error(std::string("--out is required"));
  if (a.work.empty()) a.work = a.out / "work";
  return a;
}

// Tokenizes documents, concatenates them and cuts rows of `context` tokens (the tail that
// does not fill a row is dropped). Labels equal inputs: every position is trained.
template <class Tok>
std::vector<forge::data::sft_example> pack(const Tok& tok, const std::vector<std::string>& docs,
                                           std::size_t context, const std::string& tag,
                                           std::size_t* n_tokens) {
  std::vector<std::int32_t> stream;
  for (const auto& d : docs) {
    const auto ids = tok.encode(d, false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  *n_tokens = stream.size();
  std::vector<forge::data::sft_example> rows;
  for (std::size_t i = 0; i + context <= stream.size(); i += context) {
    forge::data::sft_example e;
    e.id = tag + "-" + std::to_string(rows.size());
    e.input_ids.assign(stream.begin() + std::ptrdiff_t(i),
                       stream.begin() + std::ptrdiff_t(i + context));
    e.labels = e.input_ids;
    rows.push_back(std::move(e));
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) try {
  const args a = parse(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  // 1. corpus
  const auto docs = fb::corpus(a.seed, a.docs);
  const std::string corpus_sha = forge::govern::sha256_hex(fb::join(docs));
  std::printf("corpus: %zu documents, sha256 %s (%.1fs)\n", docs.size(), corpus_sha.c_str(),
              elapsed());

  // 2. tokenizer
  const auto bpe = fb::train_tokenizer(docs, a.vocab);
  fb::save_tokenizer(bpe, a.out, a.context);
  const auto tok = forge::text::load_tokenizer(a.out);
  std::printf("tokenizer: %zu ids, %zu merges (%.1fs)\n", bpe.vocab.size(), bpe.merges.size(),
              elapsed());

  // 3. data
  std::size_t n_train_tokens = 0, n_val_tokens = 0;
  const auto train = pack(tok, docs, a.context, "train", &n_train_tokens);
  const auto val =
      pack(tok, fb::heldout_text(a.seed, fb::heldout_docs), a.context, "heldout", &n_val_tokens);
  std::printf("data: %zu train tokens (%zu rows), %zu held-out tokens (%zu rows) (%.1fs)\n",
              n_train_tokens, train.size(), n_val_tokens, val.size(), elapsed());

  // 4. model and training
  auto cfg = fb::model_config_for(std::int64_t(bpe.vocab.size()), std::int64_t(a.context));
  auto m = forge::model::random_model<float>(cfg, {.seed = a.seed, .initializer_range = 0.02});
  std::printf("model: %lld parameters, %d threads\n", (long long)cfg.parameter_count(),
              forge::num_threads());
  forge::train::trainer_options o;
  o.max_steps = a.steps;
  o.batch_size = a.batch;
  o.grad_accum = 1;
  o.max_grad_norm = 1.0;
  o.optim = {.lr = a.lr, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  o.sched = {.kind = forge::train::schedule_kind::cosine,
             .warmup_steps = std::max<std::int64_t>(1, a.steps / 20),
             .total_steps = a.steps};
  o.checkpoint_every = 0;
  o.out_dir = a.work;
  o.seed = a.seed;
  o.pad_id = *tok.pad_id();
  o.show_progress = true;
  o.halt_after = a.halt_after;
  const auto res = forge::train::train_sft(
      forge::backend::simd<>{}, m, forge::train::model_parameters(m), nullptr, train, val, o);
  if (res.steps < a.steps) {
    std::printf("paused at step %lld of %lld; run again with the same arguments to resume\n",
                (long long)res.steps, (long long)a.steps);
    return 0;
  }
  const double final_loss = res.log.back().loss;
  const double val_loss = res.evals.back().metrics.at("val_loss");
  std::printf(
      "trained %lld steps: final train loss %.4f, held-out loss %.4f (ppl %.2f), "
      "%.0f tok/s (%.1fs)\n",
      (long long)res.steps, final_loss, val_loss, std::exp(val_loss), res.tokens_per_second(),
      elapsed());

  // 5. output
  forge::io::save_hf_checkpoint(m, a.out, forge::dtype::bf16);
  nlohmann::ordered_json prov = {
      {"name", "forge-builtin"},
      {"generator", "tools/pretrain_builtin.cpp"},
      {"command", "pretrain_builtin --out DIR --seed " + std::to_string(a.seed) + " --docs " +
                      std::to_string(a.docs) + " --steps " + std::to_string(a.steps) + " --batch " +
                      std::to_string(a.batch) + " --lr " + forge::str(a.lr) + " --vocab " +
                      std::to_string(a.vocab) + " --context " + std::to_string(a.context)},
      {"seed", a.seed},
      {"corpus_documents", a.docs},
      {"corpus_sha256", corpus_sha},
      {"corpus_tokens", n_train_tokens},
      {"heldout_documents", fb::heldout_docs},
      {"heldout_tokens", n_val_tokens},
      {"tokenizer", {{"vocab_size", bpe.vocab.size()}, {"merges", bpe.merges.size()}}},
      {"parameters", cfg.parameter_count()},
      {"steps", res.steps},
      {"batch_rows", a.batch},
      {"context", a.context},
      {"tokens_trained", res.steps * a.batch * std::int64_t(a.context)},
      {"final_train_loss", final_loss},
      {"heldout_loss", val_loss},
      {"heldout_perplexity", std::exp(val_loss)},
      {"threads", forge::num_threads()},
      {"weights_dtype", "bf16 (trained in f32)"}};
  forge::io::write_atomic(a.out / "provenance.json", prov.dump(2) + "\n");
  std::printf("wrote %s (%.1fs)\n", a.out.string().c_str(), elapsed());
  return 0;
} catch (const std::exception& e) {
  std::cerr << "pretrain_builtin: " << e.what() << "\n";
  return 1;
}
