// Tokenizer throughput on one core: encode and decode of a 10 MB text.
//
// usage: bench_tokenizer [TOKENIZER_DIR_OR_JSON [TEXT_FILE]]
//
// Without TEXT_FILE the text is generated (seeded): English-like prose over a Zipf-distributed
// vocabulary of 20,000 invented words, with numbers, punctuation, newlines, code lines and
// some non-ASCII words. MB are 10^6 bytes of UTF-8 input. "cold" is the first encode with an
// empty word cache, "warm" a repeat on the same tokenizer; every figure is the best of three.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "forge/io/atomic_file.hpp"
#include "forge/text/load_tokenizer.hpp"

namespace {

std::string generate_text(std::size_t bytes) {
  std::mt19937_64 rng(42);
  const auto below = [&](std::uint64_t n) { return rng() % n; };
  static const char* syllables[] = {"ka", "to",  "re", "mi", "an",  "el", "or", "th",  "in",  "st",
                                    "qu", "ion", "er", "al", "ing", "ed", "ly", "pro", "con", "ex"};
  std::vector<std::string> words(20000);
  for (auto& w : words) {
    const auto n = 1 + below(4);
    for (std::uint64_t i = 0; i < n; ++i) w += syllables[below(std::size(syllables))];
  }
  // Zipf(1.1) over word ranks, sampled through the cumulative distribution.
  std::vector<double> cdf(words.size());
  double sum = 0;
  for (std::size_t r = 0; r < words.size(); ++r) cdf[r] = sum += 1.0 / std::pow(r + 1.0, 1.1);
  const auto zipf_word = [&]() -> const std::string& {
    const double u = static_cast<double>(rng() >> 11) / 9007199254740992.0 * sum;
    return words[static_cast<std::size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) -
                                          cdf.begin())];
  };
  static const char* unicode[] = {"naïve",    "café", "Straße", "中文字符", "данные",
                                  "ελληνικά", "🙂", "日本語", "résumé",   "हिन्दी"};
  static const char* code[] = {"    for (int i = 0; i < n; ++i) { sum += x[i]; }\n",
                               "def f(x):\n    return x * 2\n", "if (a != b && c) return -1;\n"};
  std::string text;
  text.reserve(bytes + 256);
  while (text.size() < bytes) {
    const auto n = 5 + below(20);  // one sentence
    for (std::uint64_t i = 0; i < n; ++i) {
      if (i) text += ' ';
      const auto r = below(100);
      if (r < 4) {
        text += std::to_string(below(100000));
      } else if (r < 7) {
        text += unicode[below(std::size(unicode))];
      } else {
        std::string w = zipf_word();
        if (i == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
        text += w;
        if (below(12) == 0) text += ',';
      }
    }
    text += below(5) == 0 ? "?" : ".";
    if (below(8) == 0)
      text += below(4) == 0 ? std::string("\n") + code[below(std::size(code))] : "\n\n";
    else
      text += ' ';
  }
  return text;
}

template <class F>
double best_seconds(F&& f, int reps = 3) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  fs::path where = argc > 1 ? fs::path(argv[1]) : fs::path(FORGE_BENCH_TOKENIZER_DIR);
  const std::string text = argc > 2 ? forge::io::read_file(argv[2]) : generate_text(10'000'000);
  const double mb = static_cast<double>(text.size()) / 1e6;

  const auto load = [&] {
    if (fs::is_directory(where)) return forge::text::load_tokenizer(where);
    return forge::text::any_tokenizer(forge::text::hf_tokenizer::from_file(where), {});
  };

  std::vector<std::int32_t> ids;
  // Cold: a fresh tokenizer each repetition, so the word cache starts empty.
  const double cold = best_seconds([&] {
    const auto t = load();
    ids = t.encode(text, false);
  });
  const auto t = load();
  ids = t.encode(text, false);
  const double warm = best_seconds([&] { ids = t.encode(text, false); });
  std::string back;
  const double dec = best_seconds([&] { back = t.decode(ids); });
  const double ntok = static_cast<double>(ids.size());

  std::printf("tokenizer: %s (vocab %zu)\n", where.string().c_str(), t.vocab_size());
  std::printf("text: %.2f MB, %zu tokens (%.2f bytes/token)\n", mb, ids.size(),
              static_cast<double>(text.size()) / ntok);
  std::printf("encode cold: %8.2f MB/s %12.0f tokens/s (%.3f s, load included)\n", mb / cold,
              ntok / cold, cold);
  std::printf("encode warm: %8.2f MB/s %12.0f tokens/s (%.3f s)\n", mb / warm, ntok / warm, warm);
  std::printf("decode:      %8.2f MB/s %12.0f tokens/s (%.3f s)\n", mb / dec, ntok / dec, dec);
  if (back != text) {
    std::fprintf(stderr, "decode(encode(text)) != text\n");
    return 1;
  }
  return 0;
}
