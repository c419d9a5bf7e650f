#pragma once
// Whole-string regular-expression matching (Python's re.fullmatch, which PEFT uses for a
// string target_modules) through PCRE2: anchored at both ends, UTF-8.

#include <pcre2.h>

#include <memory>
#include <string>

#include "forge/core/error.hpp"

namespace forge::adapters::detail {

/// A compiled pattern; forge::error naming `place` when it does not compile.
class full_match {
 public:
  full_match(const std::string& pattern, const std::string& place) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &err, &off, nullptr));
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw error({.what = "invalid regex",
                   .place = place,
                   .found = pattern + " (" + reinterpret_cast<const char*>(msg) + " at offset " +
                            std::to_string(off) + ")"});
    }
  }
  /// True when the whole of `s` matches.
  bool operator()(const std::string& s) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    return pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0,
                       md.get(), nullptr) >= 0;
  }

 private:
  struct free_code {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  std::unique_ptr<pcre2_code, free_code> code_;
};

}  // namespace forge::adapters::detail
