// SFT encoding (assistant-only loss mask, truncation) and packing (boundaries, positions,
// labels), with the packed loss of a toy attention model equal to the unpacked losses.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/cache1.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/transform.hpp>

#include "doubles.hpp"
#include "forge/data/jsonl.hpp"
#include "forge/data/length_filter.hpp"
#include "forge/data/packing.hpp"
#include "forge/data/sft.hpp"

using namespace forge::data;
using forge::test::chatml_renderer_test_double;
using forge::test::whitespace_tokenizer_test_double;

static_assert(Tokenizer<whitespace_tokenizer_test_double>);
static_assert(ChatRenderer<chatml_renderer_test_double>);

namespace {
const std::vector<message> convo{{"system", "be brief"},
                                 {"user", "hi there"},
                                 {"assistant", "hello you"},
                                 {"user", "bye"},
                                 {"assistant", "ciao"}};

// The trained tokens as words, "" where the label is ignored.
std::vector<std::string> label_words(const sft_example& ex,
                                     const whitespace_tokenizer_test_double& tok) {
  std::vector<std::string> w;
  for (auto l : ex.labels) w.push_back(l == ignore_index ? "" : tok.word(l));
  return w;
}
std::vector<std::string> input_words(const sft_example& ex,
                                     const whitespace_tokenizer_test_double& tok) {
  std::vector<std::string> w;
  for (auto l : ex.input_ids) w.push_back(tok.word(l));
  return w;
}
}  // namespace

TEST_CASE("only assistant turns, with their end-of-turn token, are trained") {
  whitespace_tokenizer_test_double tok;
  chatml_renderer_test_double chat;
  auto ex = encode_sft(convo, tok, chat);
  REQUIRE(ex);
  // Worked out by hand from the template.
  const std::vector<std::string> in{
      "<|im_start|>", "system",       "be",         "brief",        "<|im_end|>",   "<|im_start|>",
      "user",         "hi",           "there",      "<|im_end|>",   "<|im_start|>", "assistant",
      "hello",        "you",          "<|im_end|>", "<|im_start|>", "user",         "bye",
      "<|im_end|>",   "<|im_start|>", "assistant",  "ciao",         "<|im_end|>"};
  const std::vector<std::string> lab{"", "", "", "", "",      "",     "",           "",
                                     "", "", "", "", "hello", "you",  "<|im_end|>", "",
                                     "", "", "", "", "",      "ciao", "<|im_end|>"};
  CHECK(input_words(*ex, tok) == in);
  CHECK(label_words(*ex, tok) == lab);
  CHECK(ex->trained() == 5);

  auto last = encode_sft(convo, tok, chat, {.all_assistant_turns = false});
  REQUIRE(last);
  CHECK(last->trained() == 2);
  CHECK(label_words(*last, tok)[21] == "ciao");
}

TEST_CASE("truncation policies") {
  whitespace_tokenizer_test_double tok;
  chatml_renderer_test_double chat;
  sft_drop why{};
  auto start =
      encode_sft(convo, tok, chat, {.max_length = 14, .truncate = truncation::keep_start}, &why);
  REQUIRE(start);
  CHECK(start->input_ids.size() == 14);
  CHECK(label_words(*start, tok)[13] == "you");  // the first reply, cut before its end token
  CHECK(start->trained() == 2);
  auto end = encode_sft(convo, tok, chat, {.max_length = 5, .truncate = truncation::keep_end});
  REQUIRE(end);
  CHECK(input_words(*end, tok) ==
        std::vector<std::string>{"<|im_end|>", "<|im_start|>", "assistant", "ciao", "<|im_end|>"});
  CHECK(label_words(*end, tok) == std::vector<std::string>{"", "", "", "ciao", "<|im_end|>"});
  CHECK_FALSE(encode_sft(convo, tok, chat, {.max_length = 10, .truncate = truncation::drop}, &why));
  CHECK(why == sft_drop::too_long);
  CHECK_FALSE(
      encode_sft(convo, tok, chat, {.max_length = 10, .truncate = truncation::keep_start}, &why));
  CHECK(why == sft_drop::no_trained_tokens);
}

TEST_CASE("a template whose generation prompt is not a prefix of the turn is an error") {
  whitespace_tokenizer_test_double tok;
  chatml_renderer_test_double broken{.broken_prompt = true};
  try {
    encode_sft(convo, tok, broken, {}, nullptr, "rec-9");
    FAIL("no error");
  } catch (const forge::error& e) {
    CHECK(e.file() == "rec-9");
    CHECK(e.place() == "assistant turn at message 2, token 11");
  }
}

TEST_CASE("the encoder step composes with the reader and counts drops and tokens") {
  whitespace_tokenizer_test_double tok;
  chatml_renderer_test_double chat;
  data_report rep;
  const std::string text = R"({"prompt":"one two","completion":"three"})"
                           "\n"
                           R"({"prompt":"a b c d e f g h i j k l m n o p","completion":"z"})"
                           "\n"
                           R"({"prompt":"x","completion":"y"})"
                           "\n";
  sft_encoder enc(tok, chat, {.max_length = 12, .truncate = truncation::drop}, rep);
  // cache1: filter reads each element twice (predicate, then dereference); without the cache
  // the encoder would run, and count, twice per kept record.
  auto examples =
      parse_jsonl<sft_record>(text, "sft.jsonl", rep) | ranges::views::transform(enc) |
      ranges::views::cache1 | ranges::views::filter([](const auto& e) { return e.has_value(); }) |
      ranges::views::transform([](const auto& e) { return *e; }) | ranges::to<std::vector>();
  REQUIRE(examples.size() == 2);
  CHECK(examples[0].id == "sft.jsonl:1");
  CHECK(examples[1].id == "sft.jsonl:3");
  CHECK(rep.step("encode").in == 3);
  CHECK(rep.step("encode").removed.at("too_long") == 1);
  // "<|im_start|> user one two <|im_end|> <|im_start|> assistant three <|im_end|>" = 9 tokens;
  // the third example has 8.
  CHECK(rep.tokens.records == 2);
  CHECK(rep.tokens.min == 8);
  CHECK(rep.tokens.max == 9);
  CHECK(rep.tokens.total == 17);
}

TEST_CASE("token length filter counts removals") {
  whitespace_tokenizer_test_double tok;
  data_report rep;
  token_length_filter f(tok, 2, 4, rep);
  CHECK_FALSE(f(text_record{"1", "one"}));
  CHECK(f(text_record{"2", "one two three"}));
  CHECK_FALSE(f(text_record{"3", "a b c d e"}));
  CHECK(rep.step("length").removed.at("too_short") == 1);
  CHECK(rep.step("length").removed.at("too_long") == 1);
  CHECK(rep.step("length").out == 1);
}

namespace {
std::vector<sft_example> random_examples(std::mt19937& rng, int n, int vocab, int max_len) {
  std::vector<sft_example> out;
  for (int k = 0; k < n; ++k) {
    sft_example e;
    e.id = "ex" + std::to_string(k);
    const int len = 1 + static_cast<int>(rng() % static_cast<unsigned>(max_len));
    for (int t = 0; t < len; ++t) {
      e.input_ids.push_back(static_cast<std::int32_t>(rng() % static_cast<unsigned>(vocab)));
      // About half the positions trained, including sometimes position 0.
      e.labels.push_back(rng() % 2 ? e.input_ids.back() : ignore_index);
    }
    out.push_back(e);
  }
  return out;
}
}  // namespace

TEST_CASE("packed rows keep order, restart positions and mark every boundary") {
  std::mt19937 rng(5);
  auto ex = random_examples(rng, 40, 50, 30);
  const packing_options o{.row_length = 64, .pad_id = 99};
  auto rows = pack_examples(ex, o);
  std::size_t next = 0;
  for (const auto& r : rows) {
    REQUIRE(r.input_ids.size() == 64);
    REQUIRE(r.labels.size() == 64);
    REQUIRE(r.position_ids.size() == 64);
    REQUIRE(r.seq_starts.front() == 0);
    REQUIRE(r.seq_starts.back() == 64);
    for (std::size_t s = 0; s < r.ids.size(); ++s) {
      const auto& e = ex[next++];
      REQUIRE(r.ids[s] == e.id);  // greedy sequential keeps input order
      const auto a = static_cast<std::size_t>(r.seq_starts[s]);
      REQUIRE(static_cast<std::size_t>(r.seq_starts[s + 1]) - a == e.input_ids.size());
      for (std::size_t t = 0; t < e.input_ids.size(); ++t) {
        REQUIRE(r.input_ids[a + t] == e.input_ids[t]);
        REQUIRE(r.position_ids[a + t] == static_cast<std::int32_t>(t));
        REQUIRE(r.labels[a + t] == (t == 0 ? ignore_index : e.labels[t]));
      }
    }
    // Padding: the remaining segment, if any.
    const auto used = static_cast<std::size_t>(r.seq_starts[r.ids.size()]);
    for (std::size_t t = used; t < 64; ++t) {
      REQUIRE(r.input_ids[t] == 99);
      REQUIRE(r.labels[t] == ignore_index);
    }
    // Greedy: the next example would not have fitted.
    if (next < ex.size()) REQUIRE(used + ex[next].input_ids.size() > 64);
  }
  CHECK(next == ex.size());
  packer p(o);
  CHECK_THROWS_AS(
      p.add(sft_example{"big", std::vector<std::int32_t>(65, 1), std::vector<std::int32_t>(65, 1)}),
      forge::error);
}

TEST_CASE("the mask implied by the boundaries is the block-diagonal causal mask") {
  std::mt19937 rng(6);
  auto rows = pack_examples(random_examples(rng, 20, 10, 12), {.row_length = 32, .pad_id = 0});
  for (const auto& r : rows) {
    const auto m = block_causal_mask(r.seq_starts);
    // Reference from the other field: a segment starts wherever position_ids is 0.
    std::vector<int> seg(32);
    for (std::size_t i = 0, s = 0; i < 32; ++i)
      seg[i] = static_cast<int>(s += (r.position_ids[i] == 0));
    for (std::size_t i = 0; i < 32; ++i)
      for (std::size_t j = 0; j < 32; ++j)
        REQUIRE(m[i * 32 + j] == (j <= i && seg[i] == seg[j] ? 1 : 0));
  }
}

namespace {
/// A toy causal LM whose output depends on attention and positions, to check that packing
/// changes nothing (test double): h_t = E[x_t] + P[pos_t] + mean of E[x_j] over visible j;
/// logits_t = W h_t. Loss: sum over t of -log softmax(logits_t)[labels[t+1]] where the label
/// is not ignore_index (the Hugging Face shift).
struct mean_attention_lm_test_double {
  static constexpr int V = 100, D = 8, max_pos = 64;
  std::vector<double> E, P, W;
  explicit mean_attention_lm_test_double(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, 0.5);
    for (auto* v : {&E, &P, &W}) v->resize(static_cast<std::size_t>(v == &P ? max_pos * D : V * D));
    for (auto* v : {&E, &P, &W})
      for (auto& x : *v) x = nd(rng);
  }
  double loss(const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& pos,
              const std::vector<std::uint8_t>& mask, const std::vector<std::int32_t>& labels,
              int& targets) const {
    const std::size_t n = ids.size();
    double total = 0;
    for (std::size_t t = 0; t + 1 < n; ++t) {
      if (labels[t + 1] == ignore_index) continue;
      ++targets;
      std::vector<double> h(D, 0.0), ctx(D, 0.0);
      int seen = 0;
      for (std::size_t j = 0; j < n; ++j)
        if (mask[t * n + j]) {
          ++seen;
          for (int d = 0; d < D; ++d) ctx[d] += E[static_cast<std::size_t>(ids[j] * D + d)];
        }
      for (int d = 0; d < D; ++d)
        h[d] = E[static_cast<std::size_t>(ids[t] * D + d)] +
               P[static_cast<std::size_t>(pos[t] * D + d)] + ctx[d] / seen;
      std::vector<double> logit(V);
      double mx = -1e300;
      for (int v = 0; v < V; ++v) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += W[static_cast<std::size_t>(v * D + d)] * h[d];
        logit[v] = s;
        mx = std::max(mx, s);
      }
      double z = 0;
      for (double l : logit) z += std::exp(l - mx);
      total += -(logit[static_cast<std::size_t>(labels[t + 1])] - mx - std::log(z));
    }
    return total;
  }
};

std::vector<std::uint8_t> causal(std::size_t n) {
  std::vector<std::uint8_t> m(n * n, 0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j <= i; ++j) m[i * n + j] = 1;
  return m;
}
}  // namespace

TEST_CASE("packed and unpacked losses are equal for a toy attention model") {
  std::mt19937 rng(8);
  auto ex = random_examples(rng, 30, 100, 20);
  mean_attention_lm_test_double model(42);
  double unpacked = 0;
  int unpacked_targets = 0;
  for (const auto& e : ex) {
    std::vector<std::int32_t> pos(e.input_ids.size());
    for (std::size_t t = 0; t < pos.size(); ++t) pos[t] = static_cast<std::int32_t>(t);
    unpacked += model.loss(e.input_ids, pos, causal(pos.size()), e.labels, unpacked_targets);
  }
  auto rows = pack_examples(ex, {.row_length = 48, .pad_id = 0});
  double packed = 0, packed_plain_causal = 0, packed_raw_labels = 0;
  int packed_targets = 0, t2 = 0, t3 = 0;
  for (const auto& r : rows) {
    packed += model.loss(r.input_ids, r.position_ids, block_causal_mask(r.seq_starts), r.labels,
                         packed_targets);
    // Controls that must differ: a plain causal mask lets examples see each other; labels
    // without the boundary mark make a segment's first token a target of the previous one.
    packed_plain_causal += model.loss(r.input_ids, r.position_ids, causal(48), r.labels, t2);
    auto raw = r.labels;
    for (std::size_t s = 0; s < r.ids.size(); ++s)
      raw[static_cast<std::size_t>(r.seq_starts[s])] = ex[std::stoul(r.ids[s].substr(2))].labels[0];
    packed_raw_labels +=
        model.loss(r.input_ids, r.position_ids, block_causal_mask(r.seq_starts), raw, t3);
  }
  std::printf(
      "loss sums: unpacked %.12f packed %.12f (plain causal %.6f, unmasked boundaries %.6f)\n",
      unpacked, packed, packed_plain_causal, packed_raw_labels);
  CHECK(rows.size() < ex.size());  // packing happened
  CHECK(packed_targets == unpacked_targets);
  // Same terms, summed in the same order of examples: only the grouping of the sum differs,
  // so agreement to 1e-12 relative is expected in double precision.
  CHECK(packed == Approx(unpacked).epsilon(1e-12));
  CHECK(std::abs(packed_plain_causal - unpacked) > 1e-3);
  CHECK(t3 > unpacked_targets);
}
