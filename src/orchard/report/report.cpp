// The offline report: plain HTML + inline SVG, no scripts, no external resources. Every piece of
// text that comes from data (labels are folder names, reasons are error messages, paths) goes through
// esc(). Numbers go through std::to_chars, so a process locale cannot turn 0.5 into "0,5".
#include "orchard/report/report.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <locale>
#include <set>
#include <sstream>

namespace orchard::report {
namespace {

std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Fixed-point number with `digits` decimals, locale-independent.
std::string num(double v, int digits = 1) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, digits);
  return std::string(buf, r.ptr);
}

// The shortest text that reads back as v, fixed from 1e-4 up and scientific below (as Python's
// repr: 0.0001, 3e-05), locale-independent.
std::string shortest(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  const bool fixed = v == 0 || (std::abs(v) >= 1e-4 && std::abs(v) < 1e16);
  auto r = std::to_chars(buf, buf + sizeof buf, v, fixed ? std::chars_format::fixed : std::chars_format::scientific);
  return std::string(buf, r.ptr);
}

// A fraction as a percentage with 2 decimals, e.g. "98.35 %".
std::string pct(double v) { return std::isfinite(v) ? num(100 * v, 2) + " %" : "-"; }

// A tick label: as few decimals as the tick step needs.
std::string tick_label(double v, double step) {
  const int digits = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return num(std::abs(v) < step * 1e-9 ? 0.0 : v, digits);
}

// About n "nice" (1, 2, 5 x 10^e) ticks covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n, double* step_out) {
  if (!(hi > lo)) {
    *step_out = 1;
    return {lo};
  }
  const double raw = (hi - lo) / std::max(n, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
  *step_out = step;
  return t;
}

// A deterministic palette: golden-angle hues, three lightness/saturation rings, as #rrggbb.
std::string colour(std::size_t i) {
  const double h = std::fmod(i * 137.50776405, 360.0) / 60.0;
  const double s = (i / 47) % 3 == 0 ? 0.75 : (i / 47) % 3 == 1 ? 0.55 : 0.9;
  const double l = (i / 47) % 3 == 0 ? 0.45 : (i / 47) % 3 == 1 ? 0.35 : 0.6;
  const double c = (1 - std::abs(2 * l - 1)) * s, x = c * (1 - std::abs(std::fmod(h, 2.0) - 1)), m = l - c / 2;
  double rgb[3][6] = {{c, x, 0, 0, x, c}, {x, c, c, x, 0, 0}, {0, 0, x, c, c, x}};
  const int sector = std::min(static_cast<int>(h), 5);
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(std::lround((rgb[0][sector] + m) * 255)),
                static_cast<int>(std::lround((rgb[1][sector] + m) * 255)),
                static_cast<int>(std::lround((rgb[2][sector] + m) * 255)));
  return buf;
}

// A plot area inside an SVG of width w, height h, mapping data (x0..x1, y0..y1) to pixels.
struct Frame {
  double w = 900, h = 400, left = 70, right = 70, top = 30, bottom = 55;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (w - left - right); }
  double py(double y) const { return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom); }
};

void svg_open(std::ostringstream& o, const Frame& f, const std::string& label) {
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"" << esc(label) << "\" width=\""
    << num(f.w, 0) << "\" height=\"" << num(f.h, 0) << "\" viewBox=\"0 0 " << num(f.w, 0) << ' ' << num(f.h, 0)
    << "\">\n";
}

// Axes with ticks: bottom (x), left (y) and optionally a right axis for a second scale.
void axes(std::ostringstream& o, const Frame& f, const std::string& xlabel, const std::string& ylabel, int xticks,
          bool integer_x) {
  const double xb = f.h - f.bottom;
  o << "<g class=\"axis\"><line x1=\"" << num(f.left) << "\" y1=\"" << num(xb) << "\" x2=\"" << num(f.w - f.right)
    << "\" y2=\"" << num(xb) << "\"/><line x1=\"" << num(f.left) << "\" y1=\"" << num(f.top) << "\" x2=\""
    << num(f.left) << "\" y2=\"" << num(xb) << "\"/>\n";
  double step;
  for (double t : nice_ticks(f.x0, f.x1, xticks, &step)) {
    if (integer_x && (t < 1 || std::abs(t - std::round(t)) > 1e-9)) continue;
    const double x = f.px(t);
    o << "<line x1=\"" << num(x) << "\" y1=\"" << num(xb) << "\" x2=\"" << num(x) << "\" y2=\"" << num(xb + 5)
      << "\"/><text x=\"" << num(x) << "\" y=\"" << num(xb + 18) << "\" text-anchor=\"middle\">"
      << tick_label(t, step) << "</text>\n";
  }
  for (double t : nice_ticks(f.y0, f.y1, 5, &step)) {
    const double y = f.py(t);
    o << "<line x1=\"" << num(f.left - 5) << "\" y1=\"" << num(y) << "\" x2=\"" << num(f.left) << "\" y2=\"" << num(y)
      << "\"/><text x=\"" << num(f.left - 8) << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">"
      << tick_label(t, step) << "</text>\n";
  }
  o << "<text x=\"" << num((f.left + f.w - f.right) / 2) << "\" y=\"" << num(f.h - 12)
    << "\" text-anchor=\"middle\">" << esc(xlabel) << "</text><text transform=\"translate(16 "
    << num((f.top + xb) / 2) << ") rotate(-90)\" text-anchor=\"middle\">" << esc(ylabel) << "</text></g>\n";
}

void summary(std::ostringstream& o, const ReportData& d) {
  o << "<h2>Run summary</h2>\n<table>\n"
    << "<tr><th>Images listed</th><td>" << d.images_listed << "</td></tr>\n"
    << "<tr><th>Embedded</th><td>" << d.images_embedded << "</td></tr>\n"
    << "<tr><th>Failed</th><td>" << d.images_failed << "</td></tr>\n"
    << "<tr><th>Throughput</th><td>" << num(d.images_per_s) << " images/s</td></tr>\n";
  for (const auto& [stage, s] : d.timings_s)
    o << "<tr><th>Time: " << esc(stage) << "</th><td>" << num(s, 2) << " s</td></tr>\n";
  if (d.k > 0) o << "<tr><th>PCA components kept (k)</th><td>" << d.k << "</td></tr>\n";
  o << "</table>\n";
  if (!d.error_reasons.empty()) {
    o << "<h3>Errors by reason</h3>\n<table>\n<tr><th>Reason</th><th>Images</th></tr>\n";
    for (const auto& [reason, n] : d.error_reasons) o << "<tr><td>" << esc(reason) << "</td><td>" << n << "</td></tr>\n";
    o << "</table>\n";
  }
}

void scree(std::ostringstream& o, const ReportData& d) {
  o << "<h2>Explained variance (scree)</h2>\n";
  if (d.explained_ratio.empty()) {
    o << "<p>No PCA fit yet: run <code>orchard pca</code>.</p>\n";
    return;
  }
  const int total = static_cast<int>(d.explained_ratio.size());
  const int n = std::min(total, std::max(50, d.k + 5));
  const double ymax = std::max(*std::max_element(d.explained_ratio.begin(), d.explained_ratio.begin() + n), 1e-12);
  double step;
  const auto yt = nice_ticks(0, ymax, 5, &step);
  Frame f;
  f.h = 380;
  f.x0 = 0.5, f.x1 = n + 0.5, f.y0 = 0, f.y1 = yt.back() < ymax ? yt.back() + step : yt.back();
  svg_open(o, f, "scree plot");
  axes(o, f, "principal component", "explained variance ratio", 10, true);
  const double bw = f.px(1.5) - f.px(0.5);
  o << "<g class=\"bars\">";
  for (int i = 0; i < n; ++i) {
    const double r = d.explained_ratio[i], y = f.py(r);
    o << "<rect x=\"" << num(f.px(i + 0.5) + bw * 0.1, 2) << "\" y=\"" << num(y, 2) << "\" width=\"" << num(bw * 0.8, 2)
      << "\" height=\"" << num(f.py(0) - y, 2) << "\"><title>PC" << i + 1 << ": " << num(100 * r, 2)
      << " %</title></rect>";
  }
  o << "</g>\n";
  // Cumulative curve on the right axis (0..100 %).
  Frame c = f;
  c.y0 = 0, c.y1 = 1;
  double cum = 0;
  o << "<polyline class=\"cumulative\" points=\"";
  for (int i = 0; i < n; ++i) {
    cum += d.explained_ratio[i];
    o << num(c.px(i + 1), 2) << ',' << num(c.py(cum), 2) << ' ';
  }
  o << "\"/>\n<g class=\"axis\"><line x1=\"" << num(f.w - f.right) << "\" y1=\"" << num(f.top) << "\" x2=\""
    << num(f.w - f.right) << "\" y2=\"" << num(f.py(0)) << "\"/>";
  for (int p = 0; p <= 100; p += 20)
    o << "<line x1=\"" << num(f.w - f.right) << "\" y1=\"" << num(c.py(p / 100.0)) << "\" x2=\""
      << num(f.w - f.right + 5) << "\" y2=\"" << num(c.py(p / 100.0)) << "\"/><text x=\"" << num(f.w - f.right + 8)
      << "\" y=\"" << num(c.py(p / 100.0) + 4) << "\">" << p << " %</text>";
  o << "<text transform=\"translate(" << num(f.w - 12) << ' ' << num((f.top + f.py(0)) / 2)
    << ") rotate(90)\" text-anchor=\"middle\">cumulative</text></g>\n";
  if (d.k >= 1 && d.k <= n) {
    double kcum = 0;
    for (int i = 0; i < d.k; ++i) kcum += d.explained_ratio[i];
    const double x = f.px(d.k);
    const bool right_half = x > f.w / 2;  // keep the label inside the chart
    o << "<line class=\"kline\" x1=\"" << num(x) << "\" y1=\"" << num(f.top) << "\" x2=\"" << num(x) << "\" y2=\""
      << num(f.py(0)) << "\"/><text class=\"klabel\" x=\"" << num(x + (right_half ? -6 : 6)) << "\" y=\""
      << num(f.top + 14) << "\" text-anchor=\"" << (right_half ? "end" : "start") << "\">k = "
      << d.k << " (" << num(100 * kcum) << " %)</text>\n";
  }
  o << "</svg>\n";
  if (n < total) o << "<p class=\"note\">First " << n << " of " << total << " components shown.</p>\n";
}

void scatter(std::ostringstream& o, const ReportData& d, const std::map<std::string, std::string>& colours) {
  o << "<h2>Projection on PC1 and PC2</h2>\n";
  std::vector<const ScatterPoint*> pts;
  for (const auto& p : d.scatter)
    if (std::isfinite(p.pc1) && std::isfinite(p.pc2)) pts.push_back(&p);
  if (pts.empty()) {
    o << "<p>No projected points.</p>\n";
    return;
  }
  auto [xa, xb] = std::minmax_element(pts.begin(), pts.end(), [](auto a, auto b) { return a->pc1 < b->pc1; });
  auto [ya, yb] = std::minmax_element(pts.begin(), pts.end(), [](auto a, auto b) { return a->pc2 < b->pc2; });
  const double xs = std::max<double>((*xb)->pc1 - (*xa)->pc1, 1e-9), ys = std::max<double>((*yb)->pc2 - (*ya)->pc2, 1e-9);
  Frame f;
  f.h = 620;
  f.x0 = (*xa)->pc1 - 0.04 * xs, f.x1 = (*xb)->pc1 + 0.04 * xs, f.y0 = (*ya)->pc2 - 0.04 * ys, f.y1 = (*yb)->pc2 + 0.04 * ys;
  f.right = 20;
  svg_open(o, f, "PC1/PC2 scatter");
  axes(o, f, "PC1", "PC2", 8, false);
  std::map<std::string, std::vector<const ScatterPoint*>> by_label;
  for (auto* p : pts) by_label[p->label].push_back(p);
  for (const auto& [label, group] : by_label) {
    o << "<g class=\"pts\" fill=\"" << colours.at(label) << "\"><title>" << esc(label) << "</title>";
    for (auto* p : group) o << "<circle cx=\"" << num(f.px(p->pc1), 1) << "\" cy=\"" << num(f.py(p->pc2), 1) << "\" r=\"3\"/>";
    o << "</g>\n";
  }
  o << "</svg>\n<p class=\"note\">" << pts.size() << " points; hover a point for its label.</p>\n<div class=\"legend\">";
  for (const auto& [label, group] : by_label)
    o << "<span><i style=\"background:" << colours.at(label) << "\"></i>" << esc(label) << " (" << group.size()
      << ")</span>";
  o << "</div>\n";
}

void per_class(std::ostringstream& o, const ReportData& d, const std::map<std::string, std::string>& colours) {
  o << "<h2>Images per class</h2>\n";
  if (d.images_per_class.empty()) {
    o << "<p>No classes.</p>\n";
    return;
  }
  std::int64_t most = 1;
  for (const auto& [label, n] : d.images_per_class) most = std::max(most, n);
  const double row = 16;
  Frame f;
  f.left = 260, f.right = 60, f.top = 10, f.bottom = 45;
  f.h = f.top + f.bottom + row * d.images_per_class.size();
  f.x0 = 0, f.x1 = static_cast<double>(most), f.y0 = 0, f.y1 = static_cast<double>(d.images_per_class.size());
  svg_open(o, f, "images per class");
  double step;
  for (double t : nice_ticks(0, f.x1, 6, &step))  // vertical grid + x ticks
    o << "<line class=\"grid\" x1=\"" << num(f.px(t)) << "\" y1=\"" << num(f.top) << "\" x2=\"" << num(f.px(t))
      << "\" y2=\"" << num(f.h - f.bottom + 5) << "\"/><text x=\"" << num(f.px(t)) << "\" y=\""
      << num(f.h - f.bottom + 18) << "\" text-anchor=\"middle\">" << tick_label(t, step) << "</text>\n";
  int i = 0;
  for (const auto& [label, n] : d.images_per_class) {
    const double y = f.top + row * i++;
    o << "<text x=\"" << num(f.left - 6) << "\" y=\"" << num(y + row * 0.75) << "\" text-anchor=\"end\">" << esc(label)
      << "</text><rect x=\"" << num(f.left) << "\" y=\"" << num(y + 2) << "\" width=\"" << num(f.px(n) - f.left)
      << "\" height=\"" << num(row - 4) << "\" fill=\"" << colours.at(label) << "\"><title>" << esc(label) << ": " << n
      << "</title></rect><text x=\"" << num(f.px(n) + 4) << "\" y=\"" << num(y + row * 0.75) << "\">" << n
      << "</text>\n";
  }
  o << "<text x=\"" << num((f.left + f.w - f.right) / 2) << "\" y=\"" << num(f.h - 8)
    << "\" text-anchor=\"middle\">images</text></svg>\n";
}

void classifier(std::ostringstream& o, const ReportData& d) {
  if (!d.classifier) {
    if (!d.classifier_note.empty()) o << "<p class=\"note\">" << esc(d.classifier_note) << "</p>\n";
    return;
  }
  const auto& c = *d.classifier;
  o << "<h2>Classifier</h2>\n<table>\n"
    << "<tr><th>Holdout top-1 accuracy</th><td>" << pct(c.top1) << "</td></tr>\n"
    << "<tr><th>Holdout top-5 accuracy</th><td>" << pct(c.top5) << "</td></tr>\n"
    << "<tr><th>Holdout</th><td>" << esc(c.holdout_method) << "</td></tr>\n"
    << "<tr><th>Rows (holdout)</th><td>" << c.rows << " (" << c.holdout_rows << ")</td></tr>\n"
    << "<tr><th>Classes</th><td>" << c.classes << "</td></tr>\n"
    << "<tr><th>Inputs</th><td>" << c.inputs;
  if (!c.inputs_on.empty()) o << " (" << esc(c.inputs_on) << ")";
  o << "</td></tr>\n<tr><th>Chosen L2</th><td>" << shortest(c.l2) << "</td></tr>\n</table>\n";

  if (!c.l2_tried.empty()) {
    o << "<h3>L2 strengths tried</h3>\n<table>\n<tr><th>L2</th><th>Top-1</th><th>Top-5</th></tr>\n";
    for (const auto& t : c.l2_tried) {
      const bool chosen = t.l2 == c.l2;
      o << "<tr" << (chosen ? " class=\"chosen\"" : "") << "><td>" << shortest(t.l2) << (chosen ? " (chosen)" : "")
        << "</td><td>" << pct(t.top1) << "</td><td>" << pct(t.top5) << "</td></tr>\n";
    }
    o << "</table>\n";
  }

  // F1 is defined only for classes with holdout images; the others are counted, not ranked.
  std::vector<const ClassifierSummary::ClassScore*> ranked;
  for (const auto& k : c.per_class)
    if (k.support > 0) ranked.push_back(&k);
  const auto key = [](const ClassifierSummary::ClassScore* k) { return std::isfinite(k->f1) ? k->f1 : -1.0; };
  std::stable_sort(ranked.begin(), ranked.end(), [&](auto a, auto b) { return key(a) < key(b); });
  if (ranked.size() > 10) ranked.resize(10);
  const std::size_t unranked = c.per_class.size() - std::count_if(c.per_class.begin(), c.per_class.end(),
                                                                  [](const auto& k) { return k.support > 0; });
  if (!ranked.empty()) {
    o << "<h3>Worst classes by F1</h3>\n<table>\n<tr><th>Class</th><th>Precision</th><th>Recall</th><th>F1</th>"
         "<th>Support</th></tr>\n";
    for (const auto* k : ranked)
      o << "<tr><td>" << esc(k->name) << "</td><td>" << num(k->precision, 3) << "</td><td>" << num(k->recall, 3)
        << "</td><td>" << num(k->f1, 3) << "</td><td>" << k->support << "</td></tr>\n";
    o << "</table>\n";
  }
  if (unranked > 0)
    o << "<p class=\"note\">" << unranked << " of " << c.per_class.size()
      << " classes have no holdout images and are not ranked.</p>\n";

  std::vector<const ClassifierSummary::Confusion*> pairs;
  for (const auto& p : c.confused) pairs.push_back(&p);
  std::stable_sort(pairs.begin(), pairs.end(), [](auto a, auto b) { return a->count > b->count; });
  if (pairs.size() > 10) pairs.resize(10);
  if (!pairs.empty()) {
    o << "<h3>Most confused pairs</h3>\n<table>\n<tr><th>True label</th><th>Predicted</th><th>Images</th></tr>\n";
    for (const auto* p : pairs)
      o << "<tr><td>" << esc(p->label) << "</td><td>&rarr; " << esc(p->predicted) << "</td><td>" << p->count
        << "</td></tr>\n";
    o << "</table>\n";
  }

  if (!c.misclassified.empty()) {
    const std::size_t n = std::min<std::size_t>(c.misclassified.size(), 8);
    o << "<h3>Misclassified examples</h3>\n<table>\n<tr><th>Path</th><th>True label</th><th>Predicted</th>"
         "<th>Probability</th></tr>\n";
    for (std::size_t i = 0; i < n; ++i) {
      const auto& m = c.misclassified[i];
      o << "<tr><td class=\"path\">" << esc(m.path) << "</td><td>" << esc(m.label) << "</td><td>" << esc(m.predicted)
        << "</td><td>" << num(m.probability, 3) << "</td></tr>\n";
    }
    o << "</table>\n";
    if (n < c.misclassified.size())
      o << "<p class=\"note\">First " << n << " of " << c.misclassified.size() << " recorded examples shown.</p>\n";
  }
}

constexpr const char* kStyle = R"(body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px;word-break:break-all}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:3px 12px;border-bottom:1px solid #eee;text-align:left}
svg{display:block;font-size:12px}svg text{fill:#333}.axis line,.grid{stroke:#888;stroke-width:1}.grid{stroke:#eee}
.bars rect{fill:#4c78a8}.cumulative{fill:none;stroke:#f58518;stroke-width:2}.kline{stroke:#d62728;stroke-width:2;stroke-dasharray:6 4}
.klabel{fill:#d62728;font-weight:bold}.pts{fill-opacity:.8}.note{color:#666;font-size:12px}
.path{word-break:break-all}tr.chosen td{font-weight:bold}
.legend{display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:50%})";

}  // namespace

std::string render_html(const ReportData& data) {
  // One colour per label, shared by the scatter and the per-class chart, in sorted label order.
  std::set<std::string> labels;
  for (const auto& p : data.scatter) labels.insert(p.label);
  for (const auto& [label, n] : data.images_per_class) labels.insert(label);
  std::map<std::string, std::string> colours;
  for (const auto& label : labels) colours[label] = colour(colours.size());

  std::ostringstream o;
  o.imbue(std::locale::classic());  // integers without a locale's digit grouping
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Orchard report: " << esc(data.title)
    << "</title>\n<style>" << kStyle << "</style></head><body>\n<h1>Orchard report: " << esc(data.title) << "</h1>\n";
  summary(o, data);
  scree(o, data);
  scatter(o, data, colours);
  per_class(o, data, colours);
  classifier(o, data);
  o << "</body></html>\n";
  return o.str();
}

}  // namespace orchard::report
