#pragma once
// Progress reporting for long work (training steps, quantizing layers, tokenizing files).
// On a terminal: one bar redrawn in place with rate and ETA, plus optional key=value fields
// (loss, tokens/s). Elsewhere (CI logs, files): a plain line at most every `interval`
// seconds and at the end, so logs stay readable.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace forge {

/// A progress bar over `total` units of work.
class progress {
 public:
  using clock = std::chrono::steady_clock;

  /// `label` names the work; `total` units; output to `out` (stderr by default).
  progress(std::string label, std::uint64_t total, std::FILE* out = stderr, double interval = 5.0)
      : label_(std::move(label)),
        total_(total),
        out_(out),
        interval_(interval),
        tty_(out && ::isatty(::fileno(out))),
        start_(clock::now()),
        last_(start_) {}

  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  ~progress() { finish(); }

  /// Sets a displayed field such as ("loss", "2.31").
  void field(const std::string& key, std::string value) {
    for (auto& [k, v] : fields_)
      if (k == key) {
        v = std::move(value);
        return;
      }
    fields_.emplace_back(key, std::move(value));
  }

  /// Advances by `n` units and redraws if due.
  void advance(std::uint64_t n = 1) {
    done_ += n;
    const auto now = clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if ((tty_ && since >= 0.1) || (!tty_ && since >= interval_) || done_ >= total_) {
      last_ = now;
      draw(false);
    }
  }

  /// Marks the work complete and prints the final line (once).
  void finish() {
    if (finished_ || !out_) return;
    finished_ = true;
    draw(true);
  }

  /// Units done so far.
  std::uint64_t done() const { return done_; }
  /// Seconds since construction.
  double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  /// Units per second so far.
  double rate() const { return elapsed() > 0 ? double(done_) / elapsed() : 0.0; }
  /// Estimated seconds remaining (0 when unknown).
  double eta() const {
    const double r = rate();
    return r > 0 && total_ > done_ ? double(total_ - done_) / r : 0.0;
  }

  /// Formats seconds as "1h02m", "3m05s" or "4.2s".
  static std::string duration(double s) {
    char b[32];
    if (s >= 3600)
      std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
    else if (s >= 60)
      std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(s) % 60);
    else
      std::snprintf(b, sizeof b, "%.1fs", s);
    return b;
  }

  /// The line as it would be printed now (without terminal control characters).
  std::string line(bool final = false) const {
    std::string s = label_ + " ";
    const double frac = total_ ? double(done_) / double(total_) : 1.0;
    if (tty_) {
      constexpr int width = 28;
      const int filled = int(frac * width + 0.5);
      s += '[';
      s.append(std::size_t(filled), '#');
      s.append(std::size_t(width - filled), '.');
      s += "] ";
    }
    char b[96];
    std::snprintf(b, sizeof b, "%llu/%llu (%.0f%%) %.1f/s", (unsigned long long)done_,
                  (unsigned long long)total_, 100.0 * frac, rate());
    s += b;
    s += final ? " in " : " eta ";
    s += duration(final ? elapsed() : eta());
    for (auto& [k, v] : fields_) {
      s += ' ';
      s += k;
      s += '=';
      s += v;
    }
    return s;
  }

 private:
  void draw(bool final) {
    if (!out_) return;
    const auto s = line(final);
    if (tty_)
      std::fprintf(out_, "\r\033[K%s%s", s.c_str(), final ? "\n" : "");
    else
      std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }

  std::string label_;
  std::uint64_t total_;
  std::uint64_t done_ = 0;
  std::FILE* out_;
  double interval_;
  bool tty_;
  bool finished_ = false;
  clock::time_point start_, last_;
  std::vector<std::pair<std::string, std::string>> fields_;
};

}  // namespace forge
