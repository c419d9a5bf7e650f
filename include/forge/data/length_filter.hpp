#pragma once
// Length filtering in tokens: records whose text is shorter or longer than a token budget
// are removed and counted (step "length", reasons too_short / too_long). The count is of the
// record's text fields joined by '\n' and encoded without special tokens; for SFT examples
// the exact count after the chat template is the encoder's business (sft.hpp, truncation).

#include <cstddef>
#include <limits>

#include "forge/data/records.hpp"
#include "forge/data/report.hpp"
#include "forge/data/tokenizer.hpp"

namespace forge::data {

/// A predicate for views::filter keeping records with min_tokens <= n <= max_tokens.
template <Tokenizer T>
class token_length_filter {
 public:
  token_length_filter(const T& tok, std::size_t min_tokens, std::size_t max_tokens,
                      data_report& report)
      : tok_(&tok), min_(min_tokens), max_(max_tokens), report_(&report) {}

  template <Record R>
  bool operator()(const R& r) const {
    auto& st = report_->step("length");
    ++st.in;
    const std::size_t n = tok_->encode(joined_text(r), false).size();
    if (n < min_) {
      ++st.removed["too_short"];
      return false;
    }
    if (n > max_) {
      ++st.removed["too_long"];
      return false;
    }
    ++st.out;
    return true;
  }

 private:
  const T* tok_;
  std::size_t min_, max_;
  data_report* report_;
};

}  // namespace forge::data
