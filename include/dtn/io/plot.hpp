#pragma once
// Loss curves as SVG: plain SVG text with one polyline per named series of (step, value), axes
// with round-number ticks, a legend, an optional log-scale y axis. No image library needed.
// Non-finite values (and values <= 0 on a log axis) are skipped and break the line there.
// The file is written atomically (temporary file + rename).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "atomic_file.hpp"

namespace dtn {
namespace io {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, value)
};

struct PlotOptions {
  std::string title;
  std::string x_label = "step";
  std::string y_label = "loss";
  int width = 800, height = 480;
  bool log_y = false;
};

namespace detail {

inline std::string xml_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    switch (ch) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(ch) >= 0x20 || ch == '\t' || ch == '\n') o += ch;
    }
  }
  return o;
}

inline std::string fmt_num(double v, int prec = 6) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", prec, v);
  return buf;
}

// Round-number ticks (1, 2 or 5 times a power of ten) covering [lo, hi], about `target` of them.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
  const double first = std::ceil(lo / step) * step;
  // Counted steps: where step is below the spacing of doubles near lo, v += step would not move.
  for (int i = 0; i <= 4 * target; ++i) {
    const double v = first + i * step;
    if (v > hi + step * 1e-9) break;
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

}  // namespace detail

// The SVG document text.
inline std::string plot_svg(const std::vector<PlotSeries>& series, const PlotOptions& opt = {}) {
  if (opt.width < 200 || opt.height < 150 || opt.width > 20000 || opt.height > 20000)
    throw argument_error("dtn::io::plot_svg: size " + std::to_string(opt.width) + "x" + std::to_string(opt.height) +
                         ", expected 200..20000 x 150..20000");
  auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!opt.log_y || y > 0); };
  auto ty = [&](double y) { return opt.log_y ? std::log10(y) : y; };

  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (const auto& p : s.points)
      if (usable(p.first, p.second)) {
        x0 = std::min(x0, p.first);
        x1 = std::max(x1, p.first);
        y0 = std::min(y0, ty(p.second));
        y1 = std::max(y1, ty(p.second));
      }
  if (!(x0 <= x1)) {  // nothing to draw: empty axes over [0, 1]
    x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  }
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double ypad = 0.05 * (y1 - y0);
  y0 -= ypad, y1 += ypad;

  const double L = 70, R = 160, T = opt.title.empty() ? 20 : 40, B = 50;  // margins; legend at the right
  const double pw = opt.width - L - R, ph = opt.height - T - B;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return T + ph - (ty(y) - y0) / (y1 - y0) * ph; };
  auto pyt = [&](double t) { return T + ph - (t - y0) / (y1 - y0) * ph; };  // y in transformed units

  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(opt.width) + "\" height=\"" +
       std::to_string(opt.height) + "\" viewBox=\"0 0 " + std::to_string(opt.width) + " " +
       std::to_string(opt.height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!opt.title.empty())
    s += "<text x=\"" + detail::fmt_num(L + pw / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" +
         detail::xml_escape(opt.title) + "</text>\n";
  // Grid lines and tick labels.
  for (double t : detail::nice_ticks(x0, x1)) {
    const std::string X = detail::fmt_num(px(t));
    s += "<line x1=\"" + X + "\" y1=\"" + detail::fmt_num(T) + "\" x2=\"" + X + "\" y2=\"" + detail::fmt_num(T + ph) +
         "\" stroke=\"#e0e0e0\"/>\n";
    s += "<text x=\"" + X + "\" y=\"" + detail::fmt_num(T + ph + 16) + "\" text-anchor=\"middle\">" +
         detail::fmt_num(t) + "</text>\n";
  }
  for (double t : detail::nice_ticks(y0, y1)) {
    const std::string Y = detail::fmt_num(pyt(t));
    s += "<line x1=\"" + detail::fmt_num(L) + "\" y1=\"" + Y + "\" x2=\"" + detail::fmt_num(L + pw) + "\" y2=\"" + Y +
         "\" stroke=\"#e0e0e0\"/>\n";
    s += "<text x=\"" + detail::fmt_num(L - 6) + "\" y=\"" + Y + "\" text-anchor=\"end\" dominant-baseline=\"middle\">" +
         detail::fmt_num(opt.log_y ? std::pow(10.0, t) : t, 4) + "</text>\n";
  }
  // Axes.
  s += "<rect x=\"" + detail::fmt_num(L) + "\" y=\"" + detail::fmt_num(T) + "\" width=\"" + detail::fmt_num(pw) +
       "\" height=\"" + detail::fmt_num(ph) + "\" fill=\"none\" stroke=\"black\"/>\n";
  s += "<text x=\"" + detail::fmt_num(L + pw / 2) + "\" y=\"" + std::to_string(opt.height - 10) +
       "\" text-anchor=\"middle\">" + detail::xml_escape(opt.x_label) + "</text>\n";
  s += "<text transform=\"translate(16," + detail::fmt_num(T + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       detail::xml_escape(opt.y_label + (opt.log_y ? " (log)" : "")) + "</text>\n";
  // Series: one polyline per unbroken run of usable points.
  for (std::size_t k = 0; k < series.size(); ++k) {
    const std::string color = colors[k % 10];
    std::string pts;
    auto flush = [&] {
      if (!pts.empty())
        s += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
      pts.clear();
    };
    for (const auto& p : series[k].points) {
      if (!usable(p.first, p.second)) {
        flush();
        continue;
      }
      pts += (pts.empty() ? "" : " ") + detail::fmt_num(px(p.first), 7) + "," + detail::fmt_num(py(p.second), 7);
    }
    flush();
    // Legend entry.
    const double ly = T + 10 + 18 * static_cast<double>(k);
    s += "<line x1=\"" + detail::fmt_num(L + pw + 12) + "\" y1=\"" + detail::fmt_num(ly) + "\" x2=\"" +
         detail::fmt_num(L + pw + 32) + "\" y2=\"" + detail::fmt_num(ly) + "\" stroke=\"" + color +
         "\" stroke-width=\"2\"/>\n";
    s += "<text x=\"" + detail::fmt_num(L + pw + 38) + "\" y=\"" + detail::fmt_num(ly) +
         "\" dominant-baseline=\"middle\">" + detail::xml_escape(series[k].name) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

// Writes plot_svg(...) to `path`, atomically.
inline void write_plot_svg(const std::string& path, const std::vector<PlotSeries>& series,
                           const PlotOptions& opt = {}) {
  const std::string text = plot_svg(series, opt);
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace io
}  // namespace dtn
