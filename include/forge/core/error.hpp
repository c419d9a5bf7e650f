#pragma once
// forge::error — the one exception type of the library.
//
// Every failure a user can cause (bad file, bad shape, bad configuration) is reported as a
// forge::error that names *what* went wrong, *where* (file or source, and a place inside it
// such as a byte offset, a JSONL line or a tensor name) and what was *expected* versus
// what was *found*. what() renders all of it as one line a person can act on.

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace forge {

/// The parts of an error report; every field but `what` is optional.
struct error_info {
  std::string what{};      ///< the problem, as a sentence fragment ("tensor shape mismatch")
  std::string file{};      ///< file path or other source ("config.json", "<memory>")
  std::string place{};     ///< where inside it ("byte 8", "line 12", "tensor model.norm.weight")
  std::string expected{};  ///< what a valid input has there
  std::string found{};     ///< what the input had instead
};

/// The exception thrown for every invalid input or failed operation in forge.
class error : public std::runtime_error {
 public:
  explicit error(error_info info) : std::runtime_error(render(info)), info_(std::move(info)) {}
  explicit error(std::string what) : error(error_info{.what = std::move(what)}) {}

  const std::string& problem() const noexcept { return info_.what; }
  const std::string& file() const noexcept { return info_.file; }
  const std::string& place() const noexcept { return info_.place; }
  const std::string& expected() const noexcept { return info_.expected; }
  const std::string& found() const noexcept { return info_.found; }
  const error_info& info() const noexcept { return info_; }

  /// "file: place: what (expected X, found Y)" with absent parts left out.
  static std::string render(const error_info& i) {
    std::string s;
    if (!i.file.empty()) s += i.file + ": ";
    if (!i.place.empty()) s += i.place + ": ";
    s += i.what;
    if (!i.expected.empty() || !i.found.empty()) {
      s += " (";
      if (!i.expected.empty()) s += "expected " + i.expected;
      if (!i.expected.empty() && !i.found.empty()) s += ", ";
      if (!i.found.empty()) s += "found " + i.found;
      s += ")";
    }
    return s;
  }

 private:
  error_info info_;
};

/// Renders any streamable value as a string, for error messages ("found " + str(x)).
template <class T>
std::string str(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// Throws forge::error with the given parts unless `cond` holds.
inline void require(bool cond, error_info info) {
  if (!cond) throw error(std::move(info));
}

/// "byte N" — the place string used by binary parsers.
inline std::string at_byte(std::uint64_t offset) {
  return "byte " + std::to_string(offset);
}
/// "line N" — the place string used by line-oriented parsers (1-based).
inline std::string at_line(std::uint64_t line) {
  return "line " + std::to_string(line);
}

}  // namespace forge
