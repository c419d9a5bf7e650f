// Exact and MinHash/LSH near-duplicate removal against brute-force exact Jaccard, and the
// n-gram contamination sweep.
#include <catch2/catch.hpp>

#include <random>

#include "forge/data/contamination.hpp"
#include "forge/data/dedup.hpp"

using namespace forge::data;

TEST_CASE("exact dedup folds case, spacing and normalisation form") {
  data_report rep;
  exact_dedup d;
  std::vector<text_record> rs{{"a", "Hello  World"},
                              {"b", "hello world"},
                              {"c", "hello world!"},
                              {"d", "Cafe\xCC\x81"},
                              {"e", "CAF\xC3\x89"}};
  std::vector<std::string> kept;
  for (const auto& r : rs)
    if (d.keep(r, rep)) kept.push_back(r.id);
  CHECK(kept == std::vector<std::string>{"a", "c", "d"});
  CHECK(rep.exact_duplicates == 2);
  REQUIRE(rep.duplicates.size() == 2);
  CHECK(rep.duplicates[0].removed_id == "b");
  CHECK(rep.duplicates[0].kept_id == "a");
  CHECK(rep.duplicates[1].kept_id == "d");
  CHECK(rep.step("dedup_exact").removed.at("exact_duplicate") == 2);
}

TEST_CASE("exact Jaccard and shingles") {
  minhash_options o{.shingle = 2};
  auto a = shingles("a b c d", o);  // {ab, bc, cd}
  auto b = shingles("b c d e", o);  // {bc, cd, de}
  CHECK(a.size() == 3);
  CHECK(jaccard(a, b) == Approx(2.0 / 4.0));
  CHECK(jaccard(a, a) == 1.0);
  CHECK(shingles("x", o).size() == 1);  // shorter than k: one shingle of the whole text
  CHECK(shingles("", o).empty());
}

TEST_CASE("MinHash signature agreement estimates Jaccard") {
  // E[agreement] = J; with 1024 hash functions the standard deviation is <= 0.016,
  // so 0.06 is about 4 sd.
  minhash_options o{.bands = 128, .rows = 8, .shingle = 1};
  std::mt19937 rng(3);
  for (int t = 0; t < 20; ++t) {
    std::string x, y;
    for (int i = 0; i < 200; ++i) {
      std::string w(1, 'w');
      w += std::to_string(rng() % 400);
      if (rng() % 4) x += w + " ";
      if (rng() % 4) y += w + " ";
    }
    auto sx = shingles(x, o), sy = shingles(y, o);
    auto gx = minhash_signature(sx, o), gy = minhash_signature(sy, o);
    int eq = 0;
    for (std::size_t i = 0; i < gx.size(); ++i) eq += gx[i] == gy[i];
    CHECK(static_cast<double>(eq) / gx.size() == Approx(jaccard(sx, sy)).margin(0.06));
  }
}

TEST_CASE("LSH near dedup agrees with brute-force exact Jaccard") {
  // 60 random base documents and 240 variants with 0..5% of their words replaced (5-word shingles
  // amplify that: 2% gives J near 0.82), so the similarities to the base spread across the 0.8
  // threshold.
  std::mt19937 rng(11);
  auto word = [&] {
    std::string w(1, 'w');
    w += std::to_string(rng() % 2000);
    return w;
  };
  std::vector<std::string> docs;
  std::vector<std::vector<std::string>> bases;
  for (int b = 0; b < 60; ++b) {
    std::vector<std::string> w(80);
    for (auto& x : w) x = word();
    bases.push_back(w);
  }
  for (int i = 0; i < 300; ++i) {
    auto w = bases[static_cast<std::size_t>(i % 60)];
    const double p = i < 60 ? 0.0 : 0.05 * (rng() % 1000) / 1000.0;
    for (auto& x : w)
      if ((rng() % 1000) / 1000.0 < p) x = word();
    std::string s;
    for (auto& x : w) s += x + " ";
    docs.push_back(s);
  }
  std::shuffle(docs.begin(), docs.end(), rng);
  minhash_options o;  // 16 bands x 8 rows, 5-word shingles, threshold 0.8
  std::vector<std::vector<std::uint64_t>> sets;
  for (auto& d : docs) sets.push_back(shingles(d, o));
  // Brute force, same streaming rule: drop a document when an earlier kept one has J >= t.
  std::vector<bool> bf_drop(docs.size()), bf_strong(docs.size());
  std::vector<std::size_t> bf_kept;
  for (std::size_t i = 0; i < docs.size(); ++i) {
    double best = 0;
    for (auto k : bf_kept) best = std::max(best, jaccard(sets[i], sets[k]));
    bf_drop[i] = best >= o.threshold;
    bf_strong[i] = best >= 0.9;
    if (!bf_drop[i]) bf_kept.push_back(i);
  }
  near_dedup nd(o);
  data_report rep;
  std::size_t agree = 0, strong = 0, strong_found = 0, dropped = 0;
  for (std::size_t i = 0; i < docs.size(); ++i) {
    text_record r{std::to_string(i), docs[i]};
    const bool kept = nd.keep(r, rep);
    agree += (!kept) == bf_drop[i];
    if (bf_strong[i]) {
      ++strong;
      strong_found += !kept;
    }
    dropped += !kept;
  }
  // Precision is exact by construction: each reported pair really has J >= t.
  for (const auto& d : rep.duplicates) {
    const double j = jaccard(sets[std::stoul(d.removed_id)], sets[std::stoul(d.kept_id)]);
    CHECK(j >= o.threshold);
    CHECK(d.jaccard == Approx(j));
  }
  std::printf(
      "near dedup: %zu/%zu decisions agree with brute force; %zu dropped (brute force %zu); "
      "J>=0.9 found %zu/%zu\n",
      agree, docs.size(), dropped,
      static_cast<std::size_t>(std::count(bf_drop.begin(), bf_drop.end(), true)), strong_found,
      strong);
  // LSH with b=16, r=8 finds a pair of J=0.9 with probability 1-(1-0.9^8)^16 > 0.9999, of
  // J=0.8 with 0.9; only pairs just above the threshold are missed: allow 5% disagreement.
  CHECK(strong_found == strong);
  CHECK(agree >= docs.size() * 95 / 100);
  CHECK(rep.near_duplicates == dropped);
  CHECK(dropped > 60);  // the set really has duplicates to find
}

TEST_CASE("signature-only verification also works") {
  near_dedup nd(minhash_options{.verify_exact = false});
  CHECK_FALSE(
      nd.insert("a", "the quick brown fox jumps over the lazy dog near the river bank today"));
  auto m = nd.insert("b", "The quick brown fox jumps over the lazy dog near the river bank today!");
  REQUIRE(m);
  CHECK(m->kept_id == "a");
  CHECK_FALSE(nd.insert("c", "an entirely different sentence about training language models well"));
  CHECK_THROWS_AS(near_dedup(minhash_options{.threshold = 0}), forge::error);
}

TEST_CASE("contamination sweep removes and lists training records sharing 13-grams") {
  contamination_index idx;
  idx.add("gsm8k",
          "Natalia sold clips to 48 of her friends in April, and then she sold half as "
          "many clips in May. How many clips did Natalia sell altogether?");
  idx.add("arc",
          "Which factor will most likely cause a person to develop a fever? a leg muscle "
          "relaxing after exercise");
  idx.add("arc", "too short");  // fewer than min_words: not indexed, counted
  CHECK(idx.too_short() == 1);
  data_report rep;
  std::vector<text_record> train{
      {"t1",
       "Q: natalia SOLD clips to 48 of her friends in april, and then she sold half as many "
       "clips in may. A: 72"},                             // 13-gram overlap
      {"t2", "Natalia sold clips to 48 of her friends."},  // 9 words only
      {"t3", "Completely unrelated text about cooking pasta with garlic and oil for dinner."},
      {"t4",
       "Which factor will most likely cause a person to develop a fever? a leg muscle relaxing"}};
  std::vector<std::string> kept;
  for (const auto& r : train)
    if (idx.keep(r, rep)) kept.push_back(r.id);
  CHECK(kept == std::vector<std::string>{"t2", "t3"});
  REQUIRE(rep.contamination.size() == 2);
  CHECK(rep.contamination[0].record_id == "t1");
  CHECK(rep.contamination[0].eval_set == "gsm8k");
  // t1 shares words 1..20 of the gsm8k item ("natalia" .. "may"): 20 - 13 + 1 = 8 grams.
  CHECK(rep.contamination[0].ngrams == 8);
  CHECK(rep.contamination[1].record_id == "t4");
  CHECK(rep.contamination[1].eval_set == "arc");
  CHECK(rep.step("contamination").removed.at("eval_overlap") == 2);
}

TEST_CASE("short evaluation items are matched as whole sequences") {
  contamination_index idx({.n = 13, .min_words = 5});
  idx.add("tiny", "What is the capital of France?");  // 6 words
  CHECK(idx.overlaps("Quiz: what is the capital of france? Paris.").size() == 1);
  CHECK(idx.overlaps("What is the capital of Spain?").empty());
}
