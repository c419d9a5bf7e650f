#pragma once
// Building blocks of the built-in text generators: word lists, number words, dates, unit
// tables, and a random picker over forge::philox. Internal to forge/builtin.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "forge/core/rng.hpp"

namespace forge::builtin::detail {

/// 64-bit FNV-1a of a string; used to split generated items between train and held-out sets
/// by their text, so the same text can never land on both sides.
inline std::uint64_t text_hash(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

/// A philox stream with convenience picks.
struct picker {
  philox rng;
  /// Uniform integer in [lo, hi] (inclusive).
  std::int64_t range(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng.below(static_cast<std::uint32_t>(hi - lo + 1)));
  }
  /// One element of `v` (non-empty).
  template <class V>
  const auto& pick(const V& v) {
    return v[rng.below(static_cast<std::uint32_t>(std::size(v)))];
  }
  /// True with probability num/den.
  bool chance(std::uint32_t num, std::uint32_t den) { return rng.below(den) < num; }
};

inline const std::vector<std::string_view> names = {
    "Anna", "Ben",  "Clara", "David", "Emma",  "Felix", "Grace", "Hugo", "Iris", "Jonas",
    "Kara", "Liam", "Maya",  "Noah",  "Olive", "Paul",  "Rosa",  "Sam",  "Tara", "Victor"};
inline const std::vector<std::string_view> places = {"village", "forest",  "city",   "harbour",
                                                     "valley",  "garden",  "castle", "island",
                                                     "farm",    "library", "market", "school"};
inline const std::vector<std::string_view> objects = {
    "lantern", "key",    "map",    "book", "stone", "feather", "coin",
    "box",     "letter", "basket", "kite", "clock", "shell",   "ring"};
inline const std::vector<std::string_view> adjectives = {
    "old", "small", "bright", "quiet", "green", "heavy", "shiny", "tiny", "golden", "strange"};
inline const std::vector<std::string_view> colours = {"red",    "blue",  "green", "yellow",
                                                      "black",  "white", "brown", "purple",
                                                      "orange", "grey",  "pink"};
inline const std::vector<std::string_view> items = {"apples", "books",   "coins", "pencils",
                                                    "eggs",   "marbles", "cups",  "stamps",
                                                    "shells", "cards",   "boxes", "stones"};
inline const std::vector<std::string_view> words = {
    "river",  "stone",  "lantern", "garden", "window", "silver", "planet", "forest",
    "candle", "bridge", "mirror",  "winter", "harbor", "pepper", "rocket", "meadow",
    "violin", "anchor", "tunnel",  "basket", "marble", "falcon", "ladder", "pillow"};

/// Fixed simple facts: subject, fact sentence, question, short answer.
struct fact {
  std::string_view sentence, question, answer;
};
inline const std::vector<fact> facts = {
    {"The sky is blue on a clear day.", "What colour is the sky on a clear day?", "Blue."},
    {"Grass is green.", "What colour is grass?", "Green."},
    {"Snow is white and cold.", "What colour is snow?", "White."},
    {"A week has seven days.", "How many days are in a week?", "Seven."},
    {"A year has twelve months.", "How many months are in a year?", "Twelve."},
    {"A day has twenty-four hours.", "How many hours are in a day?", "Twenty-four."},
    {"An hour has sixty minutes.", "How many minutes are in an hour?", "Sixty."},
    {"Water freezes at zero degrees Celsius.", "At what temperature does water freeze?",
     "Zero degrees Celsius."},
    {"Water boils at one hundred degrees Celsius at sea level.",
     "At what temperature does water boil at sea level?", "One hundred degrees Celsius."},
    {"The sun rises in the east.", "Where does the sun rise?", "In the east."},
    {"The sun sets in the west.", "Where does the sun set?", "In the west."},
    {"A cow says moo.", "What does a cow say?", "Moo."},
    {"A dog barks.", "What sound does a dog make?", "A dog barks."},
    {"Bees make honey.", "What do bees make?", "Honey."},
    {"Fish live in water.", "Where do fish live?", "In water."},
    {"A triangle has three sides.", "How many sides does a triangle have?", "Three."},
    {"A square has four equal sides.", "How many sides does a square have?", "Four."},
    {"Paris is the capital of France.", "What is the capital of France?", "Paris."},
    {"Rome is the capital of Italy.", "What is the capital of Italy?", "Rome."},
    {"Madrid is the capital of Spain.", "What is the capital of Spain?", "Madrid."},
    {"Berlin is the capital of Germany.", "What is the capital of Germany?", "Berlin."},
    {"Tokyo is the capital of Japan.", "What is the capital of Japan?", "Tokyo."},
    {"The Earth goes around the Sun.", "What does the Earth go around?", "The Sun."},
    {"The Moon goes around the Earth.", "What does the Moon go around?", "The Earth."},
    {"A spider has eight legs.", "How many legs does a spider have?", "Eight."},
    {"An insect has six legs.", "How many legs does an insect have?", "Six."},
    {"Plants need light and water to grow.", "What do plants need to grow?", "Light and water."},
    {"Ice is frozen water.", "What is ice?", "Frozen water."}};

inline const std::array<std::string_view, 12> months = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December"};

inline bool leap(std::int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}
inline std::int64_t days_in(std::int64_t y, std::int64_t m) {
  static constexpr std::array<std::int64_t, 12> d = {31, 28, 31, 30, 31, 30,
                                                     31, 31, 30, 31, 30, 31};
  return m == 2 && leap(y) ? 29 : d[static_cast<std::size_t>(m - 1)];
}

/// A calendar date.
struct date {
  std::int64_t y = 2000, m = 1, d = 1;
};
inline date random_date(picker& p) {
  date t;
  t.y = p.range(1950, 2049);
  t.m = p.range(1, 12);
  t.d = p.range(1, days_in(t.y, t.m));
  return t;
}
inline std::string two(std::int64_t v) {
  return (v < 10 ? "0" : "") + std::to_string(v);
}
/// "12 March 2021"
inline std::string long_date(const date& t) {
  std::string s = std::to_string(t.d);
  s += ' ';
  s += months[static_cast<std::size_t>(t.m - 1)];
  s += ' ';
  s += std::to_string(t.y);
  return s;
}
/// "2021-03-12"
inline std::string iso_date(const date& t) {
  std::string s = std::to_string(t.y);
  s += '-';
  s += two(t.m);
  s += '-';
  s += two(t.d);
  return s;
}
/// "03/12/2021" (month/day/year)
inline std::string us_date(const date& t) {
  std::string s = two(t.m);
  s += '/';
  s += two(t.d);
  s += '/';
  s += std::to_string(t.y);
  return s;
}

/// English words of 0 <= n < 1,000,000 ("three hundred and twelve").
inline std::string number_words(std::int64_t n) {
  static const std::array<std::string_view, 20> small = {
      "zero",     "one",     "two",     "three",     "four",     "five",    "six",
      "seven",    "eight",   "nine",    "ten",       "eleven",   "twelve",  "thirteen",
      "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
  static const std::array<std::string_view, 10> tens = {
      "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
  if (n < 20) return std::string(small[static_cast<std::size_t>(n)]);
  if (n < 100) {
    std::string s(tens[static_cast<std::size_t>(n / 10)]);
    if (n % 10) {
      s += '-';
      s += small[static_cast<std::size_t>(n % 10)];
    }
    return s;
  }
  if (n < 1000) {
    std::string s = number_words(n / 100) + " hundred";
    if (n % 100) s += " and " + number_words(n % 100);
    return s;
  }
  std::string s = number_words(n / 1000) + " thousand";
  if (n % 1000) s += (n % 1000 < 100 ? " and " : " ") + number_words(n % 1000);
  return s;
}

/// "1,234,567"
inline std::string with_commas(std::int64_t n) {
  std::string d = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return n < 0 ? "-" + out : out;
}

/// A unit conversion with an integer factor: `count` big units = count * factor small units.
struct unit_pair {
  std::string_view big, bigs, small, smalls;
  std::int64_t factor;
};
inline const std::vector<unit_pair> units = {
    {"kilometre", "kilometres", "metre", "metres", 1000},
    {"metre", "metres", "centimetre", "centimetres", 100},
    {"centimetre", "centimetres", "millimetre", "millimetres", 10},
    {"kilogram", "kilograms", "gram", "grams", 1000},
    {"litre", "litres", "millilitre", "millilitres", 1000},
    {"hour", "hours", "minute", "minutes", 60},
    {"minute", "minutes", "second", "seconds", 60},
    {"day", "days", "hour", "hours", 24},
    {"week", "weeks", "day", "days", 7},
    {"year", "years", "month", "months", 12}};

inline std::string plural(std::int64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

}  // namespace forge::builtin::detail
