#pragma once
// PII masking: finds e-mail addresses, phone numbers, US social security numbers, payment
// card numbers, IPv4/IPv6 addresses, IBANs and API keys/tokens in UTF-8 text and replaces
// each with a typed placeholder (<EMAIL>, <PHONE>, <SSN>, <CREDIT_CARD>, <IPV4>, <IPV6>,
// <IBAN>, <API_KEY>), counting them per type.
//
// Candidates come from PCRE2 patterns (byte mode; boundaries are ASCII word boundaries) and
// are then validated where a check exists, which is what keeps precision high:
//   credit cards  Luhn checksum (ISO/IEC 7812-1 annex B) and a known issuer prefix/length
//   IBAN          country length (ISO 13616 registry) and mod-97 = 1 (ISO 7064)
//   SSN           SSA rules: area not 000/666/9xx, group not 00, serial not 0000
//   IPv4/IPv6     octets <= 255 / inet_pton(AF_INET6); at least two non-empty IPv6 groups
//   phone         E.164 length (8..15 digits, +1 for a "(0)" trunk prefix) or NANP rules
//   API keys      known vendor prefixes with a body of Shannon entropy >= 3 bits/char;
//                 values assigned to key/secret/token/password names; or any 32+ character
//                 [A-Za-z0-9_-] token mixing upper, lower and digits with entropy >= 4.3
// Scope of phone numbers: international form (+CC or 00CC) in any grouping, and North
// American numbers with separators ((415) 555-0132, 415-555-0132). National formats of
// other countries without a country code are not detected (they collide with order and
// reference numbers). SSNs are detected in the dashed form only.
// When spans overlap, the type earlier in pii_type (API key, e-mail, IBAN, card, IPv6, IPv4,
// SSN, phone) wins, then the longer span.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <pcre2.h>

#include "forge/core/error.hpp"
#include "forge/data/records.hpp"
#include "forge/data/report.hpp"

namespace forge::data {

/// Kinds of personal or secret data; the order is the priority when spans overlap.
enum class pii_type : std::uint8_t { api_key, email, iban, credit_card, ipv6, ipv4, ssn, phone };

inline constexpr std::array<pii_type, 8> all_pii_types{
    pii_type::api_key, pii_type::email, pii_type::iban, pii_type::credit_card,
    pii_type::ipv6,    pii_type::ipv4,  pii_type::ssn,  pii_type::phone};

/// Upper-case name of a type: "EMAIL", "CREDIT_CARD" ...
inline std::string_view pii_name(pii_type t) {
  constexpr std::array<std::string_view, 8> names{"API_KEY", "EMAIL", "IBAN", "CREDIT_CARD",
                                                  "IPV6",    "IPV4",  "SSN",  "PHONE"};
  return names[static_cast<std::size_t>(t)];
}

/// The placeholder that replaces a span of type t: "<EMAIL>".
inline std::string pii_placeholder(pii_type t) {
  std::string s(1, '<');
  s.append(pii_name(t));
  s.push_back('>');
  return s;
}

/// One detected span, in bytes of the scanned text: [begin, end).
struct pii_span {
  pii_type type = pii_type::email;
  std::size_t begin = 0;
  std::size_t end = 0;
  bool operator==(const pii_span&) const = default;
};

/// Which types to detect (all by default).
struct pii_options {
  bool email = true, phone = true, ssn = true, credit_card = true, ipv4 = true, ipv6 = true,
       iban = true, api_key = true;
  bool enabled(pii_type t) const {
    switch (t) {
      case pii_type::email:
        return email;
      case pii_type::phone:
        return phone;
      case pii_type::ssn:
        return ssn;
      case pii_type::credit_card:
        return credit_card;
      case pii_type::ipv4:
        return ipv4;
      case pii_type::ipv6:
        return ipv6;
      case pii_type::iban:
        return iban;
      case pii_type::api_key:
        return api_key;
    }
    return false;
  }
};

namespace detail {

/// A compiled PCRE2 pattern (JIT when available); shareable between threads.
class pcre_pattern {
 public:
  explicit pcre_pattern(const char* pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, 0, &err,
                          &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw error({.what = "bad built-in PII pattern: " + std::string(reinterpret_cast<char*>(msg)),
                   .file = "<pii>",
                   .place = at_byte(off),
                   .expected = "",
                   .found = pattern});
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  }
  pcre_pattern(const pcre_pattern&) = delete;
  pcre_pattern& operator=(const pcre_pattern&) = delete;
  ~pcre_pattern() { pcre2_code_free(code_); }

  /// Calls f(ovector) for each match; f returns where to resume (an offset > start).
  template <class F>
  void for_each(std::string_view s, F&& f) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    std::size_t start = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0,
                                 md.get(), nullptr);
      if (rc < 0) {
        if (rc == PCRE2_ERROR_NOMATCH) return;
        throw error({.what = "PII pattern match failed (PCRE2 code " + std::to_string(rc) + ")",
                     .file = "<pii>",
                     .place = at_byte(start),
                     .expected = "",
                     .found = ""});
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const std::size_t next = f(ov, static_cast<std::size_t>(rc));
      start = std::max(next, static_cast<std::size_t>(ov[0]) + 1);
    }
  }

 private:
  pcre2_code* code_ = nullptr;
};

inline bool luhn_ok(std::string_view digits) {
  int sum = 0;
  bool dbl = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = *it - '0';
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 == 0;
}

/// Issuer prefix and length of the major card networks (IIN ranges as published by the
/// networks: Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro).
inline bool card_issuer_ok(std::string_view d) {
  const std::size_t n = d.size();
  auto pre = [&](std::size_t k) { return std::stoi(std::string(d.substr(0, k))); };
  if (d[0] == '4') return n == 13 || n == 16 || n == 19;  // Visa
  const int p2 = pre(2), p3 = pre(3), p4 = pre(4), p6 = pre(6);
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n == 16;  // Mastercard
  if (p2 == 34 || p2 == 37) return n == 15;                                  // Amex
  if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649) || (p6 >= 622126 && p6 <= 622925))
    return n >= 16 && n <= 19;  // Discover
  if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39)
    return n >= 14 && n <= 19;                                        // Diners
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 && n <= 19;            // JCB
  if (p2 == 62) return n >= 16 && n <= 19;                            // UnionPay
  if (p2 == 50 || (p2 >= 56 && p2 <= 69)) return n >= 12 && n <= 19;  // Maestro
  return false;
}

/// IBAN length by country (ISO 13616 IBAN registry); 0 for unknown countries.
inline int iban_length(std::string_view cc) {
  static const std::map<std::string, int, std::less<>> len{
      {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
      {"BG", 22}, {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28},
      {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24},
      {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
      {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23},
      {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32},
      {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24}, {"ME", 22},
      {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
      {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
      {"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28},
      {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}};
  auto it = len.find(cc);
  return it == len.end() ? 0 : it->second;
}

/// ISO 7064 MOD 97-10 over the rearranged IBAN (first four characters moved to the end,
/// letters as 10..35); valid when the remainder is 1.
inline bool iban_checksum_ok(std::string_view iban) {
  int rem = 0;
  auto feed = [&](char c) {
    if (c >= '0' && c <= '9') {
      rem = (rem * 10 + (c - '0')) % 97;
    } else {
      const int v = c - 'A' + 10;
      rem = (rem * 100 + v) % 97;
    }
  };
  for (std::size_t i = 4; i < iban.size(); ++i) feed(iban[i]);
  for (std::size_t i = 0; i < 4; ++i) feed(iban[i]);
  return rem == 1;
}

/// Shannon entropy of the byte distribution of s, bits per character.
inline double shannon_entropy(std::string_view s) {
  if (s.empty()) return 0;
  std::array<int, 256> count{};
  for (unsigned char c : s) ++count[c];
  double h = 0;
  for (int c : count)
    if (c) {
      const double p = static_cast<double>(c) / static_cast<double>(s.size());
      h -= p * std::log2(p);
    }
  return h;
}

inline bool mixes_classes(std::string_view s, bool need_upper, bool need_lower) {
  bool up = false, lo = false, dig = false;
  for (char c : s) {
    up = up || (c >= 'A' && c <= 'Z');
    lo = lo || (c >= 'a' && c <= 'z');
    dig = dig || (c >= '0' && c <= '9');
  }
  return dig && (!need_upper || up) && (!need_lower || lo);
}

inline std::string digits_of(std::string_view s) {
  std::string d;
  for (char c : s)
    if (c >= '0' && c <= '9') d += c;
  return d;
}

/// The built-in patterns, compiled once.
struct pii_patterns {
  pcre_pattern email{
      R"((?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]))"};
  pcre_pattern phone_intl{
      R"((?<![\w+])(?:\+|\b00)[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){2,7}(?!\w))"};
  pcre_pattern phone_nanp{
      R"((?<![\w+.-])(?:1[ .-])?(?:\(([2-9]\d\d)\) ?|([2-9]\d\d)[ .-])[2-9]\d\d[ .-]\d{4}(?!\w|[.-]\d))"};
  pcre_pattern ssn{R"((?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-]))"};
  pcre_pattern card{
      R"((?<![\w-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}|\d{4}([ -])\d{6}\2\d{4,5}|\d{13,19})(?!\w))"};
  pcre_pattern ipv4{
      R"((?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\w|\.\d))"};
  pcre_pattern ipv6{
      R"((?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:]))"};
  pcre_pattern iban{
      R"((?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9]))"};
  // Vendor prefixes; group 1 is the body whose entropy is checked.
  pcre_pattern key_prefixed{
      R"((?<![\w-])(?:sk-(?:proj-|ant-api\d\d-)?|(?:sk|pk|rk)_(?:live|test)_|gh[pousr]_|github_pat_|xox[abposr]-|AKIA|ASIA|AIza|glpat-|hf_|npm_)([A-Za-z0-9_-]{16,})(?![\w-]))"};
  pcre_pattern key_jwt{
      R"((?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-]))"};
  // key = value; group 1 is the value.
  pcre_pattern key_assigned{
      R"((?i)(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?(?:key|token)|auth[_-]?token|token|password|passwd)["']?\s*[:=]\s*["']?([A-Za-z0-9_\-+/=.]{12,}))"};
  pcre_pattern key_generic{R"((?<![\w+/=-])[A-Za-z0-9_-]{32,}(?![\w+/=-]))"};
};

inline const pii_patterns& patterns() {
  static const pii_patterns p;
  return p;
}

inline bool is_alnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

}  // namespace detail

/// Finds PII spans in `text` (bytes), non-overlapping, sorted by position.
inline std::vector<pii_span> find_pii(std::string_view text, const pii_options& opt = {}) {
  using namespace detail;
  const auto& P = patterns();
  std::vector<pii_span> cand;
  auto add = [&](pii_type t, std::size_t b, std::size_t e) { cand.push_back({t, b, e}); };
  auto sv = [&](const PCRE2_SIZE* ov, int g) {
    return text.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
  };
  auto group_set = [](const PCRE2_SIZE* ov, std::size_t rc, int g) {
    return static_cast<std::size_t>(g) < rc && ov[2 * g] != PCRE2_UNSET;
  };

  if (opt.email)
    P.email.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      add(pii_type::email, ov[0], ov[1]);
      return ov[1];
    });
  if (opt.phone) {
    P.phone_intl.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const std::string d = digits_of(sv(ov, 0));
      const bool trunk = sv(ov, 0).find("(0)") != std::string_view::npos;
      const std::size_t lead =
          text.substr(ov[0], 2) == "00" ? 2 : 0;  // 00CC: the 00 is not part of the number
      const std::size_t n = d.size() - lead;
      if (n >= 8 && n <= 15 + (trunk ? 1u : 0u)) {
        add(pii_type::phone, ov[0], ov[1]);
        return static_cast<std::size_t>(ov[1]);
      }
      return static_cast<std::size_t>(ov[0] + 1);
    });
    P.phone_nanp.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      add(pii_type::phone, ov[0], ov[1]);
      return ov[1];
    });
  }
  if (opt.ssn)
    P.ssn.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const auto a = sv(ov, 1), g = sv(ov, 2), s = sv(ov, 3);
      const bool ok = a != "000" && a != "666" && a[0] != '9' && g != "00" && s != "0000";
      if (ok) add(pii_type::ssn, ov[0], ov[1]);
      return ok ? ov[1] : ov[0] + 1;
    });
  if (opt.credit_card)
    P.card.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const std::string d = digits_of(sv(ov, 0));
      const bool ok = d.size() >= 13 && d.size() <= 19 && luhn_ok(d) && card_issuer_ok(d);
      if (ok) add(pii_type::credit_card, ov[0], ov[1]);
      return ok ? ov[1] : ov[0] + 1;
    });
  if (opt.ipv4)
    P.ipv4.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      add(pii_type::ipv4, ov[0], ov[1]);
      return ov[1];
    });
  if (opt.ipv6)
    P.ipv6.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const std::string s(sv(ov, 0));
      in6_addr a{};
      int groups = 0;
      bool in_group = false;
      for (char c : s) {
        const bool hex = c != ':' && c != '.';
        if (hex && !in_group) ++groups;
        in_group = hex;
      }
      const bool ok = groups >= 2 && inet_pton(AF_INET6, s.c_str(), &a) == 1;
      if (ok) add(pii_type::ipv6, ov[0], ov[1]);
      return ok ? ov[1] : ov[0] + 1;
    });
  if (opt.iban)
    P.iban.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const auto m = sv(ov, 0);
      const int len = iban_length(m.substr(0, 2));
      if (len == 0) return ov[0] + 1;
      // Take exactly `len` alphanumerics; a longer match may run into a following word, but
      // the cut must then fall on a space.
      std::string compact;
      std::size_t i = 0;
      for (; i < m.size() && compact.size() < static_cast<std::size_t>(len); ++i)
        if (m[i] != ' ') compact += m[i];
      const bool cut_ok = i == m.size() || m[i] == ' ';
      if (compact.size() == static_cast<std::size_t>(len) && cut_ok && iban_checksum_ok(compact)) {
        add(pii_type::iban, ov[0], ov[0] + i);
        return ov[0] + i;
      }
      return ov[0] + 1;
    });
  if (opt.api_key) {
    P.key_prefixed.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const bool ok = shannon_entropy(sv(ov, 1)) >= 3.0;
      if (ok) add(pii_type::api_key, ov[0], ov[1]);
      return ok ? ov[1] : ov[0] + 1;
    });
    P.key_jwt.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      add(pii_type::api_key, ov[0], ov[1]);
      return ov[1];
    });
    P.key_assigned.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t rc) {
      if (!group_set(ov, rc, 1)) return ov[0] + 1;
      auto v = sv(ov, 1);
      while (!v.empty() && (v.back() == '.' || v.back() == '=')) v.remove_suffix(1);
      const bool ok = v.size() >= 12 && mixes_classes(v, false, false) && shannon_entropy(v) >= 3.0;
      if (ok) add(pii_type::api_key, ov[2], ov[2] + v.size());
      return ov[1];
    });
    P.key_generic.for_each(text, [&](const PCRE2_SIZE* ov, std::size_t) {
      const auto v = sv(ov, 0);
      if (mixes_classes(v, true, true) && shannon_entropy(v) >= 4.3)
        add(pii_type::api_key, ov[0], ov[1]);
      return ov[1];
    });
  }
  // Priority, then length, then position; keep each span that overlaps nothing kept so far.
  std::sort(cand.begin(), cand.end(), [](const pii_span& a, const pii_span& b) {
    if (a.type != b.type) return a.type < b.type;
    if (a.end - a.begin != b.end - b.begin) return a.end - a.begin > b.end - b.begin;
    return a.begin < b.begin;
  });
  std::vector<pii_span> kept;
  for (const auto& c : cand) {
    bool overlaps = false;
    for (const auto& k : kept) overlaps = overlaps || (c.begin < k.end && k.begin < c.end);
    if (!overlaps) kept.push_back(c);
  }
  std::sort(kept.begin(), kept.end(),
            [](const pii_span& a, const pii_span& b) { return a.begin < b.begin; });
  return kept;
}

/// Per-type counts of masked spans.
using pii_counts = std::map<std::string, std::uint64_t>;

/// Replaces every detected span by its placeholder; adds the spans to `counts` by type name.
inline std::string mask_pii(std::string_view text, pii_counts& counts,
                            const pii_options& opt = {}) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  for (const auto& s : find_pii(text, opt)) {
    out.append(text.substr(pos, s.begin - pos));
    out += pii_placeholder(s.type);
    ++counts[std::string(pii_name(s.type))];
    pos = s.end;
  }
  out.append(text.substr(pos));
  return out;
}

/// Masks every text field of a record in place; the counts go to the report's `pii` table
/// and the "pii" step (records in = out: masking removes nothing).
template <Record R>
void mask_record(R& r, data_report& report, const pii_options& opt = {}) {
  r.for_each_text([&](std::string& t) { t = mask_pii(t, report.pii, opt); });
  auto& st = report.step("pii");
  ++st.in;
  ++st.out;
}

}  // namespace forge::data
