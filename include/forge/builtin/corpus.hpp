#pragma once
// The built-in text: pre-training corpus, held-out regression text and quantization
// calibration text, all generated from a seed with forge::philox (nothing is downloaded).
//
// Every document is drawn from one of these generators (weights in `detail::document`):
//   arithmetic prose   "Anna had 14 apples and gave 5 to Ben, so Anna had 9 apples left."
//   number words       "Three hundred and twelve is written 312."
//   units              "A distance of 3 kilometres is 3000 metres."
//   dates              "The fair opened on 12 March 2021, that is 2021-03-12."
//   facts              fixed simple facts ("Water freezes at zero degrees Celsius.")
//   stories            short templated stories about people, places and objects
//   declining prose    narrative in which a character turns a request down ("Leo said, \"I
//                      cannot do that. It is not safe.\""), so the words of a refusal are in
//                      the vocabulary and the base model; it is never a chat turn
//   dialogues          chat-formatted conversations (builtin/chat.hpp) answering fact
//                      questions, small sums and story requests; no assistant turn refuses
// Each document starts with BOS and pre-training documents end with <|end_of_text|>.
//
// Held-out text is disjoint from the corpus by construction: a document goes to the held-out
// side iff the FNV-1a hash of its text is 0 mod 16, so the same text can never be on both
// sides, whatever the seeds.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "forge/builtin/chat.hpp"
#include "forge/builtin/detail/gen.hpp"
#include "forge/core/rng.hpp"
#include "forge/eval/safety.hpp"

namespace forge::builtin {

namespace detail {

inline std::string arithmetic_prose(picker& p) {
  std::string s;
  const auto n = p.range(2, 4);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::string a(p.pick(names)), b(p.pick(names)), it(p.pick(items));
    const auto x = p.range(2, 60), y = p.range(1, 40);
    switch (p.rng.below(4)) {
      case 0:
        s += a + " had " + std::to_string(x) + " " + it + " and found " + std::to_string(y) +
             " more, so " + a + " had " + std::to_string(x + y) + " " + it + ". ";
        break;
      case 1: {
        const auto big = x + y;
        s += a + " had " + std::to_string(big) + " " + it + " and gave " + std::to_string(y) +
             " to " + b + ", so " + a + " had " + std::to_string(x) + " " + it + " left. ";
        break;
      }
      case 2: {
        const auto u = p.range(2, 12), v = p.range(2, 12);
        s += std::to_string(u) + " times " + std::to_string(v) + " is " + std::to_string(u * v) +
             ", because " + std::to_string(u) + " groups of " + std::to_string(v) + " make " +
             std::to_string(u * v) + ". ";
        break;
      }
      default:
        s += std::to_string(x) + " plus " + std::to_string(y) + " equals " + std::to_string(x + y) +
             ", and " + std::to_string(x + y) + " minus " + std::to_string(y) + " equals " +
             std::to_string(x) + ". ";
    }
  }
  s.pop_back();
  return s;
}

inline std::string number_prose(picker& p) {
  std::string s;
  const auto n = p.range(2, 4);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto x = p.chance(1, 2) ? p.range(0, 100) : p.range(100, 99999);
    std::string w = number_words(x);
    w[0] = static_cast<char>(w[0] - 'a' + 'A');
    if (p.chance(1, 2))
      s += w + " is written " + with_commas(x) + ". ";
    else
      s += "The number " + with_commas(x) + " is read as " + number_words(x) + ". ";
  }
  s.pop_back();
  return s;
}

inline std::string unit_prose(picker& p) {
  std::string s;
  const auto n = p.range(2, 4);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& u = p.pick(units);
    const auto c = p.range(1, 20);
    const std::string big = plural(c, u.big, u.bigs),
                      small = plural(c * u.factor, u.small, u.smalls);
    switch (p.rng.below(3)) {
      case 0:
        s += "There are " + std::to_string(u.factor) + " " + std::string(u.smalls) + " in one " +
             std::string(u.big) + ", so " + big + " is " + small + ". ";
        break;
      case 1:
        s += big + " is the same as " + small + ". ";
        break;
      default:
        s += "If you have " + small + ", you have " + big + ". ";
    }
  }
  s.pop_back();
  return s;
}

inline std::string date_prose(picker& p) {
  static const std::vector<std::string_view> events = {
      "the fair opened",   "the bridge was finished", "the school held its concert",
      "the library moved", "the first snow fell",     "the harbour festival began"};
  std::string s;
  const auto n = p.range(2, 3);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto t = random_date(p);
    std::string e(p.pick(events));
    e[0] = static_cast<char>(e[0] - 'a' + 'A');
    switch (p.rng.below(3)) {
      case 0:
        s += e + " on " + long_date(t) + ". In ISO format that date is " + iso_date(t) + ". ";
        break;
      case 1:
        s += "The date " + iso_date(t) + " is " + long_date(t) + ". ";
        break;
      default:
        s += "In the United States, " + long_date(t) + " is written " + us_date(t) + ". ";
    }
  }
  s.pop_back();
  return s;
}

inline std::string fact_prose(picker& p) {
  std::string s;
  const auto n = p.range(3, 5);
  for (std::int64_t i = 0; i < n; ++i) {
    s += p.pick(facts).sentence;
    s += ' ';
  }
  s.pop_back();
  return s;
}

inline std::string story(picker& p) {
  const std::string a(p.pick(names)), b(p.pick(names)), place(p.pick(places)), obj(p.pick(objects)),
      adj(p.pick(adjectives)), col(p.pick(colours));
  std::string s = "Once upon a time, " + a + " lived in a " + std::string(p.pick(adjectives)) +
                  " " + place + ". ";
  s += "One day " + a + " found a " + adj + " " + col + " " + obj + ". ";
  switch (p.rng.below(3)) {
    case 0:
      s += a + " showed the " + obj + " to " + b + ", and they kept it safe together. ";
      break;
    case 1:
      s += a + " gave the " + obj + " to " + b + ", who was very happy. ";
      break;
    default:
      s += a + " carried the " + obj + " home and put it by the window. ";
  }
  const auto k = p.range(2, 9);
  s += "After " + std::to_string(k) + " days, " + b + " came to visit, and " + a +
       " told the story of the " + obj + ". The end.";
  return s;
}

// Narrative in which characters decline requests. It is plain prose, never a chat turn: the
// base model learns the words ("cannot", "will not", "sorry"), alignment later teaches the
// assistant when to use them.
inline std::string declining_prose(picker& p) {
  static const std::vector<std::string_view> asks = {"climb the old wall",
                                                     "swim across the cold river",
                                                     "take the coins from the box",
                                                     "open the locked door",
                                                     "light a fire in the forest",
                                                     "jump from the high bridge",
                                                     "read the secret letter",
                                                     "break the window",
                                                     "tell a lie to the teacher",
                                                     "run across the busy road",
                                                     "hide the keys",
                                                     "eat the green berries"};
  static const std::vector<std::string_view> reasons = {
      "It is not safe.",          "It could hurt someone.",  "It is not right.",
      "It is not ours.",          "Someone could get hurt.", "That would be wrong.",
      "It is against the rules.", "It could be dangerous."};
  // The replies are the refusal phrasings the classifier recognises, in their listed order
  // (the corpus's bytes depend on that order).
  const auto& replies = eval::refusal_phrasings();
  std::string s;
  const auto n = p.range(1, 3);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::string a(p.pick(names)), b(p.pick(names)), ask(p.pick(asks)), reply(p.pick(replies)),
        why(p.pick(reasons));
    switch (p.rng.below(4)) {
      case 0:
        s += a + " asked " + b + " to " + ask + ". " + b + " said, \"" + reply + " " + why + "\" ";
        break;
      case 1: {
        std::string r = reply;
        r.pop_back();  // the sentence continues after the quote
        std::string w(why);
        w[0] = static_cast<char>(w[0] - 'A' + 'a');
        s += "\"" + r + ",\" said " + b + " when " + a + " wanted to " + ask + ", \"" + w + "\" ";
        break;
      }
      case 2:
        s += "In the " + std::string(p.pick(places)) + ", " + a + " told " + b + " to " + ask +
             ". " + b + " shook their head. \"" + reply + "\" " + a + " understood. ";
        break;
      default:
        s += a + " wanted help to " + ask + ", but " + b + " would not help. \"" + reply + " " +
             why + "\" So " + a + " did not " + ask + ". ";
    }
  }
  s.pop_back();
  return s;
}

inline std::string dialogue(picker& p) {
  std::vector<data::message> ms;
  const auto turns = p.range(1, 3);
  for (std::int64_t t = 0; t < turns; ++t) {
    switch (p.rng.below(4)) {
      case 0: {
        const auto& f = p.pick(facts);
        ms.push_back({"user", std::string(f.question)});
        ms.push_back({"assistant", std::string(f.answer) + " " + std::string(f.sentence)});
        break;
      }
      case 1: {
        const auto x = p.range(1, 50), y = p.range(1, 50);
        if (p.chance(1, 2)) {
          ms.push_back(
              {"user", "What is " + std::to_string(x) + " plus " + std::to_string(y) + "?"});
          ms.push_back({"assistant", std::to_string(x) + " plus " + std::to_string(y) + " is " +
                                         std::to_string(x + y) + "."});
        } else {
          ms.push_back(
              {"user", "What is " + std::to_string(x + y) + " minus " + std::to_string(y) + "?"});
          ms.push_back({"assistant", std::to_string(x + y) + " minus " + std::to_string(y) +
                                         " is " + std::to_string(x) + "."});
        }
        break;
      }
      case 2: {
        picker q{p.rng.fork(p.rng.next_u64())};
        const std::string st = story(q);
        ms.push_back({"user", "Tell me a short story."});
        ms.push_back({"assistant", st});
        break;
      }
      default: {
        const auto& u = p.pick(units);
        const auto c = p.range(2, 9);
        ms.push_back({"user", "How many " + std::string(u.smalls) + " are in " +
                                  plural(c, u.big, u.bigs) + "?"});
        ms.push_back({"assistant", plural(c, u.big, u.bigs) + " is " +
                                       plural(c * u.factor, u.small, u.smalls) + "."});
      }
    }
  }
  return render_chat(ms);
}

// One document from stream `p`: a generator picked by weight.
inline std::string document(picker& p) {
  const auto k = p.rng.below(20);
  if (k < 3) return std::string(bos_token) + arithmetic_prose(p);
  if (k < 5) return std::string(bos_token) + number_prose(p);
  if (k < 8) return std::string(bos_token) + unit_prose(p);
  if (k < 10) return std::string(bos_token) + date_prose(p);
  if (k < 12) return std::string(bos_token) + fact_prose(p);
  if (k < 14) return std::string(bos_token) + story(p);
  if (k < 15) return std::string(bos_token) + declining_prose(p);
  return dialogue(p);  // starts with BOS itself
}

inline bool is_heldout(const std::string& doc) {
  return text_hash(doc) % 16 == 0;
}

// Documents of stream `stream` whose held-out flag is `heldout`, until n are collected.
inline std::vector<std::string> documents(std::uint64_t seed, std::uint64_t stream, std::size_t n,
                                          bool heldout) {
  std::vector<std::string> out;
  out.reserve(n);
  const philox base(seed, stream);
  for (std::uint64_t i = 0; out.size() < n; ++i) {
    picker p{base.fork(i)};
    std::string d = document(p);
    if (is_heldout(d) == heldout) out.push_back(std::move(d));
  }
  return out;
}

}  // namespace detail

/// `n_docs` pre-training documents of generator `seed`: each starts with BOS and ends with
/// <|end_of_text|> (so they can be concatenated and packed). Document i depends only on
/// (seed, i), so a longer corpus extends a shorter one.
inline std::vector<std::string> corpus(std::uint64_t seed, std::size_t n_docs) {
  auto docs = detail::documents(seed, 0, n_docs, false);
  for (auto& d : docs) d += end_of_text_token;
  return docs;
}

/// `n_docs` held-out documents (same distribution as the corpus, disjoint from any corpus by
/// construction; see the file comment), for regression perplexity. Format as corpus().
inline std::vector<std::string> heldout_text(std::uint64_t seed, std::size_t n_docs) {
  auto docs = detail::documents(seed, 1, n_docs, true);
  for (auto& d : docs) d += end_of_text_token;
  return docs;
}

/// `n_docs` calibration documents for quantization (corpus distribution, a separate stream,
/// never held-out text), without the end marker.
inline std::vector<std::string> calibration_text(std::uint64_t seed, std::size_t n_docs) {
  return detail::documents(seed, 2, n_docs, false);
}

/// The corpus as one string (documents concatenated), the bytes its SHA-256 is taken of.
inline std::string join(const std::vector<std::string>& docs) {
  std::size_t n = 0;
  for (const auto& d : docs) n += d.size();
  std::string s;
  s.reserve(n);
  for (const auto& d : docs) s += d;
  return s;
}

}  // namespace forge::builtin
