#pragma once
// The training log and its loss curve: one row per optimizer step (CSV) and an SVG plot of
// the training loss with the validation loss points, both written atomically.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "forge/io/atomic_file.hpp"

namespace forge::train {

/// One optimizer step of the training log.
struct log_entry {
  std::int64_t step = 0;    ///< 1-based optimizer step
  double loss = 0;          ///< mean training loss of the step, nats per trained token
  double lr = 0;            ///< learning rate used
  double grad_norm = 0;     ///< global gradient norm before clipping
  std::int64_t tokens = 0;  ///< tokens processed (non-padding)
  friend bool operator==(const log_entry&, const log_entry&) = default;
};

/// One evaluation: the step and the metrics measured ("val_loss", "perplexity", ...).
struct eval_entry {
  std::int64_t step = 0;
  std::map<std::string, double> metrics{};
  friend bool operator==(const eval_entry&, const eval_entry&) = default;
};

namespace detail {
inline std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}
}  // namespace detail

/// step,loss,lr,grad_norm,tokens[,val_loss] — val_loss where an evaluation ran at that step.
inline std::string loss_csv(const std::vector<log_entry>& log,
                            const std::vector<eval_entry>& evals) {
  std::map<std::int64_t, double> val;
  for (auto& e : evals)
    if (auto it = e.metrics.find("val_loss"); it != e.metrics.end()) val[e.step] = it->second;
  std::string s = "step,loss,lr,grad_norm,tokens,val_loss\n";
  for (auto& e : log) {
    s += std::to_string(e.step) + "," + detail::num(e.loss) + "," + detail::num(e.lr) + "," +
         detail::num(e.grad_norm) + "," + std::to_string(e.tokens) + ",";
    if (auto it = val.find(e.step); it != val.end()) s += detail::num(it->second);
    s += "\n";
  }
  return s;
}

/// An SVG line plot (640×360) of training loss per step, validation loss as dots.
inline std::string loss_svg(const std::vector<log_entry>& log,
                            const std::vector<eval_entry>& evals) {
  const double W = 640, H = 360, L = 60, R = 20, T = 20, B = 40;
  double lo = 1e300, hi = -1e300;
  const double xmax = log.empty() ? 1.0 : double(std::max<std::int64_t>(1, log.back().step));
  std::vector<std::pair<double, double>> val;
  for (auto& e : evals)
    if (auto it = e.metrics.find("val_loss"); it != e.metrics.end())
      val.emplace_back(double(e.step), it->second);
  for (auto& e : log)
    if (std::isfinite(e.loss)) lo = std::min(lo, e.loss), hi = std::max(hi, e.loss);
  for (auto& [x, y] : val) lo = std::min(lo, y), hi = std::max(hi, y);
  if (!(hi >= lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  auto px = [&](double x) { return L + (W - L - R) * x / xmax; };
  auto py = [&](double y) { return H - B - (H - T - B) * (y - lo) / (hi - lo); };
  std::string s =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"640\" height=\"360\" fill=\"white\"/>\n";
  s += "<line x1=\"60\" y1=\"320\" x2=\"620\" y2=\"320\" stroke=\"black\"/>\n"
       "<line x1=\"60\" y1=\"20\" x2=\"60\" y2=\"320\" stroke=\"black\"/>\n";
  s += "<text x=\"340\" y=\"352\" text-anchor=\"middle\">step</text>\n";
  s += "<text x=\"8\" y=\"24\">" + detail::num(hi) + "</text>\n<text x=\"8\" y=\"320\">" +
       detail::num(lo) + "</text>\n";
  s += "<text x=\"616\" y=\"336\" text-anchor=\"end\">" + detail::num(xmax) + "</text>\n";
  s += "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1.5\" points=\"";
  for (auto& e : log)
    if (std::isfinite(e.loss))
      s += detail::num(px(double(e.step))) + "," + detail::num(py(e.loss)) + " ";
  s += "\"/>\n";
  for (auto& [x, y] : val)
    s += "<circle cx=\"" + detail::num(px(x)) + "\" cy=\"" + detail::num(py(y)) +
         "\" r=\"3\" fill=\"darkorange\"/>\n";
  s += "<text x=\"480\" y=\"36\" fill=\"steelblue\">train loss</text>\n"
       "<text x=\"480\" y=\"52\" fill=\"darkorange\">validation loss</text>\n</svg>\n";
  return s;
}

/// Writes loss.csv and loss.svg into `dir`, atomically.
inline void write_loss_curve(const std::filesystem::path& dir, const std::vector<log_entry>& log,
                             const std::vector<eval_entry>& evals) {
  std::filesystem::create_directories(dir);
  io::write_atomic(dir / "loss.csv", loss_csv(log, evals));
  io::write_atomic(dir / "loss.svg", loss_svg(log, evals));
}

}  // namespace forge::train
