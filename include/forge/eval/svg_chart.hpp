#pragma once
// Self-contained SVG charts for reports: line charts (loss curves) and grouped bar charts
// (metrics per stage, ablation tables). Plain SVG 1.1 text, no scripts or external fonts, so a
// release's report.html opens anywhere, offline, and its bytes are deterministic.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace forge::eval {

/// One line of a line chart: (x, y) points in data units.
struct line_series {
  std::string label{};
  std::vector<std::pair<double, double>> points{};
};

/// One group of a grouped bar chart: a category label and one value per series.
struct bar_group {
  std::string label{};
  std::vector<double> values{};
};

/// Layout of a chart (pixels) and its axis titles.
struct chart_options {
  std::string title{};
  std::string x_label{};
  std::string y_label{};
  int width = 640;
  int height = 360;
  bool y_from_zero = false;  ///< line charts: start the y axis at 0 instead of the data minimum
};

namespace detail {

inline std::string svg_num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

/// Escapes text for SVG/HTML element content and attribute values.
inline std::string xml_escape(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  return o;
}

// A colour-blind-safe palette (Okabe & Ito 2008).
inline const char* palette(std::size_t i) {
  static constexpr const char* p[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                      "#CC79A7", "#56B4E9", "#F0E442", "#000000"};
  return p[i % 8];
}

inline std::string svg_open(const chart_options& o) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(o.width) +
                  "\" height=\"" + std::to_string(o.height) +
                  "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"" + std::to_string(o.width) + "\" height=\"" + std::to_string(o.height) +
       "\" fill=\"white\"/>\n";
  if (!o.title.empty())
    s += "<text x=\"" + svg_num(o.width / 2.0) +
         "\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">" + xml_escape(o.title) +
         "</text>\n";
  return s;
}

}  // namespace detail

/// A line chart of one or more series with a legend; non-finite points are skipped.
inline std::string line_chart(const std::vector<line_series>& series, const chart_options& o = {}) {
  const double W = o.width, H = o.height, L = 64, R = 150, T = 28, B = 44;
  double xlo = 1e300, xhi = -1e300, ylo = 1e300, yhi = -1e300;
  for (const auto& s : series)
    for (auto [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        xlo = std::min(xlo, x), xhi = std::max(xhi, x);
        ylo = std::min(ylo, y), yhi = std::max(yhi, y);
      }
  if (!(xhi >= xlo)) xlo = 0, xhi = 1;
  if (!(yhi >= ylo)) ylo = 0, yhi = 1;
  if (o.y_from_zero) ylo = std::min(0.0, ylo);
  if (xhi - xlo < 1e-12) xhi = xlo + 1;
  if (yhi - ylo < 1e-12) yhi = ylo + 1;
  auto px = [&](double x) { return L + (W - L - R) * (x - xlo) / (xhi - xlo); };
  auto py = [&](double y) { return H - B - (H - T - B) * (y - ylo) / (yhi - ylo); };
  using detail::svg_num;
  std::string s = detail::svg_open(o);
  s += "<line x1=\"" + svg_num(L) + "\" y1=\"" + svg_num(H - B) + "\" x2=\"" + svg_num(W - R) +
       "\" y2=\"" + svg_num(H - B) + "\" stroke=\"black\"/>\n";
  s += "<line x1=\"" + svg_num(L) + "\" y1=\"" + svg_num(T) + "\" x2=\"" + svg_num(L) + "\" y2=\"" +
       svg_num(H - B) + "\" stroke=\"black\"/>\n";
  s += "<text x=\"" + svg_num(L - 4) + "\" y=\"" + svg_num(T + 4) + "\" text-anchor=\"end\">" +
       svg_num(yhi) + "</text>\n";
  s += "<text x=\"" + svg_num(L - 4) + "\" y=\"" + svg_num(H - B) + "\" text-anchor=\"end\">" +
       svg_num(ylo) + "</text>\n";
  s += "<text x=\"" + svg_num(L) + "\" y=\"" + svg_num(H - B + 16) + "\">" + svg_num(xlo) +
       "</text>\n";
  s += "<text x=\"" + svg_num(W - R) + "\" y=\"" + svg_num(H - B + 16) + "\" text-anchor=\"end\">" +
       svg_num(xhi) + "</text>\n";
  s += "<text x=\"" + svg_num((L + W - R) / 2) + "\" y=\"" + svg_num(H - 8) +
       "\" text-anchor=\"middle\">" + detail::xml_escape(o.x_label) + "</text>\n";
  s += "<text x=\"14\" y=\"" + svg_num((T + H - B) / 2) + "\" transform=\"rotate(-90 14 " +
       svg_num((T + H - B) / 2) + ")\" text-anchor=\"middle\">" + detail::xml_escape(o.y_label) +
       "</text>\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    s += "<polyline fill=\"none\" stroke=\"" + std::string(detail::palette(i)) +
         "\" stroke-width=\"1.5\" points=\"";
    for (auto [x, y] : series[i].points)
      if (std::isfinite(x) && std::isfinite(y)) s += svg_num(px(x)) + "," + svg_num(py(y)) + " ";
    s += "\"/>\n";
    s += "<text x=\"" + svg_num(W - R + 8) + "\" y=\"" + svg_num(T + 14 + 16.0 * double(i)) +
         "\" fill=\"" + detail::palette(i) + "\">" + detail::xml_escape(series[i].label) +
         "</text>\n";
  }
  return s + "</svg>\n";
}

/// A grouped bar chart: one group per category, one bar per series (named in `series`).
/// Bars start at zero; negative values hang below the axis.
inline std::string bar_chart(const std::vector<bar_group>& groups,
                             const std::vector<std::string>& series, const chart_options& o = {}) {
  const double W = o.width, H = o.height, L = 64, R = 150, T = 28, B = 44;
  double lo = 0, hi = 0;
  for (const auto& g : groups)
    for (double v : g.values)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi - lo < 1e-12) hi = lo + 1;
  auto py = [&](double y) { return H - B - (H - T - B) * (y - lo) / (hi - lo); };
  using detail::svg_num;
  std::string s = detail::svg_open(o);
  const double gw = (W - L - R) / double(std::max<std::size_t>(1, groups.size()));
  const double bw = gw * 0.8 / double(std::max<std::size_t>(1, series.size()));
  s += "<line x1=\"" + svg_num(L) + "\" y1=\"" + svg_num(py(0)) + "\" x2=\"" + svg_num(W - R) +
       "\" y2=\"" + svg_num(py(0)) + "\" stroke=\"black\"/>\n";
  s += "<text x=\"" + svg_num(L - 4) + "\" y=\"" + svg_num(T + 4) + "\" text-anchor=\"end\">" +
       svg_num(hi) + "</text>\n";
  s += "<text x=\"" + svg_num(L - 4) + "\" y=\"" + svg_num(py(lo)) + "\" text-anchor=\"end\">" +
       svg_num(lo) + "</text>\n";
  s += "<text x=\"14\" y=\"" + svg_num((T + H - B) / 2) + "\" transform=\"rotate(-90 14 " +
       svg_num((T + H - B) / 2) + ")\" text-anchor=\"middle\">" + detail::xml_escape(o.y_label) +
       "</text>\n";
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const double x0 = L + gw * double(g) + gw * 0.1;
    for (std::size_t k = 0; k < groups[g].values.size() && k < series.size(); ++k) {
      const double v = groups[g].values[k];
      if (!std::isfinite(v)) continue;
      const double y0 = py(std::max(0.0, v)), y1 = py(std::min(0.0, v));
      s += "<rect x=\"" + svg_num(x0 + bw * double(k)) + "\" y=\"" + svg_num(y0) + "\" width=\"" +
           svg_num(bw * 0.92) + "\" height=\"" + svg_num(y1 - y0) + "\" fill=\"" +
           detail::palette(k) + "\"><title>" + detail::xml_escape(groups[g].label) + ", " +
           detail::xml_escape(series[k]) + ": " + svg_num(v) + "</title></rect>\n";
    }
    s += "<text x=\"" + svg_num(x0 + gw * 0.4) + "\" y=\"" + svg_num(H - B + 16) +
         "\" text-anchor=\"middle\">" + detail::xml_escape(groups[g].label) + "</text>\n";
  }
  for (std::size_t k = 0; k < series.size(); ++k)
    s += "<text x=\"" + svg_num(W - R + 8) + "\" y=\"" + svg_num(T + 14 + 16.0 * double(k)) +
         "\" fill=\"" + detail::palette(k) + "\">" + detail::xml_escape(series[k]) + "</text>\n";
  if (!o.x_label.empty())
    s += "<text x=\"" + svg_num((L + W - R) / 2) + "\" y=\"" + svg_num(H - 8) +
         "\" text-anchor=\"middle\">" + detail::xml_escape(o.x_label) + "</text>\n";
  return s + "</svg>\n";
}

}  // namespace forge::eval
