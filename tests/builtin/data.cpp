// The built-in data generators: determinism, answers recomputed independently from the
// prompt text, and no overlap between train and held-out/eval sides.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "forge/builtin/chat.hpp"
#include "forge/builtin/corpus.hpp"
#include "forge/builtin/preferences.hpp"
#include "forge/builtin/tasks.hpp"
#include "forge/eval/safety.hpp"
#include "forge/text/chat_template.hpp"

namespace fb = forge::builtin;

TEST_CASE("built-in text is deterministic per seed and differs across seeds") {
  const auto a = fb::join(fb::corpus(3, 300));
  REQUIRE(a == fb::join(fb::corpus(3, 300)));
  REQUIRE(a != fb::join(fb::corpus(4, 300)));
  // A longer corpus extends a shorter one (document i depends only on seed and i).
  const auto longer = fb::corpus(3, 400);
  REQUIRE(fb::join({longer.begin(), longer.begin() + 300}) == a);
  REQUIRE(fb::join(fb::heldout_text(3, 50)) == fb::join(fb::heldout_text(3, 50)));
  REQUIRE(fb::join(fb::heldout_text(3, 50)) != fb::join(fb::heldout_text(5, 50)));
  REQUIRE(fb::join(fb::calibration_text(3, 50)) == fb::join(fb::calibration_text(3, 50)));
  REQUIRE(fb::join(fb::calibration_text(3, 50)) != fb::join(fb::calibration_text(9, 50)));
  const auto t1 = fb::tasks(3, 200, fb::split::train), t2 = fb::tasks(3, 200, fb::split::train),
             t3 = fb::tasks(4, 200, fb::split::train);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < t1.size(); ++i) {
    REQUIRE(t1[i].prompt == t2[i].prompt);
    REQUIRE(t1[i].answer == t2[i].answer);
    differ += t1[i].prompt != t3[i].prompt;
  }
  REQUIRE(differ > 150);
  const auto p1 = fb::preference_pairs(3, 50), p2 = fb::preference_pairs(3, 50),
             p3 = fb::preference_pairs(4, 50);
  for (std::size_t i = 0; i < p1.size(); ++i) {
    REQUIRE(p1[i].content() == p2[i].content());
  }
  REQUIRE(p1[0].content() != p3[0].content());
}

TEST_CASE("corpus documents are well formed and cover every generator") {
  const auto docs = fb::corpus(1, 2000);
  std::size_t chats = 0, stories = 0, dates = 0, units = 0, assistant_turns = 0, prose_refusals = 0;
  for (const auto& d : docs) {
    REQUIRE(d.rfind(fb::bos_token, 0) == 0);
    REQUIRE(d.size() > fb::end_of_text_token.size());
    REQUIRE(d.compare(d.size() - fb::end_of_text_token.size(), std::string::npos,
                      fb::end_of_text_token) == 0);
    chats += d.find(fb::im_start_token) != std::string::npos;
    stories += d.find("Once upon a time") != std::string::npos;
    dates += d.find("ISO format") != std::string::npos ||
             d.find("is written 0") != std::string::npos ||
             d.find("The date ") != std::string::npos;
    units +=
        d.find(" in one ") != std::string::npos || d.find(" is the same as ") != std::string::npos;
    // No assistant turn refuses: refusing in chat is what alignment teaches. Prose may
    // contain refusals (declining_prose), so only the assistant turns are checked, with the
    // same classifier the safety evaluation uses.
    const std::string head = std::string(fb::im_start_token) + "assistant\n";
    for (auto at = d.find(head); at != std::string::npos; at = d.find(head, at)) {
      at += head.size();
      const auto end = d.find(fb::im_end_token, at);
      REQUIRE(end != std::string::npos);
      const std::string turn = d.substr(at, end - at);
      INFO(turn);
      REQUIRE(!forge::eval::is_refusal(turn));
      ++assistant_turns;
    }
    const bool declines =
        d.find("\"I cannot") != std::string::npos || d.find("\"I can't") != std::string::npos ||
        d.find("\"I will not") != std::string::npos || d.find("\"I won't") != std::string::npos ||
        d.find("\"I'm sorry, but") != std::string::npos ||
        d.find("\"I refuse") != std::string::npos;
    // Declining prose is narrative only, never inside a chat-formatted document.
    if (declines) REQUIRE(d.find(fb::im_start_token) == std::string::npos);
    prose_refusals += declines;
  }
  CHECK(chats > 300);
  CHECK(assistant_turns > chats);
  // About 1 in 20 documents is declining prose (weight 1/20 in detail::document); 2000
  // documents give ~100, binomial sd ~10, so 60..140 is a > 4 sd band.
  CHECK(prose_refusals > 60);
  CHECK(prose_refusals < 140);
  CHECK(stories > 150);
  CHECK(dates > 100);
  CHECK(units > 100);
}

TEST_CASE("held-out text and eval tasks never overlap the training side") {
  const auto train = fb::corpus(1, 20000);
  const std::set<std::string> seen(train.begin(), train.end());
  for (std::uint64_t seed : {1, 2}) {
    for (const auto& d : fb::heldout_text(seed, 500)) REQUIRE(seen.count(d) == 0);
    for (const auto& d : fb::calibration_text(seed, 200)) REQUIRE(!fb::detail::is_heldout(d));
  }
  const auto tr = fb::tasks(1, 5000, fb::split::train);
  std::set<std::string> prompts;
  for (const auto& t : tr) prompts.insert(t.prompt);
  for (std::uint64_t seed : {1, 2, 3})
    for (const auto& t : fb::tasks(seed, 500, fb::split::eval))
      REQUIRE(prompts.count(t.prompt) == 0);
  // Preference pairs come from the train side only.
  std::set<std::string> eval_prompts;
  for (const auto& t : fb::tasks(1, 2000, fb::split::eval)) eval_prompts.insert(t.prompt);
  for (const auto& p : fb::preference_pairs(1, 1000))
    REQUIRE(eval_prompts.count(p.prompt.at(0).content) == 0);
}

namespace {

// Independent recomputation of a task's answer from its prompt text alone.
std::string recompute(const fb::task& t) {
  std::smatch m;
  auto I = [&](int k) { return std::stoll(m[k].str()); };
  static const std::vector<std::string> months = {"January",   "February", "March",    "April",
                                                  "May",       "June",     "July",     "August",
                                                  "September", "October",  "November", "December"};
  char buf[64];
  const std::string& p = t.prompt;
  if (std::regex_match(p, m, std::regex(R"(Compute \((\d+) \+ (\d+)\) \* (\d+) - (\d+)\. .*)")))
    return std::to_string((I(1) + I(2)) * I(3) - I(4));
  if (std::regex_match(p, m, std::regex(R"(Compute (\d+) \* (\d+) \+ (\d+) - (\d+)\. .*)")))
    return std::to_string(I(1) * I(2) + I(3) - I(4));
  if (std::regex_match(p, m, std::regex(R"(Compute (\d+) \+ (\d+) \+ (\d+) - (\d+)\. .*)")))
    return std::to_string(I(1) + I(2) + I(3) - I(4));
  if (std::regex_match(p, m, std::regex(R"(Convert (\d+) (\w+) to (\w+)\. .*)"))) {
    // Factors from the SI and calendar definitions, keyed by unit name.
    auto base = [](std::string u) -> double {
      if (u.back() == 's') u.pop_back();
      if (u == "kilometre") return 1000;
      if (u == "metre") return 1;
      if (u == "centimetre") return 0.01;
      if (u == "millimetre") return 0.001;
      if (u == "kilogram") return 1000;
      if (u == "gram") return 1;
      if (u == "litre") return 1000;
      if (u == "millilitre") return 1;
      if (u == "second") return 1;
      if (u == "minute") return 60;
      if (u == "hour") return 3600;
      if (u == "day") return 86400;
      if (u == "week") return 7 * 86400;
      if (u == "month") return 1;
      if (u == "year") return 12;
      return -1;
    };
    const double v = double(I(1)) * base(m[2].str()) / base(m[3].str());
    return std::to_string(std::llround(v));
  }
  if (std::regex_match(p, m, std::regex(R"(Write (\d+) (\w+) (\d+) as YYYY-MM-DD\.)"))) {
    const auto mo = std::find(months.begin(), months.end(), m[2].str()) - months.begin() + 1;
    std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lld", I(3), (long long)mo, I(1));
    return buf;
  }
  if (std::regex_match(p, m,
                       std::regex(R"(Write (\d+)-(\d+)-(\d+) as day, month name and year\.)")))
    return std::to_string(I(3)) + " " + months.at(std::size_t(I(2) - 1)) + " " +
           std::to_string(I(1));
  if (std::regex_match(p, m, std::regex(R"(Write (\d+)-(\d+)-(\d+) as MM/DD/YYYY\.)"))) {
    std::snprintf(buf, sizeof buf, "%02lld/%02lld/%04lld", I(2), I(3), I(1));
    return buf;
  }
  if (std::regex_match(p, m, std::regex(R"(Write (\d+) with comma thousands separators\.)"))) {
    std::string d = m[1].str(), out;
    for (std::size_t i = 0; i < d.size(); ++i) {
      out += d[i];
      const std::size_t rest = d.size() - i - 1;
      if (rest > 0 && rest % 3 == 0) out += ',';
    }
    return out;
  }
  if (std::regex_match(p, m, std::regex(R"(Write the word (\w+) in upper case\.)"))) {
    std::string w = m[1].str();
    std::transform(w.begin(), w.end(), w.begin(), [](unsigned char c) { return std::toupper(c); });
    return w;
  }
  if (std::regex_match(
          p, m, std::regex(R"(Sort these words alphabetically .*: (\w+), (\w+), (\w+)\.)"))) {
    std::vector<std::string> v = {m[1].str(), m[2].str(), m[3].str()};
    std::sort(v.begin(), v.end());
    return v[0] + ", " + v[1] + ", " + v[2];
  }
  if (std::regex_match(p, m, std::regex(R"(Repeat the word (\w+) exactly (\d+) times, .*)"))) {
    std::string out;
    for (long long i = 0; i < I(2); ++i) out += (i ? " " : "") + m[1].str();
    return out;
  }
  if (std::regex_match(p, m,
                       std::regex(R"(Reverse the order of these words: (\w+) (\w+) (\w+)\.)")))
    return m[3].str() + " " + m[2].str() + " " + m[1].str();
  if (std::regex_match(p, m, std::regex(R"(How many letters are in the word (\w+)\? .*)")))
    return std::to_string(m[1].str().size());
  return "<unrecognised prompt>";
}

bool valid_date(const std::string& iso) {
  int y = 0, mo = 0, d = 0;
  if (std::sscanf(iso.c_str(), "%d-%d-%d", &y, &mo, &d) != 3) return false;
  static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return mo >= 1 && mo <= 12 && d >= 1 && d <= dim[mo - 1] + (mo == 2 && leap);
}

}  // namespace

TEST_CASE("every task answer is correct when recomputed from the prompt") {
  std::set<std::string> kinds;
  for (auto s : {fb::split::train, fb::split::eval}) {
    for (const auto& t : fb::tasks(5, 1500, s)) {
      INFO(t.id << ": " << t.prompt);
      REQUIRE(recompute(t) == t.answer);
      if (t.kind == "date" && t.answer.size() == 10 && t.answer[4] == '-')
        REQUIRE(valid_date(t.answer));
      kinds.insert(t.kind);
    }
  }
  REQUIRE(kinds == std::set<std::string>{"arithmetic", "date", "format", "instruction", "units"});
  // A kind filter keeps only those kinds and picks the same tasks as the unfiltered list.
  const auto all = fb::tasks(5, 400, fb::split::train);
  const auto dates = fb::tasks(5, 40, fb::split::train, {"date", "instruction"});
  std::size_t j = 0;
  for (const auto& t : all)
    if (j < dates.size() && (t.kind == "date" || t.kind == "instruction")) {
      REQUIRE(t.id == dates[j].id);
      REQUIRE(t.answer == dates[j].answer);
      ++j;
    }
  REQUIRE(j == dates.size());
  REQUIRE_THROWS_AS(fb::tasks(5, 1, fb::split::train, {"poetry"}), forge::error);
  const auto recs = fb::sft_records(fb::tasks(5, 10, fb::split::train));
  REQUIRE(recs.size() == 10);
  REQUIRE(recs[0].messages.size() == 2);
  REQUIRE(recs[0].messages[1].role == "assistant");
}

TEST_CASE("preference pairs: chosen is the exact answer, rejected is wrong or padded") {
  const auto pairs = fb::preference_pairs(2, 400);
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& p = pairs[i];
    INFO(p.id);
    const fb::task t{.prompt = p.prompt.at(0).content};
    const std::string truth = recompute(t);
    REQUIRE(p.chosen.at(0).content == truth);
    const std::string& rej = p.rejected.at(0).content;
    REQUIRE(rej != truth);
    if (fb::preference_kind(i) == "concise") {
      REQUIRE(rej.find("The answer is " + truth + ".") != std::string::npos);
      REQUIRE(rej.size() > truth.size() + 40);
    } else {
      REQUIRE(rej.find(truth) == std::string::npos);
    }
  }
}

TEST_CASE("render_chat equals the Jinja chat template's rendering") {
  const auto tmpl = forge::text::chat_template::parse(fb::chat_template_source());
  for (const auto& t : fb::tasks(1, 20, fb::split::train)) {
    nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
    msgs.push_back({{"role", "user"}, {"content", t.prompt}});
    forge::text::chat_options o{.add_generation_prompt = true,
                                .bos_token = std::string(fb::bos_token)};
    REQUIRE(forge::text::apply_chat_template(tmpl, msgs, o) ==
            fb::render_chat({{"user", t.prompt}}, true));
    msgs.push_back({{"role", "assistant"}, {"content", t.answer}});
    o.add_generation_prompt = false;
    REQUIRE(forge::text::apply_chat_template(tmpl, msgs, o) ==
            fb::render_chat({{"user", t.prompt}, {"assistant", t.answer}}));
  }
}
